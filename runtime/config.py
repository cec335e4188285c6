"""Generation settings, validated once where they are built."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from .checks import check_bool, check_int, check_number, check_seed, check_strings, is_int
from .constraints import json_schema_text
from .errors import EdgelmError

MIN_TEMPERATURE = 1e-5  # below this, softmax(logits / t) is the argmax anyway (and 1 / t may overflow): greedy
MAX_TOKENS = 1 << 31


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick tokens and when to stop. Defaults give greedy decoding."""

    max_new_tokens: int = 128  # tokens to generate at most (the prompt is not counted)
    temperature: float = 0.0  # 0 (or below MIN_TEMPERATURE) is greedy; above, samples softmax(logits / temperature)
    top_k: int = 0  # keep only the k most likely tokens; 0 keeps all
    top_p: float = 1.0  # keep the smallest set whose probability reaches p; 1 keeps all
    min_p: float = 0.0  # drop tokens less likely than min_p times the top token
    repetition_penalty: float = 1.0  # > 1 discourages tokens already in prompt or output
    stop: tuple[str, ...] = ()  # stop strings; generation ends before any of them is emitted
    keep_stop: bool = False  # True: the text ends after the stop string that ended it (transformers' pipeline)
    seed: int | None = None  # seed of the sampler, for repeatable sampling
    eos_token_ids: tuple[int, ...] | None = field(default=None)  # None: the model's own
    json_schema: str | None = None  # output is JSON valid under this schema (a dict or pydantic model; kept as JSON text)
    regex: str | None = None  # output matches this regular expression (Rust regex syntax)
    grammar: str | None = None  # output follows this grammar (Lark or GBNF syntax)
    logprobs: bool = False  # record each generated token's log-probability (Model.last_timings.logprobs)

    def __post_init__(self):
        name = "GenerationConfig."
        set_ = object.__setattr__
        set_(self, "max_new_tokens", check_int(name + "max_new_tokens", self.max_new_tokens, 0, MAX_TOKENS))
        set_(self, "temperature", check_number(name + "temperature", self.temperature, 0, None,
                                               "a finite number >= 0 (0 is greedy)"))
        set_(self, "top_k", check_int(name + "top_k", self.top_k, 0, MAX_TOKENS, "an integer >= 0 (0 keeps all tokens)"))
        set_(self, "top_p", check_number(name + "top_p", self.top_p, 0, 1, "a number in (0, 1]", low_open=True))
        set_(self, "min_p", check_number(name + "min_p", self.min_p, 0, 1, "a number in [0, 1)", high_open=True))
        set_(self, "repetition_penalty", check_number(name + "repetition_penalty", self.repetition_penalty, 0, None,
                                                      "a finite number > 0 (1 is off)", low_open=True))
        set_(self, "stop", check_strings(name + "stop", self.stop))
        set_(self, "keep_stop", check_bool(name + "keep_stop", self.keep_stop))
        set_(self, "seed", check_seed(name + "seed", self.seed))
        if self.eos_token_ids is not None:
            ids = (self.eos_token_ids,) if is_int(self.eos_token_ids) else self.eos_token_ids
            if not isinstance(ids, (list, tuple)) or not all(is_int(t) and t >= 0 for t in ids):
                raise EdgelmError(
                    f"{name}eos_token_ids={self.eos_token_ids!r} is invalid: use None (the model's own) "
                    "or a list of token ids (integers >= 0)"
                )
            set_(self, "eos_token_ids", tuple(int(t) for t in ids))
        set_(self, "json_schema", json_schema_text(name + "json_schema", self.json_schema))
        for key in ("regex", "grammar"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise EdgelmError(f"{name}{key}={value!r:.60} is invalid: use None or a non-empty string")
        chosen = [key for key in ("json_schema", "regex", "grammar") if getattr(self, key) is not None]
        if len(chosen) > 1:
            raise EdgelmError(f"{name[:-1]}: {' and '.join(chosen)} are both set; "
                              "constrain the output with one of them")
        if chosen and self.eos_token_ids == ():
            raise EdgelmError(f"{name}eos_token_ids=() with {chosen[0]}: a constrained output ends on an "
                              "end-of-sequence token, so it needs one; use None (the model's own) or a list of ids")
        set_(self, "logprobs", check_bool(name + "logprobs", self.logprobs))

    @property
    def constrained(self) -> bool:
        """True when the output must follow a JSON schema, a regular expression or a grammar."""
        return self.json_schema is not None or self.regex is not None or self.grammar is not None

    @property
    def greedy(self) -> bool:
        """True for temperature 0, and for temperatures too small to sample with (below MIN_TEMPERATURE)."""
        return self.temperature < MIN_TEMPERATURE

    def updated(self, **overrides) -> "GenerationConfig":
        """A copy with the given fields replaced (None values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise EdgelmError(f"unknown generation setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
