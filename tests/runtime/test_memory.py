"""runtime/memory.py: freed C-heap memory and the weight files' pages go back to the operating system after a load."""

import ctypes
import ctypes.util
import mmap
import os
import sys
from pathlib import Path

import pytest

from edgelm.memory import _malloc_trim, mapped_ranges, release_freed_memory, release_mapped_pages


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


def resident_kb(ranges) -> int:
    """Resident kB of the mappings that start at the given addresses (/proc/self/smaps)."""
    starts, total, current = {start for start, _ in ranges}, 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(" ", 1)[0]
            if "-" in head and ":" not in head:
                current = int(head.split("-")[0], 16) in starts
            elif current and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def _mapped_and_read(path: Path) -> mmap.mmap:
    path.write_bytes(os.urandom(8 << 20))
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    sum(mapped[i] for i in range(0, len(mapped), 4096))  # every page read: resident
    return mapped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps and madvise are Linux's")
def test_pages_of_the_folders_files_are_released_and_read_back_unchanged(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "other").mkdir()
    ours, theirs = _mapped_and_read(tmp_path / "model" / "w.data"), _mapped_and_read(tmp_path / "other" / "w.data")
    content = ours[:]
    ranges = mapped_ranges(tmp_path / "model")
    assert len(ranges) == 1 and resident_kb(ranges) >= 8 * 1024 - 64
    asked = release_mapped_pages(tmp_path / "model")
    if asked == 0:
        pytest.skip("this kernel has no MADV_PAGEOUT (Linux < 5.4)")
    assert asked >= 8 << 20
    assert resident_kb(ranges) < 1024  # reclaimed
    assert resident_kb(mapped_ranges(tmp_path / "other")) >= 8 * 1024 - 64  # another folder's pages stay
    assert ours[:] == content  # read back from the file, unchanged
    ours.close()
    theirs.close()


def test_a_folder_without_mapped_files_releases_nothing(tmp_path):
    assert mapped_ranges(tmp_path) == [] and release_mapped_pages(tmp_path) == 0
