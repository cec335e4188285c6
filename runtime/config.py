"""Generation settings, validated once where they are built."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from .errors import EdgelmError


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick tokens and when to stop. Defaults give greedy decoding."""

    max_new_tokens: int = 128  # tokens to generate at most (the prompt is not counted)
    temperature: float = 0.0  # 0 means greedy; > 0 samples from softmax(logits / temperature)
    top_k: int = 0  # keep only the k most likely tokens; 0 keeps all
    top_p: float = 1.0  # keep the smallest set whose probability reaches p; 1 keeps all
    min_p: float = 0.0  # drop tokens less likely than min_p times the top token
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in prompt or output
    stop: tuple[str, ...] = ()  # stop strings; generation ends before any of them is emitted
    seed: int | None = None  # seed of the sampler, for repeatable sampling
    eos_token_ids: tuple[int, ...] | None = field(default=None)  # None: the model's own

    def __post_init__(self):
        _check(self.max_new_tokens >= 0, "max_new_tokens", self.max_new_tokens, "an integer >= 0")
        _check(self.temperature >= 0, "temperature", self.temperature, "a number >= 0 (0 is greedy)")
        _check(self.top_k >= 0, "top_k", self.top_k, "an integer >= 0 (0 keeps all tokens)")
        _check(0 < self.top_p <= 1, "top_p", self.top_p, "a number in (0, 1]")
        _check(0 <= self.min_p < 1, "min_p", self.min_p, "a number in [0, 1)")
        _check(self.repetition_penalty > 0, "repetition_penalty", self.repetition_penalty, "a number > 0 (1 is off)")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))
        if self.eos_token_ids is not None:
            object.__setattr__(self, "eos_token_ids", tuple(int(t) for t in self.eos_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def updated(self, **overrides) -> "GenerationConfig":
        """A copy with the given fields replaced (None values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise EdgelmError(f"unknown generation setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise EdgelmError(f"GenerationConfig.{name}={value!r} is out of range: use {allowed}")
