"""The decode loop: prefill the prompt, then one token a step. Generic over architectures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .config import GenerationConfig
from .kv_cache import ConcatCache, SharedBufferCache
from .prefix_cache import reusable
from .sampling import Sampler
from .session import GraphRunner


@dataclass
class Timings:
    """What one generation cost and how it ended, as printed by `edgelm generate`."""

    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens taken from a reused cache: only the rest were run
    generated_tokens: int = 0
    prefill_s: float = 0.0  # time to first token: prompt processing plus the first pick
    decode_s: float = 0.0  # time of the decode steps, from the first token to the last pick
    decode_steps: int = 0  # graph runs after the prefill
    finish_reason: str | None = None  # 'stop' (end of sequence, stop string, grammar done), 'length' (token budget)
    logprobs: list[float] | None = None  # with GenerationConfig.logprobs: each generated token's log-probability

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_steps / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return (self.prompt_tokens - self.cached_tokens) / self.prefill_s if self.prefill_s > 0 else 0.0

    def summary(self) -> str:
        cached = f" ({self.cached_tokens} cached)" if self.cached_tokens else ""
        return (
            f"prompt {self.prompt_tokens} tokens{cached}, first token {self.prefill_s * 1000:.0f} ms "
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
    cache: ConcatCache | SharedBufferCache | None = None,
    constraint=None,
) -> Iterator[int]:
    """Yields new token ids one by one; stops at an eos id, max_new_tokens or the context length.

    A `cache` from an earlier generation is reused up to its common prefix with `prompt_ids`; then only
    the rest of the prompt runs. `constraint` (see constraints.py) masks the logits before each pick.
    """
    timings = timings if timings is not None else Timings()
    timings.prompt_tokens = len(prompt_ids)
    timings.logprobs = [] if config.logprobs else None
    timings.finish_reason = "length"  # unless an end-of-sequence token comes first
    sampler = Sampler(config, constraint)
    budget = max(0, min(config.max_new_tokens, context_length - len(prompt_ids)))
    seen = np.empty(len(prompt_ids) + budget, dtype=np.int64)  # every token so far, for the repetition penalty
    seen[: len(prompt_ids)] = prompt_ids
    length = len(prompt_ids)
    cache = cache if cache is not None else runner.new_cache()
    start = time.perf_counter()
    cache.truncate(reusable(cache, prompt_ids))  # keep what was already computed for this prompt's prefix
    kept = cache.length  # less than asked when a window-sized cache had evicted part of it
    timings.cached_tokens = kept
    logits = runner.prefill(seen[None, kept:length], cache)[0]  # prefill: (vocab,) for the last prompt position
    for step in range(budget):
        token = sampler(logits, seen[:length])  # pick
        now = time.perf_counter()
        if step == 0:
            timings.prefill_s = now - start
        else:
            timings.decode_s = now - start - timings.prefill_s
            timings.decode_steps = step
        if token in eos_token_ids:
            timings.finish_reason = "stop"
            return
        timings.generated_tokens += 1
        if timings.logprobs is not None:
            timings.logprobs.append(sampler.last_logprob)
        yield token  # the caller streams text and may stop here
        if step + 1 == budget:
            return
        seen[length] = token
        length += 1
        logits = runner.forward(np.array([[token]], dtype=np.int64), cache)[0]  # step: (vocab,)
