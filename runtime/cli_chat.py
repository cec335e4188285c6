"""`edgelm chat`: one message, or a conversation with /help, /reset and /exit.

The conversation is a ChatSession: each turn runs only its own new tokens, and the timings line
says how many of the prompt's tokens came from the cache. stdout carries only the model's
replies; prompts, command feedback and timings go to stderr.
"""

from __future__ import annotations

import sys

from .errors import EdgelmError

HELP = """commands (never sent to the model):
  /help   this list
  /reset  forget the conversation so far (the --system prompt stays)
  /exit   leave (also /quit, Ctrl-D)
Ctrl-C stops a reply (what it said so far stays in the conversation); at the prompt it leaves."""


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
    if sys.stdin is None:  # started with stdin closed (<&-)
        raise EdgelmError("standard input is closed, and edgelm chat reads the conversation from it; give the "
                          "message as an argument (edgelm chat MODEL \"...\") to answer just that")
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
        elif interactive:
            try:
                _reply(session, text, timings)
            except KeyboardInterrupt:  # Ctrl-C stops this reply, not the conversation
                session.reset_cache()
                end_line()
                print("(reply stopped)", file=sys.stderr)
        else:
            _reply(session, text, timings)


def _reply(session, text: str, timings: bool) -> None:
    """Streams the model's answer to `text`; the session keeps both."""
    pieces = session.stream(text)
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    finally:
        pieces.close()  # an interrupted reply joins the conversation as far as it went
    end_line()
    if timings:
        print(f"[{session.last_timings.summary()}]", file=sys.stderr, flush=True)


def end_line() -> None:
    """Ends the streamed text's line and flushes, so a timings line on stderr starts a line of its own."""
    sys.stdout.write("\n")
    sys.stdout.flush()
