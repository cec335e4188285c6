"""Batched key/value caches: one row per running sequence, each row with its own length.

Two layouts, chosen by the manifest like the single-sequence caches in kv_cache.py:
- SlotCache (shared buffer, the fused graph's GroupQueryAttention): row b holds its tokens at
  positions [0, lengths[b]) of one buffer bound as both past and present. The graph reads each
  row's length from its attention_mask row sum, writes the new token at that position and
  rotates it by that position, so rows of different lengths need no padding at all. A tensor of
  a sliding-window layer (manifest kv.windows) keeps window_capacity(window) positions a row for
  good: the op evicts within each row by that row's own length, as in kv_cache.SharedBufferCache.
- PaddedCache (concat, optimum's graphs): rows are left-padded to a common width; the graph
  masks the padding through attention_mask and gets each row's positions in position_ids. Left
  padding keeps a row's tokens contiguous, so sliding-window masks still measure true distances.
- RowCaches (concat graphs without a position_ids input): a single-sequence cache per row, run
  row by row, since such graphs take positions from the cache length and padding would shift them.

Rows stay packed: a leaving row is replaced by the last one (`remove` returns which row moved),
so a step always runs rows [0, n).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..kv_cache import window_capacity

GROWTH_BLOCK = 256  # slot buffers grow to a multiple of this many positions


class SlotCache:
    """Shared past/present buffers (rows, kv_heads, capacity, head_dim), grown as rows and lengths do."""

    def __init__(self, heads: int, head_dim: int, count: int, dtype: np.dtype, block: int = GROWTH_BLOCK,
                 windows: list[int] | None = None):
        self.heads, self.head_dim, self.count, self.dtype, self.block = heads, head_dim, count, dtype, block
        self.windows = list(windows or [0] * count)  # per tensor: its sliding window if the buffer is window-sized
        self.buffers: list[np.ndarray] = []  # count x (rows, heads, positions, head_dim); the graph writes in place
        self.lengths: list[int] = []  # positions held by each active row
        self.rows = 0  # rows allocated
        self.capacity = 0  # positions allocated per row of the full-length buffers
        self.version = 0  # bumped whenever the buffers are replaced
        self._binding: ort.IOBinding | None = None
        self._bound: tuple[int, int] | None = None  # (rows bound, buffers version) of the cached binding

    @property
    def size(self) -> int:
        return len(self.lengths)

    def add(self) -> int:
        """A new empty row; returns its index."""
        self.lengths.append(0)
        self.reserve(self.size, 1)
        return self.size - 1

    def remove(self, row: int) -> int:
        """Frees `row` by moving the last row into it; returns the index that moved (or -1)."""
        last = self.size - 1
        if row != last:
            length = self.lengths[last]
            for buf, window in zip(self.buffers, self.windows):
                if window:
                    buf[row] = buf[last]  # where its positions sit depends on the evictions so far: all rows
                else:
                    buf[row, :, :length] = buf[last, :, :length]
            self.lengths[row] = length
        self.lengths.pop()
        return last if row != last else -1

    def reserve(self, rows: int, length: int) -> None:
        """Grows the buffers to hold `rows` rows of `length` positions (at least doubling, length in whole blocks)."""
        if rows <= self.rows and length <= self.capacity:
            return
        new_rows = max(rows, self.rows if rows <= self.rows else 2 * self.rows, 1)
        new_cap = self.capacity
        if length > self.capacity:
            new_cap = -(-max(length, 2 * self.capacity) // self.block) * self.block
        grown = []
        for old, window in zip(self.buffers or [None] * self.count, self.windows):
            if window and old is not None and new_rows == self.rows:
                grown.append(old)  # window-sized for good: only more rows make it grow
                continue
            positions = window_capacity(window) if window else new_cap
            data = np.zeros((new_rows, self.heads, positions, self.head_dim), dtype=self.dtype)
            if old is not None:
                data[: self.rows, :, : old.shape[2]] = old
            grown.append(data)
        self.buffers, self.rows, self.capacity = grown, new_rows, new_cap
        self.version += 1

    def fill_row(self, row: int, cache) -> None:
        """Copies a single-sequence SharedBufferCache into `row`: the same positions sit at the same rows
        (a windowed tensor has window_capacity(window) rows in both, evicted by the same rule)."""
        self.reserve(self.size, cache.length)
        for buf, value, window in zip(self.buffers, cache.values, self.windows):
            rows = cache.resident_rows(window)
            buf[row, :, :rows] = value.numpy()[0, :, :rows]
        self.lengths[row] = cache.length

    def row_cache(self, row: int) -> "_RowView":
        """A single-sequence cache (the interface GraphRunner.prefill takes) writing into `row`."""
        return _RowView(self, row)

    # -- one decode step over rows [0, n) --------------------------------------------------------
    def step_inputs(self) -> dict[str, np.ndarray]:
        lengths = np.array(self.lengths, dtype=np.int64)  # (n,)
        total = int(lengths.max()) + 1
        self.reserve(self.size, total)
        mask = (np.arange(total)[None, :] <= lengths[:, None]).astype(np.int64)  # (n, total): row sum = length + 1
        return {"attention_mask": mask, "position_ids": lengths[:, None].copy()}  # (n, 1): the new token's position

    def binding(self, session: ort.InferenceSession) -> ort.IOBinding:
        key = (self.size, self.version)
        if self._binding is None or self._bound != key:  # rebinds only when rows or buffers change
            self._binding, self._bound = session.io_binding(), None
        return self._binding

    def bind(self, binding: ort.IOBinding, past_names: list[str], present_names: list[str]) -> None:
        key = (self.size, self.version)
        if self._bound == key:
            return
        n = self.size
        for past, present, buf in zip(past_names, present_names, self.buffers):
            value = ort.OrtValue.ortvalue_from_numpy(buf[:n])  # a view: the graph writes into the buffer
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        self._bound = key

    def advance(self, binding: ort.IOBinding) -> None:
        self.lengths = [length + 1 for length in self.lengths]


class _RowView:
    """One row of a SlotCache seen as a batch-1 shared-buffer cache, for prefilling a new sequence."""

    def __init__(self, slots: SlotCache, row: int):
        self.slots, self.row = slots, row
        self.length = slots.lengths[row]
        self.tokens: list[int] = []  # GraphRunner.forward records the ids it ran (for prefix reuse; unused here)

    def binding(self, session: ort.InferenceSession) -> ort.IOBinding:
        return session.io_binding()

    def bind(self, binding, past_names: list[str], present_names: list[str], total: int) -> None:
        self.slots.reserve(self.slots.size, total)
        r = self.row
        for past, present, buf in zip(past_names, present_names, self.slots.buffers):
            value = ort.OrtValue.ortvalue_from_numpy(buf[r : r + 1])  # (1, heads, capacity, head_dim) view
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)

    def update(self, binding, total: int) -> None:
        self.length = self.slots.lengths[self.row] = total


class PaddedCache:
    """Concat-layout caches (rows, kv_heads, width, head_dim), each row's tokens at its right end."""

    def __init__(self, heads: int, head_dim: int, count: int, dtype: np.dtype):
        self.heads, self.head_dim, self.count, self.dtype = heads, head_dim, count, dtype
        self.values: list[ort.OrtValue] = []  # count x (n, heads, width, head_dim); the graph returns new ones
        self.lengths: list[int] = []
        self.width = 0
        self._present_names: list[str] = []

    @property
    def size(self) -> int:
        return len(self.lengths)

    def _arrays(self) -> list[np.ndarray]:
        if not self.values:
            return [np.zeros((0, self.heads, 0, self.head_dim), dtype=self.dtype) for _ in range(self.count)]
        return [np.array(v.numpy()) for v in self.values]  # copies: numpy() may only borrow the OrtValue's memory

    def _set(self, arrays: list[np.ndarray]) -> None:
        self.values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a)) for a in arrays]

    def add(self, pasts: list[np.ndarray]) -> int:
        """Appends a prefilled sequence (count x (1, heads, length, head_dim)); returns its row."""
        length = pasts[0].shape[2]
        width = max(self.width, length)
        merged = []
        for old, new in zip(self._arrays(), pasts):
            old = _left_pad(old, width - self.width)  # (n, heads, width, head_dim)
            merged.append(np.concatenate([old, _left_pad(new, width - length)], axis=0))
        self._set(merged)
        self.width = width
        self.lengths.append(length)
        return self.size - 1

    def remove(self, row: int) -> int:
        """Drops `row` (the last row moves into it) and any padding column no row needs; returns the moved row or -1."""
        last = self.size - 1
        self.lengths[row] = self.lengths[last]
        self.lengths.pop()
        trim = self.width - max(self.lengths, default=0)  # leading columns that are padding in every row
        arrays = []
        for a in self._arrays():
            a[row] = a[last]
            arrays.append(a[:last, :, trim:])
        self._set(arrays)
        self.width -= trim
        return last if row != last else -1

    def step_inputs(self) -> dict[str, np.ndarray]:
        lengths = np.array(self.lengths, dtype=np.int64)  # (n,)
        pad = self.width - lengths
        mask = (np.arange(self.width + 1)[None, :] >= pad[:, None]).astype(np.int64)  # (n, width + 1): 0 on padding
        return {"attention_mask": mask, "position_ids": lengths[:, None].copy()}  # (n, 1)

    def binding(self, session: ort.InferenceSession) -> ort.IOBinding:
        return session.io_binding()

    def bind(self, binding: ort.IOBinding, past_names: list[str], present_names: list[str]) -> None:
        for name, value in zip(past_names, self.values):
            binding.bind_ortvalue_input(name, value)
        for name in present_names:
            binding.bind_output(name, "cpu")
        self._present_names = present_names

    def advance(self, binding: ort.IOBinding) -> None:
        self.values = binding.get_outputs()[-len(self._present_names):]  # bound after the logits
        self.width += 1
        self.lengths = [length + 1 for length in self.lengths]


def _left_pad(array: np.ndarray, pad: int) -> np.ndarray:
    """`array` (rows, heads, length, head_dim) with `pad` zero positions in front."""
    if pad == 0:
        return array
    return np.pad(array, ((0, 0), (0, 0), (pad, 0), (0, 0)))


class RowCaches:
    """One single-sequence cache per row, decoded one row at a time.

    For concat graphs without a `position_ids` input: they derive positions from the cache
    length, so a left-padded row would get its padding counted as positions. Such models
    still join and leave between steps, but gain no speed from sharing a step.
    """

    def __init__(self):
        self.caches: list = []  # ConcatCache or SharedBufferCache, one per row

    @property
    def size(self) -> int:
        return len(self.caches)

    def add(self, cache) -> int:
        self.caches.append(cache)
        return self.size - 1

    def remove(self, row: int) -> int:
        last = self.size - 1
        self.caches[row] = self.caches[last]
        self.caches.pop()
        return last if row != last else -1
