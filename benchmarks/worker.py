"""Holds one backend warm in its own process and measures one sample at a time, when asked.

Run by the harness as `python -m edgelm.benchmarks.worker SPEC.json`. It loads the backend
(cold: load time includes the imports), warms it up, prints a ready line, then answers one
JSON command per line of stdin with one result line on stdout, so the harness can interleave
the rows sample by sample (A B C, B C A, ...) while every backend stays loaded. Its own
process means its peak RSS is that backend's alone.

Commands: {"test": "pp", "n": N} (time to the first token of an N-token prompt),
{"test": "tg", "n": N, "depth": D, "sample": S} (N decode steps after D tokens of context, or after
the short tg prompt when D is 0; drawn with the backends' SAMPLING when S), {"test": "finish"}
(peak RSS, then the quality scores; then it exits).
Each sample waits for a quiet machine and is redone if others used the CPU during it (idle.py).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before any heavy import: load time is cold, imports included

import json  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

from .backends import BackendUnavailable, backend_class  # noqa: E402
from .idle import IdleGuard, NoGuard  # noqa: E402
from .rss import peak_rss_mb  # noqa: E402

PREFIX = "EDGELM-BENCH-RESULT "


@dataclass
class RunSpec:
    """What one worker loads, and the tokens its samples use."""

    backend: str  # edgelm, transformers, optimum, genai, llamacpp
    precision: str  # as exported: fp32, int8, int4, or the peer's own (Q4_1 +fa, int4 best, ...)
    path: str  # the folder or file this backend loads
    threads: int
    prompt_ids: list[int]  # fixed text tokens, long enough for every prompt length and depth
    tg_prompt_ids: list[int]  # short prompt the tg test continues
    perplexity_tokens: int = 512
    reference_logits: str | None = None  # .npy of the reference's logits on the same tokens, for KLD and top-1
    idle: dict | None = field(default_factory=dict)  # IdleGuard settings; None measures at once whatever the load
    options: dict = field(default_factory=dict)  # the backend's own run settings (see Backend.options)


class Worker:
    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.backend = backend_class(spec.backend)(spec.path, spec.threads, spec.precision, spec.options)
        self.guard = NoGuard() if spec.idle is None else IdleGuard(**spec.idle)

    def load(self) -> dict:
        self.backend.load()
        load_s = time.perf_counter() - STARTED
        self.backend.timed_generate(self.spec.prompt_ids[:32], 4)  # warm-up: first-run allocations and kernel choice
        # and a prompt chunk's worth: edgelm opens its prefill graph on the first long prompt, not in load()
        ids = self.spec.prompt_ids  # (8 tokens longer than the longest test: those fit the context)
        self.backend.timed_generate(ids[: max(1, min(256, len(ids) - 8))], 1)
        return {"load_s": load_s}

    def run(self, command: dict) -> dict:
        test = command["test"]
        if test == "pp":
            ids = self.spec.prompt_ids[: command["n"]]
            seconds, guard = self.guard.sample(lambda: _ttft(self.backend, ids))
            return {"seconds": seconds, **guard}
        if test == "tg":
            depth = command.get("depth", 0)
            ids = self.spec.prompt_ids[:depth] if depth else self.spec.tg_prompt_ids
            sample = bool(command.get("sample"))
            steps, guard = self.guard.sample(lambda: _decode_latencies(self.backend, ids, command["n"], sample))
            return {"steps_s": steps, **guard}
        if test == "finish":
            rss = peak_rss_mb()  # before perplexity, whose all-position logits are not generation's cost
            return {"peak_rss_mb": rss, **quality(self.backend, self.spec)}
        raise ValueError(f"unknown test {test!r}")


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


def _decode_latencies(backend, ids: list[int], n: int, sample: bool = False) -> list[float]:
    """Seconds per generated token after the first (the first carries the prompt)."""
    stamps = backend.timed_generate(ids, n + 1, sample)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def _say(payload: dict) -> None:
    print(PREFIX + json.dumps(payload), flush=True)


def _failure(exc: BaseException) -> dict:
    if isinstance(exc, BackendUnavailable):
        return {"ok": False, "skipped": str(exc)}
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        spec = RunSpec(**json.load(f))
    try:
        worker = Worker(spec)
        _say({"ok": True, **worker.load()})
    except Exception as exc:  # a peer that fails is reported as a row with its reason
        _say(_failure(exc))
        return 0
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        try:
            _say({"ok": True, **worker.run(command)})
        except Exception as exc:
            _say(_failure(exc))
        if command["test"] == "finish":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
