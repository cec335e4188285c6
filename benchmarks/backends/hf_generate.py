"""Shared by the transformers and optimum backends: `generate()` with a per-token time stamp."""

from __future__ import annotations

import time


def stamped_generate(model, ids: list[int], n: int) -> list[float]:
    """Greedy `model.generate` for exactly n tokens; a logits processor stamps each step as it runs."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    stamps: list[float] = []

    class Stamp(LogitsProcessor):
        def __call__(self, input_ids, scores):
            stamps.append(time.perf_counter())
            return scores

    inputs = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        model.generate(
            inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=n, min_new_tokens=n, do_sample=False,
            logits_processor=LogitsProcessorList([Stamp()]), pad_token_id=0,
        )
    return stamps
