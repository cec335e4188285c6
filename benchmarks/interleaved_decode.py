"""Decode speed of two model folders interleaved in one process (A B, then B A, ...): 1 thread, 64 greedy tokens.

Usage: python -m benchmarks.interleaved_decode FOLDER_A FOLDER_B [ROUNDS]

Prints, per folder, the median tokens/s (wall) and the median CPU time per token
(time.process_time, less sensitive to other processes on a shared machine) of ROUNDS runs
(default 7) after a warm-up. Meant for two quantizations of one model with the same kernel.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import edgelm

PROMPT = "Machine learning is"
TOKENS = 64


def decode(model) -> tuple[float, float]:
    """(tokens/s wall, ms CPU per token) of TOKENS greedy steps after the prompt."""
    runner = model.runner
    cache = runner.new_cache()
    token = int(runner.forward(np.array([model.encode(PROMPT)]), cache)[0].argmax())
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(TOKENS):
        token = int(runner.forward(np.array([[token]]), cache)[0].argmax())
    return TOKENS / (time.perf_counter() - wall), (time.process_time() - cpu) / TOKENS * 1000


def main(folders: list[str], rounds: int = 7) -> None:
    models = {folder: edgelm.load(folder, threads=1) for folder in folders}
    samples = {folder: ([], []) for folder in folders}
    for model in models.values():
        decode(model)  # warm-up
    for r in range(rounds):
        for folder in folders if r % 2 == 0 else folders[::-1]:
            speed, cpu_ms = decode(models[folder])
            samples[folder][0].append(speed)
            samples[folder][1].append(cpu_ms)
    for folder, (speeds, cpu) in samples.items():
        print(f"{folder}: {statistics.median(speeds):.1f} tok/s (median wall), {statistics.median(cpu):.2f} ms CPU/token "
              f"(median); tok/s samples {[round(s, 1) for s in speeds]}")


if __name__ == "__main__":
    main(sys.argv[1:3], int(sys.argv[3]) if len(sys.argv) > 3 else 7)
