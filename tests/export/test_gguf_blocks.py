"""Every GGUF block type decodes into levels, scales and offsets that give gguf's own values bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from gguf import GGMLQuantizationType  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402

from edgelm.export.gguf_blocks import SUPPORTED_TYPES, decode_tensor  # noqa: E402

QUANTIZABLE = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")  # gguf's numpy quantizer writes these
K_TYPES = {"Q4_K": (144, (0, 4)), "Q5_K": (176, (0, 4)), "Q6_K": (210, (208, 210))}  # bytes per 256, fp16 scale bytes


def random_k_blocks(kind: str, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Valid random super-blocks of a K type (gguf has no numpy quantizer for them): random levels and
    sub-scales, finite fp16 super-scales."""
    size, (lo, hi) = K_TYPES[kind]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (rows * cols // 256, size), dtype=np.uint8)
    scales = (rng.random((raw.shape[0], (hi - lo) // 2)) * 0.02 + 1e-4).astype(np.float16)
    raw[:, lo:hi] = scales.view(np.uint8)
    return raw.reshape(rows, -1)


def quantized(kind: str, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    if kind in K_TYPES:
        return random_k_blocks(kind, rows, cols, seed)
    weights = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32) * 0.05
    return quantize(weights, GGMLQuantizationType[kind])


@pytest.mark.parametrize("kind", SUPPORTED_TYPES)
def test_decoded_blocks_equal_gguf_dequantization_bit_for_bit(kind):
    raw = quantized(kind, 6, 512)
    weights = decode_tensor(kind, raw, 6, 512, check=False)
    expected = dequantize(raw, GGMLQuantizationType[kind]).reshape(6, 512).astype(np.float32)
    assert np.array_equal(weights.dequantize().view(np.uint32), expected.view(np.uint32))
    assert weights.levels.max() <= weights.max_level
    assert (weights.offsets is not None) == (kind in ("Q4_1", "Q5_1", "Q4_K", "Q5_K"))
    assert weights.bits == (4 if kind in ("Q4_0", "Q4_1", "Q4_K") else 8)


@pytest.mark.parametrize("kind", QUANTIZABLE)
def test_every_level_is_used_and_round_trips(kind):
    """The decoded levels re-encode to the same bytes when gguf quantizes the decoded values again."""
    raw = quantized(kind, 4, 256, seed=1)
    weights = decode_tensor(kind, raw, 4, 256)
    again = quantize(weights.dequantize(), GGMLQuantizationType[kind])
    assert np.array_equal(decode_tensor(kind, again, 4, 256).dequantize(), weights.dequantize())


def test_unsupported_type_is_named():
    with pytest.raises(ValueError, match="IQ2_XS"):
        decode_tensor("IQ2_XS", np.zeros((1, 66), np.uint8), 1, 256)
