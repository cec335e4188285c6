"""GPTQ for 4-bit blocks: round one input column at a time and push its error onto the columns not yet rounded.

Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers" (2022). With H = X^T X of the calibration inputs, rounding column k of W
(outputs x inputs) to q leaves an output error that the remaining columns can partly cancel:
`W[:, k+1:] -= (w_k - q_k) / U[k, k] * U[k, k+1:]`, where U is the upper Cholesky factor of
H^-1. Scales (and zeros) are chosen per block of 32 inputs when the block is reached, from the
weights as the earlier errors left them (int4_blocks.quantize_group, with a clipping search
weighted by diag H). Columns are taken in order, so the blocks stay contiguous as MatMulNBits
needs them; the updates are applied a block at a time (one matrix product per block).
"""

from __future__ import annotations

import numpy as np

from .int4_blocks import RATIOS, Int4Matrix, quantize_group, quantize_rows

DAMPING = 0.01  # share of mean(diag H) added to the diagonal (the GPTQ paper's default)


def inverse_cholesky(hessian: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """Upper Cholesky factor U of (H + damping * mean(diag H) * I)^-1, so that H^-1 = U^T U."""
    h = np.array(hessian, dtype=np.float64)
    idx = np.arange(h.shape[0])
    h[idx, idx] += damping * float(np.mean(np.diag(h))) + 1e-12
    lower = np.linalg.cholesky(h)
    inv_lower = np.linalg.inv(lower)
    h_inv = inv_lower.T @ inv_lower
    return np.linalg.cholesky(h_inv).T


def gptq_int4(weight: np.ndarray, hessian: np.ndarray, symmetric: bool, block: int = 32,
              damping: float = DAMPING, ratios: tuple[float, ...] = RATIOS) -> Int4Matrix:
    """Quantizes W (K inputs, N outputs) to 4-bit blocks, minimizing the output error on the inputs behind H.

    Works on rows of MatMul's (K, N) layout, so an input "column" of the paper is a contiguous row.

    Args:
        weight: (K, N) float weights, one row per input (MatMul's layout).
        hessian: (K, K) X^T X of the calibration inputs.
        symmetric: zero level fixed at 8, or an integer zero per block.
        block: inputs per block (one scale per block and output).
        damping: see DAMPING.
        ratios: clipping ratios tried per block (int4_blocks.quantize_group).
    Returns:
        The levels, scales and zeros.
    """
    k, n = weight.shape
    w = np.array(weight, dtype=np.float32)
    h = np.array(hessian, dtype=np.float64)
    dead = np.diag(h) <= 0  # inputs that were always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[dead] = 0.0
    importance = np.diag(h).astype(np.float32)
    u = inverse_cholesky(h, damping).astype(np.float32)
    levels = np.empty((k, n), np.uint8)
    scales = np.empty((k // block, n), np.float32)
    zeros = np.empty((k // block, n), np.uint8)
    for b in range(k // block):
        start, end = b * block, (b + 1) * block
        group = w[start:end]  # (block, N), updated in place below, input by input
        u_group = u[start:end, start:end]
        scale, zero = quantize_group(group, importance[start:end], symmetric, ratios)  # (1, N) each
        errors = np.empty((block, n), np.float32)
        for i in range(block):
            row = group[i : i + 1]  # (1, N)
            q = quantize_rows(row, scale, zero)
            levels[start + i] = q[0]
            err = (row - scale * (q - zero)) / u_group[i, i]  # (1, N)
            group[i:] -= u_group[i, i:, None] * err
            errors[i] = err[0]
        if end < k:
            w[end:] -= u[start:end, end:].T @ errors
        scales[b], zeros[b] = scale[0], zero[0]
    return Int4Matrix(np.ascontiguousarray(levels.T), np.ascontiguousarray(scales.T),
                      None if symmetric else np.ascontiguousarray(zeros.T), block)


def output_error(weight: np.ndarray, quantized: Int4Matrix, hessian: np.ndarray) -> float:
    """trace(D^T H D) with D = W - W' (K, N): the summed squared output error on the inputs behind H."""
    diff = np.asarray(weight, np.float64) - quantized.dequantize().T
    return float(np.einsum("kn,kl,ln->", diff, hessian, diff))
