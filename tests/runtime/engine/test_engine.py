"""Continuous batching gives each sequence exactly the tokens it gets alone (greedy), on both cache layouts."""

import numpy as np
import pytest

import edgelm
from edgelm.engine import Engine, QueueFull
from edgelm.generation import generate_tokens

PROMPTS = ["Hi", "Hello there, how are", "A", "The quick brown fox jumps over the lazy dog and", "xyz 123", "Once"]


@pytest.fixture(scope="module", params=[("llama", "fp32", "auto"), ("llama", "int4", "auto"), ("llama", "fp32", "optimum"),
                                        ("gpt2", "fp32", "auto"), ("gemma3_text", "fp32", "auto")],
                ids=["fused-shared", "fused-int4", "optimum-concat", "gpt2-concat", "gemma3-rows"])
def model(request, exported):
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
