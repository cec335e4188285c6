"""The `edgelm` command: export, generate, chat, bench."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from .errors import EdgelmError


def main(argv: list[str] | None = None) -> int:
    """Runs one command. Every error is one line on stderr and a non-zero exit; --verbose adds the traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgelm", description="Fast local LLM inference on ONNX Runtime.")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="export a model to an ONNX model folder")
    export.add_argument("source", help="Hugging Face folder or hub id, .gguf file, or alias (smollm2-135m, gemma3-270m)")
    export.add_argument("-o", "--output", required=True, help="folder to write")
    export.add_argument("--precision", choices=["fp32", "int8", "int4", "gguf"], default="int4",
                        help="int4 (default), int8, fp32, or gguf: a .gguf source's own quantized blocks, unchanged")
    export.add_argument("--block-size", type=int, default=32, help="int4 quantization block size (default 32)")
    export.add_argument("--accuracy-level", type=int, default=4, help="int4 CPU compute type: 4 = int8 (default)")
    export.add_argument("--lm-head-bits", type=int, choices=[4, 8], default=4,
                        help="int4: keep the LM head at 8 bits (more accurate, a little larger)")
    export.add_argument("--int4-blocks", choices=["auto", "symmetric", "asymmetric"], default="auto",
                        help="int4 block symmetry; auto tries both and keeps the lower perplexity")
    export.add_argument("--int4-method", choices=["auto", "rtn", "calibrated"], default="auto",
                        help="int4 rounding: rtn (round-to-nearest), calibrated (GPTQ on held-out text), "
                             "auto (both, keeps the lower perplexity)")
    export.add_argument("--int8-method", choices=["dynamic", "weight-only"], default="dynamic",
                        help="int8: dynamic (per-channel weights, per-tensor activations; fastest prompts) or "
                             "weight-only (8-bit blocks; nearly lossless)")
    export.add_argument("--graph", choices=["auto", "fused", "optimum"], default="auto",
                        help="auto: edgelm's fused graph where supported (llama), else optimum's exporter")
    export.add_argument("--no-validate", action="store_true", help="skip the comparison with PyTorch")
    export.add_argument("--force", action="store_true", help="replace the output folder if it exists")
    export.set_defaults(run=run_export)

    for name, helptext in (("generate", "continue a prompt"), ("chat", "chat with a model (its chat template)")):
        sub = commands.add_parser(name, help=helptext)
        sub.add_argument("model", help="model folder made by `edgelm export`, or an alias")
        if name == "generate":
            sub.add_argument("prompt", help="text to continue")
        else:
            sub.add_argument("message", nargs="?", help="one message; omit for an interactive chat")
            sub.add_argument("--system", help="system prompt")
        _add_generation_args(sub)
        sub.set_defaults(run=run_generate if name == "generate" else run_chat)

    bench = commands.add_parser("bench", help="measure prompt processing and generation speed")
    bench.add_argument("model", help="model folder made by `edgelm export`")
    bench.add_argument("--backends", default="edgelm", help="comma list: edgelm,transformers,optimum,genai,llamacpp")
    bench.add_argument("--pp", type=int, default=512, help="prompt tokens for the pp test (default 512)")
    bench.add_argument("--tg", type=int, default=128, help="new tokens for the tg test (default 128)")
    bench.add_argument("--reps", type=int, default=5, help="repetitions after a warm-up (default 5)")
    bench.add_argument("--rounds", type=int, default=1,
                       help="measure the rows in this many rotated rounds, interleaved (reps split between them)")
    bench.add_argument("--threads", type=int, default=None)
    bench.add_argument("--json", help="write every sample to this JSON file")
    bench.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    bench.add_argument("--no-scaling", action="store_true", help="skip the depth and prompt-length sweeps")
    bench.set_defaults(run=run_bench)
    parser.add_argument("--verbose", action="store_true", help="show the full traceback of an error")
    for sub in commands.choices.values():  # also accepted after the command: edgelm generate ... --verbose
        sub.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _add_generation_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-n", "--max-new-tokens", type=int, default=128)
    sub.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's own)")
    sub.add_argument("--top-k", type=int, default=None)
    sub.add_argument("--top-p", type=float, default=None)
    sub.add_argument("--min-p", type=float, default=None)
    sub.add_argument("--repetition-penalty", type=float, default=None)
    sub.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    sub.add_argument("--seed", type=int, default=None)
    sub.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    sub.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")
    sub.add_argument("--no-timings", action="store_true", help="do not print the timings line")


def _settings(args) -> dict:
    return dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        min_p=args.min_p, repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop) if args.stop else None, seed=args.seed,
    )


def run_export(args) -> int:
    from .text_pipeline import export_or_explain

    export_model = export_or_explain()
    export_model(
        args.source, args.output, precision=args.precision, block_size=args.block_size,
        accuracy_level=args.accuracy_level, lm_head_bits=args.lm_head_bits, graph=args.graph,
        symmetric={"auto": None, "symmetric": True, "asymmetric": False}[args.int4_blocks], int8_method=args.int8_method,
        int4_method=args.int4_method,
        check=not args.no_validate, force=args.force,
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

    _check_generation_args(args, args.prompt)
    model = load(args.model, device=args.device, threads=args.threads)
    pieces = model.stream(args.prompt, **_settings(args))
    first = next(pieces, "")  # prefill and the first pick: an error here comes before any output
    sys.stdout.write(args.prompt + first)
    sys.stdout.flush()
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not args.no_timings:
        print(f"[{model.last_timings.summary()}]", file=sys.stderr)
    return 0


def run_chat(args) -> int:
    from . import load

    _check_generation_args(args, args.message)
    model = load(args.model, device=args.device, threads=args.threads)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    pending = [args.message] if args.message else None
    while True:
        if pending is not None:
            if not pending:
                return 0
            text = pending.pop()
        else:
            try:
                text = input("> ")
            except EOFError:
                print()
                return 0
            if text.strip() in ("/exit", "/quit"):
                return 0
        messages.append({"role": "user", "content": text})
        reply = []
        for piece in model.chat_stream(messages, **_settings(args)):
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})
        if not args.no_timings:
            print(f"[{model.last_timings.summary()}]", file=sys.stderr)


def run_bench(args) -> int:
    try:
        from edgelm.benchmarks.cli import run
    except ImportError as exc:
        raise EdgelmError(f"the benchmark harness could not be imported ({exc})") from exc
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
