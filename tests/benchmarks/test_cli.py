"""The harness's command line: extra edgelm folders as rows (--also), with an attention kernel of their own."""

import pytest

from benchmarks.cli import _also_row, benchmark


def test_also_takes_a_label_and_a_model_folder(tmp_path):
    (tmp_path / "edgelm.json").write_text("{}")
    assert _also_row(f"int4 head128={tmp_path}") == ("int4 head128", tmp_path, {})


def test_also_takes_an_attention_kernel(tmp_path):
    (tmp_path / "edgelm.json").write_text("{}")
    assert _also_row(f"int4 tiled={tmp_path},attention=tiled") == ("int4 tiled", tmp_path, {"attention": "tiled"})
    with pytest.raises(SystemExit, match="attention= takes one of tiled, plain"):
        _also_row(f"int4 fast={tmp_path},attention=fast")


@pytest.mark.parametrize("item", ["no-equals-sign", "=/tmp", "label=/definitely/not/a/folder"])
def test_also_refuses_what_is_not_label_and_model_folder(item):
    with pytest.raises(SystemExit, match="LABEL=FOLDER"):
        _also_row(item)


def test_a_rows_options_reach_its_worker_only(monkeypatch, exported):
    folder = exported("llama")
    seen = {}
    monkeypatch.setattr("benchmarks.cli.run_all", lambda rows, *args, **kwargs: seen.update(
        {row.precision: row.options for row in rows}) or {"rows": []})
    monkeypatch.setattr("benchmarks.cli.to_markdown", lambda report: "")
    benchmark({"int4": folder, "int4 tiled": folder}, ["edgelm"], {"threads": 2},
              options={"int4 tiled": {"attention": "tiled"}})
    assert seen == {"int4": {}, "int4 tiled": {"attention": "tiled"}}


def test_also_takes_huge_pages_off_and_options_together(tmp_path):
    (tmp_path / "edgelm.json").write_text("{}")
    assert _also_row(f"small={tmp_path},huge_pages=off,attention=plain,arena=off") == (
        "small", tmp_path, {"huge_pages": "off", "attention": "plain", "arena": "off"})
    with pytest.raises(SystemExit, match="'huge_pages=maybe' is not an option here"):
        _also_row(f"small={tmp_path},huge_pages=maybe")


@pytest.mark.parametrize("options, message", [
    (["--backends", ""], "no backend given"),
    (["--json", "/no/such/folder/out.json"], "cannot be written"),
    (["--plot", "/no/such/folder/out.png"], "cannot be written"),
    (["--pp", "100000"], "--pp 100000 tokens leave no room"),
    (["--depth", "100000"], "--depth 100000 plus --tg"),
])
def test_edgelm_bench_refuses_what_would_fail_or_be_lost_before_measuring(exported, monkeypatch, capsys, options,
                                                                           message, in_process_cli):
    import edgelm.benchmarks.cli
    from edgelm.cli import main

    monkeypatch.setattr(edgelm.benchmarks.cli, "run_all", lambda *args, **kwargs: pytest.fail("it measured"))
    depth = [] if "--depth" in options else ["--depth", "0"]  # the tiny model's context is 1,024
    assert main(["bench", str(exported("llama", "fp32")), *depth, *options]) == 2
    assert message in capsys.readouterr().err
