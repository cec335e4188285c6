"""4-bit block quantization in numpy, in MatMulNBits' layout: levels, per-block scales, integer zeros.

A weight matrix of N outputs by K inputs is stored as blocks of `block` inputs; each block of
each output has one fp32 scale `s` and a zero level `z` (0..15, 8 when symmetric), and every
weight is `s * (q - z)` with a level q in 0..15. Symmetric blocks keep z = 8 and, as
onnxruntime's round-to-nearest does, let the signed largest weight map to level 0 (-8 * s, s may
be negative). Asymmetric blocks store z (uint8, two per byte), so each block's range may sit
off-centre; zero stays representable, as MatMulNBits requires.

`quantize_group` chooses a group's scales (and zeros) by trying clipping ratios and keeping, per
output, the one with the least error weighted by the inputs' second moments (diag of X^T X).
The functions here take weights as MatMul stores them, (K inputs, N outputs), so that a block of
inputs is a contiguous slab of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = 16  # 4 bits
RATIOS = tuple(np.round(np.arange(1.0, 0.69, -0.025), 3))  # clipping ratios tried per group; 1.0 is plain min/max


@dataclass
class Int4Matrix:
    """N x K weights as 4-bit levels; `dequantize()` gives `scales * (levels - zeros)` per block."""

    levels: np.ndarray  # (N, K) uint8 in 0..15
    scales: np.ndarray  # (N, K // block) float32
    zeros: np.ndarray | None  # (N, K // block) uint8 in 0..15; None: every zero is 8 (symmetric)
    block: int = 32

    def dequantize(self) -> np.ndarray:
        """(N, K) float32 weights."""
        n, k = self.levels.shape
        zeros = 8 if self.zeros is None else self.zeros[..., None].astype(np.float32)
        grouped = self.levels.reshape(n, k // self.block, self.block).astype(np.float32) - zeros
        return (grouped * self.scales[..., None]).reshape(n, k)

    def packed_levels(self) -> np.ndarray:
        """(N, K // block, block // 2) uint8: weight 2i in the low nibble, 2i + 1 in the high nibble."""
        n, k = self.levels.shape
        grouped = self.levels.reshape(n, k // self.block, self.block)
        return grouped[..., 0::2] | (grouped[..., 1::2] << 4)

    def packed_zeros(self) -> np.ndarray:
        """(N * ceil(blocks / 2),) uint8: two zeros per byte, low nibble first, each output's row padded."""
        zeros = self.zeros
        if zeros.shape[1] % 2:
            zeros = np.concatenate([zeros, np.zeros((zeros.shape[0], 1), np.uint8)], axis=1)
        return (zeros[:, 0::2] | (zeros[:, 1::2] << 4)).reshape(-1)


def unpack_nibbles(packed: np.ndarray) -> np.ndarray:
    """(..., 2 * B) uint8 levels from (..., B) bytes: the low nibble first, as packed_levels/packed_zeros write them."""
    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)


def _levels(w: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Nearest levels of w (g, N) for per-output scale and zero (1, N)."""
    return np.clip(np.rint(w / scale) + zero, 0, LEVELS - 1)


def group_candidates(w: np.ndarray, symmetric: bool, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero), each (1, N), for the group w (g, N) clipped to `ratio` of its range."""
    if symmetric:
        top, bottom = w.max(0, keepdims=True), w.min(0, keepdims=True)
        signed_max = np.where(np.abs(top) > np.abs(bottom), top, bottom)
        scale = signed_max / -8.0 * ratio
        zero = np.full_like(scale, 8.0)
    else:
        low = np.minimum(w.min(0, keepdims=True), 0) * ratio
        high = np.maximum(w.max(0, keepdims=True), 0) * ratio
        scale = (high - low) / (LEVELS - 1)
        zero = np.clip(np.rint(-low / np.where(scale == 0, 1, scale)), 0, LEVELS - 1)
    return np.where(scale == 0, 1.0, scale).astype(np.float32), zero.astype(np.float32)


def quantize_group(w: np.ndarray, importance: np.ndarray | None, symmetric: bool,
                   ratios: tuple[float, ...] = RATIOS) -> tuple[np.ndarray, np.ndarray]:
    """Per-output (scale, zero) for a group w (g, N): the clipping ratio with the least weighted error.

    Args:
        w: the group's weights, one row per input, one column per output.
        importance: (g,) weight of each input's squared error (diag of X^T X); None: all equal.
        symmetric: zero fixed at 8, or chosen per output.
        ratios: clipping ratios to try (1.0 alone is round-to-nearest of the full range).
    Returns:
        scale and zero, each (1, N) float32.
    """
    weight = (np.ones(w.shape[0], np.float32) if importance is None else importance.astype(np.float32))[:, None]
    best_scale, best_zero, best_err = None, None, None
    for ratio in ratios:
        scale, zero = group_candidates(w, symmetric, ratio)
        err = (((w - scale * (_levels(w, scale, zero) - zero)) ** 2) * weight).sum(0, keepdims=True)
        if best_err is None:
            best_scale, best_zero, best_err = scale, zero, err
            continue
        better = err < best_err
        best_scale = np.where(better, scale, best_scale)
        best_zero = np.where(better, zero, best_zero)
        best_err = np.minimum(err, best_err)
    return best_scale, best_zero


def quantize_rows(w: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Levels (uint8) of w (g, N) for per-output scale and zero (1, N)."""
    return _levels(w, scale, zero).astype(np.uint8)


def rtn_int4(weight: np.ndarray, symmetric: bool, importance: np.ndarray | None = None,
             block: int = 32, ratios: tuple[float, ...] = (1.0,)) -> Int4Matrix:
    """Each block rounded on its own (no error feedback): plain round-to-nearest with ratios (1.0,).

    Args:
        weight: (K, N) weights, one row per input (MatMul's layout).
        symmetric: see quantize_group.
        importance: (K,) weight of each input's squared error for the clipping search.
        block: inputs per block.
        ratios: clipping ratios to try per block.
    """
    k, n = weight.shape
    levels = np.empty((k, n), np.uint8)
    scales = np.empty((k // block, n), np.float32)
    zeros = np.empty((k // block, n), np.uint8)
    for b in range(k // block):
        rows = slice(b * block, (b + 1) * block)
        w = weight[rows]
        scale, zero = quantize_group(w, None if importance is None else importance[rows], symmetric, ratios)
        levels[rows] = quantize_rows(w, scale, zero)
        scales[b], zeros[b] = scale[0], zero[0]
    return Int4Matrix(np.ascontiguousarray(levels.T), np.ascontiguousarray(scales.T),
                      None if symmetric else np.ascontiguousarray(zeros.T), block)
