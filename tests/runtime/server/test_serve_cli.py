"""`edgelm serve` as a user runs it: a process that listens on 127.0.0.1 and answers the openai client."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai

from .conftest import free_port


def test_edgelm_serve_answers_and_stops_on_sigterm(exported):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "edgelm.server", str(exported("llama", "fp32")), "--port",
                                str(port), "--parallel", "2", "--model-id", "tiny"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # a safety limit on startup, not a speed check
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert client.completions.create(model="tiny", prompt="Hi", max_tokens=3, temperature=0).usage.completion_tokens
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert f"serving tiny on http://127.0.0.1:{port}/v1" in stderr
    assert '"POST /v1/completions HTTP/1.1" 200' in stderr  # uvicorn's access log, on stderr


def test_serve_rejects_bad_options_before_loading(tmp_path):
    from edgelm.cli import main

    assert main(["serve", str(tmp_path), "--parallel", "0"]) == 2
