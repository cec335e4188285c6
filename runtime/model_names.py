"""Telling what a model name is before anything slow happens: a folder, a file, an alias or a hub id."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from .aliases import ALIASES
from .errors import EdgelmError

# A Hugging Face hub id as the hub accepts it: owner/name, letters, digits, '.', '_' and '-'.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
ACCEPTED = "an edgelm model folder, an alias ({aliases}), a Hugging Face folder, a .gguf file, or a hub id (owner/name)"


def looks_like_hub_id(name: str) -> bool:
    """True for `owner/name` that is not, recognisably, a local path (its first part is no local folder)."""
    if not HUB_ID.match(name) or "--" in name or ".." in name:
        return False
    return not Path(name.split("/")[0]).expanduser().is_dir()


def check_model_name(name: str) -> None:
    """Raises EdgelmError at once for a name that is no existing path, no alias and no hub id.

    Args:
        name: what the user typed for a model.
    Raises:
        EdgelmError: naming the closest alias, if one is close, and what is accepted.
    Example:
        check_model_name("smollm2")  # EdgelmError: unknown alias or folder 'smollm2'; did you mean smollm2-135m? ...
    """
    if name in ALIASES or Path(name).expanduser().exists() or looks_like_hub_id(name):
        return
    aliases = ", ".join(ALIASES)
    close = difflib.get_close_matches(name, list(ALIASES), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    local = name.endswith(".gguf") or name.startswith((".", "/", "~")) or "/" in name or "\\" in name
    if local:
        raise EdgelmError(f"{name} does not exist: give {ACCEPTED.format(aliases=aliases)}")
    raise EdgelmError(f"unknown alias or folder {name!r}{hint}; known aliases: {aliases}. "
                      f"Give {ACCEPTED.format(aliases=aliases)}")
