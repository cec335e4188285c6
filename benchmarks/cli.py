"""`python -m benchmarks compare` (the full comparison) and `edgelm bench DIR` (one folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgelm.errors import EdgelmError

from .options import add_timing_arguments, settings_from
from .prepare import Target, targets
from .report import to_markdown, write_json
from .runner import run_all

ALL_BACKENDS = ("edgelm", "transformers", "optimum", "genai", "llamacpp")
RESULTS = Path(__file__).parent / "results"


def parse_backends(text: str) -> list[str]:
    names = list(ALL_BACKENDS) if text == "all" else [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in ALL_BACKENDS]
    if unknown or not names:
        what = f"unknown backend(s) {', '.join(unknown)}" if unknown else "no backend given"
        raise EdgelmError(f"{what}; choose from {', '.join(ALL_BACKENDS)} or 'all'")
    return names


def check_outputs(*paths) -> None:
    """Refuses output files whose folder does not exist (or that are folders), before anything is measured."""
    for path in filter(None, paths):
        path = Path(path)
        if path.is_dir() or not path.parent.is_dir():
            reason = "is a folder" if path.is_dir() else f"its folder {path.parent} does not exist"
            raise EdgelmError(f"{path} cannot be written ({reason}): the results would be lost after the run")


def check_lengths(settings: dict, context_length: int) -> None:
    """Refuses a prompt or depth the model's context cannot hold, before anything is measured."""
    if settings["pp"] >= context_length:
        raise EdgelmError(f"--pp {settings['pp']} tokens leave no room in the model's context of {context_length}: "
                          "give a shorter --pp")
    if settings["depth"] + settings["tg"] > context_length:
        raise EdgelmError(f"--depth {settings['depth']} plus --tg {settings['tg']} tokens exceed the model's context "
                          f"of {context_length}: give a shorter --depth (0: no depth test)")


def benchmark(folders: dict[str, Path], backends: list[str], settings: dict, json_path=None, md_path=None,
              plot_path=None, options: dict[str, dict] | None = None) -> dict:
    """Measures every backend on the models in `folders` ({precision: edgelm folder}); writes the outputs.

    `options`: {precision label: the edgelm backend's run settings for that row} (--also's KEY=VALUE).
    """
    rows = targets(folders, backends, settings["threads"])
    for row in rows:
        if row.backend == "edgelm":
            row.options.update((options or {}).get(row.precision, {}))
    report = run_all(rows, next(iter(folders.values())), settings, reference=folders.get("fp32"))
    markdown = to_markdown(report)
    print(markdown)
    if json_path:
        write_json(report, json_path)
    if md_path:
        Path(md_path).write_text(markdown, encoding="utf-8")
    if plot_path:
        from .plots import write_plot

        write_plot(report, plot_path)
    return report


def run(args) -> int:
    """`edgelm bench DIR`: the folder at its own precision, beside the peers asked for."""
    from edgelm.manifest import Manifest

    folder = Path(args.model)
    manifest = Manifest.load(folder)
    settings, backends = settings_from(args), parse_backends(args.backends)
    check_outputs(args.json, args.plot)
    check_lengths(settings, manifest.context_length)
    benchmark({manifest.precision: folder}, backends, settings, args.json, None, args.plot)
    return 0


def compare(argv: list[str] | None = None) -> int:
    """The full comparison on one model: every edgelm precision and every peer, results into benchmarks/results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks compare", description=compare.__doc__)
    parser.add_argument("--model", default="smollm2-135m", help="alias, HF folder or .gguf (default smollm2-135m)")
    parser.add_argument("--precisions", default="fp32,int8,int4,gguf",
                        help="edgelm exports to compare; fp32 is the reference for the KLD and top-1 columns")
    parser.add_argument("--backends", default="all")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=FOLDER[,KEY=VALUE...]",
                        help="one more edgelm model folder of the same model as a row labelled LABEL "
                             "(an export with other settings; attention=tiled|plain: onnxruntime's attention kernel, "
                             "runtime/attention_kernel.py, instead of edgelm's choice; huge_pages=off: the weights "
                             "on small pages, runtime/huge_pages.py); repeatable")
    add_timing_arguments(parser)
    parser.add_argument("--out", default=str(RESULTS), help="folder for latest.json, latest.md, latest.png")
    args = parser.parse_args(argv)
    from edgelm.text_pipeline import resolve_model

    backends, settings = parse_backends(args.backends), settings_from(args)  # checked before any export
    extra = [_also_row(item) for item in args.also]
    folders = {p: resolve_model(args.model, p) for p in args.precisions.split(",")} | {l: f for l, f, _ in extra}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    benchmark(folders, backends, settings, out / "latest.json", out / "latest.md", out / "latest.png",
              options={label: options for label, _, options in extra if options})
    print(f"results written to {out}/latest.json, latest.md, latest.png", file=sys.stderr)
    return 0


# --also's KEY=VALUE row options and their choices
ROW_OPTIONS = {"attention": ("tiled", "plain"), "huge_pages": ("on", "off"), "arena": ("on", "off")}


def _also_row(item: str) -> tuple[str, Path, dict]:
    """--also's LABEL=FOLDER[,KEY=VALUE...]: the label, the folder (an edgelm model folder), the row's options.

    attention=tiled|plain: that attention kernel (runtime/attention_kernel.py); huge_pages=off: the weights
    left on small pages (runtime/huge_pages.py); arena=off: onnxruntime's CPU memory arena off.
    """
    label, sep, rest = item.partition("=")
    folder, *pairs = rest.split(",")
    if not sep or not label or not (Path(folder) / "edgelm.json").is_file():
        raise SystemExit(f"--also {item!r}: give LABEL=FOLDER with an edgelm model folder (one with edgelm.json)")
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if value not in ROW_OPTIONS.get(key, ()):
            choices = "; ".join(f"{name}= takes one of {', '.join(values)}" for name, values in ROW_OPTIONS.items())
            raise SystemExit(f"--also {item!r}: {pair!r} is not an option here: {choices}")
        options[key] = value
    return label, Path(folder), options


def session_options(argv: list[str] | None = None) -> int:
    """edgelm's decode and prompt speed with intra-op threads 1 .. --threads, intra-op spinning on and off,
    and at --threads with spinning on, onnxruntime's CPU memory arena off.

    The rows are the same model folder in one worker each, measured interleaved like the comparison,
    to choose the session defaults by measurement. Writes session-options-MODEL-PRECISION.json/.md.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks session-options", description=session_options.__doc__)
    parser.add_argument("--model", default="smollm2-135m", help="alias, HF folder or .gguf (default smollm2-135m)")
    parser.add_argument("--precision", default="int4", help="the edgelm export to measure (default int4)")
    add_timing_arguments(parser)
    parser.add_argument("--out", default=str(RESULTS), help="folder for the .json and .md")
    args = parser.parse_args(argv)
    from edgelm.text_pipeline import resolve_model

    settings = settings_from(args) | {"perplexity_tokens": 0}  # one folder: its quality is the same in every row
    folder = resolve_model(args.model, args.precision)
    rows = [Target("edgelm", f"{args.precision} threads={threads} spinning={'on' if spin else 'off'}", str(folder),
                   options={"threads": threads, "allow_spinning": spin})
            for threads in range(1, settings["threads"] + 1) for spin in (True, False)]
    rows.append(Target("edgelm", f"{args.precision} threads={settings['threads']} spinning=on arena=off", str(folder),
                       options={"threads": settings["threads"], "allow_spinning": True, "arena": "off"}))
    report = run_all(rows, folder, settings)
    markdown = to_markdown(report)
    print(markdown)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"session-options-{Path(args.model).stem}-{args.precision}"
    write_json(report, out / f"{name}.json")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
    print(f"results written to {out}/{name}.json, .md", file=sys.stderr)
    return 0


COMMANDS = {"compare": compare, "session-options": session_options}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m benchmarks compare [--model M] [--precisions fp32,int8,int4] [--backends all] ...\n"
              "       python -m benchmarks session-options [--model M] [--precision int4] ...\n"
              "       python -m benchmarks serve [--model M] [--clients 1,2,4,8,16] [--backends edgelm,llamacpp] ...\n"
              "       python -m benchmarks kernels [--rows 1,64,256] [--shapes 576x960,...] [--out DIR]\n"
              "       python -m benchmarks profile FOLDER [--prompt 2048] [--steps 64] [--out DIR]\n"
              "       (one folder: edgelm bench DIR --backends edgelm,transformers ...)")
        return 0
    if argv[0] == "serve":
        from .serving import main as serve_main

        return serve_main(argv[1:])
    if argv[0] == "kernels":
        from .kernels import main as kernels_main

        return kernels_main(argv[1:])
    if argv[0] == "profile":
        from .op_profile import main as profile_main

        return profile_main(argv[1:])
    if argv[0] not in COMMANDS:
        print(f"unknown command {argv[0]!r}; try: python -m benchmarks compare --help", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except EdgelmError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 2
