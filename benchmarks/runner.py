"""Runs each target in its own worker process and gathers one report."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from edgelm.manifest import Manifest

from .machine import fingerprint
from .prepare import Target
from .rounds import merge, rotated
from .worker import RunSpec

RESULT_PREFIX = "EDGELM-BENCH-RESULT "


def model_tokenizer(folder: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / Manifest.load(folder).tokens.tokenizer_file))


def prompt_ids(folder: Path, count: int) -> list[int]:
    """`count` tokens of the fixed reference text (repeated if short), tokenized by the model's own tokenizer."""
    from edgelm.quality import reference_text

    tokenizer = model_tokenizer(folder)
    ids = tokenizer.encode(reference_text()).ids
    while len(ids) < count:
        ids += tokenizer.encode("\n\n" + reference_text(), add_special_tokens=False).ids
    return ids[:count]


def run_all(targets: list[Target], folder: Path, settings: dict, timeout_s: int = 1800,
            reference: Path | None = None) -> dict:
    """Measures every target; returns the whole report (machine, settings, one result per row).

    With settings["rounds"] > 1 the rows are measured in rotated rounds (see rounds.py), each round
    a fresh worker per row with reps / rounds repetitions. `reference` is an edgelm folder (the
    fp32 export) whose logits on the perplexity text every row's KLD and top-1 are measured against.
    """
    manifest = Manifest.load(folder)
    longest = max([settings["pp"], *settings.get("depths", []), *settings.get("prompt_lengths", []),
                   settings.get("perplexity_tokens", 0)]) + 8
    ids = prompt_ids(folder, longest)
    tg_prompt = tg_prompt_ids(folder)
    report = {
        "model": manifest.source.get("id"),
        "model_type": manifest.model_type,
        "parameters": manifest.parameters,
        "settings": settings,
        "machine": fingerprint(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results": [],
    }
    rounds = max(1, int(settings.get("rounds", 1)))
    worker_settings = {k: v for k, v in settings.items() if k != "rounds"}
    worker_settings["reps"] = max(1, -(-settings["reps"] // rounds))  # ceil: at least the asked-for samples in all
    runnable = [t for t in targets if not t.skipped]
    samples: dict[int, list[dict]] = {id(t): [] for t in runnable}
    with tempfile.TemporaryDirectory(prefix="edgelm-bench-") as tmp:
        reference_path = _reference_logits(reference, ids[: settings.get("perplexity_tokens", 0)], Path(tmp))
        for round_index in range(rounds):
            for target in rotated(runnable, round_index):
                quality = {} if round_index == 0 else {"perplexity_tokens": 0}  # scored once: it does not drift
                spec = RunSpec(backend=target.backend, precision=target.precision, path=target.path,
                               prompt_ids=ids, tg_prompt_ids=tg_prompt, reference_logits=reference_path,
                               **(worker_settings | quality))
                label = f"{target.backend} {target.precision}" + (f" (round {round_index + 1}/{rounds})" if rounds > 1 else "")
                print(f"bench: {label} ...", file=sys.stderr, flush=True)
                result = _run_worker(spec, timeout_s)
                samples[id(target)].append(result)
                print(f"bench: {label}: {_one_line(result, spec)}", file=sys.stderr, flush=True)
    for target in targets:
        row = {"backend": target.backend, "precision": target.precision, "path": target.path,
               "size_mb": _size_mb(target.path)}
        row.update(merge(samples[id(target)]) if not target.skipped else {"ok": False, "skipped": target.skipped})
        report["results"].append(row)
    return report


def _reference_logits(folder: Path | None, ids: list[int], tmp: Path) -> str | None:
    """The reference model's logits on `ids`, saved for the workers; None without a reference."""
    if folder is None or not ids:
        return None
    import numpy as np

    import edgelm

    model = edgelm.load(folder)
    array = np.array([ids], dtype=np.int64)
    path = tmp / "reference_logits.npy"
    np.save(path, model.runner.forward(array, model.runner.new_cache(), all_logits=True))
    return str(path)


def tg_prompt_ids(folder: Path) -> list[int]:
    """The tg test's prompt: 'Machine learning is', as the model's tokenizer encodes it."""
    return model_tokenizer(folder).encode("Machine learning is").ids


def _run_worker(spec: RunSpec, timeout_s: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(asdict(spec), f)
    try:
        done = subprocess.run([sys.executable, "-m", "edgelm.benchmarks.worker", f.name],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s} s"}
    finally:
        Path(f.name).unlink(missing_ok=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            result.pop("spec", None)
            return result
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"ok": False, "error": f"worker exited with {done.returncode}: {tail}"}


def _size_mb(path: str | None) -> float | None:
    if not path:
        return None
    p = Path(path)
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() or f.is_symlink()]
    return round(sum(f.resolve().stat().st_size for f in files if f.resolve().is_file()) / 1e6, 1)


def _one_line(row: dict, spec: RunSpec) -> str:
    if not row.get("ok"):
        return row.get("skipped") or row.get("error", "failed")
    pp, tg = row[f"pp{spec.pp}"], row[f"tg{spec.tg}"]
    return f"pp{spec.pp} {pp['mean']:.1f} t/s, tg{spec.tg} {tg['mean']:.1f} t/s, peak RSS {row['peak_rss_mb']:.0f} MB"
