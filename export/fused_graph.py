"""edgelm's fused graph: which family file builds a model, or why none can.

Families are looked up by model_type; each family file (fused_llama.py, fused_gemma3.py,
fused_phi3.py) has `unsupported_reason(config)` and `build(builder)`, and writes its layers
in the shared blocks of fused_builder.py. A model no family covers, or a setting its family
does not write, returns a reason, and export uses optimum's graph.
"""

from __future__ import annotations

from pathlib import Path

from edgelm.errors import EdgelmError

from . import fused_gemma3, fused_llama, fused_phi3
from .fused_builder import GraphBuilder, load_weights
from .quantize import save_graph

FAMILIES = {model_type: family for family in (fused_llama, fused_gemma3, fused_phi3) for model_type in family.MODEL_TYPES}


def read_config(hf_folder: Path) -> dict:
    """The folder's config as transformers completes it (defaults filled in, layer_types resolved)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(hf_folder).to_dict()


def unsupported_reason(config: dict) -> str | None:
    """Why this config cannot use the fused graph, or None when it can."""
    family = FAMILIES.get(config.get("model_type"))
    if family is None:
        return f"model_type {config.get('model_type')!r} is not one of {', '.join(FAMILIES)}"
    return family.unsupported_reason(config)


def builder_name(config: dict) -> str:
    """What the manifest records as graph_builder: "fused-llama", "fused-gemma3", "fused-phi3"."""
    return "fused-" + FAMILIES[config["model_type"]].__name__.rsplit(".fused_", 1)[1]


def build_fused_graph(hf_folder: Path, out_path: Path, config: dict | None = None, kv_dtype: str = "float32") -> Path:
    """Writes the fused fp32 graph for the model in `hf_folder` to `out_path` (with external data).

    `kv_dtype` "float16" keeps the KV cache (and attention) in half precision: half the bytes
    read per step at long contexts; the weights and the rest of the graph stay as they are.
    """
    config = config or read_config(hf_folder)
    builder = GraphBuilder(config, load_weights(hf_folder), kv_dtype)
    try:
        FAMILIES[config["model_type"]].build(builder)
    except KeyError as exc:  # a checkpoint laid out differently from what transformers saves for this model_type
        raise EdgelmError(f"the fused {builder_name(config)} graph needs the weight {exc.args[0]!r}, which "
                          f"{hf_folder} does not have; use --graph optimum") from exc
    model = builder.finish(f"edgelm-{builder_name(config)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_graph(model, out_path)
    return out_path
