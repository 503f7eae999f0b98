"""``python -m experiments.sweep SWEEP_CONFIG [--export-wandb FILE]``: same as ``tokensel sweep``."""

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tokensel.experiments.sweep import main

if __name__ == "__main__":
    sys.exit(main())
