"""llama.cpp through llama-cpp-python, on the .gguf the model came from or one re-quantized from it.

The row's precision label names the GGUF type and, with a "+fa" suffix, flash attention on
(see prepare.py's llama.cpp variants): llama.cpp at its best is a setting, not a default.
"""

from __future__ import annotations

import time

from .base import SAMPLING, Backend, BackendUnavailable

CONTEXT = 4096  # room for the deepest scaling test (2048) plus generated tokens


class LlamaCppBackend(Backend):
    name = "llamacpp"

    def load(self) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendUnavailable(
                "llama-cpp-python not installed (it compiles llama.cpp, minutes): see benchmarks/README.md"
            ) from exc
        self.flash_attn = self.precision.endswith("+fa")
        self.model = Llama(model_path=self.path, n_threads=self.threads, n_threads_batch=self.threads,
                           n_ctx=CONTEXT, n_batch=512, flash_attn=self.flash_attn, verbose=False)

    def timed_generate(self, ids: list[int], n: int, sample: bool = False) -> list[float]:
        self.model.reset()  # no KV prefix reuse between runs: every run processes its whole prompt
        if sample:
            self.model.set_seed(SAMPLING["seed"])
            picking = {"top_k": SAMPLING["top_k"], "top_p": SAMPLING["top_p"], "temp": SAMPLING["temperature"]}
        else:
            picking = {"top_k": 1, "top_p": 1.0, "temp": 0.0}
        stamps = []
        for _ in self.model.generate(ids, min_p=0.0, repeat_penalty=1.0, reset=True, **picking):
            stamps.append(time.perf_counter())
            if len(stamps) == n:
                break
        return stamps

    def all_logits(self, ids: list[int]):
        """Every position's logits, from a second instance that keeps them (the timed one does not)."""
        import numpy as np
        from llama_cpp import Llama

        model = Llama(model_path=self.path, n_threads=self.threads, n_threads_batch=self.threads, n_ctx=CONTEXT,
                      n_batch=512, flash_attn=self.flash_attn, logits_all=True, verbose=False)
        model.eval(ids)
        return np.array(model.scores[: len(ids)], dtype=np.float32)[None]


BACKEND = LlamaCppBackend
