"""An int8 key/value cache (manifest kv.dtype "int8"): steps attend on it, prompts attend in float32.

onnxruntime's CPU GroupQueryAttention reads an int8 cache with a scale per kv head and channel
(k/v_quant_type PER_CHANNEL) and quantizes each new position itself: a step at depth 2,048 reads a
quarter of a float32 cache's bytes. Its int8 path for a run of many tokens is about 3x slower than
float32 attention, so a folder with an int8 cache keeps a prefill graph whose cache is float32
(kv.prefill_dtype): a long prompt runs on a float32 copy of the cache, and its new positions are
then quantized into the int8 cache the way the op quantizes a step's,
q = clip(rint(x * (1 / scale)), -128, 127). Dequantizing and quantizing again gives back the same
codes, so the copy may hold old positions too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import EdgelmError
from .kv_cache import SharedBufferCache
from .manifest import KVCacheSpec

FIX = "re-export the model"


def load_scales(path: Path, kv: KVCacheSpec) -> list[np.ndarray]:
    """The scales file (num_layers, 2, kv_heads, head_dim) as one (1, kv_heads, 1, head_dim) array per
    cache tensor, in past_names() order; EdgelmError naming what is wrong with it."""
    try:
        scales = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EdgelmError(f"cannot read the KV cache scales {path.name}: {exc}; {FIX}") from exc
    if not isinstance(scales, np.ndarray):  # an .npz archive
        raise EdgelmError(f"{path.name} is not one numpy array (.npy); {FIX}")
    expected = (kv.num_layers, 2, kv.num_kv_heads, kv.head_dim)
    if scales.shape != expected or scales.dtype != np.float32:
        raise EdgelmError(f"{path.name} holds {scales.dtype} {scales.shape}; the manifest's cache needs float32 "
                          f"{expected}; {FIX}")
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise EdgelmError(f"{path.name} has scales that are not finite and positive; {FIX}")
    return [scales[i, j][None, :, None, :] for i in range(kv.num_layers) for j in range(2)]


def quantize(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 codes of x as GroupQueryAttention writes them: rint(x * (1 / scale)), saturated."""
    inverse = np.float32(1.0) / scale
    return np.clip(np.rint(x * inverse), -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale


def _rows(cache: SharedBufferCache, window: int, start: int) -> slice:
    """The buffer rows holding positions from `start` on: a windowed buffer's whole resident part (the op
    may have moved its rows), a full-length buffer's rows [start, length)."""
    return slice(0 if window else start, cache.resident_rows(window))


def float_copy(cache: SharedBufferCache, scales: list[np.ndarray], dtype: str = "float32") -> SharedBufferCache:
    """A shared-buffer cache of `dtype` holding what the int8 `cache` holds, dequantized.

    The copy stays with `cache` (`float_twin`) until another run or cut of `cache`: a prompt's next
    chunk takes it again instead of dequantizing every position anew.
    """
    twin = cache.float_twin
    if twin is not None and twin.length == cache.length and np.dtype(twin.dtype) == np.dtype(dtype):
        return twin
    staged = SharedBufferCache(cache.shape, cache.count, np.dtype(dtype), cache.device, block=cache.block,
                               windows=cache.windows)
    staged.reserve(max(cache.length, cache.capacity))  # as large as the cache: a prompt has reserved its room
    staged.length, staged.tokens = cache.length, list(cache.tokens)
    for source, target, window, scale in zip(cache.values, staged.values, cache.windows, scales):
        rows = _rows(cache, window, 0)
        target.numpy()[:, :, rows] = dequantize(source.numpy()[:, :, rows], scale)
    cache.float_twin = staged
    return staged


def absorb(cache: SharedBufferCache, staged: SharedBufferCache, start: int, scales: list[np.ndarray]) -> None:
    """Quantizes the positions `staged` added after `start` into the int8 `cache`, which then holds them too."""
    cache.reserve(staged.length)
    for source, target, window, scale in zip(staged.values, cache.values, cache.windows, scales):
        rows = _rows(staged, window, start)
        target.numpy()[:, :, rows] = quantize(source.numpy()[:, :, rows], scale)
    cache.length, cache.tokens = staged.length, list(staged.tokens)
