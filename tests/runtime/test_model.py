"""The public API on a tiny exported model: generate, stream, chat, timings, limits."""

import pytest

import edgelm
from edgelm.errors import EdgelmError


@pytest.fixture(scope="module")
def model(exported):
    return edgelm.load(exported("llama", "fp32"))


def test_generate_equals_joined_stream_and_decoded_ids(model):
    text = model.generate("Hello", max_new_tokens=12)
    assert text == "".join(model.stream("Hello", max_new_tokens=12))
    ids = list(model.generate_ids(model.encode("Hello"), model.config(max_new_tokens=12)))
    assert text == model.decode(ids)


def test_timings_are_recorded(model):
    model.generate("Hello", max_new_tokens=10, eos_token_ids=())
    t = model.last_timings
    assert t.prompt_tokens == len(model.encode("Hello"))
    assert t.generated_tokens == 10 and t.decode_steps == 9
    assert t.prefill_s > 0 and t.decode_s > 0 and t.decode_tokens_per_s > 0
    assert "tok/s" in t.summary()


def test_max_new_tokens_and_context_length_bound_generation(model):
    ids = list(model.generate_ids(model.encode("Hi"), model.config(max_new_tokens=5, eos_token_ids=())))
    assert len(ids) == 5
    too_long = "x" * (model.manifest.context_length + 5)
    with pytest.raises(EdgelmError, match="context holds"):
        model.generate(too_long)
    with pytest.raises(EdgelmError, match="prompt is empty"):
        list(model.generate_ids([], model.config()))


def test_stops_at_eos(model):
    free = list(model.generate_ids(model.encode("Hello"), model.config(max_new_tokens=6, eos_token_ids=())))
    stopped = list(model.generate_ids(model.encode("Hello"), model.config(max_new_tokens=6, eos_token_ids=(free[2],))))
    assert stopped == free[: free.index(free[2])]


def test_stop_string_cuts_the_text(model):
    full = model.generate("Hello", max_new_tokens=16, eos_token_ids=())
    stop = full[5:7]
    cut = model.generate("Hello", max_new_tokens=16, eos_token_ids=(), stop=[stop])
    assert cut == full[: full.index(stop)]


def test_seeded_sampling_repeats(model):
    a = model.generate("Hello", max_new_tokens=10, temperature=1.0, seed=1)
    b = model.generate("Hello", max_new_tokens=10, temperature=1.0, seed=1)
    assert a == b


def test_chat_uses_the_template(model):
    messages = [{"role": "user", "content": "Hi"}]
    rendered = model.chat_template.render(messages)
    assert rendered == "<|user|>Hi\n<|assistant|>"
    expected = model.decode(list(model.generate_ids(model.encode(rendered, add_special_tokens=False),
                                                    model.config(max_new_tokens=8))))
    assert model.chat(messages, max_new_tokens=8) == expected


def test_missing_folder_is_explained(tmp_path):
    with pytest.raises(EdgelmError, match="does not exist: give an edgelm model folder"):
        edgelm.load(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgelmError, match="edgelm export SOURCE"):
        edgelm.load(tmp_path / "empty")


def test_incomplete_folder_is_explained(exported, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(exported("llama", "fp32"), broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(EdgelmError, match="tokenizer.json is missing"):
        edgelm.load(broken)


def test_unknown_device_is_named(exported):
    with pytest.raises(EdgelmError, match="device 'tpu'"):
        edgelm.load(exported("llama", "fp32"), device="tpu")


@pytest.mark.parametrize("graph", ["auto", "optimum"])
def test_a_list_of_prompts_runs_as_one_batch_and_equals_each_alone(exported, graph):
    model = edgelm.load(exported("llama", "fp32", graph))
    prompts = ["Hi", "Hello there, how are you", "A", "xyz"]
    assert model.generate(prompts, max_new_tokens=10) == [model.generate(p, max_new_tokens=10) for p in prompts]
    assert model.generate([], max_new_tokens=3) == []
    with pytest.raises(EdgelmError, match="prompt 1"):
        model.generate(["Hi", ""], max_new_tokens=3)


def test_a_batch_keeps_each_sequence_s_own_constraint(model):
    prompts = ["Hi", "Hello there", "A"]
    batch = model.generate(prompts, regex=r"(yes|no)\.", max_new_tokens=10)
    assert batch == [model.generate(p, regex=r"(yes|no)\.", max_new_tokens=10) for p in prompts]
    assert all(text in ("yes.", "no.") for text in batch)
