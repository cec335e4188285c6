"""From the engine thread to asyncio: one request's sequences as an async stream of text pieces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..config import GenerationConfig
from ..engine import Engine, Sequence

DISCONNECT_POLL_S = 0.2  # how often a non-streaming request checks that its client is still there


class Submission:
    """`n` sequences for one request, queued together; their pieces arrive on this event loop.

    Iterate `events()` for (choice index, piece, finished) in the order the engine made them;
    `cancel()` (a client went away) drops them all at the engine's next step.
    """

    def __init__(self, engine: Engine, prompt_ids: list[int], configs: list[GenerationConfig], constraints: list):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[Sequence, str]] = asyncio.Queue()
        self.seqs = [engine.sequence(prompt_ids, c, self._on_event, k) for c, k in zip(configs, constraints)]
        self.index = {s.id: i for i, s in enumerate(self.seqs)}
        engine.add(self.seqs)  # QueueFull when the engine is saturated

    def _on_event(self, seq: Sequence, piece: str) -> None:  # on the engine thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (seq, piece))

    async def events(self) -> AsyncIterator[tuple[int, str, Sequence | None]]:
        """(choice, piece, None) for text, (choice, "", seq) when that choice finished."""
        left = len(self.seqs)
        while left:
            seq, piece = await self.queue.get()
            if piece:
                yield self.index[seq.id], piece, None
            else:  # the finish event: always the sequence's last
                left -= 1
                yield self.index[seq.id], "", seq

    async def wait(self, is_disconnected) -> bool:
        """Waits for every sequence to finish; False (after cancelling them) if the client went away first."""
        left = len(self.seqs)
        while left:
            try:
                _, piece = await asyncio.wait_for(self.queue.get(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await is_disconnected():
                    self.cancel()
                    return False
                continue
            left -= not piece
        return True

    def cancel(self) -> None:
        for seq in self.seqs:
            seq.cancel()

    @property
    def completion_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.seqs)
