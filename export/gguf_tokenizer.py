"""A GGUF's tokenizer as llama.cpp tokenizes with it, where transformers' conversion does otherwise.

`as_llama_cpp_tokenizes` corrects what transformers 4.57 builds from a GGUF (below, and in its
docstring: SmolLM2's BOS, EOS and digits). On 346 texts both aliases' exported tokenizers now
give llama.cpp's ids exactly.

A GGUF whose `tokenizer.ggml.model` is "llama" holds a SentencePiece vocabulary: pieces, scores and
token types, no merges. For Gemma 2 and 3 that model is BPE (the scores are minus the merge rank),
but transformers 4.57 converts it to a *Unigram* tokenizer, which treats the scores as log
probabilities and so prefers short pieces: "user" came out as "us" + "er", and a sentence of 19
tokens for llama.cpp (and Gemma's own tokenizer) as 46. The model never saw such splits, so every
prompt read worse, and took 2.4x the tokens.

`spm_bpe_tokenizer` builds what SentencePiece BPE (and llama.cpp's SPM tokenizer) does: starting
from characters, merge the adjacent pair whose joined piece has the highest score, until none is a
piece; characters that are no piece fall back to byte tokens `<0xXX>`. As a `tokenizers` BPE the
merges are every split of every normal piece into two pieces, ranked by the joined piece's score.
Control tokens become special added tokens (a chat template's `<start_of_turn>`), user-defined ones
(Gemma's runs of newlines and tabs) plain added tokens, matched before the merges as llama.cpp does.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # llama.cpp's token types
SPACE = "\u2581"  # SentencePiece's visible space


def field(reader, name: str, default=None):
    """A GGUF metadata field's value (a list for arrays), or `default` when the file has none."""
    found = reader.fields.get(name)
    return default if found is None else found.contents()


# llama.cpp's pre-tokenizer regexes (llama-vocab.cpp) for the byte-level BPE vocabularies
# ("tokenizer.ggml.model" gpt2) whose split transformers' converter does not reproduce: it gives
# them all GPT-2's regex. Each regex splits the pieces the previous one left, keeping what it
# matched and what lay between (tokenizers' Split, "isolated"). GPT-2's own family is right already.
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")  # one digit a piece
PRE_TOKENIZER_REGEXES = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "dbrx", "smaug-bpe"), [LLAMA3_REGEX]),
    **dict.fromkeys(("qwen2", "stablelm2", "deepseek-r1-qwen"), [QWEN2_REGEX]),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"),
                    [r"\p{N}", GPT2_REGEX]),
}


def byte_level_pre_tokenizer(regexes: list[str]):
    """llama.cpp's regex splits, then the bytes as GPT-2's byte-level alphabet (as Llama 3's tokenizer.json does)."""
    splits = [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in regexes]
    return pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def as_llama_cpp_tokenizes(gguf: Path, tokenizer):
    """Corrects transformers' tokenizer of `gguf` in place where it tokenizes otherwise than llama.cpp.

    - SentencePiece-BPE vocabularies that transformers made Unigram: rebuilt (`spm_bpe_tokenizer`);
    - BOS/EOS added as the GGUF's `add_bos_token`/`add_eos_token` say (transformers adds BOS to
      SmolLM2's prompts, whose GGUF says not to), and the BOS and EOS tokens the GGUF names
      (transformers 4.57's converter named the BOS token for both on SmolLM2);
    - text split before the merges by llama.cpp's regexes for the GGUF's pre-tokenizer type where
      transformers uses GPT-2's (SmolLM2: "  7" is two spaces and a digit, not a space, a space and
      a digit; Llama 3: "12345" is "123" "45", not "12345").
    """
    import gguf as gguf_py

    reader = gguf_py.GGUFReader(gguf)
    pieces = field(reader, "tokenizer.ggml.tokens")
    if pieces is None:
        return tokenizer
    pieces = [str(piece) for piece in pieces]
    backend = tokenizer.backend_tokenizer
    if type(backend.model).__name__ == "Unigram" and field(reader, "tokenizer.ggml.model") == "llama" \
            and "tokenizer.ggml.merges" not in reader.fields:
        backend = spm_bpe_tokenizer(reader)
    regexes = PRE_TOKENIZER_REGEXES.get(field(reader, "tokenizer.ggml.pre"))
    if regexes and field(reader, "tokenizer.ggml.model") == "gpt2":
        backend.pre_tokenizer = byte_level_pre_tokenizer(regexes)
    backend.post_processor = bos_eos_processor(reader, pieces)
    tokenizer._tokenizer = backend  # the fast tokenizer's backend: save_pretrained writes it as tokenizer.json
    for name in ("bos", "eos"):  # transformers 4.57's converter swaps the two for llama-architecture files
        token_id = field(reader, f"tokenizer.ggml.{name}_token_id")
        if token_id is not None:
            setattr(tokenizer, f"{name}_token", pieces[token_id])
    for name, default in (("add_bos_token", True), ("add_eos_token", False)):
        if hasattr(tokenizer, name):  # Llama's and Gemma's tokenizers remake the post-processor from these on load
            setattr(tokenizer, name, bool(field(reader, f"tokenizer.ggml.{name}", default)))
    return tokenizer


def spm_bpe_tokenizer(reader) -> Tokenizer:
    """A `tokenizers.Tokenizer` that tokenizes like llama.cpp with the SentencePiece-BPE vocabulary of a GGUF
    (`reader`: its gguf.GGUFReader)."""
    pieces = [str(piece) for piece in field(reader, "tokenizer.ggml.tokens")]
    scores = [float(score) for score in field(reader, "tokenizer.ggml.scores")]
    types = [int(kind) for kind in field(reader, "tokenizer.ggml.token_type", [NORMAL] * len(pieces))]
    ids = {piece: index for index, piece in enumerate(pieces)}
    unk_id = field(reader, "tokenizer.ggml.unknown_token_id")
    bpe = BPE(ids, merges_by_score(pieces, scores, types, ids), unk_token=None if unk_id is None else pieces[unk_id],
              fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(bpe)
    space_prefix = bool(field(reader, "tokenizer.ggml.add_space_prefix", True))
    replace = normalizers.Replace(" ", SPACE)
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), replace]) if space_prefix else replace
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if space_prefix else []))
    tokenizer.add_tokens([AddedToken(pieces[i], normalized=False, special=False)
                          for i, kind in enumerate(types) if kind == USER_DEFINED])
    tokenizer.add_special_tokens([AddedToken(pieces[i], normalized=False, special=True)
                                  for i, kind in enumerate(types) if kind in (CONTROL, UNKNOWN)])
    tokenizer.post_processor = bos_eos_processor(reader, pieces)
    return tokenizer


def merges_by_score(pieces: list[str], scores: list[float], types: list[int],
                    ids: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of a normal piece into two pieces, highest joined score first (ties: lower piece id first)."""
    ranked = []
    for index, piece in enumerate(pieces):
        if types[index] != NORMAL or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[index], index, ids[left], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def bos_eos_processor(reader, pieces: list[str]):
    """The template that adds BOS (and EOS) where the GGUF says so; None when it adds neither."""
    ends = []
    for name, default in (("bos", True), ("eos", False)):
        token_id = field(reader, f"tokenizer.ggml.{name}_token_id")
        if token_id is not None and field(reader, f"tokenizer.ggml.add_{name}_token", default):
            ends.append((name, pieces[token_id], int(token_id)))
    if not ends:
        return None
    bos = [piece for name, piece, _ in ends if name == "bos"]
    eos = [piece for name, piece, _ in ends if name == "eos"]
    single = " ".join(bos + ["$A"] + eos)
    pair = " ".join(bos + ["$A"] + eos + bos + ["$B:1"] + eos)
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=[(p, i) for _, p, i in ends])
