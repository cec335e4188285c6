"""The harness end to end on a tiny exported model: worker process, JSON, markdown and plot."""

import json

import pytest

from edgelm.benchmarks.cli import benchmark, parse_backends, settings_from
from edgelm.benchmarks.report import to_markdown
from edgelm.errors import EdgelmError


class Args:
    pp, tg, reps, threads, no_scaling, depth = 16, 8, 2, 1, False, 48


@pytest.fixture(scope="module")
def report(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    settings = settings_from(Args())
    settings.update(depths=[0, 32], prompt_lengths=[8, 32], scaling_tokens=4, perplexity_tokens=64,
                    idle={"threshold": 0.1, "max_wait_s": 0, "max_redos": 1, "window_s": 0.01})  # real /proc/stat, no waiting
    folders = {"int4": exported("llama", "int4"), "fp32": exported("llama", "fp32")}
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("EDGELM_CACHE", str(out / "cache"))  # the peers' prepared models go here
    backends = ["edgelm", "transformers", "optimum", "llamacpp"]
    result = benchmark(folders, backends, settings, out / "r.json", out / "r.md", out / "r.png")
    monkeypatch.undo()
    return result, out


def test_every_measurement_is_in_the_json(report):
    result, out = report
    saved = json.loads((out / "r.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["machine"]["cores_available"] >= 1 and "onnxruntime" in saved["machine"]["packages"]
    rows = {(r["backend"], r["precision"]): r for r in saved["results"]}
    edgelm_int4 = rows[("edgelm", "int4")]
    assert edgelm_int4["ok"], edgelm_int4
    assert len(edgelm_int4["pp16"]["samples"]) == 2 and len(edgelm_int4["tg8"]["samples"]) == 2
    assert len(edgelm_int4["token_latency_ms"]["samples_ms"]) == 2 * 8
    assert len(edgelm_int4["tg8 @ d48"]["samples"]) == 2 and len(edgelm_int4["pp48"]["samples"]) == 2
    assert len(edgelm_int4["ttft_ms_48"]["samples"]) == 2
    idle = edgelm_int4["idle"]  # every sample counted, redone at most once each
    assert idle["samples"] == 2 * 5 + 2 * 4 and 0 <= idle["redone"] <= idle["samples"]
    assert len(edgelm_int4["tg8 sampled"]["samples"]) == 2 and all(s > 0 for s in edgelm_int4["tg8 sampled"]["samples"])
    assert all(s > 0 for s in edgelm_int4["tg8"]["samples"])
    assert edgelm_int4["token_latency_ms"]["p50"] <= edgelm_int4["token_latency_ms"]["p99"]
    assert set(edgelm_int4["tg_by_depth"]) == {"0", "32"} and set(edgelm_int4["ttft_ms_by_prompt"]) == {"8", "32"}
    assert edgelm_int4["peak_rss_mb"] > 10 and edgelm_int4["load_s"] > 0 and edgelm_int4["perplexity"] > 1


def test_peers_run_on_the_same_weights(report):
    result, _ = report
    rows = {(r["backend"], r["precision"]): r for r in result["results"]}
    assert rows[("transformers", "fp32")]["ok"], rows[("transformers", "fp32")]
    for precision in ("int4", "fp32"):
        row = rows[("optimum", precision)]
        assert row["ok"], row
        assert row["tg8"]["mean"] > 0 and row["tg8 sampled"]["mean"] > 0  # greedy and sampled through generate()
    # optimum runs the same fp32 weights through its own graph: the same perplexity as edgelm's fp32
    assert rows[("optimum", "fp32")]["perplexity"] == pytest.approx(rows[("edgelm", "fp32")]["perplexity"], rel=1e-3)
    assert rows[("transformers", "fp32")]["perplexity"] == pytest.approx(rows[("edgelm", "fp32")]["perplexity"], rel=1e-3)


def test_quality_columns_are_measured_against_the_fp32_export(report):
    result, out = report
    rows = {(r["backend"], r["precision"]): r for r in result["results"]}
    assert rows[("edgelm", "fp32")]["kld"] == pytest.approx(0, abs=1e-9) and rows[("edgelm", "fp32")]["top1"] == 1
    assert rows[("transformers", "fp32")]["kld"] < 1e-6  # the same weights in PyTorch
    assert rows[("edgelm", "int4")]["kld"] > rows[("edgelm", "fp32")]["kld"]
    assert "| KLD vs fp32 | top-1 vs fp32 |" in (out / "r.md").read_text()


def test_a_peer_without_a_gguf_is_a_row_with_its_reason(report):
    result, _ = report
    llamacpp = [r for r in result["results"] if r["backend"] == "llamacpp"][0]
    assert not llamacpp["ok"] and "not a GGUF file" in llamacpp["skipped"]


def test_markdown_table_and_plot(report):
    result, out = report
    markdown = (out / "r.md").read_text()
    assert markdown == to_markdown(result)
    assert "| model | size | params | backend | precision | threads | test | t/s |" in markdown
    assert "| edgelm | int4 | 1 | pp16 |" in markdown and "| edgelm | fp32 | 1 | tg8 |" in markdown
    assert "| edgelm | int4 | 1 | tg8 @ d48 |" in markdown and "| edgelm | int4 | 1 | pp48 |" in markdown
    assert "| samples | redone | waited s | kept disturbed |" in markdown and "TTFT ms @ 48" in markdown
    assert "skipped: the source is not a GGUF file" in markdown
    assert (out / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_named():
    with pytest.raises(EdgelmError, match="unknown backend"):
        parse_backends("edgelm,vllm")

    class Bad(Args):
        reps = 0

    with pytest.raises(EdgelmError, match="--reps must be at least 1"):
        settings_from(Bad())
