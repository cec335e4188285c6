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
        f"  tokens: bos {tokens.bos_token_id}, eos {tokens.eos_token_ids}, "
        + ("chat template yes" if tokens.chat_template_file else "no chat template (not a chat model)"),
        f"  generation defaults: {_pairs(m.generation_defaults) or 'greedy'}",
        f"  validation: {_validation(m.validation)}",
        f"  made with: {_pairs(m.versions) or 'unknown'}; format version {m.format_version}",
    ]
    return "\n".join(lines)


def _quantization(settings: dict) -> str:
    if not settings:
        return "none (fp32 weights)"
    rest = _pairs({k: v for k, v in settings.items() if k != "method"})
    return f"{settings.get('method', '?')}" + (f" ({rest})" if rest else "")


def _validation(v: dict) -> str:
    if "max_abs_logit_diff" not in v:
        seconds = f"; export took {v['export_seconds']} s" if "export_seconds" in v else ""
        return f"not validated at export{seconds}"
    parts = [
        f"max |logit diff| vs PyTorch {v['max_abs_logit_diff']:.2e}",
        f"greedy agreement {v['greedy_agreement']:.1%}",
        f"perplexity {v['perplexity']} (PyTorch fp32 {v['perplexity_pytorch_fp32']}) on {v['perplexity_tokens']} tokens",
    ]
    if "export_seconds" in v:
        parts.append(f"export took {v['export_seconds']} s")
    return ", ".join(parts)


def _pairs(values: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())
