"""Interleaved rounds: rotation order, and one row's samples merged across rounds."""

from edgelm.benchmarks.rounds import merge, rotated
from edgelm.benchmarks.stats import latency_summary, summarize


def test_each_round_starts_one_row_later():
    rows = ["a", "b", "c"]
    assert [rotated(rows, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert rotated([], 3) == []


def _result(rates, rss, latencies):
    return {"ok": True, "load_s": rss / 100, "peak_rss_mb": rss, "tg8": summarize(rates), "ttft_ms": summarize(rates),
            "token_latency_ms": latency_summary(latencies), "tg_by_depth": {"0": summarize(rates)},
            "perplexity": 3.0}


def test_merge_pools_every_sample_and_keeps_the_worst_memory():
    merged = merge([_result([1.0, 2.0], 100, [0.01, 0.02]), _result([3.0], 120, [0.03]),
                    {"ok": False, "error": "boom"}])
    assert merged["rounds"] == 2
    assert merged["tg8"]["samples"] == [1.0, 2.0, 3.0] and merged["tg8"]["mean"] == 2.0
    assert merged["tg_by_depth"]["0"]["samples"] == [1.0, 2.0, 3.0]
    assert merged["token_latency_ms"]["samples_ms"] == [10.0, 20.0, 30.0]
    assert merged["peak_rss_mb"] == 120 and merged["load_s"] == 1.0 and merged["perplexity"] == 3.0


def test_merge_of_failed_rounds_is_the_failure():
    assert merge([{"ok": False, "error": "boom"}])["error"] == "boom"
