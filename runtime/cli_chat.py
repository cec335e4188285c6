"""`edgelm chat`: one message, or a conversation with /help, /reset and /exit.

stdout carries only the model's replies; prompts, command feedback and timings go to stderr.
"""

from __future__ import annotations

import sys

HELP = """commands (never sent to the model):
  /help   this list
  /reset  forget the conversation so far (the --system prompt stays)
  /exit   leave (also /quit, Ctrl-D)"""


def chat_loop(model, system: str | None, message: str | None, settings: dict, timings: bool) -> int:
    """Runs `edgelm chat`: answers `message` once, or reads messages from stdin until /exit or end of input.

    Args:
        model: a loaded `Model`.
        system: the system prompt, if any.
        message: one message to answer; None for an interactive conversation.
        settings: generation settings for every reply.
        timings: print a timings line on stderr after each reply.
    Returns:
        The exit status.
    """
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    if message is not None:
        _reply(model, messages, message, settings, timings)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print("chatting; /help lists the commands", file=sys.stderr)
    while True:
        try:
            text = input("> " if interactive else "")
        except EOFError:
            if interactive:
                print()
            return 0
        command = text.strip()
        if not command:
            continue
        if command in ("/exit", "/quit"):
            return 0
        if command == "/help":
            print(HELP, file=sys.stderr)
        elif command == "/reset":
            messages = list(start)
            print("(conversation cleared)", file=sys.stderr)
        elif command.startswith("/") and " " not in command:
            print(f"unknown command {command}; /help lists the commands", file=sys.stderr)
        else:
            _reply(model, messages, text, settings, timings)


def _reply(model, messages: list[dict], text: str, settings: dict, timings: bool) -> None:
    """Streams the model's answer to `text` and adds both to `messages`."""
    messages.append({"role": "user", "content": text})
    pieces = []
    for piece in model.chat_stream(messages, **settings):
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    end_line()
    messages.append({"role": "assistant", "content": "".join(pieces)})
    if timings:
        print(f"[{model.last_timings.summary()}]", file=sys.stderr, flush=True)


def end_line() -> None:
    """Ends the streamed text's line and flushes, so a timings line on stderr starts a line of its own."""
    sys.stdout.write("\n")
    sys.stdout.flush()
