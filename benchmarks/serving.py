"""`python -m benchmarks serve`: N concurrent streaming clients against an OpenAI-compatible server.

Each server runs in its own process on a free port, started here and stopped afterwards:
`edgelm serve` on the edgelm folder, and `python -m llama_cpp.server` on the very .gguf file the
folder was exported from. For every client count, that many clients send a streaming
`/v1/completions` request at once (greedy, different prompts, `max_tokens` each), after one
warm-up request. Per round:
    aggregate tok/s   all streamed tokens / (last token of any client - first request sent)
    TTFT              request sent -> first streamed token, per client (p50, p99 over clients and rounds)
    per-stream tok/s  (tokens - 1) / (last token - first token), per client (mean)
A streamed chunk with text counts as one token (both servers send one chunk per token; edgelm
holds back only an incomplete character). Streams may end early at the model's end token: the
token counts say how many were made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .machine import fingerprint
from .stats import percentile

PROMPTS = [
    "Machine learning is", "Once upon a time, in a small village,", "The history of the Roman Empire",
    "A recipe for a simple tomato soup:", "The most important thing about writing code is",
    "In the year 2050, cities will", "Photosynthesis is the process by which", "My favourite book is",
    "The stock market", "How to learn a new language:", "The ocean is home to", "A good night's sleep",
    "The first computers were", "Climate change affects", "Music has always been", "The best way to travel is",
]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(backend: str, folder: Path, gguf: Path | None, port: int, threads: int, parallel: int,
                   llama_python: str) -> list[str]:
    if backend == "edgelm":
        return [sys.executable, "-m", "edgelm.server", str(folder), "--port", str(port), "--parallel", str(parallel),
                "--threads", str(threads), "--model-id", "bench", "--max-queue", "1024"]
    if backend == "llamacpp":
        if gguf is None:
            raise SystemExit("llamacpp needs the model's .gguf source")
        return [llama_python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "bench",
                "--port", str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
                "--n_ctx", "2048", "--verbose", "False",
                "--interrupt_requests", "False"]  # its default: a new request aborts the one streaming
    raise SystemExit(f"unknown backend {backend!r}: edgelm or llamacpp")


class Server:
    """A server process, up once /v1/models answers."""

    def __init__(self, command: list[str], port: int, log: Path):
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log, "w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, limit_s: float = 600) -> None:
        import httpx

        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not come up")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


async def one_stream(client, url: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    sent = time.perf_counter()
    times = []
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if choices and choices[0].get("text"):
                times.append(time.perf_counter())
    return {"sent": sent, "ttft_s": times[0] - sent if times else None, "tokens": len(times),
            "first": times[0] if times else None, "last": times[-1] if times else None}


async def round_of(url: str, clients: int, max_tokens: int, offset: int) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=httpx.Limits(max_connections=clients + 4)) as client:
        streams = await asyncio.gather(*(one_stream(client, url, PROMPTS[(offset + i) % len(PROMPTS)], max_tokens)
                                         for i in range(clients)))
    start = min(s["sent"] for s in streams)
    end = max(s["last"] or s["sent"] for s in streams)
    tokens = sum(s["tokens"] for s in streams)
    per_stream = [(s["tokens"] - 1) / (s["last"] - s["first"]) for s in streams if s["tokens"] > 1 and s["last"] > s["first"]]
    return {"clients": clients, "tokens": tokens, "wall_s": end - start,
            "aggregate_tps": tokens / (end - start) if end > start else 0.0,
            "ttft_s": [s["ttft_s"] for s in streams if s["ttft_s"] is not None], "per_stream_tps": per_stream,
            "tokens_per_stream": [s["tokens"] for s in streams]}


def measure(url: str, client_counts: list[int], max_tokens: int, reps: int) -> list[dict]:
    asyncio.run(round_of(url, 1, 8, 0))  # warm-up
    rows = []
    for clients in client_counts:
        rounds = [asyncio.run(round_of(url, clients, max_tokens, rep)) for rep in range(reps)]
        ttft = [t for r in rounds for t in r["ttft_s"]]
        per_stream = [t for r in rounds for t in r["per_stream_tps"]]
        rows.append({
            "clients": clients,
            "aggregate_tps": sum(r["aggregate_tps"] for r in rounds) / reps,
            "ttft_p50_ms": percentile(ttft, 50) * 1000 if ttft else float("nan"),
            "ttft_p99_ms": percentile(ttft, 99) * 1000 if ttft else float("nan"),
            "per_stream_tps": sum(per_stream) / len(per_stream) if per_stream else 0.0,
            "tokens_per_round": [r["tokens"] for r in rounds], "rounds": rounds,
        })
        print(f"  {clients:>2} clients: {rows[-1]['aggregate_tps']:.1f} tok/s aggregate, TTFT p50 "
              f"{rows[-1]['ttft_p50_ms']:.0f} ms, {rows[-1]['per_stream_tps']:.1f} tok/s per stream", file=sys.stderr)
    return rows


def to_markdown(results: dict) -> str:
    lines = ["| server | parallel | clients | aggregate tok/s | TTFT p50 ms | TTFT p99 ms | per-stream tok/s | tokens/round |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for backend, entry in results["servers"].items():
        if entry.get("error"):
            lines.append(f"| {backend} | {entry['parallel']} | - | failed: {entry['error'][:80]} | | | | |")
        for row in entry["rows"]:
            lines.append(f"| {backend} | {entry['parallel']} | {row['clients']} | {row['aggregate_tps']:.1f} | "
                         f"{row['ttft_p50_ms']:.0f} | {row['ttft_p99_ms']:.0f} | {row['per_stream_tps']:.1f} | "
                         f"{sum(row['tokens_per_round']) / len(row['tokens_per_round']):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias or edgelm folder (default smollm2-135m)")
    parser.add_argument("--backends", default="edgelm,llamacpp")
    parser.add_argument("--clients", default="1,2,4,8,16", help="comma list of concurrent client counts")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=2, help="rounds per client count")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of each server (default: all cores)")
    parser.add_argument("--parallel", type=int, default=16, help="edgelm serve --parallel (batch rows)")
    parser.add_argument("--llama-python", default=os.environ.get("EDGELM_LLAMACPP_PYTHON", sys.executable),
                        help="the Python that has llama_cpp.server (default: this one; $EDGELM_LLAMACPP_PYTHON)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serving"),
                        help="path prefix for .json and .md")
    args = parser.parse_args(argv)
    from edgelm.manifest import Manifest
    from edgelm.text_pipeline import resolve_model

    from .prepare import default_threads, gguf_file

    folder = resolve_model(args.model, "int4")
    gguf = gguf_file(Manifest.load(folder))
    threads = args.threads or default_threads()
    counts = [int(c) for c in args.clients.split(",")]
    results = {"model": str(folder), "gguf": str(gguf) if gguf else None, "threads": threads,
               "max_tokens": args.max_tokens, "reps": args.reps, "machine": fingerprint(),
               "load_average_before": os.getloadavg(), "servers": {}}
    for backend in args.backends.split(","):
        port = free_port()
        parallel = args.parallel if backend == "edgelm" else 1  # llama-cpp-python's server runs one request at a time
        command = server_command(backend, folder, gguf, port, threads, args.parallel, args.llama_python)
        print(f"{backend}: {' '.join(command)}", file=sys.stderr)
        server = Server(command, port, Path(tempfile.gettempdir()) / f"edgelm-serving-{backend}.log")
        entry = results["servers"][backend] = {"command": command, "parallel": parallel, "rows": []}
        try:
            server.wait_ready()
            entry["rows"] = measure(server.url, counts, args.max_tokens, args.reps)
        except Exception as exc:  # noqa: BLE001 - a failing server is a row with its reason, the others still run
            entry["error"] = f"{type(exc).__name__}: {exc}"
            print(f"{backend}: failed: {entry['error']}", file=sys.stderr)
        finally:
            server.stop()
    results["load_average_after"] = os.getloadavg()
    markdown = to_markdown(results)
    print(markdown)
    Path(args.out + ".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    Path(args.out + ".md").write_text(markdown + "\n", encoding="utf-8")
    return 0
