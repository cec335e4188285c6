"""edgelm: fast local LLM inference on ONNX Runtime, with no torch or transformers at run time.

Example:
    import edgelm
    model = edgelm.load("smollm2-int4")           # a folder made by `edgelm export`
    print(model.generate("Machine learning is", max_new_tokens=30))
    generator = edgelm.pipeline("text-generation", model="smollm2-135m")
    generator("Machine learning is", max_length=30)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from .errors import EdgelmError

__version__ = "0.1.0"
__all__ = ["EdgelmError", "GenerationConfig", "Manifest", "Model", "load", "pipeline", "resolve_model"]

# Imported on first use, so `import edgelm` (and the benchmark workers under it) stay cheap.
_LAZY = {
    "GenerationConfig": ".config",
    "Manifest": ".manifest",
    "Model": ".model",
    "pipeline": ".text_pipeline",
    "resolve_model": ".text_pipeline",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'edgelm' has no attribute {name!r}")


def load(folder: str | Path, device: str = "cpu", threads: int | None = None, verify: bool = False,
         prefill_graph: bool = True):
    """Loads an exported model folder (or an alias, exported once and cached) as a `Model`.

    Args:
        folder: a folder written by `edgelm export`, or anything `pipeline()` accepts.
        device: 'cpu' or 'cuda'.
        threads: CPU threads (default: one per available core; at most that many).
        verify: check every file's sha256 against the digests recorded at export (reads all weights once).
        prefill_graph: use the folder's prefill graph where it has one (int4 and gguf folders, on CPU),
            opened on the first long prompt: SmolLM2 int4 prompts ~1.4x faster for ~110 MB more
            memory from then on; False: every run on the decode graph.
    Raises:
        EdgelmError: when the folder is missing, incomplete, damaged, disagrees with its graph, or is
            from an unsupported format; with verify=True, when a file differs from the export.
    Example:
        model = edgelm.load("smollm2-int4")
        print(model.generate("Machine learning is", max_new_tokens=30))
    """
    from .text_pipeline import open_model, resolve_model

    if not isinstance(folder, (str, os.PathLike)):
        raise EdgelmError(f"folder={folder!r} is invalid: give the path of a folder made by `edgelm export`, or an alias")
    path = Path(folder).expanduser()
    if not path.is_dir():
        path = resolve_model(str(folder))
    return open_model(path, device=device, threads=threads, verify=verify, prefill_graph=prefill_graph)
