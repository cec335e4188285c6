"""A real uvicorn server on a free port, in a thread of the test process, serving a tiny model."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest

import edgelm


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(model, model_id="tiny", **options):
    """Yields (base url, app) of a server for `model`; stops it afterwards."""
    import uvicorn

    from edgelm.server.app import create_app

    app = create_app(model, model_id, **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None,
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # startup takes well under a second; a hung one fails the thread check below
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.config.port}", app
    finally:
        server.should_exit = True
        thread.join()


@pytest.fixture(scope="module")
def tiny_model(exported):
    return edgelm.load(exported("llama", "fp32"))


@pytest.fixture(scope="module")
def server(tiny_model):
    with running_server(tiny_model, parallel=4) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)
