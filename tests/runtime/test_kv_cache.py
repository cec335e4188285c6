"""Both cache layouts give the logits of a full forward pass, however the sequence is fed."""

import numpy as np
import pytest

import edgelm
from edgelm.kv_cache import ConcatCache, SharedBufferCache

TEXT = "Caches must give exactly what a full pass gives, step by step or chunk by chunk."


@pytest.fixture(scope="module", params=[("llama", "auto"), ("llama", "optimum")], ids=["shared", "concat"])
def model(request, exported):
    return edgelm.load(exported(request.param[0], "fp32", request.param[1]))


def test_layout_follows_the_manifest(model):
    expected = SharedBufferCache if model.manifest.kv.shared_buffer else ConcatCache
    assert isinstance(model.runner.new_cache(), expected)
    assert model.manifest.kv.shared_buffer == model.manifest.graph_builder.startswith("fused-")


def test_chunked_prefill_equals_one_pass(model):
    ids = np.array([model.encode(TEXT)], dtype=np.int64)
    full = model.runner.forward(ids, model.runner.new_cache(), all_logits=True)[0]
    cache = model.runner.new_cache()
    for start in range(0, ids.shape[1], 7):  # prompts fed in chunks of 7 after a cached past
        chunk = model.runner.forward(ids[:, start : start + 7], cache, all_logits=True)[0]
        np.testing.assert_allclose(chunk, full[start : start + 7], atol=1e-4, rtol=0)
    assert cache.length == ids.shape[1]


def test_shared_buffer_grows_in_blocks_and_keeps_its_contents(exported):
    model = edgelm.load(exported("llama", "fp32", "auto"))
    runner, kv = model.runner, model.manifest.kv
    ids = np.array([model.encode(TEXT)], dtype=np.int64)
    full = runner.forward(ids, runner.new_cache(), all_logits=True)[0]
    cache = SharedBufferCache((1, kv.num_kv_heads, kv.head_dim), len(runner.past_names), np.float32, "cpu", block=4)
    runner.forward(ids[:, :3], cache)
    capacities = {cache.capacity}
    for position in range(3, ids.shape[1]):
        step = runner.forward(ids[:, position : position + 1], cache)[0]
        np.testing.assert_allclose(step, full[position], atol=1e-4, rtol=0)
        capacities.add(cache.capacity)
    assert len(capacities) >= 4 and all(c % 4 == 0 for c in capacities)
    assert cache.capacity < 2 * ids.shape[1] + 4  # grown with the sequence, not to the context length


def test_prompts_prefilled_in_chunks_generate_the_same_tokens(model, monkeypatch):
    from edgelm import session

    prompt = model.encode(TEXT)
    expected = list(model.generate_ids(prompt, model.config(max_new_tokens=8, eos_token_ids=())))
    monkeypatch.setattr(session, "PREFILL_CHUNK", 5)  # the prompt now takes several graph runs
    assert list(model.generate_ids(prompt, model.config(max_new_tokens=8, eos_token_ids=()))) == expected


def test_resident_positions_follow_onnxruntimes_window_contract():
    """L(T) = T up to the capacity, then drops by capacity - window + 1 at once: never below the window."""
    from edgelm.kv_cache import exact_cut, resident

    capacity, window = 20, 4
    held = [resident(t, capacity, window) for t in range(1, 80)]
    assert held[:20] == list(range(1, 21))
    assert all(min(t, window) <= h <= min(t, capacity) for t, h in zip(range(1, 80), held))
    assert resident(21, capacity, window) == 21 - 17  # 17 positions reclaimed at once
    assert exact_cut(19, 20, capacity, window) and not exact_cut(20, 21, capacity, window)
    assert exact_cut(21, 22, capacity, window)
