"""Summary statistics for benchmark samples: mean ± std as llama-bench reports, and latency percentiles."""

from __future__ import annotations

import math


def mean_std(samples: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std is 0 for a single sample."""
    if not samples:
        raise ValueError("no samples")
    mean = sum(samples) / len(samples)
    if len(samples) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((x - mean) ** 2 for x in samples) / (len(samples) - 1))


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between order statistics (numpy's default)."""
    if not samples:
        raise ValueError("no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(samples: list[float]) -> dict:
    """{'mean', 'std', 'min', 'max', 'samples'}: every sample is kept for the JSON."""
    mean, std = mean_std(samples)
    return {"mean": mean, "std": std, "min": min(samples), "max": max(samples), "samples": list(samples)}


def latency_summary(latencies_s: list[float]) -> dict:
    """Per-token latency in milliseconds: p50, p90, p99 and mean."""
    ms = [x * 1000 for x in latencies_s]
    return {"p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99), "mean": sum(ms) / len(ms),
            "samples_ms": ms}
