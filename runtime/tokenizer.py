"""Loading the folder's tokenizer.json with the light `tokenizers` package."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from .errors import EdgelmError


def load_tokenizer(path: Path) -> Tokenizer:
    if not path.is_file():
        raise EdgelmError(f"{path} is missing; the model folder is incomplete: re-export the model")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise EdgelmError(f"{path} is not a valid tokenizers JSON file ({exc}); re-export the model") from exc
