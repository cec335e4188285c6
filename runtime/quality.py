"""Perplexity on a fixed English text, so every precision and backend is scored the same way."""

from __future__ import annotations

import math

import numpy as np

# Sections of Python's language reference (`pydoc_data.topics`): plain English prose, no download.
TOPICS = ("assignment", "class", "exceptions", "function", "naming", "numbers", "sequence-types", "typesseq")


def reference_text(chars: int = 12000) -> str:
    """The fixed text, the same on every Python 3.11 install."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[name] for name in TOPICS if name in topics)
    return text[:chars]


def perplexity(logits: np.ndarray, ids: np.ndarray) -> float:
    """exp(mean negative log-likelihood of each next token); logits (1, seq, vocab), ids (1, seq)."""
    scores = logits[0, :-1].astype(np.float64)  # (seq - 1, vocab): position t predicts token t + 1
    targets = ids[0, 1:]
    top = scores.max(-1)
    log_norm = np.log(np.exp(scores - top[:, None]).sum(-1)) + top
    nll = log_norm - scores[np.arange(targets.size), targets]
    return float(math.exp(nll.mean()))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    scores = logits.astype(np.float64)
    top = scores.max(-1, keepdims=True)
    return scores - (np.log(np.exp(scores - top).sum(-1, keepdims=True)) + top)


def kl_divergence(reference: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(reference || model) over positions, as llama.cpp's `perplexity --kl-divergence` reports it.

    Both are (1, seq, vocab) logits of the same tokens; 0 means the same next-token distributions.
    """
    ref, got = _log_softmax(reference[0]), _log_softmax(logits[0])
    return float((np.exp(ref) * (ref - got)).sum(-1).mean())


def top1_agreement(reference: np.ndarray, logits: np.ndarray) -> float:
    """Share of positions where the model's most likely next token is the reference's."""
    return float((reference[0].argmax(-1) == logits[0].argmax(-1)).mean())


def model_perplexity(model, text: str | None = None, max_tokens: int = 512) -> tuple[float, int]:
    """Perplexity of an edgelm Model on `text` (default: the reference text); returns (ppl, tokens)."""
    ids = np.array([model.encode(text or reference_text())[: min(max_tokens, model.manifest.context_length)]])
    logits = model.runner.forward(ids, model.runner.new_cache(), all_logits=True)
    return perplexity(logits, ids), int(ids.shape[1])
