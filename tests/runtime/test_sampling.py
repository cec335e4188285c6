import numpy as np
import pytest

from edgelm.config import GenerationConfig
from edgelm.errors import EdgelmError
from edgelm.sampling import Sampler, apply_repetition_penalty

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
