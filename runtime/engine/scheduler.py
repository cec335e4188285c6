"""Which sequences run: a waiting queue, the running rows, and admission between steps."""

from __future__ import annotations

import threading
from collections import deque

from ..errors import EdgelmError
from .sequence import Sequence, Status

PREFILL_TOKENS_PER_STEP = 512  # prompt tokens admitted between two decode steps (at least one prompt)


class QueueFull(EdgelmError):
    """More requests are waiting than the engine accepts; the server answers 503."""


class Scheduler:
    """Keeps `running` aligned with the batched cache's rows: running[i] is row i.

    Args:
        max_batch: sequences decoded together at most (rows of the cache).
        max_waiting: sequences queued at most beyond the `max_batch` rows (waiting or running); None for no limit.
    """

    def __init__(self, max_batch: int, max_waiting: int | None = None):
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.lock = threading.Lock()  # guards `waiting` against the threads that add requests

    def add(self, seqs: list[Sequence]) -> None:
        """Queues `seqs` together, or none of them (QueueFull). A sequence already queued, running or
        finished is left as it is: queued again it would be prefilled again, into a second row."""
        with self.lock:
            seqs = [s for s in seqs if s.status is Status.WAITING and all(s is not w for w in self.waiting)]
            queued = len(self.waiting) + len(self.running)
            if self.max_waiting is not None and queued + len(seqs) > self.max_batch + self.max_waiting:
                raise QueueFull(f"{queued} sequences are already running or waiting (the most is "
                                f"{self.max_batch} running and {self.max_waiting} waiting); try again later")
            self.waiting.extend(seqs)

    def admit(self) -> list[Sequence]:
        """Waiting sequences to prefill now: while rows are free, up to a prompt-token budget (at least one)."""
        admitted, tokens = [], 0
        with self.lock:
            while self.waiting and len(self.running) + len(admitted) < self.max_batch:
                seq = self.waiting[0]
                if admitted and tokens + len(seq.prompt_ids) > PREFILL_TOKENS_PER_STEP:
                    break
                self.waiting.popleft()
                if seq.cancelled or seq.status is Status.FINISHED:
                    continue
                admitted.append(seq)
                tokens += len(seq.prompt_ids)
        return admitted

    def drop_cancelled_waiting(self) -> list[Sequence]:
        with self.lock:
            gone = [s for s in self.waiting if s.cancelled]
            self.waiting = deque(s for s in self.waiting if not s.cancelled)
        return gone

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting
