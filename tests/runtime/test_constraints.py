"""Constrained decoding: output that follows a JSON schema, a regex or a grammar, on a tiny random model.

A random model never chooses to end a string or a number, so an output can be cut by
max_new_tokens: then finish_reason says 'length'. Every output that finished ('stop') parses
and validates.
"""

import json
import re
import sys

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgelm
from edgelm.config import GenerationConfig
from edgelm.constraints import make_constraint, tokenizer_info
from edgelm.sampling import Sampler
from tests.runtime.test_detokenizer import byte_level_tokenizer

BUDGET = 300  # tokens (characters, with the tests' tokenizer) per output
NAMES = st.sampled_from(["a", "name", "age", "tags", "ok", "x_1"])


def leaf_schemas():
    return st.one_of(
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.integers(-50, 50).map(lambda low: {"type": "integer", "minimum": low, "maximum": low + 100}),
        st.just({"type": "number"}),
        st.integers(0, 6).map(lambda n: {"type": "string", "maxLength": n}),
        st.just({"type": "string", "pattern": "^[a-z]{1,4}$"}),
        st.lists(st.text("abc xyz", max_size=4), min_size=1, max_size=3, unique=True).map(lambda v: {"enum": v}),
    )


def schemas():
    def extend(children):
        objects = st.dictionaries(NAMES, children, min_size=1, max_size=3).flatmap(
            lambda props: st.sets(st.sampled_from(sorted(props))).map(lambda required: {
                "type": "object", "properties": props, "required": sorted(required), "additionalProperties": False,
            }))
        arrays = st.tuples(children, st.integers(0, 2)).map(
            lambda t: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": t[1] + 2})
        return st.one_of(objects, arrays)

    return st.recursive(leaf_schemas(), extend, max_leaves=6)


@pytest.fixture(scope="module")
def model(exported):
    return edgelm.load(exported("llama", "fp32"))


@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                   HealthCheck.too_slow])
@given(schema=schemas(), seed=st.integers(0, 3))
def test_every_finished_output_validates_against_its_schema(model, schema, seed):
    settings_ = dict(json_schema=schema, max_new_tokens=BUDGET)
    if seed:  # sampled as well as greedy
        settings_.update(temperature=1.0, seed=seed)
    text = model.generate("Reply in JSON: ", **settings_)
    timings = model.last_timings
    if timings.finish_reason == "stop":
        jsonschema.validate(json.loads(text), schema)
    else:
        assert timings.finish_reason == "length" and timings.generated_tokens == BUDGET


def test_a_cut_output_says_length_and_a_finished_one_validates(model):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    cut = model.generate("JSON: ", json_schema=schema, max_new_tokens=4)
    assert model.last_timings.finish_reason == "length" and cut == '{"n"'
    with pytest.raises(ValueError):
        json.loads(cut)
    done = model.generate("JSON: ", json_schema=schema, max_new_tokens=50)
    assert model.last_timings.finish_reason == "stop"
    jsonschema.validate(json.loads(done), schema)


def test_a_pydantic_model_is_a_schema(model):
    pydantic = pytest.importorskip("pydantic")

    class Point(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")  # else any other key may follow
        x: bool
        label: str = pydantic.Field(max_length=3)

    text = model.chat([{"role": "user", "content": "A point?"}], json_schema=Point, max_new_tokens=60)
    assert model.last_timings.finish_reason == "stop"
    Point.model_validate_json(text)


def test_regex(model):
    for seed in range(5):
        text = model.generate("Answer: ", regex=r"(yes|no), [0-9]{2}\.", temperature=1.0, seed=seed)
        assert re.fullmatch(r"(yes|no), [0-9]{2}\.", text) and model.last_timings.finish_reason == "stop"


@pytest.mark.parametrize("grammar", [
    'root ::= "(" item ("," item)* ")"\nitem ::= [0-9] | "x"',  # GBNF
    'start: "(" item ("," item)* ")"\nitem: /[0-9]/ | "x"',  # Lark
], ids=["gbnf", "lark"])
def test_grammar(model, grammar):
    text = model.generate("List: ", grammar=grammar, max_new_tokens=BUDGET, temperature=1.0, seed=1)
    if model.last_timings.finish_reason == "stop":
        assert re.fullmatch(r"\([0-9x](,[0-9x])*\)", text)
    else:
        assert re.fullmatch(r"\([0-9x](,[0-9x])*,?", text)


def test_the_pipeline_takes_a_schema(model):
    from edgelm.text_pipeline import TextGenerationPipeline

    out = TextGenerationPipeline(model)("JSON: ", json_schema={"type": "boolean"}, return_full_text=False,
                                        max_new_tokens=10)
    assert out[0]["generated_text"] in ("true", "false")


def test_constraints_and_logprobs_on_a_chat_session(model):
    session = model.chat_session(max_new_tokens=40)
    reply = session.send("Pick one", regex="(red|green|blue)", logprobs=True)
    timings = session.last_timings
    assert reply in ("red", "green", "blue") and timings.finish_reason == "stop"
    assert len(timings.logprobs) == timings.generated_tokens and all(p <= 0 for p in timings.logprobs)
    assert timings.logprobs[1:] == [0.0] * (len(reply) - 1)  # after the first letter the rest is forced
    session.send("Another")  # the next turn is free text again
    assert session.last_timings.logprobs is None


def test_logprobs_are_the_log_softmax_of_the_processed_logits():
    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    sampler = Sampler(GenerationConfig(logprobs=True))
    assert sampler(logits.copy()) == 1
    expected = np.log(np.exp(3.0) / np.exp(logits.astype(np.float64)).sum())
    assert sampler.last_logprob == pytest.approx(expected, abs=1e-6)


def test_a_byte_level_tokenizer_json_is_read_by_llguidance():
    tokenizer = byte_level_tokenizer()
    eos = tokenizer.get_vocab_size()
    info = tokenizer_info(tokenizer.to_str(), eos + 1, [eos])
    constraint = make_constraint(info, regex="[0-9]+")
    logits = np.zeros(eos + 1, dtype=np.float32)
    constraint.apply(logits)
    allowed = [tokenizer.decode([i]) for i in np.flatnonzero(np.isfinite(logits))]
    assert sorted(allowed) == list("0123456789")
    constraint.advance(tokenizer.encode("7").ids[0])
    logits[:] = 0
    constraint.apply(logits)
    assert np.isfinite(logits[eos]) and constraint.accepting  # "7" is complete: end of sequence is allowed


def test_a_byte_level_vocabulary_behind_a_byte_fallback_decoder_is_still_byte_level():
    """SmolLM2's tokenizer.json: byte-level tokens, decoded by ByteFallback, Fuse, Replace and ByteLevel."""
    from tokenizers import Regex, decoders

    tokenizer = byte_level_tokenizer()
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Replace(Regex("\u2581"), " "), decoders.ByteLevel()])
    eos = tokenizer.get_vocab_size()
    constraint = make_constraint(tokenizer_info(tokenizer.to_str(), eos + 1, [eos]), regex=" [0-9]")
    logits = np.zeros(eos + 1, dtype=np.float32)
    constraint.apply(logits)
    assert [tokenizer.decode([i]) for i in np.flatnonzero(np.isfinite(logits))] == [" "]


@pytest.mark.parametrize("settings_, message", [
    (dict(json_schema={"type": "object"}, regex="a"), "^GenerationConfig: json_schema and regex are both set"),
    (dict(json_schema="{not json"), "not valid JSON"),
    (dict(json_schema=[1, 2]), "must be a JSON schema"),
    (dict(regex=""), "regex"),
    (dict(grammar=3), "grammar"),
    (dict(logprobs="yes"), "logprobs"),
    (dict(regex="[0-9]{3}", eos_token_ids=[]), r"eos_token_ids=\(\) with regex: a constrained output ends on"),
    (dict(json_schema={"type": "integer"}, eos_token_ids=()), "eos_token_ids=.* with json_schema"),
])
def test_bad_settings_name_the_field(settings_, message):
    with pytest.raises(edgelm.EdgelmError, match=message):
        GenerationConfig(**settings_)


@pytest.mark.parametrize("settings_, message", [
    (dict(regex="[0-9]+("), "regex cannot be used"),
    (dict(json_schema={"type": "fish"}), "json_schema cannot be used"),
    (dict(grammar="root ::= undefined_rule"), "grammar"),
])
def test_constraints_that_do_not_compile_raise_edgelm_errors(model, settings_, message):
    with pytest.raises(edgelm.EdgelmError, match=message):
        model.generate("x", **settings_)


def test_without_llguidance_the_error_says_what_to_install(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)  # import llguidance now fails
    model._token_tables.clear()
    with pytest.raises(edgelm.EdgelmError, match=r"pip install 'edgelm\[json\]'"):
        model.generate("x", regex="a")


def test_edgelm_generate_takes_a_schema_file(exported, tmp_path):
    from tests.runtime.test_cli import run

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    result = run("generate", str(exported("llama", "fp32")), "JSON: ", "--json-schema", str(tmp_path / "schema.json"),
                 "--no-timings")
    assert result.returncode == 0, result.stderr
    jsonschema.validate(json.loads(result.stdout[len("JSON: "):]), schema)


@pytest.mark.parametrize("flag, name, message", [
    ("--json-schema", "missing.json", "no such file"),
    ("--grammar", "grammar.gbnf", "no such file"),
    ("--json-schema", ".", "is a folder"),
])
def test_edgelm_generate_names_a_schema_or_grammar_file_that_is_not_there(exported, tmp_path, flag, name, message):
    from tests.runtime.test_cli import run

    path = tmp_path / name if name != "." else tmp_path
    result = run("generate", str(exported("llama", "fp32")), "x", flag, str(path))
    assert result.returncode == 2 and f"{flag} {path}: {message}" in result.stderr, result.stderr
