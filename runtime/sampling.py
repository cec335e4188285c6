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
        token = int(np.argmax(logits)) if cfg.greedy else self._sample(logits.astype(np.float32) / cfg.temperature)
        if cfg.logprobs:
            self.last_logprob = log_probability(logits, token)
        return token

    def _sample(self, scores: np.ndarray) -> int:
        """A token drawn from softmax(scores) after top-k, min-p and top-p, in that order, each on what the
        one before kept (`candidates`)."""
        probs = np.exp(scores - scores.max())  # unnormalized; the most likely token has 1
        tokens = candidates(probs, self.config)
        if tokens is None:
            return draw(probs, self.rng)
        return int(tokens[draw(probs[tokens], self.rng)])


# Sampling touches the whole vocabulary once (exp, a few comparisons) and sorts only the few tokens it can
# pick: sorting all of Gemma 3's 262,144 tokens for top-p, drawing with numpy's checks of p, and exp in
# float64 made a sampled token cost 33 ms against 0.1 ms greedy. Tokens are looked for above falling
# thresholds (relative to the top token's 1); a model's distribution usually puts its few likely tokens
# above the first. float32 underflows below 2^-149, so 0 ends the list: every token.
THRESHOLDS = (2.0**-10, 2.0**-20, 2.0**-40, 2.0**-80, 0.0)
BLOCK = 1024  # draw(): weights summed in blocks of this many, then one block searched


def candidates(probs: np.ndarray, config: GenerationConfig) -> np.ndarray | None:
    """The ids (ascending) a sampled token may take under top_k, min_p and top_p; None when all of them.

    `probs` are exp(scores - max): the most likely token has 1. Tokens tied with the k-th most likely
    all stay; min_p keeps what reaches min_p times the top token; top_p keeps the most likely tokens,
    in order, up to the first whose mass before it (within what top-k and min-p kept) reaches top_p.
    """
    tokens = None
    if config.top_k and config.top_k < probs.size:
        tokens = _top_k(probs, config.top_k)
    if config.min_p > 0:
        tokens = np.flatnonzero(probs >= config.min_p) if tokens is None else tokens[probs[tokens] >= config.min_p]
    if config.top_p < 1.0:
        tokens = _nucleus(probs, config.top_p, tokens)
    return tokens


def _top_k(probs: np.ndarray, k: int) -> np.ndarray:
    for threshold in THRESHOLDS:
        above = np.flatnonzero(probs >= threshold)
        if above.size >= k:
            break
    kth = np.partition(probs[above], above.size - k)[above.size - k]
    return above[probs[above] >= kth]


def _nucleus(probs: np.ndarray, top_p: float, tokens: np.ndarray | None) -> np.ndarray:
    pool = probs if tokens is None else probs[tokens]
    target = top_p * pool.sum(dtype=np.float64)
    for threshold in THRESHOLDS:  # the tokens above a threshold are the first of the sorted order
        above = np.flatnonzero(pool >= threshold)
        order = above[np.argsort(-pool[above], kind="stable")]
        mass = pool[order].astype(np.float64)
        before = np.cumsum(mass) - mass
        if before[-1] >= target:  # the nucleus ends inside these: the full sort would find the same
            break
    kept = np.sort(order[before < target])
    return kept if tokens is None else tokens[kept]


def draw(weights: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with probability weights[i] / sum(weights) (weights >= 0, not all 0); a 0 is never drawn.

    Finds the block of BLOCK weights the draw falls in from the blocks' sums, then the index inside that
    block: two short cumulative sums instead of one over the whole vocabulary (3 ms on 262,144 tokens).
    """
    blocks = -(-weights.size // BLOCK)
    padded = np.zeros(blocks * BLOCK, np.float32)
    padded[: weights.size] = weights
    padded = padded.reshape(blocks, BLOCK)
    sums = np.cumsum(padded.sum(axis=1, dtype=np.float64))
    point = rng.random() * sums[-1]
    block = int(np.searchsorted(sums, point, side="right"))
    if block == blocks:  # the draw rounded up to the total: the last token that has weight
        return int(np.flatnonzero(weights)[-1])
    inside = np.cumsum(padded[block].astype(np.float64))
    index = int(np.searchsorted(inside, point - (sums[block - 1] if block else 0.0), side="right"))
    if index == BLOCK:  # rounding between the block's sum and its cumulative sum
        index = int(np.flatnonzero(padded[block])[-1])
    return block * BLOCK + index


def log_probability(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token], computed stably."""
    top = logits.max()
    return float(logits[token] - top - np.log(np.exp(logits - top).sum(dtype=np.float64)))


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL-style penalty, as transformers applies it: divide positive scores, multiply negative ones."""
    logits = logits.copy()
    ids = np.unique(seen)
    picked = logits[ids]
    logits[ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    return logits
