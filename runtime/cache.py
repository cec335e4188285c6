"""The exports that `pipeline()` and `load()` keep in the cache folder: listing and removing them."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .aliases import cache_root
from .errors import EdgelmError
from .manifest import MANIFEST_NAME


@dataclass
class CachedModel:
    """One model folder in the cache, as `edgelm models` lists it."""

    name: str  # the folder's name in the cache
    folder: Path
    precision: str  # fp32, int8 or int4
    size_mb: float  # every file in the folder
    source: str  # what was exported: kind and id
    perplexity: float | None  # measured at export time, None when the export was not validated


def cached_models(root: Path | None = None) -> list[CachedModel]:
    """Every edgelm model folder directly under `root` (default: the cache folder), by name.

    Folders without a manifest (a half-written export's staging folder, a stray directory) are left
    out; one whose manifest cannot be read is listed as damaged, so that it can be removed.
    """
    root = root or cache_root()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / MANIFEST_NAME).exists():
            continue
        try:
            data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
            data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            data = {"source": {"kind": "damaged:", "id": f"{MANIFEST_NAME} unreadable (remove it)"}}
        source = data.get("source") if isinstance(data.get("source"), dict) else {}
        found.append(CachedModel(
            name=folder.name,
            folder=folder,
            precision=str(data.get("precision", "?")),
            size_mb=round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 1),
            source=f"{source.get('kind', '?')} {source.get('id', '?')}",
            perplexity=(data.get("validation") or {}).get("perplexity"),
        ))
    return found


def remove_cached(name: str, root: Path | None = None) -> Path:
    """Deletes the cached model folder called `name`; returns the folder removed.

    Raises:
        EdgelmError: when `name` is not a model folder in the cache (nothing else is ever deleted).
    """
    models = {m.name: m for m in cached_models(root)}
    if name not in models:
        known = ", ".join(models) or "none"
        raise EdgelmError(f"no cached model called {name!r} in {root or cache_root()}; cached: {known}")
    folder = models[name].folder
    if folder.is_symlink():  # a link the user put there: the link goes, never what it points to
        folder.unlink()
    else:
        shutil.rmtree(folder)
    return folder


def table(models: list[CachedModel]) -> str:
    """A plain-text table of `models`, one row each, for the terminal."""
    rows = [("name", "precision", "size", "source", "perplexity")]
    for m in models:
        ppl = f"{m.perplexity:.2f}" if isinstance(m.perplexity, (int, float)) else "-"
        rows.append((m.name, m.precision, f"{m.size_mb:.1f} MB", m.source, ppl))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
