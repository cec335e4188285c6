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
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

GROWTH_BLOCK = 256  # shared buffers grow to a multiple of this many positions


class ConcatCache:
    """Past tensors of length `length`; replaced by the graph's present outputs after each run."""

    def __init__(self, shape: tuple[int, int, int], count: int, dtype: np.dtype, device: str):
        batch, heads, head_dim = shape
        self.shape, self.dtype = shape, np.dtype(dtype)
        empty = np.zeros((batch, heads, 0, head_dim), dtype=dtype)  # a first step has no past
        self.values = [ort.OrtValue.ortvalue_from_numpy(empty, device) for _ in range(count)]
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
        """Keeps the first `length` positions: slices every past tensor (the graph concatenates onto them)."""
        if length >= self.length:
            return
        self.values = [
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[:, :, :length]), self.device)
            for v in self.values  # (batch, kv_heads, length, head_dim)
        ]
        self.length = length
        del self.tokens[length:]

    @property
    def nbytes(self) -> int:
        batch, heads, head_dim = self.shape
        return len(self.values) * batch * heads * self.length * head_dim * self.dtype.itemsize


class SharedBufferCache:
    """One buffer per tensor, bound as both past input and present output; (batch, heads, capacity, head_dim)."""

    def __init__(self, shape: tuple[int, int, int], count: int, dtype: np.dtype, device: str,
                 block: int = GROWTH_BLOCK):
        self.shape, self.count, self.dtype, self.device, self.block = shape, count, dtype, device, block
        self.values: list[ort.OrtValue] = []
        self.capacity = 0
        self.length = 0
        self.tokens: list[int] = []  # the token ids at positions [0, length) (batch 1; GraphRunner.forward keeps it)
        self._binding: ort.IOBinding | None = None
        self._bound_capacity = 0

    def binding(self, session: ort.InferenceSession) -> ort.IOBinding:
        if self._binding is None:  # kept across steps: the cache tensors stay bound until the buffers grow
            self._binding = session.io_binding()
        return self._binding

    def bind(self, binding, past_names: list[str], present_names: list[str], total: int) -> None:
        self._reserve(total)
        if self._bound_capacity == self.capacity:
            return
        for past, present, value in zip(past_names, present_names, self.values):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        self._bound_capacity = self.capacity

    def update(self, binding, total: int) -> None:
        self.length = total  # the graph wrote positions [length, total) in place

    def truncate(self, length: int) -> None:
        """Keeps the first `length` positions: attention reads only up to the sequence length bound, and the
        next run overwrites the positions after it."""
        if length < self.length:
            self.length = length
            del self.tokens[length:]

    @property
    def nbytes(self) -> int:
        batch, heads, head_dim = self.shape
        return self.count * batch * heads * self.capacity * head_dim * np.dtype(self.dtype).itemsize

    def _reserve(self, total: int) -> None:
        """Grows every buffer to hold `total` positions (at least doubling, in whole blocks)."""
        if total <= self.capacity:
            return
        capacity = -(-max(total, 2 * self.capacity) // self.block) * self.block
        batch, heads, head_dim = self.shape
        grown = []
        for old in self.values or [None] * self.count:
            data = np.zeros((batch, heads, capacity, head_dim), dtype=self.dtype)
            if old is not None and self.length:
                data[:, :, : self.length] = old.numpy()[:, :, : self.length]
            grown.append(ort.OrtValue.ortvalue_from_numpy(data, self.device))
        self.values, self.capacity = grown, capacity
