"""Rendering a model's Jinja2 chat template, the way transformers' apply_chat_template does."""

from __future__ import annotations

from datetime import datetime

from jinja2 import TemplateError

from .checks import check_text
from .errors import EdgelmError
from .template_sandbox import BudgetedSandbox, TemplateBudgetExceeded

MIN_OUTPUT_CHARS = 1_000_000  # a render may always write this much; more only for long conversations


class ChatTemplate:
    """A compiled chat template. Templates run sandboxed, with a time, work and size budget: they come
    with downloaded models, so a broken or hostile one must not crash or freeze the app.

    Example:
        template = ChatTemplate(source, bos_token="<s>")
        prompt = template.render([{"role": "user", "content": "Hi"}])
    """

    def __init__(self, source: str, bos_token: str | None = None, eos_token: str | None = None,
                 name: str = "the model's chat template"):
        self.name = name
        env = BudgetedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.filters["tojson"] = _tojson
        self.env = env
        try:
            self.template = env.from_string(check_text("the chat template", source))
        except TemplateError as exc:
            raise EdgelmError(f"{name} does not compile: {exc}; fix the template or re-export the model") from None
        except (RecursionError, MemoryError, ValueError) as exc:
            raise EdgelmError(f"{name} does not compile ({type(exc).__name__}); re-export the model") from None
        self.special = {"bos_token": bos_token or "", "eos_token": eos_token or ""}

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        """Messages are dicts with 'role' and 'content', e.g. [{'role': 'user', 'content': 'Hi'}].

        Raises:
            EdgelmError: for malformed messages, or when the template fails, runs too long, does
                too much work or writes too much.
        """
        check_messages(messages)
        limit = max(MIN_OUTPUT_CHARS, 4 * sum(len(m["content"]) for m in messages))
        pieces, size = [], 0
        self.env.start()
        try:
            for piece in self.template.generate(
                messages=messages, add_generation_prompt=add_generation_prompt, **self.special, **extra
            ):
                size += len(piece)
                if size > limit:
                    raise TemplateBudgetExceeded(f"it wrote more than {limit:,} characters")
                self.env.tick()
                pieces.append(piece)
        except TemplateError as exc:  # raise_exception() and undefined names: the template's own message
            raise EdgelmError(f"{self.name} failed on these messages: {exc}") from None
        except TemplateBudgetExceeded as exc:
            raise EdgelmError(f"{self.name} was stopped: {exc}; the template is broken, fix it or use another "
                              "model") from None
        except RecursionError:
            raise EdgelmError(f"{self.name} recursed without end; the template is broken") from None
        except Exception as exc:  # noqa: BLE001 - a template is untrusted code: any failure is the template's
            raise EdgelmError(f"{self.name} failed: {type(exc).__name__}: {exc}") from None
        return "".join(pieces)


def check_messages(messages) -> None:
    """A non-empty list of {'role': non-empty str, 'content': str} dicts, or EdgelmError naming the bad one."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise EdgelmError(
            f"a chat must be a non-empty list of messages like {{'role': 'user', 'content': 'Hi'}}, got "
            f"{type(messages).__name__} {str(messages)[:40]!r}"
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise EdgelmError(f"chat message {i} must be a dict with 'role' and 'content', got {message!r:.80}")
        role = message["role"]
        if not isinstance(role, str) or not role:
            raise EdgelmError(f"chat message {i} has role {role!r}: use a non-empty string such as 'user'")
        check_text(f"chat message {i} content", message["content"])


def _raise_exception(message: str):
    raise TemplateError(message)


def _strftime_now(fmt):
    if not isinstance(fmt, str):
        raise TemplateError(f"strftime_now() takes a format string, got {fmt!r}")
    return datetime.now().strftime(fmt)


def _tojson(value, indent=None, ensure_ascii=False, sort_keys=False):
    import json

    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)
