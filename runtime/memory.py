"""Handing the C heap's freed memory back to the operating system after a load.

Parsing a tokenizer.json leaves several times the file's size in blocks that the `tokenizers`
library has freed but glibc's allocator keeps for later: Gemma 3's 33 MB tokenizer (513,511
merges) held ~370 MB of resident memory after `Tokenizer.from_file`, ~50 MB after
`malloc_trim(0)`. A model loads once and then allocates little, so that memory would stay
counted against the process for its whole life. `malloc_trim` only returns free pages; it
changes no allocator setting. Elsewhere than glibc (macOS, Windows, musl) nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # no C library by that name, or one without malloc_trim (musl)
        return None


def release_freed_memory() -> None:
    """Returns the C heap's free pages to the operating system, where the C library can (glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
