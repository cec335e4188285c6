"""OpenAI's request and response shapes as pydantic models (the fields edgelm understands).

Unknown fields are ignored, as OpenAI's own server does for fields a model does not use; OpenAI's
sampling and output fields edgelm does not implement (logprobs, penalties, logit_bias, tools, ...)
are refused when set to anything but their neutral value (`_Request.unsupported`), so that no answer
silently lacks what was asked. Types are strict (JSON's own: "5" is no integer, true no number), and
ranges follow OpenAI's API reference; a value outside them is a 400 invalid_request_error.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 16  # choices per request at most (each takes a row of the batch)


STRICT = ConfigDict(extra="ignore", strict=True)
# OpenAI fields edgelm does not implement, and the values that ask for nothing (accepted)
UNSUPPORTED = {"logprobs": (None, False, 0), "top_logprobs": (None, 0), "logit_bias": (None, {}),
               "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "best_of": (None, 1),
               "suffix": (None, ""), "tools": (None, []), "functions": (None, [])}


class _Request(BaseModel):
    model_config = STRICT

    model: str | None = None  # the served model's id; None: the only model
    max_tokens: int | None = Field(None, ge=0)  # new tokens at most
    temperature: float = Field(1.0, ge=0, le=2)  # 0 is greedy
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # llama.cpp's extension; 0 keeps all
    min_p: float = Field(0.0, ge=0, lt=1)  # llama.cpp's extension
    repetition_penalty: float = Field(1.0, gt=0)  # llama.cpp's extension (repeat_penalty there)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = None  # up to 4 stop strings
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    logit_bias: dict | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    best_of: int | None = None
    suffix: str | None = None
    tools: list | None = None
    functions: list | None = None

    def unsupported(self) -> str | None:
        """The first OpenAI field set to ask for what edgelm does not implement, or None."""
        return next((name for name, neutral in UNSUPPORTED.items() if getattr(self, name) not in neutral), None)

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)


class StreamOptions(BaseModel):
    model_config = STRICT

    include_usage: bool = False  # a last chunk with usage and no choices


class CompletionRequest(_Request):
    prompt: str | list[str]  # one prompt (a list of one string is accepted too)
    max_tokens: int | None = Field(16, ge=0)  # OpenAI's default for completions
    echo: bool = False  # return the prompt before the completion


class TextPart(BaseModel):
    model_config = STRICT

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = STRICT

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["text", "json_object", "json_schema"] = "text"


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=0)  # the newer name of max_tokens
    response_format: ResponseFormat | None = None  # text, json_object or json_schema (constrained decoding)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    id: str = Field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "edgelm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str  # invalid_request_error, authentication_error, not_found_error, server_error, ...
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_Request.model_rebuild()
CompletionRequest.model_rebuild()
ChatCompletionRequest.model_rebuild()
