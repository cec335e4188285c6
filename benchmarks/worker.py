"""Measures one backend in its own process: cold load time and peak RSS belong to that backend alone.

Run by the harness as `python -m edgelm.benchmarks.worker SPEC.json`; prints one JSON line.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any heavy import: load time is cold, imports included

import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

from .backends import BackendUnavailable, backend_class  # noqa: E402
from .rss import peak_rss_mb  # noqa: E402
from .stats import latency_summary, summarize  # noqa: E402


@dataclass
class RunSpec:
    """What one worker measures."""

    backend: str  # edgelm, transformers, optimum, genai, llamacpp
    precision: str  # as exported: fp32, int8, int4, or the peer's own (Q4_1)
    path: str  # the folder or file this backend loads
    threads: int
    prompt_ids: list[int]  # fixed text tokens, long enough for every prompt length
    tg_prompt_ids: list[int]  # short prompt the tg test continues
    pp: int = 512  # prompt tokens of the pp test
    tg: int = 128  # generated tokens of the tg test
    reps: int = 5  # measured repetitions after one warm-up
    depths: list[int] = field(default_factory=list)  # context depths for tg scaling
    prompt_lengths: list[int] = field(default_factory=list)  # prompt lengths for ttft scaling
    scaling_tokens: int = 32  # tokens generated at each depth
    scaling_reps: int = 2
    perplexity_tokens: int = 512
    reference_logits: str | None = None  # .npy of the reference's logits on the same tokens, for KLD and top-1


def measure(spec: RunSpec) -> dict:
    backend = backend_class(spec.backend)(spec.path, spec.threads, spec.precision)
    backend.load()
    result = {"load_s": time.perf_counter() - STARTED}
    backend.timed_generate(spec.prompt_ids[:32], 4)  # warm-up: first-run allocations and kernel choice

    ttft = [_ttft(backend, spec.prompt_ids[: spec.pp]) for _ in range(spec.reps)]
    result[f"pp{spec.pp}"] = summarize([spec.pp / t for t in ttft])
    result["ttft_ms"] = summarize([t * 1000 for t in ttft])

    rates, latencies = [], []
    for _ in range(spec.reps):
        steps = _decode_latencies(backend, spec.tg_prompt_ids, spec.tg)
        rates.append(len(steps) / sum(steps))
        latencies += steps
    result[f"tg{spec.tg}"] = summarize(rates)
    result["token_latency_ms"] = latency_summary(latencies)

    if spec.depths:
        result["tg_by_depth"] = {
            str(depth): summarize([_depth_rate(backend, spec, depth) for _ in range(spec.scaling_reps)])
            for depth in spec.depths
        }
    if spec.prompt_lengths:
        result["ttft_ms_by_prompt"] = {
            str(n): summarize([_ttft(backend, spec.prompt_ids[:n]) * 1000 for _ in range(spec.scaling_reps)])
            for n in spec.prompt_lengths
        }
    result["peak_rss_mb"] = peak_rss_mb()  # before perplexity, whose all-position logits are not generation's cost
    result.update(quality(backend, spec))
    return result


def quality(backend, spec: RunSpec) -> dict:
    """Perplexity, and KLD and top-1 agreement against the reference logits, on the same tokens."""
    import numpy as np

    from edgelm.quality import kl_divergence, perplexity, top1_agreement

    ids = spec.prompt_ids[: spec.perplexity_tokens]
    logits = backend.all_logits(ids) if ids else None
    if logits is None:
        return {"perplexity": None, "kld": None, "top1": None}
    scores = {"perplexity": perplexity(logits, np.array([ids])), "kld": None, "top1": None}
    if spec.reference_logits:
        reference = np.load(spec.reference_logits)
        scores.update(kld=kl_divergence(reference, logits), top1=top1_agreement(reference, logits))
    return scores


def _ttft(backend, ids: list[int]) -> float:
    start = time.perf_counter()
    stamps = backend.timed_generate(ids, 1)
    return stamps[0] - start


def _decode_latencies(backend, ids: list[int], n: int) -> list[float]:
    """Seconds per generated token after the first (the first carries the prompt)."""
    stamps = backend.timed_generate(ids, n + 1)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def _depth_rate(backend, spec: RunSpec, depth: int) -> float:
    ids = spec.prompt_ids[:depth] if depth else spec.tg_prompt_ids
    steps = _decode_latencies(backend, ids, spec.scaling_tokens)
    return len(steps) / sum(steps)


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        spec = RunSpec(**json.load(f))
    try:
        out = {"ok": True, **measure(spec)}
    except BackendUnavailable as exc:
        out = {"ok": False, "skipped": str(exc)}
    except Exception as exc:  # a peer that fails is reported as a row with its reason
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
    out["spec"] = {k: v for k, v in asdict(spec).items() if k not in ("prompt_ids", "tg_prompt_ids")}
    print("EDGELM-BENCH-RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
