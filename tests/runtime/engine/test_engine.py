"""Continuous batching gives each sequence exactly the tokens it gets alone (greedy), on both cache layouts."""

import numpy as np
import pytest

import edgelm
from edgelm.engine import Engine, QueueFull
from edgelm.generation import generate_tokens

PROMPTS = ["Hi", "Hello there, how are", "A", "The quick brown fox jumps over the lazy dog and", "xyz 123", "Once"]


@pytest.fixture(scope="module", params=[("llama", "fp32", "auto"), ("llama", "int4", "auto"), ("llama", "fp32", "optimum"),
                                        ("gpt2", "fp32", "auto"), ("gemma3_text", "fp32", "auto"), "gemma3-fused",
                                        "gemma3-int8-kv"],
                ids=["fused-shared", "fused-int4", "optimum-concat", "gpt2-concat", "gemma3-rows", "gemma3-windows",
                     "gemma3-int8-kv"])
def model(request, exported, tmp_path_factory):
    if isinstance(request.param, str):  # the fused graph: sliding-window layers (window 4) keep window-sized slots
        from tests.export.fused_models import export_fp32, tiny_model

        kv_dtype = "int8" if request.param == "gemma3-int8-kv" else "float32"  # slots of int8 codes
        return export_fp32(tiny_model("gemma3_text"), tmp_path_factory.mktemp(request.param), kv_dtype=kv_dtype)
    return edgelm.load(exported(*request.param))


def test_the_cache_layout_follows_the_graph(model):
    """Shared buffer: slots; concat with position_ids: left padding; concat without: a cache per row."""
    from edgelm.engine.slots import PaddedCache, RowCaches, SlotCache

    expected = SlotCache if model.manifest.kv.shared_buffer else \
        PaddedCache if "position_ids" in model.manifest.graph_inputs else RowCaches
    assert isinstance(engine_for(model).batch.cache, expected)


def alone(model, ids, config):
    return list(generate_tokens(model.runner, ids, config, (), model.manifest.context_length))


def engine_for(model, max_batch=8, max_waiting=None):
    eos = tuple(model.manifest.tokens.eos_token_ids)
    return Engine(model.runner, model.tokenizer, eos, model.manifest.context_length, max_batch, max_waiting)


@pytest.mark.parametrize("max_batch", [8, 3, 1])
def test_batched_greedy_equals_one_at_a_time(model, max_batch):
    """Different prompt lengths and budgets, so sequences join and leave while others run."""
    engine = engine_for(model, max_batch)
    configs = [model.config(max_new_tokens=6 + 5 * i, eos_token_ids=()) for i in range(len(PROMPTS))]
    ids = [model.encode(p) for p in PROMPTS]
    seqs = engine.generate([engine.sequence(i, c) for i, c in zip(ids, configs)])
    for seq, prompt, config in zip(seqs, ids, configs):
        assert seq.tokens == alone(model, prompt, config)
        assert seq.finish_reason == "length"
    assert engine.scheduler.idle and engine.batch.size == 0


def test_long_prompts_equal_alone(model):
    """Prompts long enough for a prefill graph (an int8 cache's prompts attend in float32 there)."""
    engine = engine_for(model, 4)
    config = model.config(max_new_tokens=8, eos_token_ids=())
    prompts = [model.encode((p + " ") * 48)[:96] for p in PROMPTS[:3]]
    assert min(map(len, prompts)) >= model.runner.prefill_min_tokens
    seqs = engine.generate([engine.sequence(ids, config) for ids in prompts])
    for seq, ids in zip(seqs, prompts):
        assert seq.tokens == alone(model, ids, config)


def test_a_long_prompt_fills_its_row_as_a_cache_alone(model):
    """A batch row's prompt runs as it runs alone: same logits, and a slot row holds what the cache holds
    (an int8 cache's prompt attends in float32 on a copy, then lands in the row)."""
    from edgelm.engine.slots import SlotCache
    from edgelm.kv_cache import window_capacity

    ids = model.encode((PROMPTS[3] + " ") * 4)[:96]
    engine = engine_for(model)
    logits = engine.batch.prefill(ids)
    single = model.runner.new_cache()
    np.testing.assert_array_equal(logits, model.runner.prefill(np.array([ids]), single)[0])
    if isinstance(engine.batch.cache, SlotCache):
        for buf, value, window in zip(engine.batch.cache.buffers, single.values, engine.batch.cache.windows):
            rows = window_capacity(window) if window else len(ids)
            np.testing.assert_array_equal(buf[0, :, :rows], value.numpy()[0, :, :rows])


def test_late_joiners_equal_alone(model):
    """Sequences added while others are mid-generation."""
    engine = engine_for(model)
    config = model.config(max_new_tokens=20, eos_token_ids=())
    first = [engine.sequence(model.encode(p), config) for p in PROMPTS[:2]]
    engine.add(first)
    for _ in range(7):
        engine.step()
    later = [engine.sequence(model.encode(p), config) for p in PROMPTS[2:]]
    engine.generate(later)
    engine.generate(first)
    for seq in first + later:
        assert seq.tokens == alone(model, seq.prompt_ids, config)


def test_generate_finishes_sequences_already_running(model):
    """generate() on sequences that were added and stepped earlier continues them (no second prefill)."""
    engine = engine_for(model)
    config = model.config(max_new_tokens=12, eos_token_ids=())
    seqs = [engine.sequence(model.encode(p), config) for p in PROMPTS[:3]]
    engine.add(seqs)
    engine.add(seqs[:1])  # twice: still one row
    for _ in range(4):
        engine.step()
    assert engine.batch.size == 3
    engine.generate(seqs)
    for seq in seqs:
        assert seq.tokens == alone(model, seq.prompt_ids, config)


def test_text_stop_strings_and_eos(model):
    engine = engine_for(model)
    config = model.config(max_new_tokens=15)
    expected = model.generate("Hello", max_new_tokens=15)
    (seq,) = engine.generate([engine.sequence(model.encode("Hello"), config)])
    assert seq.text == expected
    if len(expected) > 4:  # a stop string from the middle of the text: cut there, finish_reason stop
        stop = expected[2:4]
        (cut,) = engine.generate([engine.sequence(model.encode("Hello"), config.updated(stop=(stop,)))])
        assert cut.text == model.generate("Hello", max_new_tokens=15, stop=[stop])
        assert cut.finish_reason == "stop"


def test_seeded_sampling_equals_alone(model):
    config = model.config(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7, eos_token_ids=())
    engine = engine_for(model)
    seqs = engine.generate([engine.sequence(model.encode(p), config) for p in PROMPTS[:3]])
    for seq in seqs:
        assert seq.tokens == alone(model, seq.prompt_ids, config)


def test_cancel_frees_the_row(model):
    engine = engine_for(model, max_batch=1)
    config = model.config(max_new_tokens=50, eos_token_ids=())
    hog = engine.sequence(model.encode("Hi"), config)
    engine.add([hog])
    engine.step()
    nxt = engine.sequence(model.encode("Hello"), model.config(max_new_tokens=5, eos_token_ids=()))
    engine.add([nxt])
    engine.step()
    assert nxt.status.value == "waiting"  # the only row is taken
    hog.cancel()
    engine.generate([nxt])
    assert hog.finish_reason == "cancelled" and nxt.tokens == alone(model, nxt.prompt_ids, nxt.config)


def test_zero_budget_and_queue_limit(model):
    engine = engine_for(model, max_batch=1, max_waiting=1)
    (seq,) = engine.generate([engine.sequence(model.encode("Hi"), model.config(max_new_tokens=0))])
    assert seq.tokens == [] and seq.finish_reason == "length"
    engine.add([engine.sequence(model.encode("Hi"), model.config(max_new_tokens=2)) for _ in range(2)])
    with pytest.raises(QueueFull):
        engine.add([engine.sequence(model.encode("Hi"), model.config(max_new_tokens=2))])


def test_background_thread_serves(model):
    engine = engine_for(model)
    engine.start()
    try:
        config = model.config(max_new_tokens=8, eos_token_ids=())
        seqs = engine.generate([engine.sequence(model.encode(p), config) for p in PROMPTS[:4]])
        assert [s.tokens for s in seqs] == [alone(model, s.prompt_ids, config) for s in seqs]
    finally:
        engine.stop()
    assert np.all([s.done.is_set() for s in seqs])


def test_sliding_window_rows_stay_window_sized(model):
    """A windowed layer's slot buffer keeps window_capacity positions a row while full layers grow with the
    longest row; the sequences run past that capacity, so each row evicts by its own length (and the tokens
    still equal a run alone, checked above for the same prompts)."""
    from edgelm.kv_cache import window_capacity

    windows = model.manifest.kv.tensor_windows()
    if not model.manifest.kv.shared_buffer or not any(windows):
        pytest.skip("no window-sized tensors in this graph")
    engine = engine_for(model)
    capacity = window_capacity(max(windows))
    config = model.config(max_new_tokens=capacity + 20, eos_token_ids=())
    seqs = [engine.sequence(model.encode(p), config) for p in PROMPTS[:3]]
    engine.add(seqs)
    for _ in range(capacity + 10):  # the rows are still running after these steps
        engine.step()
    cache = engine.batch.cache
    assert len(cache.lengths) == 3 and min(cache.lengths) > capacity  # every row has evicted
    for buffer, window in zip(cache.buffers, windows):
        assert buffer.shape[2] == (window_capacity(window) if window else cache.capacity)
    assert cache.capacity >= max(cache.lengths)
    engine.generate(seqs)
    for seq in seqs:
        assert seq.tokens == alone(model, seq.prompt_ids, config)


def test_window_wider_than_a_growth_block(tmp_path):
    """onnxruntime refuses a windowed buffer narrower than its window: a slot row of a window-sized tensor has
    window_capacity(window) positions from the start, not the GROWTH_BLOCK a full-length row starts with
    (before, Gemma 3's 512-position window failed on every request)."""
    from tests.export.fused_models import export_fp32, tiny_model
    from edgelm.engine.slots import GROWTH_BLOCK

    window = GROWTH_BLOCK + 44
    model = export_fp32(tiny_model("gemma3_text", sliding_window=window, max_position_embeddings=1024), tmp_path)
    assert window in model.manifest.kv.windows
    config = model.config(max_new_tokens=6, eos_token_ids=())
    engine = engine_for(model)
    seqs = engine.generate([engine.sequence(model.encode(p), config) for p in PROMPTS[:2]])
    for seq in seqs:
        assert seq.error is None and seq.tokens == alone(model, seq.prompt_ids, config)


@pytest.mark.parametrize("kernel", ["plain", "tiled"])
def test_an_int8_cache_with_more_threads_than_rows_times_heads_equals_alone(tmp_path, monkeypatch, kernel):
    """onnxruntime's tiled quantized decode splits rows across threads by sequence when batch x heads is below its
    thread count (a many-core machine); edgelm takes the plain kernel for an int8 cache (attention_kernel.py), and
    either way rows of unequal lengths get exactly the tokens they get alone."""
    from tests.export.fused_models import COMMON, export_fp32, tiny_model

    exported = export_fp32(tiny_model("llama"), tmp_path, kv_dtype="int8")
    monkeypatch.setattr("edgelm.session.flash_pays", lambda *args: kernel == "tiled")
    monkeypatch.setattr("edgelm.session.default_threads", lambda: 16)  # as on a 16-core machine (edgelm refuses more
    model = edgelm.load(exported.folder, threads=16)                    # threads than cores)
    prompts = [model.encode(PROMPTS[3] * 3), model.encode(PROMPTS[0])]  # of unequal lengths
    assert len(prompts[0]) > 4 * len(prompts[1]) and len(prompts) * COMMON["num_attention_heads"] < 16
    config = model.config(max_new_tokens=12, eos_token_ids=())
    engine = engine_for(model)
    for seq, prompt in zip(engine.generate([engine.sequence(p, config) for p in prompts]), prompts):
        assert seq.tokens == alone(model, prompt, config)
