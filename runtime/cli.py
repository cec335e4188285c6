"""The `edgelm` command: export, generate, chat, serve (cli_serve.py), models, info, bench.

The only place in edgelm that configures logging output: it shows the `edgelm` loggers'
progress lines on stderr. The library itself only logs to its named loggers.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from . import __version__
from .aliases import ALIASES, cache_root
from .cli_serve import run_serve
from .errors import EdgelmError
from .manifest import PRECISIONS

ALIAS_LINES = "\n".join(f"  {a.name:<14} {a.description}; needs: {a.install}" for a in ALIASES.values())
EXAMPLES = f"""examples:
  edgelm export smollm2-135m -o smollm2-int4            export once (int4; needs the exporter)
  edgelm generate smollm2-int4 "Machine learning is" -n 64
  edgelm chat smollm2-int4                              interactive; /help lists the commands
  edgelm serve smollm2-int4 --port 8000 --parallel 8    OpenAI-compatible server (needs edgelm[serve])
  edgelm models                                         exports cached by pipeline() and aliases
  edgelm info smollm2-int4                              what a model folder holds

aliases (usable wherever a model is named; exported once into the cache):
{ALIAS_LINES}

cache: $EDGELM_CACHE, else ~/.cache/edgelm
"""


def main(argv: list[str] | None = None) -> int:
    """Runs one command. Every error is one line on stderr and a non-zero exit; --verbose adds the traceback."""
    # onnxruntime's official builds (1.32) record usage telemetry in ~/.cache/Microsoft and send it to Microsoft:
    # edgelm's commands (and the processes they start) write nothing outside the folders named and the cache,
    # so they turn it off unless the environment says otherwise. The library leaves that to its host.
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    for name in ("stdout", "stderr"):  # a stream closed at start (>&-, 2>&-): what goes there is dropped,
        if getattr(sys, name) is None:  # not written into the other one (print(file=None) would write stdout)
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # for the life of the process
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    _show_progress()
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # the reader went away (`edgelm generate ... | head`): end quietly
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        print("\nedgelm: interrupted", file=sys.stderr)
        return 130
    except EdgelmError as exc:
        return _fail(exc, verbose, 2)
    except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen input: still one line, unless --verbose
        return _fail(exc, verbose, 1, f"{type(exc).__name__}: ")


def _fail(exc: BaseException, verbose: bool, code: int, prefix: str = "") -> int:
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    hint = "" if verbose or isinstance(exc, EdgelmError) else " (run with --verbose for the traceback)"
    message = " ".join(f"{prefix}{exc}".split())  # one line, whatever the message held
    try:
        print(f"edgelm: error: {message}{hint}", file=sys.stderr)
    except (BrokenPipeError, OSError):
        pass
    return code


def _silence_stdout() -> None:
    """Points stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _show_progress() -> None:
    """Sends the `edgelm` loggers' INFO lines (export progress) to stderr, once per process."""
    logger = logging.getLogger("edgelm")
    if not any(getattr(h, "edgelm_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.edgelm_cli = True
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _command(commands, name: str, helptext: str, examples: str) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=helptext, description=helptext, epilog=f"examples:\n{examples}",
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgelm", description="Fast local LLM inference on ONNX Runtime.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgelm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    export = _command(commands, "export", "export a model to an ONNX model folder",
                      "  edgelm export smollm2-135m -o smollm2-int4\n"
                      "  edgelm export ./my-hf-folder -o my-int8 --precision int8 --no-validate\n"
                      "  edgelm export model.Q4_1.gguf -o model-fp32 --precision fp32")
    export.add_argument("source", help=f"Hugging Face folder or hub id (owner/name), .gguf file, or alias "
                                       f"({', '.join(ALIASES)})")
    export.add_argument("-o", "--output", required=True, help="folder to write (appears only when complete)")
    export.add_argument("--precision", choices=PRECISIONS, default="int4",
                        help="weight precision (default int4); gguf: a .gguf source's own quantized blocks, unchanged")
    export.add_argument("--block-size", type=int, default=32, help="int4 quantization block size (default 32)")
    export.add_argument("--accuracy-level", type=int, default=4, help="int4 CPU compute type: 4 = int8 (default)")
    export.add_argument("--lm-head-bits", type=int, choices=[4, 8], default=4,
                        help="int4: keep the LM head at 8 bits (more accurate, a little larger)")
    export.add_argument("--lm-head-block-size", type=int, default=None, metavar="N",
                        help="int4: the LM head's own block size (default: --block-size); a larger block "
                             "decodes big-vocabulary models faster at some quality (see README)")
    export.add_argument("--int4-blocks", choices=["auto", "symmetric", "asymmetric"], default="auto",
                        help="int4 block symmetry; auto tries both and keeps the one closer to fp32 (KLD on held-out text)")
    export.add_argument("--int4-method", choices=["auto", "rtn", "calibrated"], default="auto",
                        help="int4 rounding: rtn (round-to-nearest), calibrated (GPTQ on held-out text), "
                             "auto (both, keeps the one closer to fp32: KLD on held-out text)")
    export.add_argument("--int8-method", choices=["weight-only", "dynamic"], default="weight-only",
                        help="int8: weight-only (8-bit blocks; nearly lossless; the default) or dynamic "
                             "(int8 activations too: fastest prompts, much lower quality)")
    export.add_argument("--graph", choices=["auto", "fused", "optimum"], default="auto",
                        help="auto: edgelm's fused graph where supported (llama, mistral, qwen2, qwen3, phi3, "
                             "gemma3_text), else optimum's exporter")
    export.add_argument("--share-tied-table", action=argparse.BooleanOptionalAction, default=None,
                        help="one quantized table for a tied embedding and LM head (default: for gguf always, "
                             "where it changes no value; at int4/int8 when the KLD against fp32 rises by at most 0.005)")
    export.add_argument("--prefill-graph", action=argparse.BooleanOptionalAction, default=None,
                        help="int4/gguf: a second graph for prompts, its linears in int8 (int4, if its KLD stays within "
                             "0.005 of the decode graph's) or fp32 (default: the faster, if a timed 256-token chunk runs "
                             "at least 1.3x faster on it; it costs a second copy of the weights in memory; "
                             "--prefill-graph: the fp32 one, untimed)")
    export.add_argument("--kv-dtype", choices=["auto", "float32", "float16", "int8"], default="auto",
                        help="the KV cache's type; float16 halves its bytes, int8 quarters them (calibrated "
                             "scales; faster decoding at depth; fused graph only). auto (default): int8 for int4 "
                             "(and gguf where the cache outweighs half the weights at depth 2048) if its KLD "
                             "against fp32 at long context rises by at most 0.005 (and prompts have a prefill "
                             "graph), else float32")
    export.add_argument("--no-validate", action="store_true",
                        help="skip the comparison with PyTorch (faster; also: EDGELM_VALIDATE=0)")
    export.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    export.set_defaults(run=run_export)

    generate = _command(commands, "generate", "continue a prompt, streaming the text",
                        '  edgelm generate smollm2-int4 "Machine learning is" -n 64\n'
                        '  edgelm generate smollm2-135m "Once upon a time" --temperature 0.8 --top-p 0.95 --seed 1')
    generate.add_argument("model", help="model folder made by `edgelm export`, or an alias")
    generate.add_argument("prompt", help="text to continue")
    _add_generation_args(generate)
    generate.set_defaults(run=run_generate)

    chat = _command(commands, "chat", "chat with a model (its chat template)",
                    "  edgelm chat smollm2-int4                  interactive: /help, /reset, /exit\n"
                    '  edgelm chat smollm2-int4 "Hello" --system "Answer briefly."')
    chat.add_argument("model", help="model folder made by `edgelm export`, or an alias")
    chat.add_argument("message", nargs="?", help="one message to answer; omit for an interactive chat")
    chat.add_argument("--system", help="system prompt")
    _add_generation_args(chat)
    chat.set_defaults(run=run_chat)

    serve = _command(commands, "serve", "serve a model over HTTP with OpenAI's API (continuous batching)",
                     "  edgelm serve smollm2-int4                        http://127.0.0.1:8000/v1\n"
                     "  edgelm serve smollm2-135m --port 9000 --parallel 8 --api-key secret")
    serve.add_argument("model", help="model folder made by `edgelm export`, or anything `edgelm.load` accepts")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--parallel", type=int, default=4, help="sequences decoded together in one batch (default 4)")
    serve.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond those before 503 (default 64)")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every route but /health")
    serve.add_argument("--model-id", default=None, help="the model's name in the API (default: the folder's name)")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads (default and most: one per core)")
    serve.set_defaults(run=run_serve)

    models = _command(commands, "models", f"list the exported models in the cache ({cache_root()})",
                      "  edgelm models\n  edgelm models --remove smollm2-135m-int8")
    models.add_argument("--remove", metavar="NAME", help="delete the cached model folder NAME")
    models.set_defaults(run=run_models)

    info = _command(commands, "info", "describe a model folder (its manifest, in words)",
                    "  edgelm info smollm2-int4\n  edgelm info smollm2-135m-int4      (a name from `edgelm models`)")
    info.add_argument("folder", help="model folder, or the name of a cached model")
    info.set_defaults(run=run_info)

    bench = _command(commands, "bench", "measure prompt processing and generation speed",
                     "  edgelm bench smollm2-int4 --pp 512 --tg 128 --reps 5\n"
                     "  edgelm bench smollm2-int4 --backends edgelm,transformers --json out.json --plot out.png")
    bench.add_argument("model", help="model folder made by `edgelm export`")
    bench.add_argument("--backends", default="edgelm", help="comma list: edgelm,transformers,optimum,genai,llamacpp")
    bench.add_argument("--json", help="write every sample to this JSON file")
    bench.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    try:
        from edgelm.benchmarks.options import add_timing_arguments
    except ImportError:  # the harness is part of the package; without it `bench` says so when run
        pass
    else:
        add_timing_arguments(bench)
    bench.set_defaults(run=run_bench)
    parser.add_argument("--verbose", action="store_true", help="show the full traceback of an error")
    for sub in commands.choices.values():  # also accepted after the command: edgelm generate ... --verbose
        sub.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _add_generation_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-n", "--max-new-tokens", type=int, default=128, help="most tokens to generate (default 128)")
    sub.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's own)")
    sub.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens only")
    sub.add_argument("--top-p", type=float, default=None, help="sample from the smallest set with this probability")
    sub.add_argument("--min-p", type=float, default=None, help="drop tokens below this fraction of the top probability")
    sub.add_argument("--repetition-penalty", type=float, default=None, help="> 1 discourages repeated tokens")
    sub.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    sub.add_argument("--seed", type=int, default=None, help="random seed, for repeatable sampling")
    sub.add_argument("--json-schema", default=None,
                     help="output JSON valid under this schema: JSON text or a .json file (needs edgelm[json])")
    sub.add_argument("--regex", default=None, help="output matching this regular expression (needs edgelm[json])")
    sub.add_argument("--grammar", default=None,
                     help="output following this Lark or GBNF grammar: its text or a file (needs edgelm[json])")
    sub.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    sub.add_argument("--threads", type=int, default=None, help="CPU threads (default and most: one per core)")
    sub.add_argument("--no-timings", action="store_true", help="do not print the timings line on stderr")


def _settings(args) -> dict:
    return dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        min_p=args.min_p, repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop) if args.stop else None, seed=args.seed,
        json_schema=_text_or_file(args.json_schema, "--json-schema"), regex=args.regex,
        grammar=_text_or_file(args.grammar, "--grammar"),
    )


FILE_SUFFIXES = (".json", ".gbnf", ".lark", ".ebnf", ".txt")  # a --json-schema or --grammar value naming a file


def _text_or_file(value: str | None, flag: str) -> str | None:
    """The value itself, or the contents of the file it names (one that looks like a path must exist)."""
    if value is None or value.lstrip().startswith(("{", "[")) or "\n" in value:
        return value
    if not os.path.isfile(value):
        path_like = not any(c.isspace() for c in value) and (
            value.lower().endswith(FILE_SUFFIXES) or value.startswith(("/", "./", "../", "~")) or os.path.isdir(value))
        if not path_like:
            return value
        what = "is a folder" if os.path.isdir(value) else "no such file"
        raise EdgelmError(f"{flag} {value}: {what}; give a file, or the {flag[2:].replace('-', ' ')} itself as text")
    try:
        with open(value, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgelmError(f"{flag} {value}: the file cannot be read ({exc})") from None


def run_export(args) -> int:
    from .text_pipeline import export_or_explain

    export_model = export_or_explain()
    export_model(
        args.source, args.output, precision=args.precision, block_size=args.block_size,
        accuracy_level=args.accuracy_level, lm_head_bits=args.lm_head_bits,
        lm_head_block_size=args.lm_head_block_size, graph=args.graph,
        kv_dtype=None if args.kv_dtype == "auto" else args.kv_dtype,
        symmetric={"auto": None, "symmetric": True, "asymmetric": False}[args.int4_blocks], int8_method=args.int8_method,
        int4_method=args.int4_method, share_tied_table=args.share_tied_table,
        prefill_graph=args.prefill_graph,
        check=False if args.no_validate else None, force=args.force,
    )
    return 0


def _check_generation_args(args, prompt: str | None) -> None:
    """Checks the settings (and the prompt) before the model is loaded."""
    from .checks import check_text
    from .config import GenerationConfig

    GenerationConfig().updated(**_settings(args))
    if args.threads is not None and args.threads < 1:
        raise EdgelmError(f"--threads {args.threads} is invalid: use an integer >= 1")
    if prompt is not None:
        check_text("the prompt", prompt, allow_empty=False)


def run_generate(args) -> int:
    from . import load
    from .cli_chat import end_line

    _check_generation_args(args, args.prompt)
    model = load(args.model, device=args.device, threads=args.threads)
    pieces = model.stream(args.prompt, **_settings(args))
    first = next(pieces, "")  # prefill and the first pick: an error here comes before any output
    sys.stdout.write(args.prompt + first)
    sys.stdout.flush()
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    end_line()
    if not args.no_timings:
        print(f"[{model.last_timings.summary()}]", file=sys.stderr, flush=True)
    warn_if_cut(args, model.last_timings)
    return 0


def warn_if_cut(args, timings) -> None:
    """Says on stderr when a constrained output was cut by --max-new-tokens (so it is not a whole document)."""
    if (args.json_schema or args.regex or args.grammar) and timings.finish_reason == "length":
        print(f"edgelm: the output was cut at {args.max_new_tokens} tokens before it was complete; "
              "raise --max-new-tokens", file=sys.stderr, flush=True)


def run_chat(args) -> int:
    from . import load
    from .cli_chat import chat_loop

    _check_generation_args(args, args.message)
    model = load(args.model, device=args.device, threads=args.threads)
    model.runner.open_prefill_graph()  # a chat's prompts (template, history) are long: before the first turn
    return chat_loop(model, args.system, args.message, _settings(args), timings=not args.no_timings)


def run_models(args) -> int:
    from .cache import cached_models, remove_cached, table

    if args.remove is not None:
        print(f"removed {remove_cached(args.remove)}")
        return 0
    models = cached_models()
    if not models:
        print(f"no exported models in {cache_root()}", file=sys.stderr)
        return 0
    print(table(models))
    return 0


def run_info(args) -> int:
    from pathlib import Path

    from .model_info import describe

    folder = Path(args.folder).expanduser()
    if not folder.is_dir() and "/" not in args.folder and (cache_root() / args.folder).is_dir():
        folder = cache_root() / args.folder
    if not folder.is_dir():
        raise EdgelmError(f"{args.folder} is neither a model folder nor a cached model; `edgelm models` lists those")
    print(describe(folder))
    return 0


def run_bench(args) -> int:
    try:
        from edgelm.benchmarks.cli import run
    except ImportError as exc:
        raise EdgelmError(f"the benchmark harness could not be imported ({exc})") from exc
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
