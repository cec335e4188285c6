"""onnxruntime-genai on a model its own builder made from the same weights."""

from __future__ import annotations

import time

from .base import SAMPLING, Backend, BackendUnavailable


class GenaiBackend(Backend):
    name = "genai"

    def load(self) -> None:
        try:
            import onnxruntime_genai as og
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime-genai not installed: pip install onnxruntime-genai ({exc})") from exc
        self.og = og
        self.model = og.Model(self.path)
        self.min_length = _sliding_window(self.path)

    def _params(self, length: int, sample: bool = False):
        """Search options for `length` positions, greedy or SAMPLING; its KV buffer holds at least one sliding
        window (Gemma 3's GroupQueryAttention refuses a cache shorter than its window)."""
        params = self.og.GeneratorParams(self.model)
        picking = {"do_sample": False}
        if sample:
            picking = {"do_sample": True, "temperature": SAMPLING["temperature"], "top_k": SAMPLING["top_k"],
                       "top_p": SAMPLING["top_p"], "random_seed": SAMPLING["seed"]}
        params.set_search_options(max_length=max(length, self.min_length), min_length=length, **picking)
        return params

    def timed_generate(self, ids: list[int], n: int, sample: bool = False) -> list[float]:
        generator = self.og.Generator(self.model, self._params(len(ids) + n, sample))
        generator.append_tokens(ids)  # prompt processing; the first token comes with it
        stamps = [time.perf_counter()]
        while len(stamps) < n and not generator.is_done():
            generator.generate_next_token()
            stamps.append(time.perf_counter())
        return stamps

    def all_logits(self, ids: list[int]):
        """Every position's logits, feeding one token at a time (its generator returns the last position's only)."""
        import numpy as np

        generator = self.og.Generator(self.model, self._params(len(ids) + 1))
        rows = []
        for token in ids:
            generator.append_tokens([token])
            logits = np.asarray(generator.get_logits(), dtype=np.float32)
            rows.append(logits.reshape(-1, logits.shape[-1])[-1])
        return np.stack(rows)[None]


def _sliding_window(folder: str) -> int:
    """The sliding window of the model genai's builder wrote (0 without one)."""
    import json
    from pathlib import Path

    config = json.loads((Path(folder) / "genai_config.json").read_text())
    return int(config["model"]["decoder"].get("sliding_window", {}).get("window_size", 0))


BACKEND = GenaiBackend
