"""Property tests: random settings, logits, texts and token sequences never raise anything but
EdgelmError, and never emit text that the full decode would not."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgelm.config import GenerationConfig
from edgelm.detokenizer import IncrementalDecoder
from edgelm.errors import EdgelmError
from edgelm.sampling import Sampler
from edgelm.stopping import StopStrings
from tests.runtime.test_detokenizer import byte_level_tokenizer

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5), st.binary(max_size=3), st.lists(st.integers(-3, 200), max_size=3),
    st.lists(st.text(max_size=3), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
FIELDS = ("max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "stop", "seed",
          "eos_token_ids")
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, max_size=4))
def test_generation_config_accepts_or_names_the_field(kwargs):
    try:
        config = GenerationConfig(**kwargs)
    except EdgelmError as exc:
        assert any(name in str(exc) for name in kwargs)
        return
    assert type(config.max_new_tokens) is int and config.max_new_tokens >= 0
    assert math.isfinite(config.temperature) and config.temperature >= 0
    assert type(config.top_k) is int and 0 < config.top_p <= 1 and 0 <= config.min_p < 1
    assert math.isfinite(config.repetition_penalty) and config.repetition_penalty > 0
    assert all(isinstance(s, str) and s for s in config.stop)
    assert config.seed is None or (type(config.seed) is int and config.seed >= 0)
    assert config.eos_token_ids is None or all(type(t) is int for t in config.eos_token_ids)


VALID_CONFIGS = st.builds(
    GenerationConfig,
    temperature=st.one_of(st.just(0.0), st.floats(0, 1e-4), st.floats(1e-4, 50)),
    top_k=st.integers(0, 40), top_p=st.floats(1e-6, 1), min_p=st.floats(0, 0.999),
    repetition_penalty=st.floats(0.01, 10), seed=st.integers(0, 2**63 - 1),
)
LOGITS = st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=40)


@FAST
@given(VALID_CONFIGS, LOGITS, st.lists(st.integers(0, 39), max_size=10))
def test_sampler_picks_a_token_of_the_vocabulary(config, logits, seen):
    row = np.array(logits, dtype=np.float32)
    seen_ids = np.array([s for s in seen if s < row.size], dtype=np.int64)
    token = Sampler(config)(row, seen_ids)
    assert 0 <= token < row.size
    if config.greedy and config.repetition_penalty == 1.0:
        assert row[token] == row.max()


@FAST
@given(VALID_CONFIGS, LOGITS, st.sampled_from([np.nan, np.inf]), st.integers(0, 39))
def test_sampler_refuses_nan_or_infinite_logits(config, logits, bad, where):
    row = np.array(logits, dtype=np.float32)
    row[where % row.size] = bad
    with pytest.raises(EdgelmError, match="weights may be corrupt"):
        Sampler(config)(row)


TEXT = st.text(alphabet=st.sampled_from("ab#</>e nd"), max_size=30)


@FAST
@given(TEXT, st.lists(st.integers(0, 30), max_size=6), st.lists(st.text("ab#</>end", min_size=1, max_size=4), max_size=3))
def test_stop_strings_emit_exactly_the_text_before_the_first_stop(text, cuts, stops):
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    s = StopStrings(tuple(stops))
    emitted = ""
    for piece in pieces:
        emitted += s.feed(piece)
        assert text.startswith(emitted)  # never shows anything the whole text would not
        if s.stopped:
            break
    emitted += s.flush()
    # generation stops when the first stop string is complete: the earliest end, and there the longest
    found = [(i + len(stop), i) for stop in stops if (i := text.find(stop)) >= 0]
    first_end = min((end for end, _ in found), default=None)
    assert emitted == (text[: min(i for end, i in found if end == first_end)] if found else text)


def test_overlapping_stop_strings_cut_where_the_first_one_completes():
    """'<' is complete after two characters; '><<' would start earlier but end later."""
    for pieces in (["><", "<"], ["><<"], [">", "<", "<"]):
        s = StopStrings(("<", "><<"))
        assert "".join(s.feed(p) for p in pieces) + s.flush() == ">"


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


@FAST
@given(st.lists(st.integers(0, 255), max_size=40), st.text(max_size=6))
def test_incremental_decoder_matches_the_full_decode(tokenizer, ids, prompt):
    """Any byte sequence after a prompt of whole characters (a prompt is text, so it always is)."""
    decoder = IncrementalDecoder(tokenizer, tokenizer.encode(prompt).ids)
    full = tokenizer.decode(ids)
    emitted = ""
    for token in ids:
        emitted += decoder.push(token)
        assert full.startswith(emitted)  # never a piece the full decode would not hold
    emitted += decoder.flush()
    assert emitted == full
