"""Interleaving: every row measured in rounds (A B C, B C A, ...), their samples merged per row.

The machine drifts (other load, clock, thermal) by up to 20 % between runs; rows measured one
after the other can differ by that much for no reason of their own. Rotating the rows through
several rounds spreads any drift over all of them, so the ratios between rows hold.
"""

from __future__ import annotations

from .stats import latency_summary, summarize

SAMPLED = ("ttft_ms",)  # besides the pp/tg keys: plain summaries whose samples are merged


def rotated(items: list, round_index: int) -> list:
    """The round's order: round r starts at item r (mod len)."""
    if not items:
        return []
    shift = round_index % len(items)
    return items[shift:] + items[:shift]


def merge(results: list[dict]) -> dict:
    """One row's worker results from several rounds as if they were one run with all the samples.

    Load time and quality come from the first round (a cold start; the scores do not change),
    peak RSS is the largest seen.
    """
    ok = [r for r in results if r.get("ok")]
    if not ok:
        return results[0]
    merged = dict(ok[0])
    merged["rounds"] = len(ok)
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    for key, value in ok[0].items():
        if isinstance(value, dict) and "samples" in value:  # pp/tg tokens/s, ttft
            merged[key] = summarize([s for r in ok for s in r[key]["samples"]])
        elif key in ("tg_by_depth", "ttft_ms_by_prompt"):
            merged[key] = {k: summarize([s for r in ok for s in r[key][k]["samples"]]) for k in value}
    latencies = [s / 1000 for r in ok for s in r["token_latency_ms"].get("samples_ms", [])]
    if latencies:
        merged["token_latency_ms"] = latency_summary(latencies)
    return merged
