"""The chat and constraint benchmark runs end to end on a tiny model (what it measures is not checked here)."""

from benchmarks import chat_and_constraints


def test_the_benchmark_reports_every_turn_and_the_mask_cost(exported, tmp_path, capsys):
    report = chat_and_constraints.main([str(exported("llama", "fp32")), "--reps", "1", "--reply-tokens", "4",
                                        "--json-tokens", "12", "--json", str(tmp_path / "out.json")])
    assert len(report["turns"]) == 5 and report["turns"][0]["cached_tokens"] == 0
    assert all(turn["cached_tokens"] > 0 for turn in report["turns"][1:])
    assert report["mask_ms_median"] > 0 and (tmp_path / "out.json").is_file()
    assert "TTFT session" in capsys.readouterr().out
