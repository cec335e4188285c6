"""Loading the folder's tokenizer.json with the light `tokenizers` package."""

from __future__ import annotations

from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

from .errors import EdgelmError
from .versions import release


def load_tokenizer(path: Path, made_with: str | None = None) -> Tokenizer:
    """The folder's tokenizer; `made_with`: the tokenizers version that wrote it (manifest `versions`).

    A tokenizers release older than the writer's may not read its format (0.19 reads no tokenizer.json
    of 0.20 and later: merges as pairs), which the error then says instead of asking for a re-export.
    """
    if not path.is_file():
        raise EdgelmError(f"{path} is missing; the model folder is incomplete: re-export the model")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        if made_with and release(tokenizers.__version__) < release(made_with):
            fix = (f"it was written with tokenizers {made_with} and this process has {tokenizers.__version__}, "
                   f"which may not read its format: pip install -U 'tokenizers>={made_with}'")
        else:
            fix = "re-export the model"
        raise EdgelmError(f"{path} is not a valid tokenizers JSON file ({exc}); {fix}") from exc
