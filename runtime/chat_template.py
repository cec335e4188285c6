"""Rendering a model's Jinja2 chat template, the way transformers' apply_chat_template does."""

from __future__ import annotations

from datetime import datetime

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import EdgelmError


class ChatTemplate:
    """A compiled chat template. Templates run sandboxed: they come with downloaded models."""

    def __init__(self, source: str, bos_token: str | None = None, eos_token: str | None = None):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = _tojson
        try:
            self.template = env.from_string(source)
        except TemplateError as exc:
            raise EdgelmError(f"the model's chat template does not compile: {exc}") from exc
        self.special = {"bos_token": bos_token or "", "eos_token": eos_token or ""}

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        """Messages are dicts with 'role' and 'content', e.g. [{'role': 'user', 'content': 'Hi'}]."""
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise EdgelmError(f"chat message {i} must be a dict with 'role' and 'content', got {message!r}")
        try:
            return self.template.render(
                messages=messages, add_generation_prompt=add_generation_prompt, **self.special, **extra
            )
        except TemplateError as exc:
            raise EdgelmError(f"the model's chat template failed on these messages: {exc}") from exc


def _raise_exception(message: str):
    raise TemplateError(message)


def _tojson(value, indent=None, ensure_ascii=False, sort_keys=False):
    import json

    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)
