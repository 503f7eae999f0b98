"""``python -m experiments.evaluate CONFIG [key=value ...]`` (also ``python experiments/evaluate.py``
and ``torchrun --nproc_per_node=N -m experiments.evaluate ...``): same as ``tokensel eval``."""

import os
import sys

if __package__ in (None, ""):  # run as a script (e.g. by `wandb agent`): make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tokensel.experiments.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
