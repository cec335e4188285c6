"""edgelm.export: a pretrained model to a quantized ONNX model folder the runtime loads.

Needs the heavy tools: `pip install 'edgelm[export]'` (torch, transformers, optimum-onnx).

Example:
    from edgelm.export import export_model
    export_model("smollm2-135m", "smollm2-int4", precision="int4")
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import onnx

from edgelm.errors import EdgelmError
from edgelm.manifest import EXPORT_REVISION, PRECISIONS, Manifest
from edgelm.versions import package_versions

from .arguments import check_block_fits, check_export_args, linear_widths
from .model_folder import (
    PACKAGES, count_parameters, file_digests, folder_size_mb, generation_defaults, staged_folder, write_tokenizer_files,
)
from .gguf_exact import exact_gguf_graph
from .output_guard import work_folder
from .int4_choice import Scorer, quantize_int4_best
from .kv_int8 import (MIN_CACHE_SHARE, SHARE_POSITIONS, float_cache_share, graph_bytes,
                      quantize_kv_cache)
from .onnx_graph import export_fp32_graph, read_interface
from .prefill_graph import add_prefill_graph
from .progress import Progress, quiet_libraries
from .quantize import QUANTIZERS, save_graph
from .sources import is_gguf_source, one_gguf_reader, resolve_source
from .tied_table import share_tied_table
from .validate import validate, validation_wanted

__all__ = ["export_model"]

TIED_TABLE_TOLERANCE = 0.005  # share a tied table if the KLD against fp32 rises by at most this (nats; see _share_tied_table)


@quiet_libraries()  # third-party loggers and warnings quietened for this call only
def export_model(
    source: str,
    output: str | Path,
    precision: str = "int4",
    block_size: int = 32,
    accuracy_level: int = 4,
    lm_head_bits: int = 4,
    lm_head_block_size: int | None = None,
    symmetric: bool | None = None,
    int4_method: str = "auto",
    int8_method: str = "weight-only",
    graph: str = "auto",
    share_tied_table: bool | None = None,
    prefill_graph: bool | None = None,
    kv_dtype: str | None = None,
    check: bool | None = None,
    force: bool = False,
    quiet: bool = False,
) -> Manifest:
    """Exports `source` to an ONNX model folder at `output`.

    Args:
        source: a Hugging Face folder or hub id, a .gguf file, or an alias ('smollm2-135m', 'gemma3-270m').
        output: the folder to write; it appears only once the export is complete.
        precision: 'fp32', 'int8' (weight-only 8-bit blocks; see int8_method), 'int4' (MatMulNBits), or 'gguf'
            (a .gguf source's own quantized blocks, carried over exactly; see gguf_exact.py).
        block_size: int4 block size (a power of two >= 16).
        accuracy_level: int4/gguf compute type on CPU (4: int8 with VNNI/AMX).
        lm_head_bits: 4, or 8 for a more accurate LM head (int4 only).
        lm_head_block_size: the LM head's own int4 block size; None: `block_size`. A larger block makes
            a big-vocabulary head much cheaper per token at some quality (Gemma 3 270M, block 128 against
            32: decode +25 %, KLD 0.122 -> 0.141, and the tied table is stored twice; see README).
        symmetric: int4 block symmetry; None quantizes both ways and keeps the one closer to fp32 (KLD).
        int4_method: "rtn" (onnxruntime's round-to-nearest), "calibrated" (GPTQ on held-out calibration
            text, see int4_calibrated.py) or "auto" (both, keeping the lower KLD against the fp32 graph
            on held-out text; see int4_choice.py).
        int8_method: "weight-only" (8-bit MatMulNBits blocks, the default: nearly lossless) or "dynamic"
            (quantize_dynamic: int8 activations too, fast prompts, perplexity +77 % on SmolLM2).
        graph: "auto" (edgelm's fused graph where supported, else optimum's), "fused" or "optimum".
        share_tied_table: for a model with tied embeddings, let the embedding gather the quantized LM
            head's table instead of storing a second one (tied_table.py). None: always for 'gguf' (the
            file holds one table: no value changes); at int4/int8 when the KLD against fp32 on held-out
            text rises by at most 0.005 (Gemma 3 270M int4: 294 -> 213 MB; SmolLM2 keeps two tables).
        prefill_graph: int4/gguf: also write `prefill.onnx`, the graph prompt chunks of ~64 tokens and more
            run on, its linears on the kernels that suit many rows (export/prefill_graph.py). None: the
            faster of an int8 graph (int4 only, if its KLD stays within 0.005 of the decode graph's) and an
            fp32 one, if a timed chunk runs at least 1.3x faster on it than on the decode graph. True: the
            fp32 one, untimed.
        kv_dtype: the KV cache's type, "float32", "float16" or "int8" (fused graph only). float16 halves
            the cache's bytes; int8 quarters them, with scales per kv head and channel calibrated on
            held-out text, and attention at depth reads that much less (kv_int8.py; prompts attend in
            float32 on a prefill graph, written for it where the precision has none; devices without
            int8 attention run a float32-cache twin of the decode graph). None: int8 for int4 (and for gguf
            where the float32 cache at 2,048 positions is at least half the weights' bytes) on the fused
            graph if its mean KLD against fp32 at long context rises by at most 0.005 over the float32
            cache's (SmolLM2 +0.0014, Gemma 3 270M +0.0006), else float32; float32 with
            prefill_graph False (prompts would attend on the int8 cache, ~3x slower).
        check: validate against PyTorch and record the numbers in the manifest; None: unless $EDGELM_VALIDATE=0.
        force: replace an existing `output`.
        quiet: no progress lines.
    Returns:
        The manifest written into the folder.
    Raises:
        EdgelmError: for an unknown source, precision or architecture, or an existing output.
    """
    check_export_args(dict(locals()))
    if precision not in PRECISIONS:
        raise EdgelmError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "gguf" and not is_gguf_source(source):
        raise EdgelmError(
            f"precision 'gguf' keeps the quantized blocks of a .gguf file, and {source} is not one; "
            "give a .gguf file or an alias, or choose fp32, int8 or int4"
        )
    started = time.perf_counter()
    check = validation_wanted(check)
    progress = Progress(5 if check else 4, quiet=quiet)
    with quiet_libraries(), one_gguf_reader(), staged_folder(Path(output), force=force, source=source) as out, \
            work_folder() as tmp:  # one GGUF parse for the load and the exact blocks
        work = Path(tmp)
        with progress.step(f"loading {source}"):
            src = resolve_source(source, work)
            config = _hf_config(src.hf_folder)
            if precision == "int4":
                widths = linear_widths(config)
                check_block_fits("block_size", block_size, widths)
                if lm_head_block_size:  # the LM head reads the hidden state
                    hidden = {what: w for what, w in widths.items() if what == "hidden size"}
                    check_block_fits("lm_head_block_size", lm_head_block_size, hidden)
        with progress.step(f"exporting ONNX graph ({config.model_type})"), damaged_weights_named(src.hf_folder):
            fp32_graph, builder = export_fp32_graph(src.hf_folder, work / "onnx", graph, kv_dtype)
            graph_inputs, kv = read_interface(fp32_graph)
            kv.shared_buffer = builder.startswith("fused-")  # GroupQueryAttention writes the cache in place
        with progress.step("writing tokenizer and manifest"):
            manifest = Manifest(
                model_type=config.model_type,
                vocab_size=int(config.vocab_size),
                context_length=int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions")),
                kv=kv,
                tokens=write_tokenizer_files(src.hf_folder, out),
                precision=precision,
                graph_builder=builder,
                parameters=count_parameters(src.hf_folder),
                graph_inputs=graph_inputs,
                source=src.describe(),
                generation_defaults=generation_defaults(src.hf_folder),
                versions=package_versions(PACKAGES),
                export_revision=EXPORT_REVISION,
            )
        with progress.step(f"writing {precision} graph"):
            target = out / manifest.graph_file
            # int4 candidates and the tied table are chosen on held-out text against the fp32 logits, computed once
            scorer = Scorer(fp32_graph, out, manifest) if precision in ("int4", "int8") else None
            if precision == "int8":
                manifest.quantization = QUANTIZERS["int8"](fp32_graph, target, method=int8_method)
            elif precision == "fp32":
                manifest.quantization = QUANTIZERS["fp32"](fp32_graph, target)
            elif precision == "gguf":
                manifest.quantization = exact_gguf_graph(fp32_graph, src.gguf, target, accuracy_level=accuracy_level)
            else:
                manifest.quantization = quantize_int4_best(
                    fp32_graph, target, manifest, work, method=int4_method, symmetric=symmetric, scorer=scorer,
                    block_size=block_size, accuracy_level=accuracy_level, lm_head_bits=lm_head_bits,
                    lm_head_block_size=lm_head_block_size or block_size,
                )
            if getattr(config, "tie_word_embeddings", False) and share_tied_table is not False:
                measure = share_tied_table is None and precision != "gguf"
                _share_tied_table(target, manifest, work, scorer if measure else None)
            if precision in ("int4", "gguf") and prefill_graph is not False:  # 4-bit blocks: export/prefill_graph.py
                decided = add_prefill_graph(out, manifest, measure=prefill_graph is None,
                                            scorer=scorer if precision == "int4" else None)  # gguf stays exact
                if decided is not None:
                    manifest.quantization["prefill_graph"] = decided
            # int8 by default where prompts can attend in float32 on a prefill graph (not under prefill_graph=False);
            # gguf folders (no prefill graph of their own: the twin becomes one) only where the cache is a large
            # share of what a step at depth reads
            share = float_cache_share(manifest, graph_bytes(target))
            cache_pays = precision == "int4" or (precision == "gguf" and share >= MIN_CACHE_SHARE)
            wanted = kv_dtype is None and cache_pays and kv.shared_buffer and prefill_graph is not False
            if kv_dtype == "int8" or wanted:
                reference = fp32_graph if kv_dtype is None else None  # None: kept only if it keeps the model
                manifest.quantization["kv_cache"] = quantize_kv_cache(out, manifest, reference=reference)
            elif kv_dtype is None and precision == "gguf" and kv.shared_buffer and prefill_graph is not False:
                manifest.quantization["kv_cache"] = {
                    "dtype": "float32", "float32_cache_share": round(share, 3), "min_share": MIN_CACHE_SHARE,
                    "criterion": f"int8 where the float32 cache at {SHARE_POSITIONS} positions is at least this "
                                 "share of the weights' bytes (and the long-context check keeps it)"}
            manifest.save(out)
        if check:
            with progress.step("validating against PyTorch"):
                manifest.validation = validate(out, manifest, src.hf_folder)
        manifest.validation["export_seconds"] = round(time.perf_counter() - started, 1)
        manifest.validation["folder_mb"] = folder_size_mb(out)
        manifest.files = file_digests(out)
        manifest.save(out)
    progress.say(_report(manifest, Path(output)))
    return manifest


@contextmanager
def damaged_weights_named(folder: Path):
    """safetensors' own error for a weight file cut short or damaged, as one that says what to do."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        raise EdgelmError(f"the weights in {folder} cannot be read ({exc}): a file is cut short or damaged; save "
                          "the model again (or download it again)") from None


def _share_tied_table(graph_path: Path, manifest: Manifest, work: Path, scorer: Scorer | None) -> None:
    """A tied embedding reads the quantized LM head's table (tied_table.py); the graph is re-saved if so.

    Given a `scorer`, sharing is kept only if it moves the next-token distributions at most
    TIED_TABLE_TOLERANCE further from the fp32 graph's (mean KLD on the held-out scoring text, in
    nats: 0.005 is about what a 0.5 % rise in perplexity means): at int4 it re-rounds the embedding to
    the LM head's levels, which Gemma 3 270M takes well and SmolLM2 (whose calibrated LM head is
    tuned as a head) less so.
    """
    model = onnx.load(str(graph_path))
    shared = share_tied_table(model, manifest.vocab_size)
    if not shared:
        return
    if scorer is not None:
        trial = work / "tied-table" / graph_path.name
        trial.parent.mkdir(parents=True, exist_ok=True)
        save_graph(model, trial)
        choice = manifest.quantization.get("choice", {})  # int4's candidate scores: same text, same ids
        if choice.get("kld", {}).get(choice.get("kept")) is not None:
            separate = {"kld": choice["kld"][choice["kept"]], "perplexity": choice["perplexity"][choice["kept"]]}
        else:
            separate = scorer.score(graph_path)
        one = scorer.score(trial)
        kept = one["kld"] <= separate["kld"] + TIED_TABLE_TOLERANCE
        manifest.quantization["tied_table_choice"] = {
            "kld": {"separate tables": round(separate["kld"], 6), "one table": round(one["kld"], 6)},
            "perplexity": {"separate tables": round(separate["perplexity"], 4), "one table": round(one["perplexity"], 4)},
            "kept": "one table" if kept else "separate tables", "tolerance": TIED_TABLE_TOLERANCE,
            "criterion": "one table if its KLD against the fp32 graph is at most the tolerance above two tables'"}
        if not kept:
            return
        for name in (graph_path.name, graph_path.name + ".data"):
            shutil.move(str(trial.parent / name), graph_path.parent / name)
    else:
        save_graph(model, graph_path)
    manifest.quantization["tied_table"] = shared


def _hf_config(folder: Path):
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError, OSError) as exc:
        raise EdgelmError(f"transformers cannot read {folder}/config.json: {exc}") from exc
    return getattr(config, "text_config", None) if config.model_type == "gemma3" else config


def _report(manifest: Manifest, output: Path) -> str:
    v = manifest.validation
    lines = [f"exported {manifest.source.get('id')} ({manifest.model_type}, {manifest.precision}, "
             f"{manifest.graph_builder} graph) to {output}: "
             f"{v.get('folder_mb')} MB in {v.get('export_seconds')} s"]
    if "max_abs_logit_diff" in v:
        lines.append(
            f"  max |logit diff| vs PyTorch {v['max_abs_logit_diff']:.2e}, greedy agreement {v['greedy_agreement']:.1%}, "
            f"identical greedy prefix {v['greedy_identical_prefix']} of {v['greedy_tokens']} tokens, "
            f"perplexity {v['perplexity']} (PyTorch fp32 {v['perplexity_pytorch_fp32']}), "
            f"KLD {v['kld_vs_pytorch_fp32']:.4f}, top-1 {v['top1_vs_pytorch_fp32']:.1%} on {v['perplexity_tokens']} tokens"
        )
    return "\n".join(lines)
