"""Prompt chunks of PREFILL_GRAPH_MIN_TOKENS or more run on the prefill graph, steps on the decode graph, one cache."""

from dataclasses import replace

import numpy as np
import pytest

import edgelm
from edgelm.errors import EdgelmError
from edgelm.session import PREFILL_GRAPH_MIN_TOKENS, GraphRunner

TEXT = "A prompt long enough to take the prefill graph, and then a few steps on the decode graph after it. " * 2


@pytest.fixture(scope="module")
def folder(prefill_folder):
    return prefill_folder


def test_long_runs_take_the_prefill_graph_and_short_ones_the_decode_graph(folder):
    """The prefill graph fills the cache; the run's last token, and every step after, run on the decode graph."""
    model, reference_model = edgelm.load(folder), edgelm.load(folder)
    assert model.manifest.prefill_logits is False
    ids = np.array([model.encode(TEXT)], dtype=np.int64)
    assert ids.shape[1] >= PREFILL_GRAPH_MIN_TOKENS + 9
    decode_only = GraphRunner(folder, model.manifest, prefill_graph=False)
    assert model.runner.prefill_session is not None and decode_only.prefill_session is None

    long, short = ids[:, :PREFILL_GRAPH_MIN_TOKENS + 1], ids[:, PREFILL_GRAPH_MIN_TOKENS + 1:PREFILL_GRAPH_MIN_TOKENS + 9]
    cache = model.runner.new_cache()
    logits = model.runner.forward(long, cache)
    # the reference: all but the last token on the prefill graph (cache only), the last on the decode graph (a
    # cache binds to each session it meets, so one runner's cache runs on the decode-only runner)
    reference = reference_model.runner.new_cache()
    assert reference_model.runner.forward(long[:, :-1], reference, logits=False) is None
    assert reference_model.runner.prefill_graph_open
    np.testing.assert_array_equal(logits, decode_only.forward(long[:, -1:], reference))
    for position in range(short.shape[1]):
        token = short[:, position : position + 1]
        np.testing.assert_array_equal(model.runner.forward(token, cache), decode_only.forward(token, reference))
    assert cache.length == reference.length == PREFILL_GRAPH_MIN_TOKENS + 9
    # a run that needs every position's logits runs on the decode graph, whole
    np.testing.assert_array_equal(model.runner.forward(long, model.runner.new_cache(), all_logits=True),
                                  decode_only.forward(long, decode_only.new_cache(), all_logits=True))


def test_a_prefill_graph_with_logits_still_runs_whole(folder, tmp_path):
    """Folders of export revision 2 and before: their prefill graph returns the last position's logits itself."""
    from edgelm.export.prefill_graph import write_prefill_graph

    manifest = edgelm.load(folder).manifest
    assert write_prefill_graph(folder / manifest.graph_file, manifest.vocab_size, "with-logits.onnx")
    try:
        older = replace(manifest, prefill_graph_file="with-logits.onnx", prefill_logits=True)
        runner = GraphRunner(folder, older)
        ids = np.array([edgelm.load(folder).encode(TEXT)], dtype=np.int64)[:, :PREFILL_GRAPH_MIN_TOKENS]
        whole = GraphRunner(folder, replace(older, graph_file="with-logits.onnx"), prefill_graph=False)
        np.testing.assert_array_equal(runner.forward(ids, runner.new_cache()), whole.forward(ids, whole.new_cache()))
        assert runner.prefill_graph_open
        with pytest.raises(EdgelmError, match="returns 'logits', but the manifest says prefill_logits is false"):
            GraphRunner(folder, replace(older, prefill_logits=False)).open_prefill_graph()
    finally:
        (folder / "with-logits.onnx").unlink()


def test_the_prefill_graph_stays_close_to_the_decode_graph(folder):
    """Level 0 multiplies unrounded activations: the logits move a little, the next-token picks not at all here."""
    with_graph, without = edgelm.load(folder), edgelm.load(folder, prefill_graph=False)
    assert without.runner.prefill_session is None
    ids = np.array([with_graph.encode(TEXT)], dtype=np.int64)
    a = with_graph.runner.forward(ids, with_graph.runner.new_cache(), all_logits=True)[0]
    b = without.runner.forward(ids, without.runner.new_cache(), all_logits=True)[0]
    assert np.abs(a - b).max() < 0.05 * np.abs(b).max()
    assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.95
    prompt = TEXT[:PREFILL_GRAPH_MIN_TOKENS + 20]
    assert with_graph.generate(prompt, max_new_tokens=8, temperature=0.0) == \
        without.generate(prompt, max_new_tokens=8, temperature=0.0)


def test_the_prefill_graph_opens_on_the_first_long_run(folder):
    model = edgelm.load(folder)
    runner = model.runner
    assert runner.has_prefill_graph and not runner.prefill_graph_open  # no weights held for short prompts
    model.generate("ab", max_new_tokens=3, temperature=0.0)
    assert not runner.prefill_graph_open
    model.generate(TEXT, max_new_tokens=3, temperature=0.0)
    assert runner.prefill_graph_open
    assert not edgelm.load(folder, prefill_graph=False).runner.has_prefill_graph


def test_a_server_opens_the_prefill_graph_at_start(folder):
    from starlette.testclient import TestClient

    from edgelm.server.app import create_app

    model = edgelm.load(folder)
    with TestClient(create_app(model, "m", parallel=1)) as client:
        assert model.runner.prefill_graph_open
        assert client.get("/health").json() == {"status": "ok"}


def test_a_damaged_prefill_graph_is_named_on_the_first_long_prompt(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "prefill.onnx").write_bytes(b"not a graph")
    model = edgelm.load(copy)  # opened lazily: short prompts still run on the decode graph
    assert model.generate("ab", max_new_tokens=2, temperature=0.0) is not None
    with pytest.raises(EdgelmError, match="could not load .*prefill.onnx.*re-export"):
        model.generate(TEXT, max_new_tokens=2, temperature=0.0)


def test_a_graph_older_onnxruntime_refuses_says_to_upgrade_it(folder, tmp_path, monkeypatch):
    """A graph that fails to load, exported with a newer onnxruntime than this process has: upgrade, not re-export."""
    import json
    import shutil

    from edgelm import session

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "model.onnx").write_bytes(b"a graph with an attribute this release does not know")
    manifest = json.loads((copy / "edgelm.json").read_text())
    manifest["versions"]["onnxruntime"] = "1.32.0"
    (copy / "edgelm.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(session.ort, "__version__", "1.28.0")
    with pytest.raises(EdgelmError, match=r"exported with onnxruntime 1\.32\.0 and this process has 1\.28\.0.*"
                                          r"pip install -U 'onnxruntime>=1\.32\.0'"):
        edgelm.load(copy, verify=False)
    monkeypatch.setattr(session.ort, "__version__", "1.32.0.dev20260101")  # not older: the folder is at fault
    with pytest.raises(EdgelmError, match="could not load .*model.onnx.*re-export the model"):
        edgelm.load(copy, verify=False)


def test_a_missing_prefill_graph_is_named(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "prefill.onnx").unlink()
    with pytest.raises(EdgelmError, match="prefill.onnx is missing"):
        edgelm.load(copy)
    assert edgelm.load(copy, prefill_graph=False).generate("ab", max_new_tokens=2, temperature=0.0) is not None
