"""One request's state in the engine: its tokens, its sampler, its text so far, and why it ended."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from enum import Enum

import numpy as np

from ..config import GenerationConfig
from ..detokenizer import IncrementalDecoder
from ..sampling import Sampler
from ..stopping import StopStrings

_ids = itertools.count()


class Status(Enum):
    WAITING = "waiting"  # queued, not yet prefilled
    RUNNING = "running"  # holds a row of the batched cache
    FINISHED = "finished"


class Sequence:
    """A prompt being continued. The engine thread updates it; other threads read it or `cancel()` it.

    `on_event(sequence, piece)` is called (on the engine thread) with each new text piece, and
    once more with "" when the sequence finishes; `done` is set after that.
    """

    def __init__(self, prompt_ids: list[int], config: GenerationConfig, eos_token_ids: tuple[int, ...],
                 context_length: int, tokenizer, on_event: Callable[["Sequence", str], None] | None = None,
                 constraint=None):
        self.id = next(_ids)
        self.prompt_ids = list(prompt_ids)
        self.config = config
        self.eos_token_ids = eos_token_ids
        self.budget = max(0, min(config.max_new_tokens, context_length - len(prompt_ids)))  # new tokens at most
        self.sampler = Sampler(config, constraint)  # one per sequence: its own seed and constraint
        self.seen = np.empty(len(prompt_ids) + self.budget, dtype=np.int64)  # prompt and output, for the penalty
        self.seen[: len(prompt_ids)] = prompt_ids
        self.length = len(prompt_ids)
        self.decoder = IncrementalDecoder(tokenizer, prompt_ids)
        self.stops = StopStrings(config.stop, keep=config.keep_stop)
        self.on_event = on_event
        self.tokens: list[int] = []  # generated ids (no eos)
        self.pieces: list[str] = []  # text as streamed
        self.status = Status.WAITING
        self.finish_reason: str | None = None  # 'stop' (eos or a stop string), 'length', 'cancelled' or 'error'
        self.error: BaseException | None = None
        self.cancelled = False
        self.done = threading.Event()
        self.created = time.perf_counter()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def cancel(self) -> None:
        """Asks the engine to drop this sequence at its next step (any thread)."""
        self.cancelled = True

    def pick(self, logits: np.ndarray) -> None:
        """Picks the next token from this sequence's logits row (vocab,), streams its text, and checks stopping."""
        token = self.sampler(logits, self.seen[: self.length])
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if token in self.eos_token_ids:
            return self.finish("stop")
        self.tokens.append(token)
        self.seen[self.length] = token
        self.length += 1
        self._emit(self.stops.feed(self.decoder.push(token)))
        if self.stops.stopped:
            return self.finish("stop")
        if len(self.tokens) >= self.budget:
            self.finish("length")

    @property
    def last_token(self) -> int:
        return self.tokens[-1]

    def finish(self, reason: str, error: BaseException | None = None) -> None:
        if self.status is Status.FINISHED:
            return
        if reason in ("stop", "length") and not self.stops.stopped:
            self._emit(self.stops.feed(self.decoder.flush()) + self.stops.flush())  # held-back text is text after all
        self.status, self.finish_reason, self.error = Status.FINISHED, reason, error
        self.finished_at = time.perf_counter()
        if self.on_event is not None:
            self.on_event(self, "")
        self.done.set()

    def _emit(self, piece: str) -> None:
        if piece:
            self.pieces.append(piece)
            if self.on_event is not None:
                self.on_event(self, piece)
