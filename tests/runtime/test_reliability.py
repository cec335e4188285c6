"""One model shared by threads, memory over many calls, digests, and the manifest checked against the graph."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

import edgelm
from edgelm.benchmarks.rss import current_rss_mb
from edgelm.errors import EdgelmError

PROMPTS = ["Hello", "Once upon a time", "abc", "The quick brown fox"]


@pytest.fixture(scope="module")
def model(exported):
    return edgelm.load(exported("llama", "fp32"))


def test_threads_on_one_model_give_the_sequential_results_and_their_own_timings(model):
    expected = {p: model.generate(p, max_new_tokens=12, eos_token_ids=()) for p in PROMPTS}
    results, timings, errors = {}, {}, []

    def work(prompt):
        try:
            for _ in range(3):
                results[prompt] = model.generate(prompt, max_new_tokens=12, eos_token_ids=())
                timings[prompt] = model.last_timings
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == expected
    for prompt, t in timings.items():  # each thread saw the timings of its own call
        assert t.prompt_tokens == len(model.encode(prompt)) and t.generated_tokens == 12


def test_last_timings_still_work_in_one_thread(model):
    model.generate("Hi", max_new_tokens=3, eos_token_ids=())
    assert model.last_timings.generated_tokens == 3 and model.last_timings.prompt_tokens == len(model.encode("Hi"))


def test_memory_stays_flat_over_many_generations(model):
    for _ in range(20):
        model.generate("Hello", max_new_tokens=4, eos_token_ids=())
    after_20 = current_rss_mb()
    for _ in range(180):
        model.generate("Hello", max_new_tokens=4, eos_token_ids=())
    after_200 = current_rss_mb()
    assert after_200 - after_20 < 16, (after_20, after_200)


def test_export_records_digests_and_verify_accepts_the_intact_folder(exported):
    folder = exported("llama", "fp32")
    manifest = json.loads((folder / "edgelm.json").read_text())
    assert set(manifest["files"]) >= {"model.onnx", "model.onnx.data", "tokenizer.json"}
    assert edgelm.load(folder, verify=True).generate("Hi", max_new_tokens=2) is not None


def test_verify_names_a_missing_file(exported, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(exported("llama", "fp32"), folder)
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(EdgelmError, match="chat_template.jinja is missing"):
        edgelm.load(folder, verify=True)


def test_nan_logits_name_corrupt_weights(exported, tmp_path):
    import numpy as np

    folder = tmp_path / "m"
    shutil.copytree(exported("gpt2", "fp32"), folder)
    data = folder / "model.onnx.data"
    data.write_bytes(np.full(data.stat().st_size // 4, np.nan, dtype=np.float32).tobytes())
    with pytest.raises(EdgelmError, match="NaN logits.*weights may be corrupt"):
        edgelm.load(folder).generate("Hi", max_new_tokens=2)


@pytest.mark.parametrize("field,value,message", [
    ("num_layers", 3, "cache inputs for 2 layers"),
    ("head_dim", 8, "head size 16"),
    ("num_kv_heads", 2, "1 key/value heads"),
])
def test_manifest_disagreeing_with_the_graph_fails_at_load(exported, tmp_path, field, value, message):
    folder = tmp_path / "m"
    shutil.copytree(exported("llama", "fp32"), folder)
    data = json.loads((folder / "edgelm.json").read_text())
    data["kv"][field] = value
    (folder / "edgelm.json").write_text(json.dumps(data))
    with pytest.raises(EdgelmError, match=message):
        edgelm.load(folder)


def test_empty_prompt_is_refused_as_documented(model):
    with pytest.raises(EdgelmError, match="the prompt is empty"):
        model.generate("")


def test_tiny_temperature_is_greedy(model):
    greedy = model.generate("Hello", max_new_tokens=6)
    assert model.generate("Hello", max_new_tokens=6, temperature=1e-9, seed=3) == greedy
