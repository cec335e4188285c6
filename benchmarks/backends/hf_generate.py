"""Shared by the transformers and optimum backends: `generate()` with a per-token time stamp."""

from __future__ import annotations

import time


def stamped_generate(model, ids: list[int], n: int, sample: bool = False) -> list[float]:
    """`model.generate` for exactly n tokens, greedy or with SAMPLING; a logits processor stamps each step."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from .base import SAMPLING

    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids, scores):
            stamps.append(time.perf_counter())
            return scores

    picking = {"do_sample": False}
    if sample:
        torch.manual_seed(SAMPLING["seed"])
        picking = {"do_sample": True, "temperature": SAMPLING["temperature"], "top_k": SAMPLING["top_k"],
                   "top_p": SAMPLING["top_p"]}
    inputs = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        model.generate(
            inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=n, min_new_tokens=n,
            logits_processor=LogitsProcessorList([Stamp()]), pad_token_id=0, **picking,
        )
    return stamps
