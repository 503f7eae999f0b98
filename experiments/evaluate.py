"""``python -m experiments.evaluate CONFIG [key=value ...]`` (also ``python experiments/evaluate.py``):
same as ``tokensel eval``, inside a repository checkout only. From an installed package use
``tokensel eval`` or ``python -m tokensel.experiments.evaluate`` (and
``torchrun --nproc_per_node=N -m tokensel.experiments.evaluate ...``)."""

import os
import sys

if __package__ in (None, ""):  # run as a script (e.g. by `wandb agent`): make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tokensel.experiments.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
