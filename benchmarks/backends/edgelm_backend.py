"""edgelm itself, through its public generator (sampler and cache included)."""

from __future__ import annotations

import time

import numpy as np

from .base import SAMPLING, Backend


class EdgelmBackend(Backend):
    name = "edgelm"

    def load(self) -> None:
        import edgelm

        if self.options.get("huge_pages") == "off":  # this worker's loads leave the weights on small pages
            import edgelm.memory

            edgelm.memory.back_new_memory_with_huge_pages = lambda before: 0
        self.model = edgelm.load(self.path, threads=self.threads)
        if {"allow_spinning", "attention", "arena"} & set(self.options):  # the same graph, a session setting changed
            from edgelm.memory import settled_load

            spinning = bool(self.options.get("allow_spinning", True))
            self.model.runner.session = None  # the old session's memory goes first, as in a load
            with settled_load(self.model.folder):
                self.model.runner.session = _session(self.model, self.threads, spinning, self.options.get("attention"),
                                                     arena=self.options.get("arena", "on") == "on")

    def timed_generate(self, ids: list[int], n: int, sample: bool = False) -> list[float]:
        picking = SAMPLING if sample else {"temperature": 0.0}
        config = self.model.config(max_new_tokens=n, eos_token_ids=(), **picking)
        return [time.perf_counter() for _ in self.model.generate_ids(ids, config)]

    def all_logits(self, ids: list[int]) -> np.ndarray:
        array = np.array([ids], dtype=np.int64)
        return self.model.runner.forward(array, self.model.runner.new_cache(), all_logits=True)


def _session(model, threads: int, spinning: bool, attention: str | None = None, arena: bool = True):
    """edgelm's CPU session for the folder's decode graph (runtime/session.py) with intra-op spinning as asked.

    `attention`: "tiled" or "plain": that attention kernel (runtime/attention_kernel.py); None: edgelm's choice.
    `arena` False: onnxruntime's CPU memory arena off.
    """
    from edgelm.session import open_graph

    flash = None if attention is None else attention == "tiled"
    # runner.manifest: the float32-cache view where the runner took one
    return open_graph(model.folder, model.runner.manifest, "graph_file", "cpu", threads, spinning=spinning,
                      flash_attention=flash, arena=arena)


BACKEND = EdgelmBackend
