"""Selection benchmark: same as ``tokensel bench`` (see tokensel/bench/selection.py)."""

import sys

from tokensel.bench.selection import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
