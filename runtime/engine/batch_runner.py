"""One batched graph step: every running sequence's next token in one run (one read of the weights)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..errors import EdgelmError
from ..kv_cache import ConcatCache
from ..session import GraphRunner
from .slots import PaddedCache, RowCaches, SlotCache


class BatchRunner:
    """Prefills new sequences into rows of a batched cache, and decodes all rows together.

    Rows are packed: `prefill` appends a row, `release` moves the last row into the freed one
    (the caller mirrors that move in its own list), and `decode` runs rows [0, n).
    """

    def __init__(self, runner: GraphRunner):
        self.runner = runner
        kv = runner.manifest.kv
        if runner.device != "cpu":
            raise EdgelmError(f"batched generation runs on the CPU for now; this model was loaded on {runner.device!r}")
        self.shared = kv.shared_buffer  # the fused graph: GroupQueryAttention reads per-row lengths from the mask
        self.cache: SlotCache | PaddedCache | RowCaches
        if self.shared:
            self.cache = SlotCache(kv.num_kv_heads, kv.head_dim, len(runner.past_names), runner.kv_dtype,
                                   windows=kv.tensor_windows())
        elif "position_ids" in runner.inputs:  # padding is masked, and each row's positions are given
            self.cache = PaddedCache(kv.num_kv_heads, kv.head_dim, len(runner.past_names), runner.kv_dtype)
        else:  # positions come from the cache length inside the graph: padding would shift them
            self.cache = RowCaches()

    @property
    def size(self) -> int:
        return self.cache.size

    def prefill(self, prompt_ids: list[int]) -> np.ndarray:
        """Runs a new sequence's prompt alone into a new last row; returns its last logits (vocab,)."""
        ids = np.array([prompt_ids], dtype=np.int64)  # (1, prompt_len)
        if self.shared:
            row = self.cache.add()
            try:
                if self.runner.stages_prompts:  # an int8 cache: the prompt attends in float32 on a cache of its own
                    single = self.runner.new_cache()
                    logits = self.runner.prefill(ids, single)[0]
                    self.cache.fill_row(row, single)
                    return logits
                return self.runner.prefill(ids, self.cache.row_cache(row))[0]  # written straight into the row
            except BaseException:
                self.cache.remove(row)
                raise
        if isinstance(self.cache, RowCaches):
            single = self.runner.new_cache()
            logits = self.runner.prefill(ids, single)[0]
            self.cache.add(single)
            return logits
        kv = self.runner.manifest.kv
        single = ConcatCache((1, kv.num_kv_heads, kv.head_dim), len(self.runner.past_names), self.runner.kv_dtype, "cpu")
        logits = self.runner.prefill(ids, single)[0]
        self.cache.add([np.array(v.numpy()) for v in single.values])  # count x (1, heads, prompt_len, head_dim)
        return logits

    def release(self, row: int) -> int:
        """Frees `row`; returns the row that moved into it, or -1 when it was the last."""
        return self.cache.remove(row)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Runs one token per row, `tokens` (n,), at each row's own position; returns logits (n, vocab)."""
        runner, cache = self.runner, self.cache
        n = tokens.shape[0]
        if n != cache.size:
            raise EdgelmError(f"decode got {n} tokens for {cache.size} rows")  # a bug in the caller, not the user
        if isinstance(cache, RowCaches):  # one run per row
            return np.stack([runner.forward(tokens[i : i + 1, None], c)[0] for i, c in enumerate(cache.caches)])
        step = cache.step_inputs()  # attention_mask (n, total), position_ids (n, 1)
        binding = cache.binding(runner.session)
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(tokens, dtype=np.int64).reshape(n, 1))
        if "num_logits_to_keep" in runner.inputs:
            binding.bind_cpu_input("num_logits_to_keep", np.array([1], dtype=np.int64))
        for name, value in step.items():
            if name in runner.inputs:
                binding.bind_cpu_input(name, value)
        logits = ort.OrtValue.ortvalue_from_shape_and_type((n, 1, runner.manifest.vocab_size), np.float32, "cpu")
        binding.bind_ortvalue_output(runner.manifest.logits_output, logits)
        cache.bind(binding, runner.past_names, runner.present_names)
        runner.session.run_with_iobinding(binding)
        cache.advance(binding)
        return logits.numpy()[:, -1, :]  # (n, vocab)
