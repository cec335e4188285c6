"""`edgelm serve` as a user runs it: a process that listens on 127.0.0.1 and answers the openai client."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai
import pytest

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


@pytest.mark.parametrize("options, message", [
    (["--parallel", "0"], "--parallel 0 is invalid: use 1 or more"),
    (["--port", "70000"], "--port 70000 is invalid: use 0..65535"),
    (["--api-key", ""], "--api-key is empty"),
    (["--host", "999.1.1.1"], "--host 999.1.1.1 cannot be listened on"),
    (["--port", "PORT_IN_USE"], "is in use on 127.0.0.1"),
])
def test_serve_rejects_bad_options_before_loading(tmp_path, capsys, options, message, in_process_cli):
    import socket

    from edgelm.cli import main

    with socket.socket() as taken:  # a port something already listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = [str(taken.getsockname()[1]) if o == "PORT_IN_USE" else o for o in options]
        assert main(["serve", str(tmp_path), *options]) == 2  # tmp_path is no model: loading would fail otherwise
    assert message in capsys.readouterr().err


def test_a_damaged_prefill_graph_is_one_line_before_serving(prefill_folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prefill_folder, copy)
    (copy / "prefill.onnx").write_bytes(b"not a graph")
    result = subprocess.run([sys.executable, "-m", "edgelm.server", str(copy), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "prefill.onnx" in result.stderr and "re-export" in result.stderr
    assert "Traceback" not in result.stderr and "serving" not in result.stderr
