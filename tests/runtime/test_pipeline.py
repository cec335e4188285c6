"""transformers' call shape: pipeline('text-generation', model=...)(text, max_length=30, ...)."""

import pytest

import edgelm
from edgelm.errors import EdgelmError


@pytest.fixture(scope="module")
def generator(exported):
    return edgelm.pipeline("text-generation", model=str(exported("gpt2", "fp32")))


def test_the_users_own_example(generator):
    out = generator("Machine learning is", max_length=30, num_return_sequences=1)
    assert isinstance(out, list) and len(out) == 1 and set(out[0]) == {"generated_text"}
    text = out[0]["generated_text"]
    assert text.startswith("Machine learning is")
    prompt_tokens = len(generator.model.encode("Machine learning is"))
    new_tokens = generator.model.last_timings.generated_tokens
    assert prompt_tokens + new_tokens <= 30


def test_return_full_text_false_and_max_new_tokens(generator):
    full = generator("Hi", max_new_tokens=6, seed=4)[0]["generated_text"]
    new = generator("Hi", max_new_tokens=6, seed=4, return_full_text=False)[0]["generated_text"]
    assert full == "Hi" + new


def test_sampling_arguments(generator):
    a = generator("Hi", max_new_tokens=8, do_sample=True, temperature=0.9, top_k=20, top_p=0.95, seed=3,
                  num_return_sequences=2)
    b = generator("Hi", max_new_tokens=8, do_sample=True, temperature=0.9, top_k=20, top_p=0.95, seed=3,
                  num_return_sequences=2)
    assert a == b and len(a) == 2


def test_list_of_prompts(generator):
    out = generator(["A", "B"], max_new_tokens=3)
    assert [o[0]["generated_text"][0] for o in out] == ["A", "B"]


def test_greedy_with_several_sequences_is_refused(generator):
    with pytest.raises(EdgelmError, match="do_sample=False gives identical greedy outputs"):
        generator("Hi", num_return_sequences=2, do_sample=False)


def test_it_samples_unless_told_not_to_as_transformers_pipeline_does(generator, monkeypatch):
    """transformers 4.57's pipeline: do_sample=True, temperature 0.7, top-k 50, 256 new tokens by default."""
    seen = []
    real = generator.model.config
    monkeypatch.setattr(generator.model, "config", lambda *args, **kwargs: seen.append(real(*args, **kwargs))
                        or seen[-1])
    three = generator("Hi", seed=1, num_return_sequences=3)  # the user's own kind of call: no do_sample
    assert len(three) == 3 and len({o["generated_text"] for o in three}) > 1
    assert {(c.temperature, c.top_k, c.max_new_tokens) for c in seen} == {(0.7, 50, 256)}
    seen.clear()
    generator("Hi", max_new_tokens=4, do_sample=False)
    assert seen[0].greedy


def test_only_text_generation():
    with pytest.raises(EdgelmError, match="'text-generation'"):
        edgelm.pipeline("summarization", model="x")


def test_alias_resolves_to_its_cached_export(exported, monkeypatch, tmp_path):
    import shutil

    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path))
    shutil.copytree(exported("gpt2", "int4"), tmp_path / "smollm2-135m-int4")
    assert edgelm.resolve_model("smollm2-135m") == tmp_path / "smollm2-135m-int4"
    out = edgelm.pipeline("text-generation", model="smollm2-135m")("Hi", max_new_tokens=2)
    assert out[0]["generated_text"].startswith("Hi")


def test_hf_folder_is_exported_once_into_the_cache(hf_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path))
    folder = edgelm.resolve_model(str(hf_folder("gpt2")), precision="int8")
    assert (folder / "edgelm.json").is_file() and folder.parent == tmp_path
    assert edgelm.resolve_model(str(hf_folder("gpt2")), precision="int8") == folder


def _older_revision(folder):
    import json

    data = json.loads((folder / "edgelm.json").read_text())
    data.pop("export_revision")  # what exports before revision 2 wrote
    (folder / "edgelm.json").write_text(json.dumps(data))


def test_a_cached_export_of_an_older_revision_is_made_again(exported, monkeypatch, tmp_path, caplog):
    import shutil

    from edgelm import export
    from edgelm.manifest import EXPORT_REVISION, Manifest

    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path))
    cached = tmp_path / "smollm2-135m-int4"
    shutil.copytree(exported("gpt2", "int4"), cached)
    assert Manifest.load(cached).export_revision == EXPORT_REVISION  # what this exporter writes
    _older_revision(cached)
    calls = []

    def export_again(source, folder, precision, check, force):  # the real one needs the alias' package
        calls.append((source, folder, precision, force))
        shutil.rmtree(folder)
        shutil.copytree(exported("gpt2", "int4"), folder)

    monkeypatch.setattr(export, "export_model", export_again)
    with caplog.at_level("WARNING", logger="edgelm"):
        assert edgelm.resolve_model("smollm2-135m") == cached
    assert calls == [("smollm2-135m", cached, "int4", True)]
    assert f"older edgelm (revision 1, now {EXPORT_REVISION}): exporting it again" in caplog.text
    assert edgelm.resolve_model("smollm2-135m") == cached and len(calls) == 1  # current now: reused


@pytest.mark.parametrize("precision, again", [("gguf", True), ("int4", False)])
def test_a_revision_remakes_only_the_precisions_it_changed(exported, monkeypatch, tmp_path, precision, again):
    """Revision 5 changed gguf folders only (their int8 cache): a cached int4 folder of revision 4 stays."""
    import json
    import shutil

    from edgelm import export, manifest

    changes = {made: kinds for made, kinds in manifest.REVISION_CHANGES.items() if made < 5}
    monkeypatch.setattr(manifest, "REVISION_CHANGES", {**changes, 5: ("gguf",)})
    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path))
    cached = tmp_path / f"smollm2-135m-{precision}"
    shutil.copytree(exported("gpt2", "int4"), cached)
    data = json.loads((cached / "edgelm.json").read_text())
    (cached / "edgelm.json").write_text(json.dumps({**data, "export_revision": 4}))
    calls = []
    monkeypatch.setattr(export, "export_model", lambda source, folder, **kwargs: calls.append(kwargs["precision"]))
    assert edgelm.resolve_model("smollm2-135m", precision=precision) == cached
    assert calls == ([precision] if again else [])


def test_without_the_exporter_an_older_cached_export_still_runs(exported, monkeypatch, tmp_path, caplog):
    import shutil

    from edgelm import text_pipeline
    from edgelm.errors import EdgelmError

    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path))
    cached = tmp_path / "smollm2-135m-int4"
    shutil.copytree(exported("gpt2", "int4"), cached)
    _older_revision(cached)

    def no_exporter(what="exporting"):
        raise EdgelmError(f"{what} needs the exporter")

    monkeypatch.setattr(text_pipeline, "export_or_explain", no_exporter)
    with caplog.at_level("WARNING", logger="edgelm"):
        assert edgelm.resolve_model("smollm2-135m") == cached
    assert "edgelm models --remove smollm2-135m-int4" in caplog.text
    out = edgelm.pipeline("text-generation", model="smollm2-135m")("Hi", max_new_tokens=2)  # loads and runs
    assert out[0]["generated_text"].startswith("Hi")


def test_chat_input_returns_the_conversation(generator):
    messages = [{"role": "user", "content": "Hi"}]
    out = generator(messages, max_new_tokens=4, do_sample=False)
    conversation = out[0]["generated_text"]
    assert conversation[0] == messages[0] and conversation[1]["role"] == "assistant"
    assert conversation[1]["content"] == generator.model.chat(messages, max_new_tokens=4)
    reply = generator(messages, max_new_tokens=4, do_sample=False, return_full_text=False)
    assert reply == [{"generated_text": conversation[1]["content"]}]  # the reply alone, as in transformers
    both = generator([messages, messages], max_new_tokens=4, do_sample=False)  # a list of chats
    assert both == [out, out]


def test_a_chat_ending_with_the_assistant_is_continued(generator):
    start = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    out = generator(start, max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert len(out) == 2 and out[1]["role"] == "assistant" and out[1]["content"].startswith("Hello")
    rendered = generator.model.chat_template.render(start, add_generation_prompt=False)
    prefix = rendered[: rendered.rfind("Hello") + len("Hello")]
    ids = generator.model.encode(prefix, add_special_tokens=False)  # the template writes BOS where it is wanted
    expected = "".join(generator.model.stream_ids(ids, generator.model.config(max_new_tokens=4)))
    assert out[1]["content"] == "Hello" + expected
    closed = generator(start, max_new_tokens=4, do_sample=False, continue_final_message=False)[0]["generated_text"]
    assert len(closed) == 3 and closed[1] == start[1]


def test_transformers_arguments_with_nothing_to_do_are_accepted_and_others_named(generator):
    out = generator("Hi", max_new_tokens=2, do_sample=False, batch_size=4, pad_token_id=0,
                    clean_up_tokenization_spaces=True)
    assert out == generator("Hi", max_new_tokens=2, do_sample=False)
    with pytest.raises(EdgelmError, match="takes no stop_sequence \\(for stop_sequence use stop_strings=\\)"):
        generator("Hi", stop_sequence=".")


@pytest.mark.parametrize("device, expected", [(-1, "cpu"), ("cpu", "cpu")])
def test_transformers_device_spellings(exported, device, expected):
    generator = edgelm.pipeline("text-generation", model=str(exported("gpt2", "fp32")), device=device)
    assert generator.model.runner.device == expected
    with pytest.raises(EdgelmError, match="the first GPU"):
        edgelm.pipeline("text-generation", model=str(exported("gpt2", "fp32")), device=1)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_pipeline_export_without_validation(hf_folder, monkeypatch, tmp_path, how):
    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path))
    if how == "environment":
        monkeypatch.setenv("EDGELM_VALIDATE", "0")
    generator = edgelm.pipeline("text-generation", model=str(hf_folder("gpt2")), precision="fp32",
                                validate=False if how == "argument" else None)
    validation = generator.model.manifest.validation
    assert "export_seconds" in validation and "max_abs_logit_diff" not in validation and "perplexity" not in validation


def test_lists_and_return_sequences_run_batched_and_equal_singles(exported):
    generator = edgelm.pipeline("text-generation", model=str(exported("llama", "fp32")))
    texts = ["Hi", "Hello there", "A"]
    together = generator(texts, max_new_tokens=8, do_sample=False)
    assert together == [generator(t, max_new_tokens=8, do_sample=False) for t in texts]
    sampled = generator("Hi", max_new_tokens=8, do_sample=True, seed=5, num_return_sequences=3)
    assert len(sampled) == 3
    assert sampled == generator("Hi", max_new_tokens=8, do_sample=True, seed=5, num_return_sequences=3)
    assert sampled[1] == generator("Hi", max_new_tokens=8, do_sample=True, seed=6)[0]  # sequence i has seed + i


def test_without_a_model_the_default_is_named(monkeypatch, caplog, exported):
    from edgelm import aliases, text_pipeline

    monkeypatch.setattr(aliases, "DEFAULT_MODEL", str(exported("llama", "fp32")))  # a folder: nothing to export
    with caplog.at_level("WARNING", logger="edgelm"):
        generator = text_pipeline.pipeline("text-generation")
    assert "no model given; using the default" in caplog.text
    assert generator("Hi", max_new_tokens=2)[0]["generated_text"].startswith("Hi")


def test_a_folders_own_precision_may_be_named(exported):
    folder = exported("llama", "fp32")
    assert edgelm.pipeline("text-generation", model=str(folder), precision="fp32").model.folder == folder


def test_a_damaged_cached_export_says_how_to_have_it_made_again(exported, monkeypatch, tmp_path):
    import shutil

    monkeypatch.setenv("EDGELM_CACHE", str(tmp_path))
    cached = tmp_path / "smollm2-135m-int4"
    shutil.copytree(exported("gpt2", "int4"), cached)
    (cached / "tokenizer.json").write_text("{")
    with pytest.raises(edgelm.EdgelmError, match="edgelm models --remove smollm2-135m-int4"):
        edgelm.load("smollm2-135m")
    folder = tmp_path / "mine" / "model"  # not directly in the cache folder
    shutil.copytree(cached, folder)
    with pytest.raises(edgelm.EdgelmError) as outside:  # a folder of the user's own: no word of the cache
        edgelm.load(folder)
    assert "models --remove" not in str(outside.value)


def test_stop_strings_end_the_text_with_the_stop_string_as_in_transformers(generator):
    full = generator("Hi", max_new_tokens=12, do_sample=False, return_full_text=False)[0]["generated_text"]
    stop = full[3:5]  # a string the greedy text holds
    cut = generator("Hi", max_new_tokens=12, do_sample=False, return_full_text=False, stop_strings=[stop])
    assert cut[0]["generated_text"] == full[: full.index(stop) + len(stop)]
    assert generator.model.generate("Hi", max_new_tokens=12, stop=[stop]) == full[: full.index(stop)]  # the API's own
    batch = generator(["Hi", "Hi"], max_new_tokens=12, do_sample=False, return_full_text=False, stop_strings=[stop])
    assert batch == [cut, cut]  # the batch engine keeps it too


def test_the_tokenizer_and_task_transformers_code_reads(generator):
    tokenizer = generator.tokenizer
    assert generator.task == "text-generation"
    assert tokenizer.eos_token_id == generator.model.manifest.tokens.eos_token_ids[0]
    ids = tokenizer.encode("Hello")
    assert ids == generator.model.encode("Hello") and tokenizer.decode(ids) == "Hello"
