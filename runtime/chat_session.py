"""A conversation that keeps its key/value cache between turns.

Each turn renders the whole conversation with the chat template, as a fresh chat would, and runs
only the tokens past the longest prefix the cache already holds. A template that rewrites earlier
turns still works: the common prefix simply ends earlier.
"""

from __future__ import annotations

from collections.abc import Iterator

from .checks import check_text
from .config import GenerationConfig


class ChatSession:
    """Messages so far and the cache that holds them. Build one with `model.chat_session(system=...)`.

    One thread at a time: a session's cache is its own, and a turn changes it. A new turn (or `reset`)
    while a reply still streams ends that reply where it stands, as closing it would: the conversation
    keeps it as far as it went, and the old stream yields nothing more.

    Example:
        session = model.chat_session(system="Answer briefly.")
        print(session.send("What is the capital of France?"))
        print(session.send("And of Italy?"))    # runs only the new turn's tokens
        session.reset()                         # forget the turns; the system prompt stays
    """

    def __init__(self, model, system: str | None = None, config: GenerationConfig | None = None):
        self.model = model
        self.config = config or model.defaults
        self.start = [{"role": "system", "content": check_text("system", system)}] if system else []
        self.messages: list[dict] = list(self.start)
        self.cache = model.runner.new_cache()
        self._streaming: Iterator[str] | None = None  # the last reply's stream, which may still be open

    def stream(self, text: str, config: GenerationConfig | None = None, **settings) -> Iterator[str]:
        """Sends `text` as the user's next message and streams the reply; both join the conversation.

        Args:
            text: the user's message.
            config, settings: as for `Model.stream`; they default to the session's own.
        Raises:
            EdgelmError: for a message that is not text, a conversation longer than the context
                (call `reset()`), or an invalid setting.
        """
        text = check_text("the message", text)
        self._end_streaming()
        messages = [*self.messages, {"role": "user", "content": text}]
        ids = self.model.chat_ids(messages)
        cfg = self.model.config(config or self.config, **settings)
        self._streaming = self._reply(messages, ids, cfg)
        return self._streaming

    def send(self, text: str, config: GenerationConfig | None = None, **settings) -> str:
        """The whole reply to `text`. Same arguments as `stream`."""
        return "".join(self.stream(text, config, **settings))

    def reset(self) -> None:
        """Forgets the conversation (the system prompt stays). The cache stays too: its system prompt is reused."""
        self._end_streaming()
        self.messages = list(self.start)

    def reset_cache(self) -> None:
        """A new, empty cache; the conversation stays, and the next turn runs it all again. For a turn stopped
        at an arbitrary moment (Ctrl-C), after which the cache may not hold what it records."""
        self._end_streaming()
        self.cache = self.model.runner.new_cache()

    def _end_streaming(self) -> None:
        """Closes a reply still streaming, so that it joins the conversation before anything else changes it."""
        if self._streaming is not None:
            self._streaming.close()  # a finished or never started stream: nothing happens
            self._streaming = None

    @property
    def last_timings(self):
        """The last turn's timings: `cached_tokens` of its prompt were not run again."""
        return self.model.last_timings

    def _reply(self, messages: list[dict], ids: list[int], config: GenerationConfig) -> Iterator[str]:
        pieces: list[str] = []
        try:
            for piece in self.model.stream_ids(ids, config, self.cache):
                pieces.append(piece)
                yield piece
        except GeneratorExit:  # a reply cut short by the caller joins the conversation as far as it went
            self.messages = [*messages, {"role": "assistant", "content": "".join(pieces)}]
            raise
        self.messages = [*messages, {"role": "assistant", "content": "".join(pieces)}]
