"""The `edgelm` command: streaming with a timings line, and one-line errors."""

import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "edgelm.cli", *args], capture_output=True, text=True, timeout=300)


def test_generate_streams_text_and_prints_timings(exported):
    result = run("generate", str(exported("llama", "int4")), "Hello", "-n", "6")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello")
    assert "prompt" in result.stderr and "tok/s" in result.stderr and "first token" in result.stderr


def test_chat_one_message(exported):
    result = run("chat", str(exported("llama", "fp32")), "Hi", "-n", "4", "--no-timings")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_missing_model_folder_is_one_clear_line(tmp_path):
    result = run("generate", str(tmp_path / "none"), "Hello")
    assert result.returncode == 2
    assert result.stderr.startswith("edgelm: error:") and "Traceback" not in result.stderr


def test_export_of_missing_file_is_one_clear_line(tmp_path):
    result = run("export", str(tmp_path / "x.gguf"), "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
