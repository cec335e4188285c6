"""The engine loop: admit and prefill new sequences, decode all running ones as one batch, let finished ones go.

Each `step()` is schedule -> run -> postprocess, as in nano-vllm's LLMEngine:
    1. drop cancelled sequences (a client went away) and free their rows;
    2. prefill waiting sequences into free rows (each alone, chunked) and pick their first tokens;
    3. run one decode step for every running sequence together and pick each one's next token;
    4. finished sequences leave; the others continue next step.
Sequences join and leave between steps, so no request waits for another to finish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from ..config import GenerationConfig
from ..errors import EdgelmError
from ..session import GraphRunner
from .batch_runner import BatchRunner
from .scheduler import Scheduler
from .sequence import Sequence, Status

logger = logging.getLogger(__name__)


class Engine:
    """Continuous batching over one GraphRunner.

    Args:
        runner: the model's graph.
        tokenizer: a `tokenizers.Tokenizer`, for streaming text and stop strings.
        eos_token_ids: the model's end ids (a config's own eos_token_ids win).
        context_length: positions a sequence may use at most.
        max_batch: sequences decoded together at most.
        max_waiting: requests queued beyond those at most (None: no limit); more raise QueueFull.
    Example:
        engine = Engine(model.runner, model.tokenizer, (2,), 2048, max_batch=8)
        seqs = [engine.sequence(ids, config) for ids in prompts]
        engine.generate(seqs)
        print([s.text for s in seqs])
    """

    def __init__(self, runner: GraphRunner, tokenizer, eos_token_ids: tuple[int, ...], context_length: int,
                 max_batch: int = 8, max_waiting: int | None = None):
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise EdgelmError(f"max_batch={max_batch!r} is invalid: use an integer >= 1")
        self.batch = BatchRunner(runner)
        self.scheduler = Scheduler(max_batch, max_waiting)
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(eos_token_ids)
        self.context_length = context_length
        self._step_lock = threading.Lock()  # one step at a time, whichever thread drives
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- requests --------------------------------------------------------------------------------
    def sequence(self, prompt_ids: list[int], config: GenerationConfig,
                 on_event: Callable[[Sequence, str], None] | None = None, constraint=None) -> Sequence:
        """A new sequence for checked `prompt_ids` (non-empty, shorter than the context); not yet queued.

        `constraint` (Model.constraint(config)) is this sequence's own: its Sampler masks with it.
        """
        eos = config.eos_token_ids if config.eos_token_ids is not None else self.eos_token_ids
        return Sequence(prompt_ids, config, eos, self.context_length, self.tokenizer, on_event, constraint)

    def add(self, seqs: list[Sequence]) -> None:
        """Queues `seqs` (all or none: QueueFull) and wakes the loop thread, if one runs."""
        self.scheduler.add(seqs)
        with self._wake:
            self._wake.notify()

    def generate(self, seqs: list[Sequence]) -> list[Sequence]:
        """Runs `seqs` to the end in this thread (or waits for the loop thread); raises the first error."""
        self.add(seqs)
        while not all(s.done.is_set() for s in seqs):
            if self._thread is not None:
                for s in seqs:
                    s.done.wait()
            else:
                self.step()
        for s in seqs:
            if s.error is not None:
                raise s.error
        return seqs

    # -- the loop --------------------------------------------------------------------------------
    def step(self) -> None:
        """One engine step (see the module docstring)."""
        with self._step_lock:
            sched = self.scheduler
            for seq in sched.drop_cancelled_waiting():
                seq.finish("cancelled")
            self._leave(lambda s: s.cancelled, "cancelled")
            for seq in sched.admit():
                self._join(seq)
            self._leave(lambda s: s.status is Status.FINISHED)
            if not sched.running:
                return
            tokens = np.array([s.last_token for s in sched.running], dtype=np.int64)  # (n,)
            try:
                logits = self.batch.decode(tokens)  # (n, vocab): one graph run for all
            except Exception as exc:  # noqa: BLE001 - the graph failed: every running sequence ends with the error
                logger.exception("decode step failed")
                self._leave(lambda s: True, "error", exc)
                return
            for seq, row in zip(sched.running, logits):
                self._pick(seq, row)
            self._leave(lambda s: s.status is Status.FINISHED)

    def _join(self, seq: Sequence) -> None:
        """Prefills `seq` into a new row and picks its first token."""
        if seq.budget == 0:
            return seq.finish("length")
        try:
            logits = self.batch.prefill(seq.prompt_ids)  # (vocab,)
        except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
            return seq.finish("error", exc)
        seq.status = Status.RUNNING
        self.scheduler.running.append(seq)  # row len(running) - 1, as the cache's new row
        self._pick(seq, logits)

    @staticmethod
    def _pick(seq: Sequence, logits: np.ndarray) -> None:
        try:
            seq.pick(logits)
        except Exception as exc:  # noqa: BLE001 - e.g. NaN logits: this sequence ends with the error
            seq.finish("error", exc)

    def _leave(self, which: Callable[[Sequence], bool], reason: str | None = None,
               error: BaseException | None = None) -> None:
        """Frees the rows of running sequences that match `which` (finishing them with `reason`)."""
        running = self.scheduler.running
        for row in reversed(range(len(running))):  # rows above `row` were already kept, so a moved row is settled
            seq = running[row]
            if not which(seq):
                continue
            if reason is not None:
                seq.finish(reason, error)
            self.batch.release(row)  # the last row moves into `row`; mirror that
            running[row] = running[-1]
            running.pop()

    # -- a thread that steps whenever there is work (the server's) ---------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="edgelm-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ends the loop thread; sequences still queued or running are cancelled."""
        thread = self._thread
        if thread is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify()
        thread.join()
        self._thread = None
        for seq in [*self.scheduler.running, *self.scheduler.waiting]:
            seq.cancel()
        self.step()  # lets them go

    def _loop(self) -> None:
        while True:
            with self._wake:
                while self.scheduler.idle and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
            try:
                self.step()
            except Exception:  # noqa: BLE001 - keep serving; the step already failed its sequences
                logger.exception("engine step failed")
