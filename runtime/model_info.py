"""A model folder's manifest in words, as `edgelm info DIR` prints it."""

from __future__ import annotations

from pathlib import Path

from .manifest import Manifest


def describe(folder: str | Path, manifest: Manifest | None = None) -> str:
    """Lines that say what the model in `folder` is, how it was made, and how well it did at export.

    Args:
        folder: an edgelm model folder.
        manifest: its manifest, if already loaded.
    Raises:
        EdgelmError: when the folder has no readable manifest.
    Example:
        print(describe("smollm2-int4"))
    """
    folder = Path(folder)
    m = manifest or Manifest.load(folder)
    kv, tokens = m.kv, m.tokens
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
    params = f"{m.parameters / 1e6:.1f} M parameters, " if m.parameters else ""
    lines = [
        f"{folder}: {m.model_type}, {m.precision}, {m.graph_builder} graph, {size:.1f} MB",
        f"  source: {m.source.get('kind', '?')} {m.source.get('id', '?')}"
        + (f" (sha256 {m.source['sha256'][:12]}...)" if m.source.get("sha256") else ""),
        f"  model: {params}vocabulary {m.vocab_size}, context {m.context_length} tokens",
        f"  cache: {kv.num_layers} layers x {kv.num_kv_heads} kv heads x {kv.head_dim}, {kv.dtype}, "
        + ("one shared buffer updated in place" if kv.shared_buffer else "concatenated each step"),
        f"  quantization: {_quantization(m.quantization)}",
        *(f"  {line}" for line in _decisions(m.quantization)),
        *([f"  prefill graph: {_prefill(m)}"] if m.prefill_graph_file or "prefill_graph" in m.quantization else []),
        f"  tokens: bos {tokens.bos_token_id}, eos {tokens.eos_token_ids}, "
        + ("chat template yes" if tokens.chat_template_file else "no chat template (not a chat model)"),
        f"  generation defaults: {_pairs(m.generation_defaults) or 'greedy'}",
        f"  validation: {_validation(m.validation)}",
        f"  made with: {_pairs(m.versions) or 'unknown'}; format version {m.format_version}, "
        f"export revision {m.export_revision}",
    ]
    return "\n".join(lines)


DECISIONS = ("choice", "tied_table_choice", "prefill_graph", "kv_cache")  # the export's measured choices, each on a line of its own


def _quantization(settings: dict) -> str:
    if not settings:
        return "none (fp32 weights)"
    rest = _pairs({k: v for k, v in settings.items() if k not in ("method", *DECISIONS)})
    return f"{settings.get('method', '?')}" + (f" ({rest})" if rest else "")


def _decisions(settings: dict) -> list[str]:
    """The int4 candidates', the tied table's and the KV cache's scores, in words (the manifest's `choice` records)."""
    lines = []
    kv_cache = settings.get("kv_cache")
    for what, choice in (("int4 candidates", settings.get("choice")), ("tied table", settings.get("tied_table_choice")),
                         ("KV cache at long context", kv_cache.get("choice") if isinstance(kv_cache, dict) else None)):
        if not isinstance(choice, dict) or not isinstance(choice.get("kld"), dict):
            continue
        kept = choice.get("kept")
        scores = ", ".join(f"{name} {kld:.4f}" + (" (kept)" if name == kept else "")
                           for name, kld in sorted(choice["kld"].items(), key=lambda item: item[1]))
        tolerance = f", tolerance {choice['tolerance']}" if "tolerance" in choice else ""
        lines.append(f"{what}: mean KLD against fp32 {scores}{tolerance}")
    if isinstance(kv_cache, dict) and "float32_cache_share" in kv_cache:  # gguf: the cache too small a share to pay
        lines.append(f"KV cache: float32, its bytes at depth {kv_cache['float32_cache_share']} of the weights' "
                     f"(int8 from {kv_cache.get('min_share', '?')})")
    return lines


def _prefill(m: Manifest) -> str:
    """Which prefill graph the folder has and why, from `quantization.prefill_graph` (the export's timings)."""
    record = m.quantization.get("prefill_graph")
    runs = f"prompt runs of {m.prefill_min_tokens}+ tokens" if m.prefill_min_tokens else "long prompt runs"
    if not m.prefill_logits:
        runs += ", all but the last token (cache only: the logits come from the decode graph)"
    if not isinstance(record, dict):
        return f"{m.prefill_graph_file}, for {runs}"
    if not record.get("measured"):
        return f"{m.prefill_graph_file} ({record.get('compute', '?')}, kept without timing), for {runs}"
    candidates = record.get("candidates", {})
    timed = ", ".join(f"{kind} {c['speedup']:.2f}x" + (_int8_quality(c) if kind == "int8" else "")
                      for kind, c in candidates.items() if isinstance(c, dict) and "speedup" in c)
    chunk = f"a {record.get('tokens', '?')}-token chunk against the decode graph: {timed or 'no candidate'}"
    if record.get("kept"):
        return f"{m.prefill_graph_file} ({record.get('compute')}), for {runs}; {chunk}"
    dropped = f"({chunk}; one is kept at {record.get('min_speedup', '?')}x or more within the quality bound)"
    if m.prefill_graph_file and m.prefill_graph_file == m.kv.float_graph_file:
        return (f"{m.prefill_graph_file}, the decode graph with a float32 cache, for {runs} beside the int8 cache; "
                f"none of its own {dropped}")
    return f"none {dropped}"


def _int8_quality(candidate: dict) -> str:
    if "kld" not in candidate:
        return ""
    share = f"on {candidate['share']:.0%} of the activations, " if candidate.get("share", 1.0) != 1.0 else ""
    return f" ({share}scoring KLD {candidate['kld']:.4f} against the decode graph's {candidate['decode_graph_kld']:.4f})"


def _validation(v: dict) -> str:
    if "max_abs_logit_diff" not in v:
        seconds = f"; export took {v['export_seconds']} s" if "export_seconds" in v else ""
        return f"not validated at export{seconds}"
    parts = [
        f"max |logit diff| vs PyTorch {v['max_abs_logit_diff']:.2e}",
        f"greedy agreement {v['greedy_agreement']:.1%}",
        f"perplexity {v['perplexity']} (PyTorch fp32 {v['perplexity_pytorch_fp32']}) on {v['perplexity_tokens']} tokens",
    ]
    if "kld_vs_pytorch_fp32" in v:
        parts.append(f"KLD {v['kld_vs_pytorch_fp32']:.4f} and top-1 {v['top1_vs_pytorch_fp32']:.1%} against PyTorch fp32")
    if "export_seconds" in v:
        parts.append(f"export took {v['export_seconds']} s")
    return ", ".join(parts)


def _pairs(values: dict) -> str:
    return ", ".join(f"{k} {_value(v)}" for k, v in values.items())


def _value(value) -> str:
    if isinstance(value, list) and len(value) > 4:  # e.g. the clipping ratios searched
        return f"{len(value)} values from {value[0]} to {value[-1]}"
    return str(value)
