"""Turning a growing list of token ids into text pieces, never splitting a character."""

from __future__ import annotations

from tokenizers import Tokenizer

CONTEXT_TOKENS = 4  # prompt tokens decoded along with the first new ones, so a leading space survives


class IncrementalDecoder:
    """Decodes token ids one at a time and returns only the text that is new and complete.

    Byte-level BPE can spread one character over several tokens; decoding them one by one
    would print U+FFFD. We decode a small window and hold text back while it ends in U+FFFD.
    Example:
        decoder = IncrementalDecoder(tokenizer, prompt_ids)
        for token in tokens: print(decoder.push(token), end="")
    """

    def __init__(self, tokenizer: Tokenizer, context_ids: list[int] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids = list(context_ids)[-CONTEXT_TOKENS:]
        self.prefix_offset = 0  # start of the window that is decoded again for context
        self.read_offset = len(self.ids)  # text of ids before this has been returned

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        seen_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full_text = self._decode(self.ids[self.prefix_offset :])
        if len(full_text) > len(seen_text) and not full_text.endswith("\ufffd"):
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return full_text[len(seen_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        seen_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full_text = self._decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return full_text[len(seen_text) :]
