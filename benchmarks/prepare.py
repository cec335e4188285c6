"""Getting every backend's model ready from the same weights (needs `edgelm[export]`).

Everything is cached under ~/.cache/edgelm/bench/<source digest>/, so a second run starts at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgelm.aliases import cache_root
from edgelm.manifest import Manifest

# onnxruntime-genai builds: (row precision, builder precision, --extra_options). Its defaults, and int4 at
# its best on the CPU: accuracy level 4 and block 32 (its CPU defaults, named), the LM head run on the last
# position only during prefill, and each MLP's gate and up projections fused into one MatMulNBits.
GENAI_BUILDS = (
    ("fp32", "fp32", {}),
    ("int4", "int4", {}),
    ("int4 best", "int4", {"accuracy_level": "4", "block_size": "32", "prune_lm_head": "true",
                           "fuse_mlp_gate_up": "true"}),
)


@dataclass
class Target:
    """One row of the comparison: a backend, a precision, and the file or folder it loads."""

    backend: str
    precision: str
    path: str | None
    skipped: str | None = None  # why this row cannot run, if it cannot
    settings: dict = field(default_factory=dict)  # how the peer was built and run, for the JSON and the label
    options: dict = field(default_factory=dict)  # run settings the worker hands the backend (threads, allow_spinning)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    def describe(self) -> str:
        """The settings in words, for the report's table of rows."""
        return ", ".join(f"{k}={v}" for k, v in self.settings.items()) or "-"


def bench_dir(manifest: Manifest) -> Path:
    key = (manifest.source.get("sha256") or "unknown")[:12]
    return cache_root() / "bench" / key


def hf_folder(manifest: Manifest) -> Path:
    """A transformers folder of the source weights: the source itself, or a dequantized GGUF (once)."""
    source = manifest.source
    if source.get("kind") == "folder":
        return Path(source["id"])
    work = bench_dir(manifest)
    if (work / "hf" / "config.json").is_file():
        return work / "hf"
    from edgelm.export.progress import quiet_libraries
    from edgelm.export.sources import resolve_source

    print(f"bench: dequantizing {source['id']} for the peers (once) ...", file=sys.stderr, flush=True)
    work.mkdir(parents=True, exist_ok=True)
    with quiet_libraries():
        return resolve_source(source["id"], work).hf_folder


def gguf_file(manifest: Manifest) -> Path | None:
    source = manifest.source
    if source.get("kind") == "gguf":
        return Path(source["id"])
    if source.get("kind") == "alias":
        from edgelm.export.sources import alias_gguf_path

        return alias_gguf_path(source["id"])
    return None


def optimum_folder(manifest: Manifest, hf: Path) -> Path:
    """optimum's own graph at the same precision, for ORTModelForCausalLM: what a user picking optimum runs.

    edgelm's exporter writes it with `graph="optimum"` (the same quantization settings); its one
    extra input, num_logits_to_keep, becomes a constant that keeps every position, as optimum's
    graph does.
    """
    import onnx

    from edgelm.export import export_model
    from edgelm.export.logits_slice import keep_all_logits

    out = bench_dir(manifest) / f"optimum-{manifest.precision}"
    if not (out / "config.json").is_file():
        print(f"bench: exporting optimum's {manifest.precision} graph ...", file=sys.stderr, flush=True)
        settings = manifest.quantization
        extra = {"block_size": settings["block_size"], "accuracy_level": settings["accuracy_level"],
                 "lm_head_bits": settings.get("lm_head_bits", 4), "symmetric": settings.get("symmetric", True),
                 "int4_method": settings.get("int4_method", "rtn")} \
            if manifest.precision == "int4" else {}
        export_model(str(hf), out, precision=manifest.precision, graph="optimum", check=False, force=True,
                     quiet=True, **extra)
        graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
        keep_all_logits(graph)
        onnx.save(graph, str(out / "model.onnx"))
        for name in ("config.json", "generation_config.json"):
            if (hf / name).is_file():
                shutil.copy(hf / name, out / name)
    return out


def genai_folder(manifest: Manifest, hf: Path, precision: str, threads: int, extra: dict | None = None) -> Path:
    """A model built by onnxruntime-genai's own builder from the same weights (once).

    onnxruntime-genai 0.18's builder imports transformers 5 classes, while the exporter pins
    transformers 4.57; $EDGELM_GENAI_PYTHON names a Python that has the builder's own
    environment (`make bench-peers` makes .venv-genai). `extra` are the builder's --extra_options.
    """
    extra = extra or {}
    name = "-".join([precision] + [f"{k}={v}" for k, v in sorted(extra.items())])
    out = bench_dir(manifest) / f"genai-{name}"
    if not (out / "genai_config.json").is_file():
        cache = bench_dir(manifest) / "genai-cache"
        python = os.environ.get("EDGELM_GENAI_PYTHON") or sys.executable
        builder = Path(__file__).with_name("genai_build.py")  # the builder, able to read Gemma 3 configs
        command = [python, str(builder), "-i", str(hf), "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(cache)]
        if extra:
            command += ["--extra_options", *(f"{k}={v}" for k, v in extra.items())]
        print(f"bench: building the onnxruntime-genai {name} model ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            shutil.rmtree(out, ignore_errors=True)
            raise RuntimeError(f"onnxruntime-genai's builder failed: {done.stderr.strip().splitlines()[-1:]}")
    config_path = out / "genai_config.json"
    config = json.loads(config_path.read_text())
    session = config["model"]["decoder"].setdefault("session_options", {})
    session["intra_op_num_threads"] = threads
    session["inter_op_num_threads"] = 1
    config_path.write_text(json.dumps(config, indent=4))
    return out


def targets(folders: dict[str, Path], backends: list[str], threads: int) -> list[Target]:
    """Every row to measure, in table order; a peer that cannot be prepared becomes a skipped row."""
    manifests = {p: Manifest.load(f) for p, f in folders.items()}
    first = next(iter(manifests.values()))
    rows = [Target("edgelm", p, str(f)) for p, f in folders.items()] if "edgelm" in backends else []
    peers = [b for b in backends if b != "edgelm"]
    hf = None
    if peers:
        try:
            hf = hf_folder(first)
        except Exception as exc:  # no exporter installed, or the source is gone
            return rows + [Target(b, "-", None, f"no source weights for peers: {exc}") for b in peers]
    if "transformers" in peers:
        rows.append(Target("transformers", "fp32", str(hf)))
    if "optimum" in peers:
        # one optimum row per precision: a folder added with other settings (--also) has no optimum twin
        rows += [Target("optimum", p, str(optimum_folder(manifests[p], hf))) for p in folders if manifests[p].precision == p]
    if "genai" in peers:
        rows += _genai_rows(first, hf, threads)
    if "llamacpp" in peers:
        rows += _llamacpp_rows(first)
    return rows


# llama.cpp rows: the file's own type as it is, then at its best on this CPU: the types it repacks into its
# fastest CPU layouts (Q4_0, IQ4_NL) and Q8_0, re-quantized from the file; flash attention on and off
# (on helps prompts, off held up better at depth 2048 in one run)
LLAMA_VARIANTS = ((None, False), (None, True), ("Q4_0", True), ("Q4_0", False), ("IQ4_NL", True),
                  ("IQ4_NL", False), ("Q8_0", True))


def _llamacpp_rows(manifest: Manifest) -> list[Target]:
    gguf = gguf_file(manifest)
    if gguf is None:
        return [Target("llamacpp", "-", None, "the source is not a GGUF file, so llama.cpp has nothing to load")]
    rows = []
    own = _gguf_label(gguf)
    for kind, flash in LLAMA_VARIANTS:
        label = (kind or own) + (" +fa" if flash else "")
        settings = {"type": kind or own, "requantized_from": own if kind else None, "flash_attn": flash,
                    "n_batch": 512, "n_ctx": 4096}
        try:
            path = gguf if kind is None else requantized_gguf(manifest, gguf, kind)
            rows.append(Target("llamacpp", label, str(path), settings=settings))
        except Exception as exc:  # llama-cpp-python missing, or the type not offered: a row with its reason
            rows.append(Target("llamacpp", label, None, f"{type(exc).__name__}: {exc}", settings=settings))
    return rows


def requantized_gguf(manifest: Manifest, gguf: Path, kind: str) -> Path:
    """`gguf` re-quantized to `kind` by llama.cpp itself (allow_requantize), once, in the bench cache."""
    import llama_cpp

    out = bench_dir(manifest) / f"llamacpp-{kind}.gguf"
    if not out.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
        params.allow_requantize = True
        params.nthread = default_threads()
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(".partial")
        if llama_cpp.llama_model_quantize(str(gguf).encode(), str(partial).encode(), params) != 0:
            raise RuntimeError(f"llama.cpp could not re-quantize {gguf.name} to {kind}")
        partial.rename(out)
    return out


def _genai_rows(manifest: Manifest, hf: Path, threads: int) -> list[Target]:
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return [Target("genai", "-", None, "onnxruntime-genai is not installed (pip install onnxruntime-genai)")]
    rows = []
    for label, precision, extra in GENAI_BUILDS:
        settings = {"builder_precision": precision, "extra_options": extra or "builder defaults"}
        try:
            rows.append(Target("genai", label, str(genai_folder(manifest, hf, precision, threads, extra)),
                               settings=settings))
        except Exception as exc:  # reported as a row, never dropped
            rows.append(Target("genai", label, None, str(exc), settings=settings))
    return rows


def _gguf_label(path: Path) -> str:
    """The quantization type in a GGUF file name, e.g. 'Q4_1' from 'SmolLM2-135M-Instruct.Q4_1.gguf'."""
    import re

    match = re.search(r"(?i)\b(q\d_[a-z0-9_]+|q\d_\d|f16|f32|bf16)\b", path.stem.replace(".", " ").replace("-", " "))
    return match.group(1).upper() if match else "gguf"


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
