"""`python -m edgelm.server MODEL ...`: the same as `edgelm serve MODEL ...`."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
