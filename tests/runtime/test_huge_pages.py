"""runtime/huge_pages.py: fully resident spans of new anonymous memory move into 2 MB pages, nothing else."""

import ctypes
import mmap
import sys

import pytest

from edgelm import memory
from edgelm.huge_pages import (HUGE_PAGE, anonymous_mappings, back_new_memory_with_huge_pages, collapse_dense_spans,
                               dense_spans, new_ranges)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps and mincore are Linux's")


def _anonymous(size: int) -> tuple[mmap.mmap, int]:
    """A private anonymous mapping of `size` bytes (untouched: nothing resident) and its address."""
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return region, ctypes.addressof(ctypes.c_char.from_buffer(region))


def _touch(region: mmap.mmap, start: int, end: int) -> None:
    for offset in range(start, end, 4096):
        region[offset] = 7


def _smaps_field(address: int, field: str) -> int:
    """`field` (kB) of the mapping that holds `address`, from /proc/self/smaps; "start": that mapping's start."""
    current = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split(" ", 1)[0]
            if "-" in head and ":" not in head:
                start, end = (int(part, 16) for part in head.split("-"))
                current = start <= address < end
                if current and field == "start":
                    return start
            elif current and line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no mapping holds {address:#x}")


@linux_only
def test_only_spans_with_every_page_resident_are_dense():
    region, address = _anonymous(8 * HUGE_PAGE)
    first = -(-address // HUGE_PAGE) * HUGE_PAGE  # the first 2 MB boundary inside the mapping
    offset = first - address
    _touch(region, offset, offset + 2 * HUGE_PAGE)  # two whole spans
    _touch(region, offset + 3 * HUGE_PAGE, offset + 4 * HUGE_PAGE - 4096)  # one page short of a third
    assert dense_spans(address, address + 8 * HUGE_PAGE) == [first, first + HUGE_PAGE]
    region.close()


@linux_only
def test_dense_spans_move_into_huge_pages_with_their_bytes_and_nothing_more_resident():
    region, address = _anonymous(8 * HUGE_PAGE)
    first = -(-address // HUGE_PAGE) * HUGE_PAGE
    offset = first - address
    _touch(region, offset, offset + 3 * HUGE_PAGE)
    region[offset + 12345] = 42
    resident_before = _smaps_field(address, "Rss")
    moved = collapse_dense_spans({(address, address + 8 * HUGE_PAGE)})
    if moved == 0:
        pytest.skip("this kernel does not collapse on request (MADV_COLLAPSE: Linux 6.1+, THP on)")
    assert moved == 3 * HUGE_PAGE
    assert _smaps_field(address, "AnonHugePages") == 3 * HUGE_PAGE // 1024
    assert _smaps_field(address, "Rss") == resident_before  # the untouched spans stay unbacked
    assert region[offset + 12345] == 42 and region[offset + 4096] == 7
    region.close()


@linux_only
def test_memory_that_was_there_before_is_left_alone():
    old, old_address = _anonymous(4 * HUGE_PAGE)
    _touch(old, 0, 4 * HUGE_PAGE)
    before = anonymous_mappings()
    assert (old_address, old_address + 4 * HUGE_PAGE) in before
    new, new_address = _anonymous(4 * HUGE_PAGE)
    _touch(new, 0, 4 * HUGE_PAGE)
    moved = back_new_memory_with_huge_pages(before)
    if moved == 0:
        pytest.skip("this kernel does not collapse on request (MADV_COLLAPSE: Linux 6.1+, THP on)")
    most_kb = 4 * HUGE_PAGE // 1024  # the new mapping's whole spans: 3 or 4, by alignment (fewer where the kernel
    huge_kb = _smaps_field(new_address, "AnonHugePages")  # answered EAGAIN/ENOMEM for a span: it is skipped)
    if _smaps_field(old_address, "start") == _smaps_field(new_address, "start"):  # the kernel merged the two mappings
        assert huge_kb <= most_kb, f"{huge_kb} kB on huge pages: the old mapping's spans were moved too"
    else:
        assert _smaps_field(old_address, "AnonHugePages") == 0
        assert huge_kb <= most_kb
    old.close()
    new.close()
    if huge_kb == 0:  # the property above holds; that the new spans move is shown here only when the kernel could
        pytest.skip("the kernel moved none of the new mapping's spans this time (memory pressure)")


def test_a_load_gives_back_freed_memory_before_it_moves_the_rest(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(memory, "release_after_load", lambda folder: calls.append(("release", folder)))
    monkeypatch.setattr(memory, "back_new_memory_with_huge_pages", lambda before: calls.append(("huge pages", before)))
    monkeypatch.setattr(memory, "anonymous_mappings", lambda: {(1, 2)})
    with memory.settled_load(tmp_path):
        calls.append("load")
    assert calls == ["load", ("release", tmp_path), ("huge pages", {(1, 2)})]


def test_a_failed_load_moves_nothing(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(memory, "back_new_memory_with_huge_pages", lambda before: calls.append(before))
    with pytest.raises(RuntimeError), memory.settled_load(tmp_path):
        raise RuntimeError("the session could not be built")
    assert calls == []


def test_new_ranges_are_what_no_earlier_range_covered():
    before = {(100, 200), (300, 400)}
    assert new_ranges(before, {(100, 200)}) == []
    assert new_ranges(before, {(100, 250)}) == [(200, 250)]  # grew
    assert new_ranges(before, {(50, 450)}) == [(50, 100), (200, 300), (400, 450)]  # merged with new neighbours
    assert new_ranges(before, {(500, 600), (300, 400)}) == [(500, 600)]


@linux_only
def test_a_kernel_without_collapse_is_asked_once(monkeypatch):
    import errno

    from edgelm import huge_pages

    calls = []

    def refusing(address, length, advice):
        calls.append(address)
        ctypes.set_errno(errno.EINVAL)
        return -1

    monkeypatch.setattr(huge_pages, "libc_function", lambda name, argtypes: refusing)
    monkeypatch.setattr(huge_pages, "dense_spans", lambda start, end: [start, start + HUGE_PAGE])
    assert collapse_dense_spans([(0, 4 * HUGE_PAGE), (8 * HUGE_PAGE, 12 * HUGE_PAGE)]) == 0
    assert calls == [0]
