"""Output that follows a JSON schema, a regular expression or a grammar: token masks from llguidance.

Before each pick the constraint computes which tokens may come next and sets the others' logits
to -inf; after the pick it consumes the token. llguidance (the library llama.cpp and
onnxruntime-genai use) does the parsing in Rust on a token trie, with no torch; it is the
optional `json` extra: pip install 'edgelm[json]'.
"""

from __future__ import annotations

import json

import numpy as np

from .errors import EdgelmError


# Compact JSON, one line: no free whitespace (a model cannot pad forever), ", " and ": " as separators.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
INSTALL = "pip install 'edgelm[json]' (or: pip install llguidance)"


def json_schema_text(name: str, value) -> str | None:
    """A JSON schema given as a dict, JSON text or a pydantic model (class or instance), as JSON text."""
    if value is None:
        return None
    if hasattr(value, "model_json_schema"):  # pydantic v2, without importing pydantic
        value = value.model_json_schema()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise EdgelmError(f"{name} is not valid JSON ({exc}); give a dict, JSON text or a pydantic model") from None
    if not isinstance(value, dict):
        raise EdgelmError(f"{name} must be a JSON schema: a dict like {{'type': 'object', ...}}, its JSON text, "
                          f"or a pydantic model class; got {type(value).__name__}")
    try:
        return json.dumps(value)  # key order kept: it is the order properties are written in
    except (TypeError, ValueError) as exc:
        raise EdgelmError(f"{name} cannot be written as JSON ({exc}); use only dicts, lists, strings and numbers") from None


def _llguidance():
    try:
        import llguidance
    except ImportError as exc:
        raise EdgelmError(f"json_schema=, regex= and grammar= need llguidance, which is not installed: {INSTALL}") \
            from exc
    return llguidance


def tokenizer_info(tokenizer_json: str, vocab_size: int, eos_token_ids: list[int]):
    """llguidance's view of the model's tokens (the bytes of each), built once per model (~0.1-1 s).

    The bytes are worked out here from tokenizer.json rather than by llguidance, which takes a
    decoder sequence with both ByteFallback and ByteLevel (SmolLM2's) for a sentencepiece one.

    Args:
        tokenizer_json: the text of the model folder's tokenizer.json.
        vocab_size: the graph's vocabulary (the width of its logits).
        eos_token_ids: the ids that end generation; allowed once the output is complete.
    Returns:
        An `llguidance.LLTokenizer` for `make_constraint`.
    """
    llg = _llguidance()
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    n_vocab = max(vocab_size, tokenizer.get_vocab_size(with_added_tokens=True))
    tokens = _TokenBytes(tokenizer, json.loads(tokenizer_json), n_vocab, eos_token_ids)
    return llg.LLTokenizer(llg.TokenizerWrapper(tokens), n_vocab=n_vocab, eos_token=list(eos_token_ids))


class _TokenBytes:
    """Each token's bytes, as llguidance's TokenizerWrapper wants them; special tokens start with 0xff."""

    def __init__(self, tokenizer, data: dict, n_vocab: int, eos_token_ids: list[int]):
        special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
        byte_level = '"ByteLevel"' in json.dumps(data.get("pre_tokenizer"))  # tokens spelled in GPT-2's byte alphabet
        byte_fallback = bool((data.get("model") or {}).get("byte_fallback"))  # <0xAB> tokens are raw bytes
        alphabet = {c: b for b, c in _gpt2_byte_alphabet().items()}
        self.tokens: list[bytes] = []
        self.special_token_ids: list[int] = []
        for i in range(n_vocab):
            token = tokenizer.id_to_token(i)
            if token is None:
                piece = b""
            elif token in special:
                piece = b"\xff" + token.encode()
                self.special_token_ids.append(i)
            elif byte_fallback and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                piece = bytes([int(token[3:5], 16)])
            elif byte_level and all(c in alphabet for c in token):
                piece = bytes(alphabet[c] for c in token)
            elif byte_level or "\u2581" in token:  # an added plain-text token, or sentencepiece's space mark
                piece = token.replace("\u2581", " ").encode()
            else:  # other models (WordPiece, character vocabularies): as the decoder writes the token alone
                piece = tokenizer.decode([i], skip_special_tokens=False).encode()
            self.tokens.append(piece)
        self.eos_token_id = eos_token_ids[0]
        self.bos_token_id = None
        self._tokenizer = tokenizer

    def __call__(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids


def _gpt2_byte_alphabet() -> dict[int, str]:
    """GPT-2's map from each byte to the printable character that spells it in byte-level vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def grammar_for(json_schema: str | None = None, regex: str | None = None, grammar: str | None = None) -> str:
    """llguidance's grammar for whichever of the three is given."""
    llg = _llguidance()
    if json_schema is not None:
        return llg.LLMatcher.grammar_from_json_schema(json_schema, defaults=JSON_OPTIONS)
    if regex is not None:
        return llg.LLMatcher.grammar_from_regex(regex)
    try:
        return llg.grammar_from("grammar", grammar)  # Lark, or GBNF (converted to Lark)
    except ValueError as exc:
        raise EdgelmError(f"the grammar could not be read: {exc}; write it in Lark or GBNF syntax") from None


def make_constraint(tokenizer_info, json_schema: str | None = None, regex: str | None = None,
                    grammar: str | None = None) -> Constraint | None:
    """A Constraint for one generation, or None when nothing constrains the output.

    Raises:
        EdgelmError: when llguidance is missing, or the schema, regex or grammar does not compile.
    Example:
        constraint = make_constraint(info, json_schema='{"type": "object"}')
        Sampler(config, constraint)
    """
    if json_schema is None and regex is None and grammar is None:
        return None
    llg = _llguidance()
    kind = "json_schema" if json_schema is not None else "regex" if regex is not None else "grammar"
    matcher = llg.LLMatcher(tokenizer_info, grammar_for(json_schema, regex, grammar), log_level=0)
    if matcher.is_error():
        raise EdgelmError(f"the {kind} cannot be used: {matcher.get_error()}; fix it")
    return Constraint(matcher, tokenizer_info.vocab_size, kind)


class Constraint:
    """The tokens allowed next, as a mask on a (vocab,) row of logits; advanced by each picked token."""

    def __init__(self, matcher, vocab_size: int, kind: str = "grammar"):
        self.matcher = matcher
        self.kind = kind
        self.bits = np.zeros((vocab_size + 31) // 32, dtype=np.int32)  # one bit per token

    def apply(self, logits: np.ndarray) -> None:
        """Sets the logits of tokens that cannot come next to -inf, in place. `logits` is (vocab,)."""
        self.matcher.unsafe_compute_mask_ptr(self.bits.ctypes.data, self.bits.nbytes)
        if self.matcher.is_error():
            raise EdgelmError(f"the {self.kind} constraint failed: {self.matcher.get_error()}")
        allowed = np.unpackbits(self.bits.view(np.uint8), count=logits.shape[-1], bitorder="little")
        logits[allowed == 0] = -np.inf

    def advance(self, token: int) -> None:
        """Consumes the picked token."""
        if not self.matcher.consume_token(token):
            raise EdgelmError(f"token {token} does not fit the {self.kind}: {self.matcher.get_error()}")

    @property
    def accepting(self) -> bool:
        """True when the output so far is complete (it parses and, for a schema, validates)."""
        return self.matcher.is_accepting()
