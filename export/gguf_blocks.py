"""GGUF quantized tensors decoded into integer levels, block scales and block offsets, losslessly.

Every GGUF block type edgelm carries over stores a weight as `scale * (level - zero) + offset`
with an integer level, one scale per block of 16 or 32 weights, a zero level that is the same
for every block, and (for the `w = d * q + m` types) one float offset per block of 32:

| type | levels | zero | scale per block | offset per block of 32 |
| --- | --- | --- | --- | --- |
| Q4_0 | 0..15 | 8 | d (32) | - |
| Q4_1 | 0..15 | 0 | d (32) | m |
| Q5_0 | 0..31 | 16 | d (32) | - |
| Q5_1 | 0..31 | 0 | d (32) | m |
| Q8_0 | 0..255 (q + 128) | 128 | d (32) | - |
| Q4_K | 0..15 | 0 | d * sc (32) | -dmin * m |
| Q5_K | 0..31 | 0 | d * sc (32) | -dmin * m |
| Q6_K | 0..63 | 32 | d * sc (16) | - |

`BlockWeights.dequantize()` evaluates that formula in float32 and equals gguf's own
`gguf.quants.dequantize` bit for bit (the products of fp16 scales and small integers are exact
in float32, and the one rounding that remains happens in the same place); `decode_tensor`
checks this for every tensor it decodes, so a layout mistake can never pass silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OFFSET_BLOCK = 32  # the offsets of Q4_1, Q5_1, Q4_K and Q5_K all apply per 32 weights
SUPPORTED_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
FLOAT_TYPES = ("F32", "F16", "BF16")


@dataclass
class BlockWeights:
    """A (rows, cols) weight matrix as integer levels with per-block scales (and offsets)."""

    levels: np.ndarray  # (rows, cols) uint8: the integer level of each weight
    scales: np.ndarray  # (rows, cols // block) float32
    zero: int  # the level that stands for zero (before the offset), the same in every block
    block: int  # weights per scale, along a row
    offsets: np.ndarray | None = None  # (rows, cols // OFFSET_BLOCK) float32, added per block; None: none
    gguf_type: str = ""  # the GGUF type it came from

    @property
    def max_level(self) -> int:
        return {"Q4_0": 15, "Q4_1": 15, "Q4_K": 15, "Q5_0": 31, "Q5_1": 31, "Q5_K": 31, "Q6_K": 63}.get(self.gguf_type, 255)

    @property
    def bits(self) -> int:
        """The narrowest MatMulNBits width (4 or 8) that holds the levels and the zero."""
        return 4 if self.max_level < 16 and self.zero < 16 else 8

    def dequantize(self) -> np.ndarray:
        """float32 weights, as gguf computes them."""
        rows, cols = self.levels.shape
        levels = self.levels.reshape(rows, cols // self.block, self.block).astype(np.float32)
        values = self.scales[..., None] * (levels - np.float32(self.zero))
        if self.offsets is not None:
            values = values.reshape(rows, cols // OFFSET_BLOCK, OFFSET_BLOCK) + self.offsets[..., None]
        return values.reshape(rows, cols).astype(np.float32, copy=False)

    def take_rows(self, index: np.ndarray) -> "BlockWeights":
        return BlockWeights(self.levels[index], self.scales[index], self.zero, self.block,
                            None if self.offsets is None else self.offsets[index], self.gguf_type)


def _f16(raw: np.ndarray) -> np.ndarray:
    """Little-endian fp16 bytes (..., 2) as float32 (...)."""
    return np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32)


def _nibbles_split_halves(qs: np.ndarray) -> np.ndarray:
    """(blocks, 16) bytes -> (blocks, 32) levels: low nibbles are weights 0-15, high nibbles 16-31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """(blocks, 4) bytes of a 32-bit mask -> (blocks, 32) bits, bit i for weight i."""
    return np.unpackbits(np.ascontiguousarray(qh), axis=-1, bitorder="little")


def _k_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 packed bytes of Q4_K/Q5_K -> (8 six-bit scales, 8 six-bit mins) per super-block."""
    d, m, m_d = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = np.concatenate([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mins = np.concatenate([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.astype(np.float32), mins.astype(np.float32)


def _decode_blocks(gguf_type: str, raw: np.ndarray, rows: int, cols: int) -> BlockWeights:
    """raw: (rows, row_bytes) uint8 as GGUFReader gives a quantized tensor."""
    b = raw.reshape(-1, {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34,
                         "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}[gguf_type])
    offsets = None
    if gguf_type == "Q4_0":
        d, levels, zero, block = _f16(b[:, 0:2]), _nibbles_split_halves(b[:, 2:18]), 8, 32
    elif gguf_type == "Q4_1":
        d, offsets = _f16(b[:, 0:2]), _f16(b[:, 2:4])
        levels, zero, block = _nibbles_split_halves(b[:, 4:20]), 0, 32
    elif gguf_type == "Q5_0":
        d = _f16(b[:, 0:2])
        levels, zero, block = _nibbles_split_halves(b[:, 6:22]) | (_high_bits(b[:, 2:6]) << 4), 16, 32
    elif gguf_type == "Q5_1":
        d, offsets = _f16(b[:, 0:2]), _f16(b[:, 2:4])
        levels, zero, block = _nibbles_split_halves(b[:, 8:24]) | (_high_bits(b[:, 4:8]) << 4), 0, 32
    elif gguf_type == "Q8_0":
        d = _f16(b[:, 0:2])
        levels, zero, block = (b[:, 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8), 128, 32
    elif gguf_type in ("Q4_K", "Q5_K"):
        sc, mins = _k_scales(b[:, 4:16])
        d = (_f16(b[:, 0:2])[:, None] * sc).reshape(-1)  # (super-blocks * 8,): one scale per 32
        offsets = -(_f16(b[:, 2:4])[:, None] * mins).reshape(-1)
        qs = b[:, 16:144] if gguf_type == "Q4_K" else b[:, 48:176]
        # 4 chunks of 32 bytes: low nibbles are sub-block 2c, high nibbles sub-block 2c + 1
        low = qs.reshape(-1, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
        levels = (low & 0x0F).reshape(-1, 8, 32)
        if gguf_type == "Q5_K":  # bit j of byte i of qh is the fifth bit of weight i of sub-block j
            high = b[:, 16:48].reshape(-1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
            levels = levels | ((high & 1) << 4)
        levels, zero, block = levels.reshape(-1, 32), 0, 32
    elif gguf_type == "Q6_K":
        ql, qh, sc, dd = b[:, 0:128], b[:, 128:192], b[:, 192:208].view(np.int8), _f16(b[:, 208:210])
        low = (ql.reshape(-1, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)) & 0x0F
        high = (qh.reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 0x03
        levels = (low.reshape(-1, 8, 32) | (high.reshape(-1, 8, 32) << 4)).reshape(-1, 16)
        d = (dd[:, None] * sc.astype(np.float32)).reshape(-1)
        zero, block = 32, 16
    else:
        raise ValueError(gguf_type)
    scales = d.reshape(rows, cols // block).astype(np.float32)
    if offsets is not None:
        offsets = offsets.reshape(rows, cols // OFFSET_BLOCK).astype(np.float32)
    return BlockWeights(levels.reshape(rows, cols).astype(np.uint8), scales, zero, block, offsets, gguf_type)


def decode_tensor(gguf_type: str, raw: np.ndarray, rows: int, cols: int, check: bool = True) -> BlockWeights:
    """Decodes one GGUF tensor of `rows` x `cols` weights; with `check`, proves it against gguf's dequantize."""
    if gguf_type not in SUPPORTED_TYPES:
        raise ValueError(f"GGUF type {gguf_type} is not one of {', '.join(SUPPORTED_TYPES)}")
    weights = _decode_blocks(gguf_type, raw, rows, cols)
    if check:
        check_against_gguf(gguf_type, raw, weights.dequantize())
    return weights


def check_against_gguf(gguf_type: str, raw: np.ndarray, values: np.ndarray) -> None:
    """Raises AssertionError unless `values` are gguf's own dequantization of `raw`, bit for bit."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    expected = dequantize(raw, GGMLQuantizationType[gguf_type]).reshape(values.shape).astype(np.float32)
    if not np.array_equal(values.view(np.uint32), expected.view(np.uint32)):
        raise AssertionError(f"decoding {gguf_type} differs from gguf's dequantization")
