"""The runtime promise: import edgelm and generate with torch and transformers unavailable."""

import subprocess
import sys

BLOCKER = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'optimum'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
import edgelm
model = edgelm.load(sys.argv[1])
text = model.generate('Hello', max_new_tokens=5, eos_token_ids=())
model.generate('Hello', json_schema={'type': 'boolean'}, max_new_tokens=8)  # constrained decoding: llguidance only
out = edgelm.pipeline('text-generation', model=sys.argv[1])('Hello', max_length=8)
assert out[0]['generated_text'].startswith('Hello')
heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum')]
assert not heavy, heavy
model.generate('Hello', max_new_tokens=5, eos_token_ids=())
print('GENERATED', model.last_timings.generated_tokens)
"""


def test_runtime_generates_without_torch_or_transformers(exported):
    folder = exported("llama", "int4")
    result = subprocess.run([sys.executable, "-c", BLOCKER, str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "GENERATED 5" in result.stdout
