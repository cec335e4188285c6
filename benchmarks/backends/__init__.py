"""One file per backend. Each loads a model and generates greedy tokens, stamping the time of each."""

from __future__ import annotations

import importlib

from .base import Backend, BackendUnavailable

MODULES = {
    "edgelm": "edgelm_backend",
    "transformers": "transformers_backend",
    "optimum": "optimum_backend",
    "genai": "genai_backend",
    "llamacpp": "llamacpp_backend",
}


def backend_class(name: str) -> type[Backend]:
    if name not in MODULES:
        raise BackendUnavailable(f"unknown backend {name!r}; known: {', '.join(MODULES)}")
    module = importlib.import_module(f".{MODULES[name]}", __name__)
    return module.BACKEND
