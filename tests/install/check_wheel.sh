#!/usr/bin/env bash
# Installs edgelm the way a user does and runs the runtime from that install.
#
#   tests/install/check_wheel.sh [DEV_PYTHON]
#
# 1. builds the wheel with DEV_PYTHON (default .venv/bin/python; it has setuptools and the exporter),
# 2. exports a tiny random llama model with DEV_PYTHON (the exporter needs torch),
# 3. makes a fresh venv with the base Python and installs the wheel with that Python's own pip,
#    never upgraded (pip 23.2 for Python 3.11): the runtime alone, no torch,
# 4. runs `edgelm --version`, `edgelm bench --help`, a small `edgelm bench`, `edgelm info`, and
#    load + generate + stream + chat from Python in that venv.
# Prints "install check: ok" at the end; exits non-zero at the first failure. Reuses pip's cache.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEV_PYTHON=${1:-.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgelm-install-check.XXXXXX")
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
BASE_PYTHON=$("$DEV_PYTHON" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')

echo "== building the wheel"
"$DEV_PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" . 2>&1 | grep -v "Location '" || true
WHEEL=$(ls "$WORK"/dist/edgelm-*.whl)
"$DEV_PYTHON" - "$WHEEL" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
for needed in ("edgelm/py.typed", "edgelm/cli.py", "edgelm/engine/engine.py", "edgelm/server/app.py",
               "edgelm/export/__init__.py", "edgelm/benchmarks/backends/__init__.py"):
    assert needed in names, f"the wheel lacks {needed}"
assert not any(n.startswith("tests/") for n in names), "the wheel ships the tests"
PY

echo "== exporting a tiny model with the exporter"
"$DEV_PYTHON" - "$WORK/tiny" <<'PY'
import sys, tempfile
from pathlib import Path
from tests.conftest import build_tiny_model, char_tokenizer
from edgelm.export import export_model
hf = Path(tempfile.mkdtemp()) / "hf"
build_tiny_model("llama").save_pretrained(hf)
char_tokenizer().save_pretrained(hf)
export_model(str(hf), sys.argv[1], precision="int4", symmetric=True, check=False, quiet=True)
PY

echo "== installing the wheel into a fresh venv with its own pip"
"$BASE_PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip --version
"$WORK/venv/bin/python" -m pip install -q "$WHEEL" 2>&1 | grep -v "Location '" || true
BIN="$WORK/venv/bin"

echo "== running the runtime from the install"
cd "$WORK"  # away from the checkout, so nothing imports from the source tree
"$BIN/edgelm" --version
"$BIN/edgelm" bench --help > /dev/null
"$BIN/edgelm" info "$WORK/tiny" > "$WORK/info.txt"
grep -q "llama, int4" "$WORK/info.txt" || { cat "$WORK/info.txt"; echo "edgelm info did not describe the model"; exit 1; }
"$BIN/edgelm" generate "$WORK/tiny" "Hello" -n 4 --no-timings
"$BIN/edgelm" bench "$WORK/tiny" --pp 16 --tg 4 --reps 1 --depth 0 --no-scaling --no-idle-wait > "$WORK/bench.md"
grep -q "tg4" "$WORK/bench.md" || { cat "$WORK/bench.md"; echo "edgelm bench printed no tg4 row"; exit 1; }
"$BIN/python" - "$WORK/tiny" <<'PY'
import importlib.util, sys
import edgelm
assert "site-packages" in edgelm.__file__, edgelm.__file__
assert importlib.util.find_spec("torch") is None, "the runtime install pulled in torch"
model = edgelm.load(sys.argv[1])
text = model.generate("Hello", max_new_tokens=5, eos_token_ids=())
assert model.last_timings.generated_tokens == 5
assert "".join(model.stream("Hello", max_new_tokens=5, eos_token_ids=())) == text
reply = model.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4)
assert isinstance(reply, str)
try:
    edgelm.load("smollm2")
except edgelm.EdgelmError as exc:
    assert "unknown alias" in str(exc), exc
print("load, generate, stream, chat: ok")
PY
echo "install check: ok"
