"""The int8 cache's arithmetic (runtime/kv_quant.py): onnxruntime's rounding, exact round trips, checked scales."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgelm.errors import EdgelmError
from edgelm.kv_quant import dequantize, load_scales, quantize
from edgelm.manifest import KVCacheSpec

KV = KVCacheSpec(num_layers=2, num_kv_heads=1, head_dim=16)


def test_quantize_rounds_half_to_even_and_saturates():
    scale = np.full((1, 1, 1, 4), 0.5, np.float32)
    x = np.array([[[[1.25, -1.25, 1000.0, -1000.0]]]], np.float32)  # 2.5, -2.5 scale units; far out of range
    assert quantize(x, scale).tolist() == [[[[2, -2, 127, -128]]]]


@settings(max_examples=200, deadline=None)
@given(codes=hnp.arrays(np.int8, (1, 2, 5, 8)),
       scales=hnp.arrays(np.float32, (1, 2, 1, 8), elements=st.floats(np.float32(1e-4).item(), 10.0, width=32)))
def test_dequantized_codes_quantize_back_to_themselves(codes, scales):
    """A prompt's float copy of the cache may hold old positions: writing them back must not move them."""
    np.testing.assert_array_equal(quantize(dequantize(codes, scales), scales), codes)


def _saved(tmp_path, array):
    path = tmp_path / "kv_scales.npy"
    np.save(path, array)
    return path


def test_scales_come_back_one_per_cache_tensor(tmp_path):
    scales = np.arange(1, 65, dtype=np.float32).reshape(2, 2, 1, 16)
    tensors = load_scales(_saved(tmp_path, scales), KV)
    assert len(tensors) == 4 and tensors[3].shape == (1, 1, 1, 16)
    np.testing.assert_array_equal(tensors[1][0, :, 0], scales[0, 1])  # layer 0's value scales, past_names order


@pytest.mark.parametrize("array, problem", [
    (np.ones((2, 2, 1, 8), np.float32), r"float32 \(2, 2, 1, 8\).*needs float32 \(2, 2, 1, 16\)"),
    (np.ones((2, 2, 1, 16), np.float64), "holds float64"),
    (np.zeros((2, 2, 1, 16), np.float32), "not finite and positive"),
    (np.full((2, 2, 1, 16), np.nan, np.float32), "not finite and positive"),
])
def test_bad_scales_are_refused_by_name(tmp_path, array, problem):
    with pytest.raises(EdgelmError, match=problem):
        load_scales(_saved(tmp_path, array), KV)


def test_an_unreadable_scales_file_is_refused(tmp_path):
    path = tmp_path / "kv_scales.npy"
    path.write_bytes(b"not numpy")
    with pytest.raises(EdgelmError, match="cannot read the KV cache scales kv_scales.npy.*re-export"):
        load_scales(path, KV)


def test_an_archive_in_place_of_the_scales_is_refused(tmp_path):
    path = tmp_path / "kv_scales.npy"
    with open(path, "wb") as f:
        np.savez(f, scales=np.ones((2, 2, 1, 16), np.float32))
    with pytest.raises(EdgelmError, match="is not one numpy array"):
        load_scales(path, KV)
