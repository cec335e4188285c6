"""optimum-onnx's ORTModelForCausalLM on the very ONNX graph edgelm exported."""

from __future__ import annotations

from .base import Backend, BackendUnavailable
from .hf_generate import stamped_generate


class OptimumBackend(Backend):
    name = "optimum"

    def load(self) -> None:
        try:
            import onnxruntime as ort
            from optimum.onnxruntime import ORTModelForCausalLM
        except ImportError as exc:
            raise BackendUnavailable(f"optimum-onnx not installed: pip install 'edgelm[export]' ({exc})") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.model = ORTModelForCausalLM.from_pretrained(
            self.path, session_options=options, provider="CPUExecutionProvider", use_cache=True
        )

    def timed_generate(self, ids: list[int], n: int, sample: bool = False) -> list[float]:
        return stamped_generate(self.model, ids, n, sample)

    def all_logits(self, ids: list[int]):
        import torch

        with torch.no_grad():
            inputs = torch.tensor([ids])
            return self.model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits.float().numpy()


BACKEND = OptimumBackend
