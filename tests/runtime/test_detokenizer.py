from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from edgelm.detokenizer import IncrementalDecoder


def byte_level_tokenizer() -> Tokenizer:
    """Byte-level BPE with no merges: every UTF-8 byte is its own token, like GPT-2's base alphabet."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def test_multibyte_characters_are_never_split():
    tok = byte_level_tokenizer()
    text = " héllo wörld ✓ 日本語 🎉!"
    ids = tok.encode(text).ids
    assert len(ids) > len(text)  # several tokens for some characters
    decoder = IncrementalDecoder(tok)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text


def test_leading_space_after_prompt_survives():
    tok = byte_level_tokenizer()
    prompt_ids = tok.encode("Machine learning is").ids
    decoder = IncrementalDecoder(tok, prompt_ids)
    new_ids = tok.encode(" a field").ids
    assert "".join(decoder.push(i) for i in new_ids) == " a field"
