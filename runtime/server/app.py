"""The OpenAI-compatible routes: thin HTTP over the batching engine (which owns scheduling).

    GET  /health                 liveness, never behind the API key
    GET  /v1/models              the one served model
    POST /v1/completions         text completion (stream: server-sent events)
    POST /v1/chat/completions    chat completion through the model's chat template

Errors have OpenAI's shape, {"error": {"message", "type", "param", "code"}}: 400 for invalid
parameters or a prompt over the context, 401 for a wrong API key, 404 for an unknown model
or route, 503 when the queue is full.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import GenerationConfig
from ..engine import Engine, QueueFull
from ..errors import EdgelmError
from ..model import Model
from . import schemas as s
from .bridge import Submission


class ApiError(Exception):
    """An HTTP error with OpenAI's body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.detail = status, s.ErrorDetail(message=message, type=type_, param=param, code=code)


def create_app(model: Model, model_id: str, parallel: int = 4, api_key: str | None = None,
               max_queue: int | None = 64) -> FastAPI:
    """A FastAPI app serving `model` under the id `model_id`.

    Args:
        model: a loaded edgelm Model.
        model_id: the name clients give as `model` (and /v1/models lists).
        parallel: sequences decoded together (rows of the batch).
        api_key: when set, every route but /health needs `Authorization: Bearer <api_key>`.
        max_queue: requests waiting beyond `parallel` at most; more get 503. None: no limit.
    Raises:
        EdgelmError: when the model's prefill graph cannot be opened (it is opened here, not on the
            first long prompt a client sends).
    Example:
        uvicorn.run(create_app(edgelm.load("smollm2-int4"), "smollm2"), port=8000)
    """
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise EdgelmError("api_key is empty: give a key (every request must then send it) or None for no key")
    model.runner.open_prefill_graph()
    tokens = model.manifest.tokens
    engine = Engine(model.runner, model.tokenizer, tuple(tokens.eos_token_ids), model.manifest.context_length,
                    max_batch=parallel, max_waiting=max_queue)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    def check_key(request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if api_key is not None and not (scheme.lower() == "bearer"  # the scheme's case does not matter (RFC 7235)
                                        and hmac.compare_digest(key.strip().encode(), api_key.encode())):
            raise ApiError(401, "invalid or missing API key: send Authorization: Bearer <key>",
                           "authentication_error", code="invalid_api_key")

    app = FastAPI(title="edgelm", lifespan=lifespan)
    app.state.engine = engine
    _error_handlers(app)
    guarded = [Depends(check_key)]

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=guarded)
    async def models() -> s.ModelList:
        return s.ModelList(data=[s.ModelCard(id=model_id, created=created)])

    @app.post("/v1/completions", dependencies=guarded)
    async def completions(body: s.CompletionRequest, request: Request):
        _check_request(body, model_id)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ApiError(400, "give one prompt per request (a string)", param="prompt")
        ids = _checked_prompt(model, lambda: model.encode(prompts[0]), "prompt")
        limit = body.max_tokens if body.max_tokens is not None else model.manifest.context_length
        submission = _submit(engine, ids, _configs(body, limit), model)
        echo = prompts[0] if body.echo else ""
        if body.stream:
            return _sse(_completion_chunks(submission, body, model_id, len(ids), echo))
        if not await submission.wait(request.is_disconnected):
            return JSONResponse({}, status_code=499)  # nobody is listening any more
        _raise_errors(submission)
        choices = [s.CompletionChoice(index=i, text=echo + q.text, finish_reason=q.finish_reason)
                   for i, q in enumerate(submission.seqs)]
        return s.Completion(model=model_id, choices=choices, usage=_usage(len(ids), submission))

    @app.post("/v1/chat/completions", dependencies=guarded)
    async def chat_completions(body: s.ChatCompletionRequest, request: Request):
        _check_request(body, model_id)
        schema = _schema(body.response_format)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]

        def encode() -> list[int]:
            prompt = model.chat_template.render(messages, add_generation_prompt=True)
            return model.encode(prompt, add_special_tokens=False)  # the template wrote BOS where wanted

        ids = _checked_prompt(model, encode, "messages")
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        limit = limit if limit is not None else model.manifest.context_length  # OpenAI's: until the context ends
        submission = _submit(engine, ids, _configs(body, limit, schema), model)
        if body.stream:
            return _sse(_chat_chunks(submission, body, model_id, len(ids)))
        if not await submission.wait(request.is_disconnected):
            return JSONResponse({}, status_code=499)
        _raise_errors(submission)
        choices = [s.ChatChoice(index=i, message=s.AssistantMessage(content=q.text), finish_reason=q.finish_reason)
                   for i, q in enumerate(submission.seqs)]
        return s.ChatCompletion(model=model_id, choices=choices, usage=_usage(len(ids), submission))

    return app


# -- requests to engine -------------------------------------------------------------------------------
def _check_request(body: s.CompletionRequest | s.ChatCompletionRequest, model_id: str) -> None:
    if body.model is not None and body.model != model_id:
        raise ApiError(404, f"the model {body.model!r} does not exist; this server serves {model_id!r}",
                       param="model", code="model_not_found")
    name = body.unsupported()
    if name is not None:
        raise ApiError(400, f"{name} is not supported by edgelm's server: leave it out (or at its neutral value)",
                       param=name, code="unsupported_parameter")


def _checked_prompt(model: Model, encode, param: str) -> list[int]:
    """Prompt ids from `encode()`, or a 400 for an empty prompt or one that leaves no room in the context.

    `param`: the request field the prompt came from ("prompt" or "messages").
    """
    try:
        ids = encode()
    except EdgelmError as exc:  # the model's folder is the server's business, not the client's
        raise ApiError(400, str(exc).replace(str(model.folder), "the served model"), param=param) from None
    if not ids:
        raise ApiError(400, "the prompt is empty: give at least one token of text", param=param)
    context = model.manifest.context_length
    if len(ids) >= context:
        raise ApiError(400, f"the prompt has {len(ids)} tokens; this model's context holds {context}",
                       param=param, code="context_length_exceeded")
    return ids


def _schema(response_format: s.ResponseFormat | None) -> dict | None:
    """The JSON schema a response_format asks for: json_object is any JSON object; None for text."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    spec = getattr(response_format, "json_schema", None)
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise ApiError(400, "response_format json_schema needs {'json_schema': {'name': ..., 'schema': {...}}}",
                       param="response_format")
    return spec["schema"]


def _configs(body: s._Request, max_tokens: int, schema: dict | None = None) -> list[GenerationConfig]:
    """One config per choice; seeds step by one so sampled choices differ (and repeat with the same seed)."""
    try:
        base = GenerationConfig(max_new_tokens=max_tokens, temperature=body.temperature, top_k=body.top_k,
                                top_p=body.top_p, min_p=body.min_p, repetition_penalty=body.repetition_penalty,
                                stop=body.stops(), json_schema=schema)
    except EdgelmError as exc:
        raise ApiError(400, str(exc)) from None
    return [base.updated(seed=None if body.seed is None else body.seed + i) for i in range(body.n)]


def _submit(engine: Engine, ids: list[int], configs: list[GenerationConfig], model: Model) -> Submission:
    try:
        constraints = [model.constraint(c) for c in configs]  # each choice its own (they advance per token)
    except EdgelmError as exc:
        raise ApiError(400, str(exc), param="response_format") from None
    try:
        return Submission(engine, ids, configs, constraints)
    except QueueFull as exc:
        raise ApiError(503, str(exc), "server_error", code="queue_full") from None


def _raise_errors(submission: Submission) -> None:
    for seq in submission.seqs:
        if seq.error is not None:
            raise ApiError(500, f"generation failed: {seq.error}", "server_error")


def _usage(prompt_tokens: int, submission: Submission) -> s.Usage:
    done = submission.completion_tokens
    return s.Usage(prompt_tokens=prompt_tokens, completion_tokens=done, total_tokens=prompt_tokens + done)


# -- server-sent events -------------------------------------------------------------------------------
def _sse(chunks: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _data(payload) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n"


async def _stream(submission: Submission, body: s._Request, prompt_tokens: int, chunk) -> AsyncIterator[str]:
    """The event stream of one request: chunk(index, text, finish_reason) per piece, then usage and [DONE].

    A client that disconnects ends this generator (Starlette cancels it): its sequences are cancelled.
    """
    try:
        for event in chunk.start(len(submission.seqs)):
            yield _data(event)
        async for index, piece, seq in submission.events():
            if seq is None:
                yield _data(chunk(index, piece, None))
            elif seq.error is not None:
                yield _data(s.ErrorResponse(error=s.ErrorDetail(
                    message=f"generation failed: {seq.error}", type="server_error")).model_dump())
            else:
                yield _data(chunk(index, None, seq.finish_reason))
        if body.stream_options is not None and body.stream_options.include_usage:
            yield _data(chunk.usage(_usage(prompt_tokens, submission)))
        yield _data("[DONE]")
    finally:
        submission.cancel()  # a no-op for finished sequences


class _CompletionChunks:
    def __init__(self, model_id: str, echo: str):
        self.base = {"id": f"cmpl-{time.time_ns():x}", "object": "text_completion", "created": int(time.time()),
                     "model": model_id}
        self.echo = echo

    def start(self, n: int) -> list[dict]:
        return [self(i, self.echo, None) for i in range(n)] if self.echo else []

    def __call__(self, index: int, text: str | None, finish_reason: str | None) -> dict:
        choice = {"text": text or "", "index": index, "logprobs": None, "finish_reason": finish_reason}
        return {**self.base, "choices": [choice]}

    def usage(self, usage: s.Usage) -> dict:
        return {**self.base, "choices": [], "usage": usage.model_dump()}


class _ChatChunks(_CompletionChunks):
    def __init__(self, model_id: str):
        self.base = {"id": f"chatcmpl-{time.time_ns():x}", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model_id}

    def start(self, n: int) -> list[dict]:  # OpenAI's first chunk of each choice names the role
        return [self._choice(i, {"role": "assistant", "content": ""}, None) for i in range(n)]

    def __call__(self, index: int, text: str | None, finish_reason: str | None) -> dict:
        return self._choice(index, {} if text is None else {"content": text}, finish_reason)

    def _choice(self, index: int, delta: dict, finish_reason: str | None) -> dict:
        return {**self.base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]}


def _completion_chunks(submission, body, model_id, prompt_tokens, echo):
    return _stream(submission, body, prompt_tokens, _CompletionChunks(model_id, echo))


def _chat_chunks(submission, body, model_id, prompt_tokens):
    return _stream(submission, body, prompt_tokens, _ChatChunks(model_id))


# -- errors in OpenAI's shape -------------------------------------------------------------------------
def _error_handlers(app: FastAPI) -> None:
    def body(status: int, detail: s.ErrorDetail) -> JSONResponse:
        return JSONResponse(s.ErrorResponse(error=detail).model_dump(), status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return body(exc.status, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return body(400, s.ErrorDetail(message="the request body is not valid JSON", type="invalid_request_error"))
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        what = f"{param or 'the request body'}: {first.get('msg', 'invalid')}"
        return body(400, s.ErrorDetail(message=what, type="invalid_request_error", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return body(exc.status_code, s.ErrorDetail(message=str(exc.detail), type=kind))
