"""The interface every benchmarked backend implements."""

from __future__ import annotations


class BackendUnavailable(Exception):
    """The backend cannot run here (package missing, model not built); the message says why."""


class Backend:
    """Loads a model and generates greedy tokens from given token ids."""

    name = "base"

    def __init__(self, path: str, threads: int, precision: str, options: dict | None = None):
        self.path = path  # what this backend loads: a folder or a .gguf file
        self.threads = threads
        self.precision = precision
        self.options = options or {}  # backend-specific run settings (edgelm: allow_spinning)

    def load(self) -> None:
        raise NotImplementedError

    def timed_generate(self, ids: list[int], n: int) -> list[float]:
        """Generates exactly `n` greedy tokens after `ids` (never stopping at eos).

        Returns the time.perf_counter() at which each token was available; a fresh cache each call.
        """
        raise NotImplementedError

    def all_logits(self, ids: list[int]):
        """Logits of every position of `ids` as a (1, seq, vocab) float32 array, or None when the backend
        cannot return them (then its perplexity, KLD and top-1 columns say n/a)."""
        return None
