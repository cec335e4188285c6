"""Choosing the next token from a row of logits."""

from __future__ import annotations

import numpy as np

from .config import GenerationConfig
from .errors import EdgelmError


class Sampler:
    """Turns logits into a token id under a GenerationConfig (greedy, temperature, top-k/p, min-p).

    A `constraint` (constraints.py) limits the choice: its `apply(logits)` sets the tokens it
    forbids to -inf before the pick, and `advance(token)` tells it the token picked. With
    `config.logprobs`, `last_logprob` is the picked token's log-probability under the distribution
    after the constraint and the repetition penalty, before temperature and top-k/p/min-p: the
    model's own confidence among the allowed tokens, the same for greedy and sampled decoding.
    """

    def __init__(self, config: GenerationConfig, constraint=None):
        self.config = config
        self.constraint = constraint
        self.rng = np.random.default_rng(config.seed)
        self.last_logprob: float | None = None

    def __call__(self, logits: np.ndarray, seen: np.ndarray | None = None) -> int:
        """Pick a token. `logits` is (vocab,) and may be changed in place; `seen` holds ids already in the context."""
        token = self._pick(logits, seen)
        if self.constraint is not None:
            self.constraint.advance(token)
        return token

    def _pick(self, logits: np.ndarray, seen: np.ndarray | None) -> int:
        cfg = self.config
        top = logits.max()  # NaN if any logit is NaN
        if not np.isfinite(top):
            raise EdgelmError(
                f"the model produced {'NaN' if np.isnan(top) else 'infinite'} logits, so no token can be picked: "
                "its weights may be corrupt; check them with edgelm.load(folder, verify=True) or re-export the model"
            )
        if self.constraint is not None:
            self.constraint.apply(logits)  # forbidden tokens -> -inf
        if cfg.repetition_penalty != 1.0 and seen is not None and seen.size:
            logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
        token = int(np.argmax(logits)) if cfg.greedy else int(self._sample(logits.astype(np.float64) / cfg.temperature))
        if cfg.logprobs:
            self.last_logprob = log_probability(logits, token)
        return token

    def _sample(self, scores: np.ndarray) -> int:
        cfg = self.config
        if cfg.top_k and cfg.top_k < scores.size:
            kth = np.partition(scores, -cfg.top_k)[-cfg.top_k]
            scores = np.where(scores < kth, -np.inf, scores)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if cfg.min_p > 0:
            probs = np.where(probs < cfg.min_p * probs.max(), 0.0, probs)
        if cfg.top_p < 1.0:
            order = np.argsort(-probs)
            cumulative = np.cumsum(probs[order])
            # keep tokens until the mass before them reaches top_p (the top token always stays)
            drop = order[(cumulative - probs[order]) >= cfg.top_p]
            probs[drop] = 0.0
        probs /= probs.sum()
        return self.rng.choice(probs.size, p=probs)


def log_probability(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token], computed stably."""
    top = logits.max()
    return float(logits[token] - top - np.log(np.exp(logits - top, dtype=np.float64).sum()))


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL-style penalty, as transformers applies it: divide positive scores, multiply negative ones."""
    logits = logits.copy()
    ids = np.unique(seen)
    picked = logits[ids]
    logits[ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    return logits
