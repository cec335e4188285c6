"""`python -m benchmarks compare ...` from the repository root (or `python -m edgelm.benchmarks`)."""

import sys

from .cli import main

sys.exit(main())
