"""`python -m benchmarks profile`: per-operator time of a prompt and of a step, and the rates beside the machine's."""

import json

import pytest

from benchmarks.op_profile import attention_flops, by_op, graph_facts, main


def _gqa(name: str, seq: int) -> dict:
    return {"name": name, "op": "GroupQueryAttention", "us": 10.0, "params": 0, "shapes": [[1, seq, 64]]}


def test_attention_counts_the_causal_pairs_across_runs_and_sessions():
    nodes = {"a": {"heads": 2, "head_dim": 4, "window": 0}}
    held: dict[str, int] = {}
    # a prompt of 5 in runs of 3 and 2: the pairs 1+2+3 then 4+5; a step after it sees 6 positions
    prompt = attention_flops([[_gqa("a", 3)], [_gqa("a", 2)]], nodes, held)
    step = attention_flops([[_gqa("a", 1)]], nodes, held)
    assert prompt == 4 * 2 * 4 * (1 + 2 + 3 + 4 + 5) and step == 4 * 2 * 4 * 6 and held == {"a": 6}


def test_a_sliding_window_caps_the_keys_a_query_sees():
    nodes = {"w": {"heads": 1, "head_dim": 1, "window": 2}}
    assert attention_flops([[_gqa("w", 4)]], nodes, {}) == 4 * (1 + 2 + 2 + 2)


def test_by_op_sums_time_per_operator_most_first():
    events = [{"op": "A", "us": 1000.0}, {"op": "B", "us": 3000.0}, {"op": "A", "us": 1000.0}]
    rows = by_op(events, runs=2)
    assert [r["op"] for r in rows] == ["B", "A"] and rows[0]["ms"] == 1.5 and rows[1]["calls"] == 2
    assert sum(r["share"] for r in rows) == pytest.approx(100.0)


def test_profiles_a_prefill_folder_end_to_end(prefill_folder, tmp_path, capsys):
    assert main([str(prefill_folder), "--prompt", "80", "--steps", "4", "--threads", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "profile.json").read_text())
    ops = {r["op"] for r in report["prompt_ops"]}
    assert "GroupQueryAttention" in ops and {r["op"] for r in report["step_ops"]} >= {"MatMulNBits"}
    # a step reads every matrix node's weights once: the bytes are the graph's, not the profiler's (packed at load)
    manifest = json.loads((prefill_folder / "edgelm.json").read_text())
    _, weights = graph_facts(prefill_folder / manifest["graph_file"], manifest["kv"]["head_dim"])
    assert report["step_matrix_bytes"] == sum(weights.values()) > 0
    assert report["step_matrix_gb_s"] > 0 and report["rates"]["read_gb_s"] > 0
    assert report["prompt_attention_gflop"] >= 0 and report["prompt_attention_floor_s"] >= 0
    assert "by operator type" in (tmp_path / "profile.md").read_text() and "GB/s" in capsys.readouterr().out


def test_a_prompt_beyond_the_context_is_refused_with_a_message(prefill_folder, capsys):
    with pytest.raises(SystemExit):
        main([str(prefill_folder), "--prompt", "100000", "--steps", "4"])
    assert "beyond the model's context" in capsys.readouterr().err
