import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgelm.config import GenerationConfig
from edgelm.errors import EdgelmError
from edgelm.sampling import BLOCK, Sampler, apply_repetition_penalty, candidates, draw

LOGITS = np.array([1.0, 3.0, 2.0, -1.0, 0.5], dtype=np.float32)


def test_greedy_takes_argmax():
    assert Sampler(GenerationConfig())(LOGITS) == 1


def test_top_k_one_is_greedy_even_when_sampling():
    sampler = Sampler(GenerationConfig(temperature=5.0, top_k=1, seed=0))
    assert {sampler(LOGITS) for _ in range(50)} == {1}


def test_seed_makes_sampling_repeatable():

    a = Sampler(GenerationConfig(temperature=1.0, seed=7))
    b = Sampler(GenerationConfig(temperature=1.0, seed=7))
    assert [a(LOGITS) for _ in range(30)] == [b(LOGITS) for _ in range(30)]



def test_top_p_keeps_smallest_set_reaching_p():
    sampler = Sampler(GenerationConfig(temperature=1.0, top_p=0.6, seed=0))
    # softmax(LOGITS): token 1 has ~0.63 of the mass, so it alone reaches 0.6
    assert {sampler(LOGITS) for _ in range(100)} == {1}
    wider = Sampler(GenerationConfig(temperature=1.0, top_p=0.8, seed=0))
    assert {wider(LOGITS) for _ in range(300)} == {1, 2}


def test_min_p_drops_unlikely_tokens():
    sampler = Sampler(GenerationConfig(temperature=1.0, min_p=0.2, seed=0))
    # token 2 has e^-1 = 0.37 of token 1's probability, token 0 e^-2 = 0.14: only 1 and 2 survive
    assert {sampler(LOGITS) for _ in range(300)} == {1, 2}


def test_sampling_follows_the_distribution():
    sampler = Sampler(GenerationConfig(temperature=1.0, seed=3))
    counts = np.bincount([sampler(LOGITS) for _ in range(4000)], minlength=5) / 4000
    expected = np.exp(LOGITS) / np.exp(LOGITS).sum()
    np.testing.assert_allclose(counts, expected, atol=0.03)


def test_repetition_penalty_like_transformers():
    out = apply_repetition_penalty(LOGITS, np.array([1, 3, 1]), 2.0)
    np.testing.assert_allclose(out, [1.0, 1.5, 2.0, -2.0, 0.5])
    assert Sampler(GenerationConfig(repetition_penalty=2.0))(LOGITS, np.array([1])) == 2


@pytest.mark.parametrize(
    "field, value",
    [("temperature", -1), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -2), ("min_p", 1.0), ("max_new_tokens", -1),
     ("repetition_penalty", 0)],
)
def test_config_names_the_bad_field(field, value):
    with pytest.raises(EdgelmError, match=f"GenerationConfig.{field}="):
        GenerationConfig(**{field: value})


def test_config_update_rejects_unknown_settings():
    with pytest.raises(EdgelmError, match="unknown generation setting"):
        GenerationConfig().updated(temprature=0.5)
    assert GenerationConfig().updated(top_k=None, max_new_tokens=3).max_new_tokens == 3
    assert GenerationConfig(stop="END").stop == ("END",)


def full_sort_candidates(probs: np.ndarray, config: GenerationConfig) -> np.ndarray:
    """The definition `candidates` must meet: top-k, min-p, then top-p over the whole vocabulary, fully sorted."""
    keep = np.ones(probs.size, bool)
    if config.top_k and config.top_k < probs.size:
        keep &= probs >= np.sort(probs)[-config.top_k]
    if config.min_p > 0:
        keep &= probs >= config.min_p
    if config.top_p < 1.0:
        ids = np.flatnonzero(keep)
        order = ids[np.argsort(-probs[ids], kind="stable")]
        mass = probs[order].astype(np.float64)
        before = np.cumsum(mass) - mass
        keep = np.zeros(probs.size, bool)
        keep[order[before < config.top_p * probs[ids].sum(dtype=np.float64)]] = True
    return np.flatnonzero(keep)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 3 * BLOCK),
    spread=st.sampled_from([0.5, 2.0, 8.0, 40.0]),
    levels=st.sampled_from([None, 4, 50]),  # few distinct logits: ties everywhere
    top_k=st.sampled_from([0, 1, 2, 7, 50, 5000]),
    top_p=st.sampled_from([1.0, 0.999, 0.9, 0.5, 0.05]),
    min_p=st.sampled_from([0.0, 0.01, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_candidates_are_the_full_sorts(size, spread, levels, top_k, top_p, min_p, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(size) * spread
    if levels:
        logits = np.round(logits * levels / spread) / levels * spread
    probs = np.exp((logits - logits.max()).astype(np.float32))
    config = GenerationConfig(temperature=1.0, top_k=top_k, top_p=top_p, min_p=min_p)
    found = candidates(probs, config)
    expected = full_sort_candidates(probs, config)
    assert np.array_equal(np.arange(size) if found is None else found, expected)


def test_draw_follows_the_weights_across_blocks_and_never_draws_a_zero():
    weights = np.zeros(3 * BLOCK + 17, np.float32)
    weights[[5, BLOCK - 1, BLOCK, 2 * BLOCK + 3, weights.size - 1]] = [1.0, 2.0, 0.5, 3.0, 1.5]
    weights[100:200] = 0.01  # many small ones: 1.0 of mass together
    rng = np.random.default_rng(0)
    drawn = np.bincount([draw(weights, rng) for _ in range(20000)], minlength=weights.size) / 20000
    assert not drawn[weights == 0].any()
    np.testing.assert_allclose(drawn, weights / weights.sum(), atol=0.012)


def test_sampled_tokens_come_from_the_candidates_on_a_large_vocabulary():
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal(262_144) * 4).astype(np.float32)
    for settings_ in (dict(top_p=0.9), dict(top_k=40), dict(min_p=0.1), dict(top_k=100, top_p=0.5)):
        config = GenerationConfig(temperature=0.8, seed=2, **settings_)
        allowed = set(candidates(np.exp(logits / 0.8 - (logits / 0.8).max()), config).tolist())
        sampler = Sampler(config)
        assert {sampler(logits.copy()) for _ in range(200)} <= allowed
