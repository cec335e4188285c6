"""Key/value cache buffers: how past and present tensors are bound to the graph each step.

Two layouts, chosen by the manifest (never by model type):
- concat: the graph returns `present = concat(past, new)`; each step's present becomes the
  next step's past (optimum's graphs). Every step copies the whole cache.
- shared: the graph writes new positions into the past buffer in place (GroupQueryAttention
  with past and present bound to one buffer), so a step touches only its own positions. The
  buffer grows in blocks as the sequence does, never preallocated for the whole context.

Both remember the token ids they hold (`tokens`, for batch 1) and can be cut back to a prefix
(`truncate`), which is all that prefix reuse needs: a later prompt that starts with the same
tokens runs only the rest.

Layers with a sliding window may keep a window-sized cache (manifest `kv.windows`; the graph's
GroupQueryAttention has `sliding_window_cache`): the attention op keeps the most recent positions
at rows [0, L) of a fixed buffer and evicts the rest itself, so a windowed layer reads at most a
window of positions per step however long the sequence gets. Such buffers are never grown or
sliced here; a cut that would need evicted positions drops the whole cache instead.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

GROWTH_BLOCK = 256  # shared buffers grow to a multiple of this many positions


def window_capacity(window: int) -> int:
    """Rows of a windowed shared buffer: the window plus slack, so the op compacts once per slack steps."""
    return window + max(16, window // 4)


def resident(total: int, capacity: int, window: int) -> int:
    """Positions a windowed buffer of `capacity` rows holds after `total` tokens (onnxruntime's GQA contract)."""
    if total <= capacity:
        return total
    reclaimed = capacity - window + 1  # positions evicted at once when the buffer is full
    return total - reclaimed * -(-(total - capacity) // reclaimed)


def exact_cut(length: int, total: int, capacity: int, window: int) -> bool:
    """Whether a windowed buffer holding `total` tokens still holds the layout of its first `length` tokens."""
    return resident(length, capacity, window) == resident(total, capacity, window) - (total - length)


def cut_length(length: int, total: int, windows: list[int], capacity) -> int:
    """`length` if every windowed buffer (`capacity(window)` rows) can go back to it, else 0: start over."""
    return length if all(exact_cut(length, total, capacity(w), w) for w in windows if w) else 0


class ConcatCache:
    """Past tensors of length `length`; replaced by the graph's present outputs after each run."""

    def __init__(self, shape: tuple[int, int, int], count: int, dtype: np.dtype, device: str,
                 windows: list[int] | None = None):
        batch, heads, head_dim = shape
        self.shape, self.dtype = shape, np.dtype(dtype)
        # a first step has no past; a windowed tensor keeps a buffer of exactly its window (what CUDA requires)
        self.windows = list(windows or [0] * count)
        self.values = [ort.OrtValue.ortvalue_from_numpy(np.zeros((batch, heads, w, head_dim), dtype=dtype), device)
                       for w in self.windows]
        self.device = device
        self.length = 0  # positions already in the cache
        self.tokens: list[int] = []  # the token ids at those positions (batch 1; GraphRunner.forward keeps it)
        self.present_names: list[str] = []

    def binding(self, session: ort.InferenceSession) -> ort.IOBinding:
        return session.io_binding()  # a fresh one: every step binds new tensors

    def bind(self, binding, past_names: list[str], present_names: list[str], total: int) -> None:
        for name, value in zip(past_names, self.values):
            binding.bind_ortvalue_input(name, value)
        for name in present_names:
            binding.bind_output(name, self.device)
        self.present_names = present_names

    def update(self, binding, total: int) -> None:
        presents = binding.get_outputs()[-len(self.present_names):]  # bound after the logits
        self.values = presents
        self.length = total

    def truncate(self, length: int) -> None:
        """Keeps the first `length` positions (0 if a windowed tensor no longer holds them; see `length`).

        Slices every full-length past tensor (the graph concatenates onto them); windowed ones stay as they are.
        """
        if length >= self.length:
            return
        length = cut_length(length, self.length, self.windows, capacity=lambda window: window)
        self.values = [
            value if window else
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value.numpy()[:, :, :length]), self.device)
            for value, window in zip(self.values, self.windows)  # (batch, kv_heads, length, head_dim)
        ]
        self.length = length
        del self.tokens[length:]

    @property
    def nbytes(self) -> int:
        batch, heads, head_dim = self.shape
        rows = sum(w or self.length for w in self.windows)
        return batch * heads * rows * head_dim * self.dtype.itemsize


class SharedBufferCache:
    """One buffer per tensor, bound as both past input and present output; (batch, heads, capacity, head_dim)."""

    def __init__(self, shape: tuple[int, int, int], count: int, dtype: np.dtype, device: str,
                 block: int = GROWTH_BLOCK, windows: list[int] | None = None):
        self.shape, self.count, self.dtype, self.device, self.block = shape, count, dtype, device, block
        self.windows = list(windows or [0] * count)  # per tensor: its sliding window if the buffer is window-sized
        self.values: list[ort.OrtValue] = []
        self.capacity = 0  # rows of the full-length buffers (windowed ones have window_capacity rows for good)
        self.length = 0
        self.tokens: list[int] = []  # the token ids at positions [0, length) (batch 1; GraphRunner.forward keeps it)
        # one binding per session (a prompt may run on a prefill session, the steps on the decode one),
        # kept across steps: the cache tensors stay bound until the buffers grow
        self._bindings: list[tuple[ort.InferenceSession, ort.IOBinding]] = []
        self._bound_capacity: dict[int, int] = {}  # id(binding) -> the capacity its cache tensors were bound at
        # an int8 cache's float copy (kv_quant.py), kept from one chunk of a prompt to the next; any other run or
        # cut of this cache drops it
        self.float_twin: SharedBufferCache | None = None

    def binding(self, session: ort.InferenceSession) -> ort.IOBinding:
        for known, binding in self._bindings:
            if known is session:
                return binding
        self._bindings.append((session, session.io_binding()))
        return self._bindings[-1][1]

    def bind(self, binding, past_names: list[str], present_names: list[str], total: int) -> None:
        self.reserve(total)
        if self._bound_capacity.get(id(binding)) == self.capacity:
            return
        for past, present, value in zip(past_names, present_names, self.values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        self._bound_capacity[id(binding)] = self.capacity

    def update(self, binding, total: int) -> None:
        self.length = total  # the graph wrote positions [length, total) in place
        self.float_twin = None

    def truncate(self, length: int) -> None:
        """Keeps the first `length` positions: attention reads only up to the sequence length bound, and the
        next run overwrites the positions after it. A windowed buffer that has evicted some of those positions
        cannot go back, and then the whole cache is dropped (`length` becomes 0)."""
        if length >= self.length:
            return
        self.float_twin = None
        length = cut_length(length, self.length, self.windows, capacity=window_capacity)
        self.length = length
        del self.tokens[length:]

    def resident_rows(self, window: int) -> int:
        """How many rows, from row 0, of a buffer with sliding window `window` (0: full length) hold positions."""
        return resident(self.length, window_capacity(window), window) if window else self.length

    @property
    def nbytes(self) -> int:
        batch, heads, head_dim = self.shape
        rows = sum(window_capacity(w) if w else self.capacity for w in self.windows) if self.values else 0
        return batch * heads * rows * head_dim * np.dtype(self.dtype).itemsize

    def reserve(self, total: int) -> None:
        """Grows every buffer to hold `total` positions (at least doubling, in whole blocks)."""
        if total <= self.capacity:
            return
        capacity = -(-max(total, 2 * self.capacity) // self.block) * self.block
        batch, heads, head_dim = self.shape
        grown = []
        for old, window in zip(self.values or [None] * self.count, self.windows):
            if window and old is not None:  # allocated once, at its final size
                grown.append(old)
                continue
            rows = window_capacity(window) if window else capacity
            data = np.zeros((batch, heads, rows, head_dim), dtype=self.dtype)
            if old is not None and self.length:
                data[:, :, : self.length] = old.numpy()[:, :, : self.length]
            grown.append(ort.OrtValue.ortvalue_from_numpy(data, self.device))
        self.values, self.capacity = grown, capacity
