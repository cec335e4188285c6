"""Handing memory that a load leaves behind back to the operating system.

Two kinds, both measured on Gemma 3 270M int4 (resident memory right after `edgelm.load`):

- The C heap's freed blocks. Parsing a tokenizer.json leaves several times the file's size in
  blocks that the `tokenizers` library has freed but glibc's allocator keeps for later: Gemma 3's
  33 MB tokenizer (513,511 merges) held ~370 MB after `Tokenizer.from_file`, ~50 MB after
  `malloc_trim(0)` (`release_freed_memory`).
- Pages of the model's own files. onnxruntime maps each external initializer from the folder's
  .onnx.data files, and packing the 4-bit weights for its kernels reads every page of them once;
  the kernels then read the packed copy, never those pages again. A table that the LM head shares
  with the embedding stays mapped for the embedding's lookups (one row a token), all of it still
  resident: Gemma 3 int4 536 -> 421 MB after the load, SmolLM2 int4 214 -> 183 MB.
  `release_mapped_pages` asks the kernel to reclaim the folder's mapped pages (madvise
  MADV_PAGEOUT, Linux 5.4+); a page that is read later is read back from the file, as on first use. It is a hint that never changes what a
  mapping holds (a page written since it was mapped is kept), so a graph that does read its
  mapped weights every run only loses them until its next run. A page that another mapping also
  holds (a second load of the same folder, in this process or another) is left where it is.

Both only give back what the process no longer uses; they change no allocator or kernel setting.
Elsewhere than glibc on Linux (macOS, Windows, musl, older kernels) nothing happens.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from pathlib import Path

from .huge_pages import anonymous_mappings, back_new_memory_with_huge_pages
from .libc import libc_function
from .process_maps import process_mappings

MADV_PAGEOUT = 21  # linux/mman.h: reclaim these pages now (since Linux 5.4)


def _malloc_trim():
    return libc_function("malloc_trim", (ctypes.c_size_t,))  # None in a C library without it (musl)


def _madvise():
    return libc_function("madvise", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int))


def release_freed_memory() -> None:
    """Returns the C heap's free pages to the operating system, where the C library can (glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def release_after_load(folder: Path) -> None:
    """Both, after a session on `folder`'s graphs opens: the freed heap, then the weight files' pages."""
    release_freed_memory()
    release_mapped_pages(folder)


@contextmanager
def settled_load(folder: Path):
    """Around the building of sessions on `folder`'s graphs: once they are built, gives back what the load left
    behind (release_after_load) and then moves the packed weights into huge pages (huge_pages.py).

    In that order: giving back freed heap pages after the move would split the huge pages around them.
    """
    before = anonymous_mappings()
    yield
    release_after_load(folder)
    back_new_memory_with_huge_pages(before)


def mapped_ranges(folder: Path) -> list[tuple[int, int]]:
    """(start, end) addresses of this process's mappings of files inside `folder` (Linux; else [])."""
    root = os.path.realpath(folder) + os.sep
    return [(mapping.start, mapping.end) for mapping in process_mappings() if mapping.path.startswith(root)]


def release_mapped_pages(folder: Path) -> int:
    """Asks the kernel to reclaim this process's resident pages of files in `folder`; returns the bytes asked.

    0 where there is nothing to ask or no way to ask (see the module's docstring).
    """
    madvise = _madvise()
    if madvise is None:
        return 0
    asked = 0
    for start, end in mapped_ranges(folder):
        if madvise(start, end - start, MADV_PAGEOUT) == 0:  # -1 (EINVAL) before Linux 5.4: nothing to do
            asked += end - start
    return asked
