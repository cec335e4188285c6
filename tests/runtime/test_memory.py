"""runtime/memory.py: freed C-heap memory goes back to the operating system after a load."""

import ctypes
import ctypes.util
import sys

import pytest

from edgelm.memory import _malloc_trim, release_freed_memory


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None, reason="glibc's malloc_trim only")
def test_freed_blocks_between_live_ones_are_returned():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4000) for _ in range(25_000)]  # ~100 MB of small blocks, below mmap's threshold
    for block in blocks:
        ctypes.memset(block, 1, 4000)  # touched: resident
    kept = blocks[::32]
    for i, block in enumerate(blocks):
        if i % 32:
            libc.free(block)  # freed, but between live blocks: glibc keeps the pages
    before = _rss_mb()
    release_freed_memory()
    after = _rss_mb()
    for block in kept:
        libc.free(block)
    assert before - after > 40, (before, after)
