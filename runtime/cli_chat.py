"""`edgelm chat`: one message, or a conversation with /help, /reset and /exit.

The conversation is a ChatSession: each turn runs only its own new tokens, and the timings line
says how many of the prompt's tokens came from the cache. stdout carries only the model's
replies; prompts, command feedback and timings go to stderr.
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
    session = model.chat_session(system=system, **settings)
    if message is not None:
        _reply(session, message, timings)
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
            session.reset()
            print("(conversation cleared)", file=sys.stderr)
        elif command.startswith("/") and " " not in command:
            print(f"unknown command {command}; /help lists the commands", file=sys.stderr)
        else:
            _reply(session, text, timings)


def _reply(session, text: str, timings: bool) -> None:
    """Streams the model's answer to `text`; the session keeps both."""
    for piece in session.stream(text):
        sys.stdout.write(piece)
        sys.stdout.flush()
    end_line()
    if timings:
        print(f"[{session.last_timings.summary()}]", file=sys.stderr, flush=True)


def end_line() -> None:
    """Ends the streamed text's line and flushes, so a timings line on stderr starts a line of its own."""
    sys.stdout.write("\n")
    sys.stdout.flush()
