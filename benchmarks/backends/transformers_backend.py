"""transformers with PyTorch eager, fp32: what `pipeline('text-generation')` runs."""

from __future__ import annotations

from .base import Backend, BackendUnavailable
from .hf_generate import stamped_generate


class TransformersBackend(Backend):
    name = "transformers"

    def load(self) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise BackendUnavailable(f"transformers/torch not installed: pip install 'edgelm[export]' ({exc})") from exc
        torch.set_num_threads(self.threads)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).eval()

    def timed_generate(self, ids: list[int], n: int, sample: bool = False) -> list[float]:
        return stamped_generate(self.model, ids, n, sample)

    def all_logits(self, ids: list[int]):
        import torch

        with torch.no_grad():
            return self.model(torch.tensor([ids])).logits.float().numpy()


BACKEND = TransformersBackend
