"""edgelm itself, through its public generator (sampler and cache included)."""

from __future__ import annotations

import time

import numpy as np

from .base import Backend


class EdgelmBackend(Backend):
    name = "edgelm"

    def load(self) -> None:
        import edgelm

        self.model = edgelm.load(self.path, threads=self.threads)

    def timed_generate(self, ids: list[int], n: int) -> list[float]:
        config = self.model.config(max_new_tokens=n, temperature=0.0, eos_token_ids=())
        return [time.perf_counter() for _ in self.model.generate_ids(ids, config)]

    def all_logits(self, ids: list[int]) -> np.ndarray:
        array = np.array([ids], dtype=np.int64)
        return self.model.runner.forward(array, self.model.runner.new_cache(), all_logits=True)


BACKEND = EdgelmBackend
