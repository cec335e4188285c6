"""`python -m benchmarks compare` (the full comparison) and `edgelm bench DIR` (one folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgelm.errors import EdgelmError

from .prepare import default_threads, targets
from .report import to_markdown, write_json
from .runner import run_all

ALL_BACKENDS = ("edgelm", "transformers", "optimum", "genai", "llamacpp")
RESULTS = Path(__file__).parent / "results"


def settings_from(args) -> dict:
    for name in ("pp", "tg", "reps", "rounds"):
        if getattr(args, name, 1) < 1:
            raise EdgelmError(f"--{name} must be at least 1, got {getattr(args, name)}")
    scaling = not getattr(args, "no_scaling", True)
    return {
        "pp": args.pp, "tg": args.tg, "reps": args.reps, "threads": args.threads or default_threads(),
        "depths": [0, 512, 2048] if scaling else [], "prompt_lengths": [128, 512, 2048] if scaling else [],
        "scaling_tokens": 32, "scaling_reps": 2, "perplexity_tokens": 512,
        "rounds": getattr(args, "rounds", 1),
    }


def parse_backends(text: str) -> list[str]:
    names = list(ALL_BACKENDS) if text == "all" else [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in names if b not in ALL_BACKENDS]
    if unknown:
        raise EdgelmError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(ALL_BACKENDS)} or 'all'")
    return names


def benchmark(folders: dict[str, Path], backends: list[str], settings: dict, json_path=None, md_path=None,
              plot_path=None) -> dict:
    """Measures every backend on the models in `folders` ({precision: edgelm folder}); writes the outputs."""
    rows = targets(folders, backends, settings["threads"])
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
    settings = settings_from(args)
    benchmark({manifest.precision: folder}, parse_backends(args.backends), settings, args.json, None, args.plot)
    return 0


def compare(argv: list[str] | None = None) -> int:
    """The full comparison on one model: every edgelm precision and every peer, results into benchmarks/results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks compare", description=compare.__doc__)
    parser.add_argument("--model", default="smollm2-135m", help="alias, HF folder or .gguf (default smollm2-135m)")
    parser.add_argument("--precisions", default="fp32,int8,int4,gguf",
                        help="edgelm exports to compare; fp32 is the reference for the KLD and top-1 columns")
    parser.add_argument("--backends", default="all")
    parser.add_argument("--pp", type=int, default=512)
    parser.add_argument("--tg", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1,
                        help="interleave: measure the rows in this many rotated rounds (reps split between them)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-scaling", action="store_true", help="skip the depth and prompt-length sweeps")
    parser.add_argument("--out", default=str(RESULTS), help="folder for latest.json, latest.md, latest.png")
    args = parser.parse_args(argv)
    from edgelm.text_pipeline import resolve_model

    backends, settings = parse_backends(args.backends), settings_from(args)  # checked before any export
    folders = {p: resolve_model(args.model, p) for p in args.precisions.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    benchmark(folders, backends, settings, out / "latest.json", out / "latest.md", out / "latest.png")
    print(f"results written to {out}/latest.json, latest.md, latest.png", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m benchmarks compare [--model M] [--precisions fp32,int8,int4] [--backends all] ...\n"
              "       python -m benchmarks serve [--model M] [--clients 1,2,4,8,16] [--backends edgelm,llamacpp] ...\n"
              "       (one folder: edgelm bench DIR --backends edgelm,transformers ...)")
        return 0
    if argv[0] == "serve":
        from .serving import main as serve_main

        return serve_main(argv[1:])
    if argv[0] != "compare":
        print(f"unknown command {argv[0]!r}; try: python -m benchmarks compare --help", file=sys.stderr)
        return 2
    try:
        return compare(argv[1:])
    except EdgelmError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 2
