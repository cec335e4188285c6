"""The fused Gemma 3 graph against transformers: sliding and global layers, q/k norms, GeGLU, softcapping."""

from __future__ import annotations

import pytest

from .fused_models import check_cache, check_greedy, check_logits, export_fp32, tiny_model


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    model = tiny_model("gemma3_text")
    return model, export_fp32(model, tmp_path_factory.mktemp("gemma3"))


def test_builder_and_shared_cache_recorded(gemma):
    _, exported = gemma
    assert exported.manifest.graph_builder == "fused-gemma3"
    assert exported.manifest.kv.shared_buffer and exported.manifest.kv.num_kv_heads == 2


def test_logits_match_transformers_past_the_sliding_window(gemma):
    check_logits(gemma[1], gemma[0])


def test_greedy_identical_to_transformers(gemma):
    check_greedy(gemma[1], gemma[0])


def test_one_token_steps_equal_one_pass(gemma):
    check_cache(gemma[1])


def test_final_logit_softcapping_and_linear_rope_scaling(tmp_path):
    model = tiny_model("gemma3_text", final_logit_softcapping=2.0, rope_scaling={"rope_type": "linear", "factor": 8.0})
    exported = export_fp32(model, tmp_path)
    check_logits(exported, model)
    check_greedy(exported, model)


def test_graph_uses_fused_ops_only(gemma):
    import onnx

    graph = onnx.load(str(gemma[1].folder / "model.onnx"), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("GroupQueryAttention") == 3
    windows = [a.i for n in graph.node if n.op_type == "GroupQueryAttention" for a in n.attribute
               if a.name == "local_window_size"]
    assert windows == [4, 4]  # layers 0 and 2 slide; layer 1 is global
    assert ops.count("FastGelu") == 3 and "Softmax" not in ops


def test_int4_on_the_fused_graph_shares_the_tied_table(tmp_path):
    import onnx

    import edgelm
    from edgelm.export import export_model

    from .fused_models import save

    folder = save(tiny_model("gemma3_text"), tmp_path / "hf")
    manifest = export_model(str(folder), tmp_path / "int4", precision="int4", int4_method="rtn", symmetric=False,
                            share_tied_table=True, check=False, quiet=True)
    assert manifest.graph_builder == "fused-gemma3" and manifest.quantization["tied_table"]
    graph = onnx.load(str(tmp_path / "int4" / "model.onnx"), load_external_data=False).graph
    gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    assert gather.input[0] in {n.input[1] for n in graph.node if n.op_type == "MatMulNBits"}
    model = edgelm.load(tmp_path / "int4")
    assert len(list(model.generate_ids(model.encode("Hi"), model.config(max_new_tokens=4, eos_token_ids=())))) == 4


def test_windowed_layers_keep_a_window_sized_cache(gemma):
    """Sliding layers get a buffer of their window plus slack, for good; global layers grow with the text."""
    import numpy as np

    from edgelm.kv_cache import SharedBufferCache, window_capacity

    from .fused_models import LONG_PROMPT

    model = gemma[1]
    assert model.manifest.kv.windows == [4, 0, 4]
    cache = model.runner.new_cache()
    assert isinstance(cache, SharedBufferCache)
    ids = np.array([model.encode(LONG_PROMPT)], dtype=np.int64)
    model.runner.forward(ids, cache)
    rows = [v.shape()[2] for v in cache.values]
    assert rows[:2] == rows[4:] == [window_capacity(4)] * 2  # layers 0 and 2
    assert rows[2] == rows[3] == cache.capacity >= ids.shape[1] > window_capacity(4)


def test_reusing_a_windowed_cache_gives_what_a_fresh_one_gives(gemma):
    """A later prompt reuses the cache where the window still holds the shared prefix, else starts over; the
    tokens equal those of a fresh cache either way."""
    from edgelm.generation import GenerationConfig, Timings, generate_tokens
    from edgelm.kv_cache import exact_cut, window_capacity

    model = gemma[1]
    runner, m = model.runner, model.manifest

    def run(prompt, cache=None, timings=None):
        return list(generate_tokens(runner, prompt, GenerationConfig(max_new_tokens=30), tuple(m.tokens.eos_token_ids),
                                    m.context_length, timings, cache=cache))

    first = model.encode("Machine learning is a field")
    cache = runner.new_cache()
    out = run(first, cache)
    capacity = window_capacity(4)
    for prompt in (first + out + model.encode(" of"),  # extends what the cache holds: nothing cut
                   first + out[:2] + model.encode("ab"),  # cut long after the window evicted the rest: starts over
                   None):  # everything the cache holds: cut by the one token that must run again
        prompt = prompt or list(cache.tokens)
        held, shared = len(cache.tokens), 0
        while shared < min(held, len(prompt) - 1) and cache.tokens[shared] == prompt[shared]:
            shared += 1
        expected = shared if shared == held or exact_cut(shared, held, capacity, 4) else 0
        timings = Timings()
        assert run(prompt, cache, timings) == run(prompt)
        assert timings.cached_tokens == expected
    assert expected > 0  # the last one kept its prefix


def test_concat_layout_with_window_sized_buffers_gives_the_same_logits(gemma):
    """Off the CPU the runtime keeps the concat layout; windowed tensors there hold exactly their window."""
    import numpy as np

    from edgelm.kv_cache import ConcatCache

    from .fused_models import LONG_PROMPT

    model = gemma[1]
    runner, kv = model.runner, model.manifest.kv
    ids = np.array([model.encode(LONG_PROMPT)], dtype=np.int64)
    full = runner.forward(ids, runner.new_cache(), all_logits=True)[0]
    cache = ConcatCache((1, kv.num_kv_heads, kv.head_dim), len(runner.past_names), np.float32, "cpu",
                        windows=kv.tensor_windows())
    for start in range(0, ids.shape[1], 5):
        chunk = runner.forward(ids[:, start : start + 5], cache, all_logits=True)[0]
        np.testing.assert_allclose(chunk, full[start : start + 5], atol=1e-4, rtol=0)
    assert [v.shape()[2] for v in cache.values] == [4, 4, ids.shape[1], ids.shape[1], 4, 4]
    cache.truncate(cache.length - 1)  # evicted positions cannot come back: the cache starts over
    assert cache.length == 0 and cache.tokens == []
