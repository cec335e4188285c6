"""The interface every benchmarked backend implements."""

from __future__ import annotations


# The tg sampled test's settings, the same for every backend: llama.cpp's default sampler (without its
# min-p, which onnxruntime-genai lacks). A chat samples; the greedy tests do not show what picking costs.
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 1}


class BackendUnavailable(Exception):
    """The backend cannot run here (package missing, model not built); the message says why."""


class Backend:
    """Loads a model and generates tokens from given token ids: greedy, or sampled with SAMPLING."""

    name = "base"

    def __init__(self, path: str, threads: int, precision: str, options: dict | None = None):
        self.path = path  # what this backend loads: a folder or a .gguf file
        self.threads = threads
        self.precision = precision
        self.options = options or {}  # backend-specific run settings (edgelm: allow_spinning)

    def load(self) -> None:
        raise NotImplementedError

    def timed_generate(self, ids: list[int], n: int, sample: bool = False) -> list[float]:
        """Generates exactly `n` tokens after `ids` (never stopping at eos): greedy, or with `sample` drawn
        under SAMPLING.

        Returns the time.perf_counter() at which each token was available; a fresh cache each call.
        """
        raise NotImplementedError

    def all_logits(self, ids: list[int]):
        """Logits of every position of `ids` as a (1, seq, vocab) float32 array, or None when the backend
        cannot return them (then its perplexity, KLD and top-1 columns say n/a)."""
        return None
