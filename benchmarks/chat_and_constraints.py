"""Chat sessions and constrained decoding, measured: time to first token per turn, and the mask's cost per token.

Usage: python -m benchmarks.chat_and_constraints FOLDER [--reps 5] [--threads N] [--json out.json]

- chat: a 5-turn conversation (fixed messages, greedy replies of --reply-tokens tokens). Each turn's
  time to first token with a ChatSession (the cache kept: only the new tokens run) and without one
  (the whole conversation prefilled, as `model.chat` did before sessions). Median of --reps runs.
- constraints: greedy JSON-schema extraction; the time in the constraint per generated token (mask
  computed by llguidance and applied to the logits, then the token consumed) against the time of a
  decode step (the graph run and the pick), both medians over every token of every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import edgelm
from edgelm.constraints import Constraint

SYSTEM = "You are a helpful assistant. Answer in one or two sentences."
TURNS = [
    "What is the capital of France?",
    "What river runs through it?",
    "Name a famous museum there.",
    "What is its most famous painting?",
    "Who painted it?",
]
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                   "languages": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age", "languages"],
    "additionalProperties": False,
}
EXTRACT = "Extract the person as JSON: Ada Lovelace, aged 36, spoke English and French."


def chat_ttft(model, reply_tokens: int) -> list[dict]:
    """One 5-turn conversation, each turn timed with the session and with a fresh full prefill."""
    session = model.chat_session(system=SYSTEM, max_new_tokens=reply_tokens, temperature=0.0)
    rows = []
    for text in TURNS:
        messages = [*session.messages, {"role": "user", "content": text}]
        ids = model.chat_ids(messages)
        fresh = model.stream_ids(ids, model.config(max_new_tokens=1, temperature=0.0), model.runner.new_cache())
        next(fresh, None)
        fresh.close()
        fresh_s = model.last_timings.prefill_s
        session.send(text)
        t = session.last_timings
        rows.append({"prompt_tokens": t.prompt_tokens, "cached_tokens": t.cached_tokens,
                     "session_ttft_ms": t.prefill_s * 1000, "fresh_ttft_ms": fresh_s * 1000})
    return rows


class TimedConstraint:
    """Wraps a Constraint and records the seconds each token spends in it (apply and advance)."""

    def __init__(self, inner: Constraint):
        self.inner = inner
        self.seconds: list[float] = []
        self._applied = 0.0

    def apply(self, logits):
        start = time.perf_counter()
        self.inner.apply(logits)
        self._applied = time.perf_counter() - start

    def advance(self, token):
        start = time.perf_counter()
        self.inner.advance(token)
        self.seconds.append(self._applied + time.perf_counter() - start)


def constraint_cost(model, tokens: int) -> dict:
    """Per-token seconds in the constraint, and per-token seconds of decode steps, over one extraction."""
    from edgelm import model as model_module

    recorded: list[TimedConstraint] = []
    make = model_module.make_constraint

    def timed(*args, **kwargs):
        recorded.append(TimedConstraint(make(*args, **kwargs)))
        return recorded[-1]

    model_module.make_constraint = timed
    try:
        text = model.chat([{"role": "user", "content": EXTRACT}], json_schema=SCHEMA, max_new_tokens=tokens,
                          temperature=0.0)
    finally:
        model_module.make_constraint = make
    t, seconds = model.last_timings, recorded[-1].seconds
    # a decode step's own time: the steps' time less what they spent in the constraint
    step_s = (t.decode_s - sum(seconds[1 : t.decode_steps + 1])) / t.decode_steps if t.decode_steps else None
    return {"text": text, "finish_reason": t.finish_reason, "mask_s": seconds, "step_s": step_s}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chat_and_constraints", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="an edgelm model folder or alias (e.g. smollm2-135m)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions after a warm-up (default 5)")
    parser.add_argument("--reply-tokens", type=int, default=32, help="tokens per chat reply (default 32)")
    parser.add_argument("--json-tokens", type=int, default=64, help="most tokens of the JSON answer (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")
    parser.add_argument("--json", help="write every sample to this JSON file")
    args = parser.parse_args(argv)
    model = edgelm.load(args.model, threads=args.threads)
    chat_ttft(model, args.reply_tokens)  # warm-up (and the llguidance token table, built once)
    constraint_cost(model, args.json_tokens)
    chats = [chat_ttft(model, args.reply_tokens) for _ in range(args.reps)]
    costs = [constraint_cost(model, args.json_tokens) for _ in range(args.reps)]

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; medians of {args.reps} runs\n")
    print("| turn | prompt tokens | cached | TTFT session (ms) | TTFT fresh prefill (ms) |")
    print("| --- | --- | --- | --- | --- |")
    turns = []
    for i in range(len(TURNS)):
        rows = [chat[i] for chat in chats]
        turn = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        turns.append(turn)
        print(f"| {i + 1} | {turn['prompt_tokens']:.0f} | {turn['cached_tokens']:.0f} | "
              f"{turn['session_ttft_ms']:.1f} | {turn['fresh_ttft_ms']:.1f} |")
    print(f"\nturn 5 / turn 1 TTFT: session {turns[-1]['session_ttft_ms'] / turns[0]['session_ttft_ms']:.2f}x, "
          f"fresh prefill {turns[-1]['fresh_ttft_ms'] / turns[0]['fresh_ttft_ms']:.2f}x")

    mask_ms = statistics.median(s * 1000 for c in costs for s in c["mask_s"][1:])  # the first mask (at the start) apart
    first_mask_ms = statistics.median(c["mask_s"][0] * 1000 for c in costs)
    step_ms = statistics.median(c["step_s"] * 1000 for c in costs if c["step_s"])
    print(f"\nJSON schema: {costs[-1]['text']!r} ({costs[-1]['finish_reason']})")
    print(f"constraint per token: {mask_ms:.3f} ms (first token {first_mask_ms:.3f} ms); decode step without it "
          f"{step_ms:.2f} ms: {100 * mask_ms / step_ms:.1f} % of a step")
    report = {"turns": turns, "chats": chats, "mask_ms_median": mask_ms, "first_mask_ms": first_mask_ms,
              "step_ms_median": step_ms, "mask_fraction": mask_ms / step_ms,
              "constraint_runs": costs,
              "load_average": os.getloadavg()[0]}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
    return report


if __name__ == "__main__":
    main()
