"""Backing the packed weights with 2 MB pages (Linux transparent huge pages), after a session is built.

A decode step streams every packed weight once: ~100 MB on SmolLM2 int4, in ~25,000 pages of 4 kB,
far more than the TLB holds, so each step pays thousands of page walks (more under a hypervisor,
whose walks are two-level). onnxruntime packs the weights into buffers from the C heap, and
Linux's usual setting (`transparent_hugepage/enabled` = madvise) gives such memory 4 kB pages
unless it is asked for more. Measured on SmolLM2 int4, 2 threads (harness figures in the README).

`collapse_dense_spans` asks the kernel (madvise MADV_COLLAPSE, Linux 6.1+) to move each 2 MB span of
anonymous memory whose 512 pages are all resident into one huge page. Only such spans: a span with
pages that were never touched or were given back (malloc_trim) is left alone, so resident memory
does not grow. The bytes stay the same; only the page size under them changes. Where the kernel
cannot (older kernel, THP off, no free 2 MB block) the span keeps its small pages and nothing fails.
"""

from __future__ import annotations

import ctypes
import errno
import logging

import numpy as np

from .libc import libc_function
from .process_maps import process_mappings

log = logging.getLogger(__name__)

HUGE_PAGE = 2 << 20
SMALL_PAGE = 4096
MADV_COLLAPSE = 25  # linux/mman.h (since Linux 6.1)


def anonymous_mappings() -> set[tuple[int, int]]:
    """(start, end) of this process's private writable mappings backed by no file, the C heap among them."""
    return {(mapping.start, mapping.end) for mapping in process_mappings()
            if mapping.perms.startswith("rw") and mapping.perms[3:] == "p" and mapping.path in ("", "[heap]")}


def dense_spans(start: int, end: int) -> list[int]:
    """Addresses of the 2 MB-aligned spans within [start, end) whose pages are all resident (mincore)."""
    mincore = libc_function("mincore", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p))
    first, last = -(-start // HUGE_PAGE) * HUGE_PAGE, end // HUGE_PAGE * HUGE_PAGE
    if mincore is None or last <= first:
        return []
    pages = (last - first) // SMALL_PAGE
    resident = ctypes.create_string_buffer(pages)
    if mincore(first, last - first, resident) != 0:
        return []
    spans = (np.frombuffer(resident.raw, np.uint8) & 1).reshape(-1, HUGE_PAGE // SMALL_PAGE).all(axis=1)
    return [first + int(i) * HUGE_PAGE for i in np.flatnonzero(spans)]


def collapse_dense_spans(ranges) -> int:
    """Moves the fully resident 2 MB spans within the (start, end) `ranges` into huge pages; returns the bytes moved.

    Stops at the first EINVAL (a kernel before 6.1, or THP off): no other span would fare better. A span
    the kernel cannot move now (EAGAIN, ENOMEM: no free 2 MB block) keeps its small pages.
    """
    madvise = libc_function("madvise", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int))
    if madvise is None:
        return 0
    moved = kept = 0
    for span in (span for start, end in sorted(ranges) for span in dense_spans(start, end)):
        if madvise(span, HUGE_PAGE, MADV_COLLAPSE) == 0:
            moved += HUGE_PAGE
        elif ctypes.get_errno() == errno.EINVAL:
            log.debug("huge pages: this kernel does not move pages on request (MADV_COLLAPSE)")
            break
        else:
            kept += 1
    if kept:
        log.debug("huge pages: the kernel kept small pages in %d spans", kept)
    return moved


def new_ranges(before: set[tuple[int, int]], now: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """The address ranges of `now` that no range of `before` covered: a mapping that grew, or that merged
    with a newer neighbour, contributes only its new part."""
    ranges = []
    for start, end in sorted(now):
        for old_start, old_end in sorted(before):
            if old_end <= start or old_start >= end:
                continue
            if old_start > start:
                ranges.append((start, old_start))
            start = max(start, old_end)
        if start < end:
            ranges.append((start, end))
    return ranges


def back_new_memory_with_huge_pages(before: set[tuple[int, int]]) -> int:
    """Collapses the dense spans of the anonymous memory mapped since `before` (anonymous_mappings()).

    The C heap's new part counts, which a session's packed weights make it grow by.
    """
    moved = collapse_dense_spans(new_ranges(before, anonymous_mappings()))
    log.debug("huge pages: %.1f MB of new anonymous memory moved into 2 MB pages", moved / 2**20)
    return moved
