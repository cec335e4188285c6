"""The `edgelm` command: streaming with a timings line, one-line errors, and the usual CLI conventions."""

import argparse
import os
import shutil
import subprocess
import sys

import pytest

import edgelm
from edgelm.aliases import ALIASES
from edgelm.cli import build_parser


def run(*args, env=None, stdin=None, merge=False):
    return subprocess.run(
        [sys.executable, "-m", "edgelm.cli", *args], input=stdin, text=True, timeout=300,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )


def test_generate_streams_text_and_prints_timings(exported):
    result = run("generate", str(exported("llama", "int4")), "Hello", "-n", "6")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello")
    assert "prompt" in result.stderr and "tok/s" in result.stderr and "first token" in result.stderr


def test_timings_line_starts_a_line_of_its_own(exported):
    result = run("generate", str(exported("llama", "int4")), "Hello", "-n", "6", merge=True)  # one pipe, like a terminal
    assert result.returncode == 0, result.stdout
    timings = [line for line in result.stdout.splitlines() if "tok/s" in line]
    assert len(timings) == 1 and timings[0].startswith("[prompt "), result.stdout


def test_closed_pipe_ends_quietly(exported):
    command = f"{sys.executable} -m edgelm.cli generate {exported('llama', 'int4')} Hello -n 200 --no-timings | head -c 1"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert result.stdout == "H"
    assert result.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"


def test_the_command_writes_no_onnxruntime_telemetry_into_the_home_folder(exported, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["HOME"] = str(tmp_path)  # onnxruntime 1.32 would write ~/.cache/Microsoft/DeveloperTools/.onnxruntime
    result = subprocess.run([sys.executable, "-m", "edgelm.cli", "generate", str(exported("llama", "int4")), "Hi",
                             "-n", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / ".cache" / "Microsoft").exists()


@pytest.mark.parametrize("closed", ["2>&-", "<&- 2>&-"])
def test_a_closed_stderr_keeps_timings_and_errors_out_of_stdout(exported, closed):
    folder = exported("llama", "int4")
    for args in (f"generate {folder} Hello -n 2", "generate /definitely/not/a/model Hello"):
        command = f"{sys.executable} -m edgelm.cli {args} {closed}"
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
        assert "[prompt" not in result.stdout and "edgelm: error" not in result.stdout, result.stdout


def test_chat_with_stdin_closed_says_so(exported):
    command = f"{sys.executable} -m edgelm.cli chat {exported('llama', 'fp32')} -n 2 <&-"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "standard input is closed" in result.stderr, result.stderr


def test_chat_one_message(exported):
    result = run("chat", str(exported("llama", "fp32")), "Hi", "-n", "4", "--no-timings")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_interactive_chat_commands_never_reach_the_model(exported):
    folder = exported("llama", "fp32")
    reply = edgelm.load(folder).chat([{"role": "user", "content": "Hi"}], max_new_tokens=4, temperature=0)
    session = "/help\nHi\n/reset\n/nonsense\n\nHi\n/exit\nnever read\n"
    result = run("chat", str(folder), "-n", "4", "--temperature", "0", "--no-timings", stdin=session)
    assert result.returncode == 0, result.stderr
    # two replies, both to "Hi" alone (/reset cleared the first exchange); nothing after /exit
    assert result.stdout == f"{reply}\n{reply}\n"
    assert "/reset" in result.stderr and "conversation cleared" in result.stderr
    assert "unknown command /nonsense" in result.stderr


def test_chat_opens_the_prefill_graph_before_the_first_turn(prefill_folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prefill_folder, copy)
    (copy / "prefill.onnx").write_bytes(b"not a graph")  # so its opening shows: it fails, named, before any input
    result = run("chat", str(copy), "-n", "2", "--no-timings", stdin="/exit\n")
    assert result.returncode != 0 and result.stdout == ""
    assert "prefill.onnx" in result.stderr and "Traceback" not in result.stderr


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"edgelm {edgelm.__version__}"


def test_every_flag_has_help_and_every_command_examples():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert "examples:" in (sub.epilog or ""), name
        for action in sub._actions:
            assert action.help, f"edgelm {name} {action.option_strings or action.dest} has no help text"
    top = parser.format_help()
    assert all(alias in top and ALIASES[alias].install in top for alias in ALIASES)


@pytest.fixture
def cache(tmp_path, exported):
    """A cache folder holding two exports (one validated, one not) and a stray folder."""
    shutil.copytree(exported("llama", "int4"), tmp_path / "tiny-llama-int4")
    shutil.copytree(exported("gpt2", "fp32"), tmp_path / "tiny-gpt2-fp32")
    (tmp_path / "not-a-model").mkdir()
    return tmp_path


def test_models_lists_the_cache(cache):
    result = run("models", env={"EDGELM_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "precision", "size", "source", "perplexity"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"tiny-llama-int4", "tiny-gpt2-fp32"}
    manifest = edgelm.Manifest.load(cache / "tiny-llama-int4")
    assert " int4 " in rows["tiny-llama-int4"] and " MB " in rows["tiny-llama-int4"]
    assert f"folder {manifest.source['id']}" in rows["tiny-llama-int4"]
    assert f"{manifest.validation['perplexity']:.2f}" in rows["tiny-llama-int4"]


def test_models_remove(cache):
    result = run("models", "--remove", "tiny-gpt2-fp32", env={"EDGELM_CACHE": str(cache)})
    assert result.returncode == 0, result.stderr
    assert not (cache / "tiny-gpt2-fp32").exists() and (cache / "tiny-llama-int4").is_dir()
    refused = run("models", "--remove", "not-a-model", env={"EDGELM_CACHE": str(cache)})
    assert refused.returncode == 2 and "no cached model called 'not-a-model'" in refused.stderr
    assert (cache / "not-a-model").is_dir()


def test_models_lists_and_removes_a_damaged_export_and_a_link_without_its_target(cache, tmp_path_factory):
    (cache / "tiny-gpt2-fp32" / "edgelm.json").write_text('{"precision": "fp3')  # truncated
    target = tmp_path_factory.mktemp("elsewhere") / "model"
    shutil.copytree(cache / "tiny-llama-int4", target)
    (cache / "linked").symlink_to(target)
    env = {"EDGELM_CACHE": str(cache)}
    listed = run("models", env=env)
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"tiny-llama-int4", "tiny-gpt2-fp32", "linked"} and "damaged" in rows["tiny-gpt2-fp32"]
    for name in ("tiny-gpt2-fp32", "linked"):
        result = run("models", "--remove", name, env=env)
        assert result.returncode == 0 and not (cache / name).exists(), result.stderr
    assert (target / "edgelm.json").is_file()  # the link went, not what it pointed to
    empty = run("models", "--remove", "", env=env)
    assert empty.returncode == 2 and "no cached model called ''" in empty.stderr


def test_models_on_an_empty_cache(tmp_path):
    result = run("models", env={"EDGELM_CACHE": str(tmp_path / "none")})
    assert result.returncode == 0 and result.stdout == "" and "no exported models" in result.stderr


def test_info_describes_the_manifest(cache):
    manifest = edgelm.Manifest.load(cache / "tiny-llama-int4")
    for where in (str(cache / "tiny-llama-int4"), "tiny-llama-int4"):  # a folder, or a cached model's name
        result = run("info", where, env={"EDGELM_CACHE": str(cache)})
        assert result.returncode == 0, result.stderr
        text = result.stdout
        assert "llama, int4, fused-llama graph" in text
        assert f"vocabulary {manifest.vocab_size}, context {manifest.context_length} tokens" in text
        assert f"{manifest.kv.num_layers} layers x {manifest.kv.num_kv_heads} kv heads" in text
        assert manifest.quantization["method"] in text and "chat template yes" in text
        assert f"greedy agreement {manifest.validation['greedy_agreement']:.1%}" in text


def test_info_of_a_missing_folder(tmp_path):
    result = run("info", str(tmp_path / "nothing"), env={"EDGELM_CACHE": str(tmp_path)})
    assert result.returncode == 2 and "edgelm models" in result.stderr


def test_missing_model_folder_is_one_clear_line(tmp_path):
    result = run("generate", str(tmp_path / "none"), "Hello")
    assert result.returncode == 2
    assert result.stderr.startswith("edgelm: error:") and "Traceback" not in result.stderr


def test_unknown_alias_is_named_with_the_known_ones():
    result = run("generate", "smollm2", "Hello")
    assert result.returncode == 2 and "unknown alias or folder 'smollm2'" in result.stderr
    assert "did you mean smollm2-135m?" in result.stderr and all(alias in result.stderr for alias in ALIASES)


def test_export_of_missing_file_is_one_clear_line(tmp_path):
    result = run("export", str(tmp_path / "x.gguf"), "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
