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

    One thread at a time: a session's cache is its own, and a turn changes it.

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

    def stream(self, text: str, config: GenerationConfig | None = None, **settings) -> Iterator[str]:
        """Sends `text` as the user's next message and streams the reply; both join the conversation.

        Args:
            text: the user's message.
            config, settings: as for `Model.stream`; they default to the session's own.
        Raises:
            EdgelmError: for a message that is not text, a conversation longer than the context
                (call `reset()`), or an invalid setting.
        """
        messages = [*self.messages, {"role": "user", "content": check_text("the message", text)}]
        ids = self.model.chat_ids(messages)
        cfg = self.model.config(config or self.config, **settings)
        return self._reply(messages, ids, cfg)

    def send(self, text: str, config: GenerationConfig | None = None, **settings) -> str:
        """The whole reply to `text`. Same arguments as `stream`."""
        return "".join(self.stream(text, config, **settings))

    def reset(self) -> None:
        """Forgets the conversation (the system prompt stays). The cache stays too: its system prompt is reused."""
        self.messages = list(self.start)

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
