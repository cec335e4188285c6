"""`python -m benchmarks compare ...` from the repository root (or `python -m edgelm.benchmarks`)."""

import os
import sys

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # as edgelm's CLI: no onnxruntime telemetry (runtime/cli.py)

from .cli import main

sys.exit(main())
