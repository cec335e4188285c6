"""edgelm: fast local LLM inference on ONNX Runtime, with no torch or transformers at run time.

Example:
    import edgelm
    model = edgelm.load("smollm2-int4")           # a folder made by `edgelm export`
    print(model.generate("Machine learning is", max_new_tokens=30))
    generator = edgelm.pipeline("text-generation", model="smollm2-135m")
    generator("Machine learning is", max_length=30)
"""

from __future__ import annotations

from pathlib import Path

from .config import GenerationConfig
from .errors import EdgelmError
from .manifest import Manifest
from .model import Model
from .pipeline import pipeline, resolve_model

__version__ = "0.1.0"
__all__ = ["EdgelmError", "GenerationConfig", "Manifest", "Model", "load", "pipeline", "resolve_model"]


def load(folder: str | Path, device: str = "cpu", threads: int | None = None) -> Model:
    """Loads an exported model folder (or an alias, exported once and cached).

    Args:
        folder: a folder written by `edgelm export`, or anything `pipeline()` accepts.
        device: 'cpu' or 'cuda'.
        threads: CPU threads (default: one per available core).
    Raises:
        EdgelmError: when the folder is missing, incomplete or from an unsupported format.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        path = resolve_model(str(folder))
    return Model(path, device=device, threads=threads)
