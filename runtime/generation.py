"""The decode loop: prefill the prompt, then one token a step. Generic over architectures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .config import GenerationConfig
from .sampling import Sampler
from .session import GraphRunner


@dataclass
class Timings:
    """What one generation cost, as printed by `edgelm generate`."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_s: float = 0.0  # time to first token: prompt processing plus the first pick
    decode_s: float = 0.0  # time of the decode steps, from the first token to the last pick
    decode_steps: int = 0  # graph runs after the prefill

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_steps / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    def summary(self) -> str:
        return (
            f"prompt {self.prompt_tokens} tokens, first token {self.prefill_s * 1000:.0f} ms "
            f"({self.prefill_tokens_per_s:.1f} tok/s), generated {self.generated_tokens} tokens, "
            f"{self.decode_tokens_per_s:.1f} tok/s"
        )


def generate_tokens(
    runner: GraphRunner,
    prompt_ids: list[int],
    config: GenerationConfig,
    eos_token_ids: tuple[int, ...],
    context_length: int,
    timings: Timings | None = None,
) -> Iterator[int]:
    """Yields new token ids one by one; stops at an eos id, max_new_tokens or the context length."""
    timings = timings if timings is not None else Timings()
    timings.prompt_tokens = len(prompt_ids)
    sampler = Sampler(config)
    budget = max(0, min(config.max_new_tokens, context_length - len(prompt_ids)))
    seen = np.empty(len(prompt_ids) + budget, dtype=np.int64)  # every token so far, for the repetition penalty
    seen[: len(prompt_ids)] = prompt_ids
    length = len(prompt_ids)
    cache = runner.new_cache()
    start = time.perf_counter()
    logits = runner.prefill(seen[None, :length], cache)[0]  # prefill: (vocab,) for the last prompt position
    for step in range(budget):
        token = sampler(logits, seen[:length])  # pick
        now = time.perf_counter()
        if step == 0:
            timings.prefill_s = now - start
        else:
            timings.decode_s = now - start - timings.prefill_s
            timings.decode_steps = step
        if token in eos_token_ids:
            return
        timings.generated_tokens += 1
        yield token  # the caller streams text and may stop here
        if step + 1 == budget:
            return
        seen[length] = token
        length += 1
        logits = runner.forward(np.array([[token]], dtype=np.int64), cache)[0]  # step: (vocab,)
