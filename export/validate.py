"""Export-time checks: the graph against PyTorch, and a quantized graph's quality.

Numbers measured here go into the manifest's `validation` block and are printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgelm.errors import EdgelmError
from edgelm.manifest import Manifest
from edgelm.quality import kl_divergence, perplexity, reference_text, top1_agreement
from edgelm.session import GraphRunner

PROMPTS = ("Machine learning is", "The capital of France is", "def fibonacci(n):")
SWITCH = "EDGELM_VALIDATE"  # 0 skips export-time validation where the caller did not choose


def validation_wanted(check: bool | None) -> bool:
    """`check` itself, or when None, $EDGELM_VALIDATE: on unless it is 0 (or false, no, off)."""
    if check is not None:
        return bool(check)
    value = os.environ.get(SWITCH, "1").strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise EdgelmError(f"${SWITCH}={value!r} is not understood: set it to 1 (validate exports) or 0 (skip)")


def validate(folder: Path, manifest: Manifest, hf_folder: Path, greedy_tokens: int = 32, ppl_tokens: int = 512) -> dict:
    """Compares the exported graph in `folder` with the PyTorch model in `hf_folder`.

    Returns max |logit difference| over PROMPTS, greedy agreement with PyTorch fp32 over
    `greedy_tokens` new tokens per prompt, and perplexity of both on the reference text.

    PyTorch runs teacher-forced only (one pass per text, no token-by-token loop): its greedy text
    is identical to the graph's for as long as its top pick at each position of the graph's text
    is the graph's next token, so one pass gives the identical prefix; greedy agreement is the
    share of positions of the graph's greedy text where both pick the same next token.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    runner = GraphRunner(folder, manifest, threads=None)
    result = {"prompts": list(PROMPTS), "greedy_tokens": greedy_tokens}

    diffs, prefix, agree, total = [], [], 0, 0
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="np")["input_ids"].astype(np.int64)
        got = _onnx_greedy(runner, ids, greedy_tokens)  # the graph's own greedy text, with its cache
        # one teacher-forced pass of each model over the prompt and that text: PyTorch's greedy text equals
        # the graph's exactly as far as PyTorch's top pick at each position equals the graph's next token
        forced = np.concatenate([ids, np.array([got[:-1]], dtype=np.int64)], axis=1)
        with torch.no_grad():
            torch_logits = reference(torch.from_numpy(forced)).logits.numpy()  # (1, prompt + n - 1, vocab)
        onnx_logits = runner.forward(forced, runner.new_cache(), all_logits=True)
        prompt_len = ids.shape[1]
        diffs.append(float(np.abs(torch_logits[:, :prompt_len] - onnx_logits[:, :prompt_len]).max()))
        torch_picks = torch_logits[0, prompt_len - 1 :].argmax(-1)
        prefix.append(_common_prefix(torch_picks.tolist(), got))
        agree += int((onnx_logits[0, prompt_len - 1 :].argmax(-1) == torch_picks).sum())
        total += len(got)
    result["max_abs_logit_diff"] = max(diffs)  # over the prompts' positions
    result["greedy_identical_prefix"] = prefix  # leading tokens identical to PyTorch's greedy text, per prompt
    result["greedy_agreement"] = round(agree / total, 4) if total else None  # teacher-forced top-1 agreement

    ppl_tokens = min(ppl_tokens, manifest.context_length)
    ids = tokenizer(reference_text(), return_tensors="np")["input_ids"][:, :ppl_tokens].astype(np.int64)
    with torch.no_grad():
        torch_logits = reference(torch.from_numpy(ids)).logits.numpy()
    onnx_logits = runner.forward(ids, runner.new_cache(), all_logits=True)
    result["perplexity"] = round(perplexity(onnx_logits, ids), 4)
    result["perplexity_pytorch_fp32"] = round(perplexity(torch_logits, ids), 4)
    result["perplexity_tokens"] = int(ids.shape[1])
    # on the same tokens: how far the next-token distributions moved from PyTorch's (llama.cpp's KLD and top-1)
    result["kld_vs_pytorch_fp32"] = round(kl_divergence(torch_logits, onnx_logits), 6)
    result["top1_vs_pytorch_fp32"] = round(top1_agreement(torch_logits, onnx_logits), 4)
    return result


def _onnx_greedy(runner: GraphRunner, ids: np.ndarray, n: int) -> list[int]:
    cache = runner.new_cache()
    logits = runner.forward(ids, cache)
    tokens = []
    for _ in range(n):
        tokens.append(int(logits[0].argmax()))
        logits = runner.forward(np.array([[tokens[-1]]], dtype=np.int64), cache)
    return tokens


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
