"""export/gguf_tokenizer.py: a SentencePiece-BPE GGUF (Gemma's) tokenizes as llama.cpp does.

The reference below is llama.cpp's SPM tokenizer written out plainly: control and user-defined
tokens split off first (longest first), spaces made visible, then the adjacent pair whose joined
piece scores highest merges (leftmost on ties) until none is a piece, and what is no piece falls
back to byte tokens. The vocabulary is a small BPE learned here, scores minus the merge rank, as
SentencePiece writes them.
"""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 3, 4, 6
CONTROLS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
USER = ["\n", "\n\n"]
CORPUS = ("the cat sat on the mat . the rat ate the oats at noon ; a cat and a rat are not the same "
          "animal , so the cat sat still until the rat ran on .  tonight the  cats sit   ")
ALPHABET = "aenorst .;\n\u2581\u00e9\u65e5\U0001F600<>_"  # what the vocabulary has, and what it lacks


def learned_vocabulary(merges: int = 60):
    """(pieces, scores, types): specials, bytes, the corpus' characters and its first BPE merges."""
    words = [list("\u2581" + word) for word in CORPUS.split(" ")]  # SentencePiece's words: a space, then letters
    chars = sorted({c for word in words for c in word})
    learned = []
    for _ in range(merges):
        pairs = Counter((a, b) for word in words for a, b in zip(word, word[1:]))
        if not pairs:
            break
        (a, b), _ = pairs.most_common(1)[0]
        learned.append(a + b)
        for word in words:
            i = 0
            while i < len(word) - 1:
                if (word[i], word[i + 1]) == (a, b):
                    word[i:i + 2] = [a + b]
                i += 1
    normal = chars + [piece for piece in learned if piece not in chars]
    pieces = CONTROLS + USER + [f"<0x{b:02X}>" for b in range(256)] + normal
    types = [CONTROL] * len(CONTROLS) + [USER_DEFINED] * len(USER) + [BYTE] * 256 + [NORMAL] * len(normal)
    scores = [-1000.0] * (len(CONTROLS) + len(USER) + 256) + [-float(rank) for rank in range(len(normal))]
    return pieces, scores, types


def write_gguf(path, pieces, scores, types, architecture="gemma3"):
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_block_count(1)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def spm_reference(text: str, pieces, scores, types) -> list[int]:
    ids = {piece: i for i, piece in enumerate(pieces)}
    specials = sorted((p for p, t in zip(pieces, types) if t in (CONTROL, USER_DEFINED)), key=len, reverse=True)
    out, fragment, i = [ids["<bos>"]], "", 0
    while i < len(text):
        special = next((s for s in specials if text.startswith(s, i)), None)
        if special is None:
            fragment, i = fragment + text[i], i + 1
            continue
        out += spm_fragment(fragment, ids, scores, types) + [ids[special]]
        fragment, i = "", i + len(special)
    return out + spm_fragment(fragment, ids, scores, types)


def spm_fragment(fragment: str, ids, scores, types) -> list[int]:
    symbols = list(fragment.replace(" ", "\u2581"))
    while True:
        candidates = [(scores[ids[a + b]], -i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))
                      if a + b in ids and types[ids[a + b]] == NORMAL]
        if not candidates:
            break
        _, leftmost = max(candidates)
        at = -leftmost
        symbols[at:at + 2] = [symbols[at] + symbols[at + 1]]
    out = []
    for symbol in symbols:
        out += [ids[symbol]] if symbol in ids else [ids[f"<0x{b:02X}>"] for b in symbol.encode()]
    return out


@pytest.fixture(scope="module")
def vocabulary():
    return learned_vocabulary()


@pytest.fixture(scope="module")
def tokenizer(vocabulary, tmp_path_factory):
    import gguf

    from edgelm.export.gguf_tokenizer import spm_bpe_tokenizer

    path = write_gguf(tmp_path_factory.mktemp("spm") / "spm.gguf", *vocabulary)
    return spm_bpe_tokenizer(gguf.GGUFReader(path))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=ALPHABET, max_size=40))
def test_tokenizes_as_llama_cpp_does(tokenizer, vocabulary, text):
    assert tokenizer.encode(text).ids == spm_reference(text, *vocabulary)


@pytest.fixture(scope="module")
def llama_cpp_spm(vocabulary, tmp_path_factory):
    import llama_cpp

    reference = llama_cpp.Llama(str(write_gguf(tmp_path_factory.mktemp("spm-cpp") / "spm.gguf", *vocabulary)),
                                vocab_only=True, verbose=False)
    yield reference
    reference.close()


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python (make bench-peers)")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=ALPHABET, max_size=40))
@example(text="<start_of_turn>the cat sat\n\non the mat<end_of_turn>\n\u65e5")
def test_the_reference_is_llama_cpps_spm_tokenizer(llama_cpp_spm, vocabulary, text):
    """Where llama.cpp is installed: the plain reference above gives its ids on the same GGUF."""
    assert llama_cpp_spm.tokenize(text.encode(), add_bos=True, special=True) == spm_reference(text, *vocabulary)


def test_known_text_control_tokens_and_round_trip(tokenizer, vocabulary):
    pieces = vocabulary[0]
    text = "<start_of_turn>the cat sat\n\non the mat<end_of_turn>\n\u65e5"
    encoding = tokenizer.encode(text)
    assert encoding.ids == spm_reference(text, *vocabulary)
    assert encoding.tokens[:2] == ["<bos>", "<start_of_turn>"] and "\n\n" in encoding.tokens
    assert "\u2581cat" in pieces and "\u2581cat" in encoding.tokens  # whole learned pieces, not characters
    assert encoding.tokens[-3:] == ["<0xE6>", "<0x97>", "<0xA5>"]  # a character with no piece: its bytes
    assert tokenizer.decode(encoding.ids, skip_special_tokens=False) == "<bos>" + text
    assert tokenizer.decode(encoding.ids) == text.replace("<start_of_turn>", "").replace("<end_of_turn>", "")


def test_gguf_to_folder_tokenizer_replaces_transformers_unigram(vocabulary, tmp_path):
    """transformers 4.57 makes Gemma's vocabulary a Unigram tokenizer: "the" as "t" "he"; the export does not."""
    from transformers import AutoTokenizer

    from edgelm.export.sources import load_gguf_tokenizer

    path = write_gguf(tmp_path / "tiny-gemma3.gguf", *vocabulary)
    text = "the cat sat on the mat ; the rat ate"
    expected = spm_reference(text, *vocabulary)
    upstream = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    ours = load_gguf_tokenizer(path)
    assert ours(text).input_ids == expected
    ours.save_pretrained(tmp_path / "saved")  # what the model folder's tokenizer.json is made from
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")(text).input_ids == expected
    if type(upstream.backend_tokenizer.model).__name__ == "Unigram":  # the upstream conversion this replaces
        assert upstream(text).input_ids != expected


BYTE_LEVEL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def write_byte_level_gguf(path, pre: str, merges=("\u0120 \u0120", "\u0120 a"), add_bos=False):
    """A GPT-2-style vocabulary (the 256 byte symbols and `merges`) with llama.cpp pre-tokenizer type `pre`."""
    import gguf
    from tokenizers.pre_tokenizers import ByteLevel

    pieces = BYTE_LEVEL_SPECIALS + sorted(ByteLevel.alphabet()) + ["".join(m.split(" ")) for m in merges]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_block_count(1)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(pieces)
    writer.add_token_types([CONTROL] * len(BYTE_LEVEL_SPECIALS) + [NORMAL] * (len(pieces) - len(BYTE_LEVEL_SPECIALS)))
    writer.add_token_merges(list(merges))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(add_bos)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, pieces


def test_byte_level_gguf_keeps_its_bos_setting_eos_and_digit_split(tmp_path):
    """SmolLM2's GGUF: no BOS before a prompt, EOS <|im_end|>, digits apart from spaces before them (as llama.cpp)."""
    from transformers import AutoTokenizer

    from edgelm.export.sources import load_gguf_tokenizer

    path, pieces = write_byte_level_gguf(tmp_path / "byte-level.gguf", "smollm")
    tokenizer = load_gguf_tokenizer(path)
    ids = tokenizer("a  7 a").input_ids
    assert [pieces[i] for i in ids] == ["a", "\u0120\u0120", "7", "\u0120a"]  # no BOS; "  7" is two spaces, a digit
    assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.bos_token_id) == ("<|im_end|>", 2, 1)
    tokenizer.save_pretrained(tmp_path / "saved")  # and so it stays when the export reads the folder back
    again = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert again("a  7 a").input_ids == ids and again.eos_token_id == 2


# how llama.cpp's regexes for each pre-tokenizer type split "a 12345\n\n it's" (byte-level symbols: \u0120 is
# a space, \u010a a newline); transformers gives every type GPT-2's split, the last row
SPLITS = {
    "llama-bpe": ["a", "\u0120", "123", "45", "\u010a\u010a", "\u0120it", "'s"],
    "qwen2": ["a", "\u0120", "1", "2", "3", "4", "5", "\u010a\u010a", "\u0120it", "'s"],
    "smollm": ["a", "\u0120", "1", "2", "3", "4", "5", "\u010a\u010a", "\u0120it", "'s"],
    "gpt-2": ["a", "\u012012345", "\u010a\u010a", "\u0120it", "'s"],
}


@pytest.mark.parametrize("pre", sorted(SPLITS))
def test_text_is_split_by_llama_cpps_regexes_for_the_pre_tokenizer_type(tmp_path, pre):
    from edgelm.export.sources import load_gguf_tokenizer

    path, _ = write_byte_level_gguf(tmp_path / f"{pre}.gguf", pre)
    pre_tokenizer = load_gguf_tokenizer(path).backend_tokenizer.pre_tokenizer
    assert [piece for piece, _ in pre_tokenizer.pre_tokenize_str("a 12345\n\n it's")] == SPLITS[pre]


@pytest.fixture(scope="module")
def llama_cpp_vocabularies(tmp_path_factory):
    """pre-tokenizer type -> (the exported tokenizer, llama.cpp on the same GGUF), made on first use."""
    import llama_cpp

    from edgelm.export.sources import load_gguf_tokenizer

    made = {}

    def get(pre):
        if pre not in made:
            path, _ = write_byte_level_gguf(tmp_path_factory.mktemp(pre) / "v.gguf", pre,
                                            merges=("\u0120 \u0120", "1 2", "12 3", "\u0120 a", "' s"), add_bos=True)
            made[pre] = (load_gguf_tokenizer(path), llama_cpp.Llama(str(path), vocab_only=True, verbose=False))
        return made[pre]

    yield get
    for _, reference in made.values():
        reference.close()


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python (make bench-peers)")
@pytest.mark.parametrize("pre", sorted(SPLITS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet="aA's'LL 1234567890\n\r\t.,!?\u00e9\u65e5\U0001F600", max_size=30))
@example(text="x 1234 12\n\n it's  7")
def test_token_ids_equal_llama_cpps(llama_cpp_vocabularies, pre, text):
    """Where llama.cpp is installed: the exported tokenizer gives its token ids, BOS included."""
    ours, reference = llama_cpp_vocabularies(pre)
    assert ours(text).input_ids == reference.tokenize(text.encode(), add_bos=True, special=True)
