"""sha256 digests of a model folder's files: recorded at export, checked by `edgelm.load(..., verify=True)`."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import EdgelmError
from .manifest_checks import inside_folder

MANIFEST_NAME = "edgelm.json"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digests(folder: Path) -> dict[str, str]:
    """{relative name: sha256} of every file in `folder` but the manifest itself, in name order."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}


def verify_digests(folder: Path, recorded: dict[str, str]) -> None:
    """Raises EdgelmError naming the first file whose sha256 differs from the one recorded at export."""
    if not recorded:
        raise EdgelmError(
            f"{folder} records no file digests (it was exported before edgelm recorded them), so verify=True "
            "cannot check it; re-export the model, or load it without verify"
        )
    for name, expected in recorded.items():
        path = inside_folder(Path(folder), name, f"files[{name!r}]")
        if not path.is_file():
            raise EdgelmError(f"{path} is missing; the model folder is incomplete: re-export the model")
        if file_sha256(path) != expected:
            raise EdgelmError(
                f"{path} does not match the sha256 recorded at export: the file is corrupt or was changed; "
                "re-export the model or copy the folder again"
            )
