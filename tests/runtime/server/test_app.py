"""The server through the official `openai` client (and httpx for what that client cannot send)."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

import edgelm

from .conftest import running_server

PROMPTS = ["Hello", "The quick brown fox jumps", "A", "Once upon a time there was"]


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}


def test_completion_is_the_greedy_continuation_with_usage(client, tiny_model):
    result = client.completions.create(model="tiny", prompt="Hello", max_tokens=8, temperature=0)
    expected_ids = list(tiny_model.generate_ids(tiny_model.encode("Hello"), tiny_model.config(max_new_tokens=8)))
    choice = result.choices[0]
    assert choice.text == tiny_model.decode(expected_ids)
    assert choice.finish_reason == ("length" if len(expected_ids) == 8 else "stop")
    assert result.usage.prompt_tokens == len(tiny_model.encode("Hello"))
    assert result.usage.completion_tokens == len(expected_ids)
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.object == "text_completion" and result.model == "tiny"


def test_concurrent_requests_each_get_their_own_greedy_output(client, tiny_model):
    def ask(prompt):
        return client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0).choices[0].text

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        texts = list(pool.map(ask, PROMPTS * 2))
    assert texts == [tiny_model.generate(p, max_new_tokens=12, temperature=0) for p in PROMPTS * 2]


def test_streamed_completion_equals_the_whole(client):
    whole = client.completions.create(model="tiny", prompt="Hello", max_tokens=10, temperature=0)
    chunks = list(client.completions.create(model="tiny", prompt="Hello", max_tokens=10, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_and_streamed_chat(client, tiny_model):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=9, temperature=0)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == tiny_model.chat(messages, max_new_tokens=9, temperature=0)
    prompt_ids = tiny_model.encode(tiny_model.chat_template.render(messages, add_generation_prompt=True),
                                   add_special_tokens=False)
    assert reply.usage.prompt_tokens == len(prompt_ids)
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=9, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason


def test_stop_strings_cut_and_report_stop(client, tiny_model):
    full = tiny_model.generate("Hello", max_new_tokens=12, temperature=0)
    assert len(full) > 5, "the tiny model's greedy text is long enough to cut"
    stop = full[3:5]
    result = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0, stop=[stop, "@@"])
    assert result.choices[0].text == full[: full.index(stop)]
    assert result.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[: full.index(stop)]


def test_n_choices_seeded(client):
    def ask(**extra):
        return client.completions.create(model="tiny", prompt="Hello", max_tokens=8, temperature=1.5, seed=3, n=3,
                                         **extra)

    first = ask()
    assert sorted(c.index for c in first.choices) == [0, 1, 2]
    assert [c.text for c in ask().choices] == [c.text for c in first.choices]  # repeatable
    assert len({c.text for c in first.choices}) > 1  # seeds differ per choice
    texts = ["", "", ""]
    for chunk in ask(stream=True):
        texts[chunk.choices[0].index] += chunk.choices[0].text
    assert texts == [c.text for c in first.choices]
    assert first.usage.completion_tokens == sum(len(c.text) for c in first.choices)  # one character per token


@pytest.mark.parametrize("kwargs, status", [
    (dict(temperature=5), 400),
    (dict(top_p=0), 400),
    (dict(n=0), 400),
    (dict(max_tokens=-1), 400),
    (dict(model="nope"), 404),
    (dict(prompt="x" * 2000), 400),
])
def test_invalid_requests(client, kwargs, status):
    request = dict(model="tiny", prompt="Hello", max_tokens=4) | kwargs
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(**request)
    assert err.value.status_code == status
    assert err.value.body["message"] and err.value.body["type"]
    if "prompt" in kwargs:
        assert err.value.body["code"] == "context_length_exceeded" and err.value.body["param"] == "prompt"


@pytest.mark.parametrize("field, value", [("max_tokens", "5"), ("max_tokens", True), ("stream", "yes"),
                                          ("temperature", "0.5"), ("n", 1.5), ("stream_options", {"include_usage": 1})])
def test_values_of_the_wrong_json_type_are_refused_not_converted(server, field, value):
    body = {"prompt": "Hi", "max_tokens": 2, "stream": field == "stream_options", field: value}
    response = httpx.post(server[0] + "/v1/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith(field)


@pytest.mark.parametrize("extra", [dict(logprobs=True), dict(top_logprobs=2), dict(presence_penalty=0.5),
                                   dict(frequency_penalty=-1), dict(logit_bias={"5": 10}),
                                   dict(tools=[{"type": "function", "function": {"name": "f"}}])])
def test_what_edgelm_does_not_implement_is_refused_by_name(client, extra):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                       **extra)
    assert err.value.body["param"] == next(iter(extra)) and err.value.body["code"] == "unsupported_parameter"


def test_neutral_values_of_what_edgelm_does_not_implement_are_accepted(client):
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                           logprobs=False, presence_penalty=0, frequency_penalty=0.0, logit_bias={})
    assert reply.choices[0].finish_reason


def test_response_format_constrains_the_reply(client):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    messages = [{"role": "user", "content": "Hi"}]
    reply = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=40, temperature=0, n=2,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    for choice in reply.choices:
        if choice.finish_reason == "stop":  # a reply cut by max_tokens is a prefix of valid JSON
            assert set(json.loads(choice.message.content)) == {"a"}
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=messages,
                                       response_format={"type": "json_schema", "json_schema": {"name": "t"}})


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"prompt": 3}', b'{"max_tokens": 3}',
                                  b'{"prompt": "Hi", "stop": 5}', b'{"prompt": ["a", "b"]}'])
def test_malformed_bodies_get_openai_errors(server, body):
    response = httpx.post(server[0] + "/v1/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_unknown_route_is_an_openai_404(server):
    response = httpx.get(server[0] + "/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["message"]


def test_api_key_guards_everything_but_health(tiny_model):
    with running_server(tiny_model, api_key="sesame") as (url, _):
        assert httpx.get(url + "/health").status_code == 200
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=url + "/v1", api_key="sesame", max_retries=0)
        assert good.completions.create(model="tiny", prompt="Hi", max_tokens=2).choices
        for header, status in (("bearer sesame", 200), ("BEARER sesame", 200), ("Bearer", 401), ("sesame", 401),
                               ("Basic sesame", 401)):  # the scheme's case does not matter; the key's does
            assert httpx.get(url + "/v1/models", headers={"Authorization": header}).status_code == status, header


def test_an_empty_api_key_is_refused(tiny_model):
    with pytest.raises(edgelm.EdgelmError, match="api_key is empty"):
        from edgelm.server.app import create_app

        create_app(tiny_model, "tiny", api_key="")


@pytest.fixture(scope="module")
def endless(exported):
    """The tiny model with no end token: a sequence runs until its max_tokens."""
    model = edgelm.load(exported("llama", "fp32"))
    model.manifest.tokens.eos_token_ids = []
    return model


def wait_for(condition, what: str, limit_s: float = 30.0):
    """Polls `condition()` until it is truthy (a safety limit, not a speed check); returns its value."""
    deadline = time.monotonic() + limit_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)
    return value


@contextmanager
def paused_engine(engine):
    """Holds the engine at its first decode step once a sequence runs, until the block ends.

    The engine then cannot finish the running sequence on its own while the test looks at it
    (polling for a running row instead raced a tiny model that finishes in well under a second).
    Yields a function that waits for the pause and returns the running sequence.
    """
    reached, resume = threading.Event(), threading.Event()
    decode = engine.batch.decode

    def paused_decode(tokens):
        reached.set()
        resume.wait()
        return decode(tokens)

    def running_hog():
        assert reached.wait(30), "gave up waiting for the first request to run"
        return engine.scheduler.running[0]

    engine.batch.decode = paused_decode
    try:
        yield running_hog
    finally:
        engine.batch.decode = decode
        resume.set()


def test_queue_full_is_503(endless):
    with running_server(endless, parallel=1, max_queue=0) as (url, app):
        engine = app.state.engine
        with ThreadPoolExecutor(1) as pool:
            with paused_engine(engine) as running_hog:  # the row stays taken
                first = pool.submit(httpx.post, url + "/v1/completions", json=dict(prompt="Hi", max_tokens=300),
                                    timeout=60)
                running_hog()
                client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
                with pytest.raises(openai.APIStatusError) as err:
                    client.completions.create(model="tiny", prompt="Hello", max_tokens=2)
            assert err.value.status_code == 503 and err.value.body["code"] == "queue_full"
            assert first.result().status_code == 200


@pytest.mark.parametrize("stream", [True, False])
def test_a_disconnected_client_frees_its_row(endless, stream):
    with running_server(endless, parallel=1) as (url, app):
        engine = app.state.engine
        request = dict(prompt="Hi", max_tokens=1000, stream=stream)
        with paused_engine(engine) as running_hog:  # the hog cannot finish on its own meanwhile
            if stream:
                # the headers are enough: the first token's text may be empty (a special token, ~3 % of
                # samples), so waiting for a first event line could wait for a piece that never comes
                with httpx.stream("POST", url + "/v1/completions", json=request, timeout=60):
                    hog = running_hog()
            else:
                with ThreadPoolExecutor(1) as pool:
                    post = pool.submit(httpx.post, url + "/v1/completions", json=request, timeout=1.0)
                    hog = running_hog()
                    with pytest.raises(httpx.ReadTimeout):
                        post.result()
            wait_for(lambda: hog.cancelled, "the server to notice the disconnect")
        # the only row was the hog's: this is served only once the hog's row is free
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        result = client.completions.create(model="tiny", prompt="Hello", max_tokens=3, temperature=0)
        assert result.usage.completion_tokens == 3
        assert hog.finish_reason == "cancelled" and len(hog.tokens) < 1000
        wait_for(lambda: not engine.scheduler.running, "the last row to be freed")  # right after its reply went out
