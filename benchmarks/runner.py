"""Runs every target warm in its own worker process, interleaving their samples, and gathers one report."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from edgelm.manifest import Manifest

from .machine import fingerprint
from .prepare import Target
from .rounds import schedule
from .stats import latency_summary, summarize
from .worker import PREFIX, RunSpec

RESULT_PREFIX = PREFIX


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


def sampled_tests(settings: dict, context_length: int) -> list[dict]:
    """The sampled tests, in table order: pp, tg, tg sampled, tg at depth, then the scaling sweeps.

    tg and its depth tests pick greedily; "tg sampled" draws with the backends' SAMPLING settings.

    A test whose context would not fit the model is left out (tiny test models hold few positions).
    """
    pp, tg, depth = settings["pp"], settings["tg"], settings.get("depth", 0)
    tests = [{"key": f"pp{pp}", "test": "pp", "n": pp, "reps": settings["reps"]},
             {"key": f"tg{tg}", "test": "tg", "n": tg, "depth": 0, "reps": settings["reps"]},
             {"key": f"tg{tg} sampled", "test": "tg", "n": tg, "depth": 0, "sample": True, "reps": settings["reps"]}]
    if depth:
        tests += [{"key": f"pp{depth}", "test": "pp", "n": depth, "reps": settings["reps"]}] if depth != pp else []
        tests += [{"key": f"tg{tg} @ d{depth}", "test": "tg", "n": tg, "depth": depth, "reps": settings["reps"]}]
    sweep = settings.get("scaling_reps", 2)
    tests += [{"key": f"depth {d}", "test": "tg", "n": settings.get("scaling_tokens", 32), "depth": d, "reps": sweep}
              for d in settings.get("depths", [])]
    tests += [{"key": f"prompt {n}", "test": "pp", "n": n, "reps": sweep} for n in settings.get("prompt_lengths", [])]
    return [t for t in tests if t.get("depth", 0) + t["n"] + 2 < context_length]


def run_all(targets: list[Target], folder: Path, settings: dict, timeout_s: int = 1800,
            reference: Path | None = None) -> dict:
    """Measures every target; returns the whole report (machine, settings, one result per row).

    Every row's worker loads once and stays warm; repetition r runs each test on every row in the
    order rotated by r (A B C, then B C A, ...), so drift on the machine falls on all rows alike.
    `reference` is an edgelm folder (the fp32 export) whose logits on the perplexity text every
    row's KLD and top-1 are measured against.
    """
    manifest = Manifest.load(folder)
    tests = sampled_tests(settings, manifest.context_length)
    longest = max([t["depth"] if t["test"] == "tg" else t["n"] for t in tests]
                  + [settings.get("perplexity_tokens", 0)]) + 8
    ids = prompt_ids(folder, longest)
    report = {
        "model": manifest.source.get("id"),
        "model_type": manifest.model_type,
        "parameters": manifest.parameters,
        "settings": settings | {"tests": [t["key"] for t in tests]},
        "machine": fingerprint(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results": [],
    }
    runnable = [t for t in targets if not t.skipped]
    with tempfile.TemporaryDirectory(prefix="edgelm-bench-") as tmp:
        reference_path = _reference_logits(reference, ids[: settings.get("perplexity_tokens", 0)], Path(tmp))
        workers: dict[int, WorkerProcess] = {}
        try:
            for target in runnable:  # one after the other: each load time is its own
                print(f"bench: loading {target.label} ...", file=sys.stderr, flush=True)
                spec = RunSpec(backend=target.backend, precision=target.precision, path=target.path,
                               threads=target.options.get("threads", settings["threads"]), prompt_ids=ids,
                               tg_prompt_ids=tg_prompt_ids(folder), perplexity_tokens=settings.get("perplexity_tokens", 512),
                               reference_logits=reference_path, idle=settings.get("idle", {}), options=target.options)
                workers[id(target)] = WorkerProcess(spec, Path(tmp), timeout_s)
            for test, rep, target in schedule(tests, runnable):
                worker = workers[id(target)]
                if worker.failed:
                    continue
                worker.sample(test)
                print(f"bench: {target.label} {test['key']} [{rep + 1}/{test['reps']}]: {worker.last_line(test)}",
                      file=sys.stderr, flush=True)
            for target in runnable:  # peak RSS, then perplexity, KLD and top-1 (not timed)
                if settings.get("perplexity_tokens") and not workers[id(target)].failed:
                    print(f"bench: scoring {target.label} ...", file=sys.stderr, flush=True)
                workers[id(target)].finish()
        finally:  # an interrupted run leaves no worker behind
            for worker in workers.values():
                worker.stop()
    for target in targets:
        row = {"backend": target.backend, "precision": target.precision, "label": target.label,
               "settings": target.settings | target.options, "path": target.path, "size_mb": _size_mb(target.path)}
        row.update(workers[id(target)].result(settings) if not target.skipped else {"ok": False, "skipped": target.skipped})
        report["results"].append(row)
    return report


class WorkerProcess:
    """One row's worker: started once, sent one command a sample, its answers kept per test."""

    def __init__(self, spec: RunSpec, tmp: Path, timeout_s: int):
        self.timeout_s = timeout_s
        spec_path = tmp / f"spec-{id(self)}.json"
        spec_path.write_text(json.dumps(asdict(spec)))
        self.stderr = open(tmp / f"stderr-{id(self)}.txt", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "edgelm.benchmarks.worker", str(spec_path)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.failed: dict | None = None
        self.samples: dict[str, list[dict]] = {}
        self.finished: dict = {}
        ready = self._answer()
        self.load_s = ready.get("load_s")
        if not ready.get("ok"):
            self._fail(ready)

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith(PREFIX):
                self.lines.put(json.loads(line[len(PREFIX):]))
        self.lines.put(None)  # the worker exited

    def _answer(self) -> dict:
        try:
            answer = self.lines.get(timeout=self.timeout_s)
        except queue.Empty:
            self.process.kill()
            return {"ok": False, "error": f"no answer within {self.timeout_s} s"}
        if answer is None:
            self.process.wait()
            self.stderr.seek(0)
            tail = (self.stderr.read().strip().splitlines() or ["no output"])[-1]
            return {"ok": False, "error": f"worker exited with {self.process.returncode}: {tail}"}
        return answer

    def _fail(self, answer: dict) -> None:
        self.failed = {k: v for k, v in answer.items() if k in ("ok", "error", "skipped", "traceback")}
        if self.process.poll() is None:
            self.process.kill()

    def _send(self, command: dict) -> dict:
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the answer says why (the worker exited)
        return self._answer()

    def sample(self, test: dict) -> None:
        answer = self._send({k: test[k] for k in ("test", "n", "depth", "sample") if k in test})
        if not answer.get("ok"):
            self._fail(answer)
        else:
            self.samples.setdefault(test["key"], []).append(answer)

    def last_line(self, test: dict) -> str:
        if self.failed:
            return self.failed.get("skipped") or self.failed.get("error", "failed")
        answer = self.samples[test["key"]][-1]
        rate = test["n"] / answer["seconds"] if test["test"] == "pp" else len(answer["steps_s"]) / sum(answer["steps_s"])
        redo = f", redone {answer['redone']}x" if answer["redone"] else ""
        wait = f", waited {answer['waited_s']:.1f} s" if answer["waited_s"] >= 1 else ""
        return f"{rate:.1f} t/s{redo}{wait}"

    def finish(self) -> None:
        if self.failed:
            return
        answer = self._send({"test": "finish"})
        if answer.get("ok"):
            self.finished = answer
        else:
            self._fail(answer)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.stderr.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if not self.stderr.closed:
            self.stderr.close()

    def result(self, settings: dict) -> dict:
        """The row as the report keeps it: every sample, the summaries, and how quiet the machine was."""
        if self.failed:
            return dict(self.failed)
        row: dict = {"ok": True, "load_s": self.load_s}
        answers = [a for kept in self.samples.values() for a in kept]
        for key, kept in self.samples.items():
            if kept[0].get("seconds") is not None:  # a pp test: tokens/s and its TTFT
                n = int(key.split()[-1] if key.startswith("prompt") else key[2:])
                rates, ms = [n / a["seconds"] for a in kept], [a["seconds"] * 1000 for a in kept]
                if key.startswith("prompt"):
                    row.setdefault("ttft_ms_by_prompt", {})[str(n)] = summarize(ms)
                else:
                    row[key] = summarize(rates)
                    row["ttft_ms" if n == settings["pp"] else f"ttft_ms_{n}"] = summarize(ms)
            else:
                rates = [len(a["steps_s"]) / sum(a["steps_s"]) for a in kept]
                if key.startswith("depth"):
                    row.setdefault("tg_by_depth", {})[key.split()[-1]] = summarize(rates)
                else:
                    row[key] = summarize(rates)
                if key == f"tg{settings['tg']}":
                    row["token_latency_ms"] = latency_summary([s for a in kept for s in a["steps_s"]])
        row["idle"] = {"samples": len(answers), "redone": sum(a["redone"] for a in answers),
                       "waited_s": round(sum(a["waited_s"] for a in answers), 2),
                       "disturbed_kept": sum(bool(a["disturbed"]) for a in answers)}
        row.update({k: v for k, v in self.finished.items() if k != "ok"})
        return row


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


def _size_mb(path: str | None) -> float | None:
    if not path:
        return None
    p = Path(path)
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() or f.is_symlink()]
    return round(sum(f.resolve().stat().st_size for f in files if f.resolve().is_file()) / 1e6, 1)
