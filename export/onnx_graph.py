"""Exporting the decoder with optimum, and reading its KV interface back from the graph."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

import onnx

from edgelm.errors import EdgelmError
from edgelm.manifest import KVCacheSpec

from .logits_slice import add_logits_slice
from .quantize import save_graph

TASK = "text-generation-with-past"
PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")

GRAPHS = ("auto", "fused", "optimum")
logger = logging.getLogger(__name__)


def export_fp32_graph(hf_folder: Path, out_dir: Path, graph: str = "auto",
                      kv_dtype: str | None = "float32") -> tuple[Path, str]:
    """Writes the fp32 graph with the KV cache as inputs/outputs; returns its path and which builder made it.

    "auto" takes edgelm's fused graph where the architecture allows (fast decoding) and
    optimum's exporter everywhere else; "fused" and "optimum" force one. `kv_dtype` "float16"
    (a half-precision cache) and "int8" need the fused graph; an int8 cache is made later, from a
    float32 one (kv_int8.py). None (int8 where it keeps the model) builds float32 on either graph.
    """
    from .fused_graph import build_fused_graph, builder_name, read_config, unsupported_reason

    if graph not in GRAPHS:
        raise EdgelmError(f"graph {graph!r} is not one of {', '.join(GRAPHS)}")
    config = read_config(hf_folder)
    reason = unsupported_reason(config)
    if reason is None and not any(hf_folder.glob("*.safetensors")):
        reason = "the fused builder reads safetensors weights and the folder has none"
    if graph == "fused" and reason:
        raise EdgelmError(f"the fused graph cannot be built: {reason}; use --graph optimum")
    if kv_dtype not in (None, "float32") and (graph == "optimum" or reason):
        raise EdgelmError(f"kv_dtype={kv_dtype!r} needs edgelm's fused graph, and this export uses optimum's "
                          f"({reason or 'graph=optimum'}); use kv_dtype='float32'")
    if graph == "auto" and reason:  # said, not silent: the fused graph is the fast one (and the int8 cache's)
        logger.info("the fused graph does not fit this model (%s): exporting optimum's graph (no int8 KV cache)",
                    reason)
    if graph != "optimum" and reason is None:
        built_kv = "float32" if kv_dtype in (None, "int8") else kv_dtype
        path = build_fused_graph(hf_folder, out_dir / "fused" / "model.onnx", config, built_kv)
        return path, builder_name(config)
    return export_optimum_graph(hf_folder, out_dir), "optimum"


def export_optimum_graph(hf_folder: Path, out_dir: Path) -> Path:
    """Runs optimum's exporter; returns the fp32 graph with the logits slice added."""
    from optimum.exporters.onnx import main_export
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(hf_folder).model_type
    check_supported(model_type)
    noise = io.StringIO()  # torch.onnx's tracer warnings say nothing the user can act on
    with warnings.catch_warnings(), contextlib.redirect_stdout(noise):
        warnings.simplefilter("ignore")
        main_export(str(hf_folder), str(out_dir), task=TASK, do_validation=False, library_name="transformers")
    graph = out_dir / "model.onnx"
    if not graph.is_file():
        raise EdgelmError(f"optimum wrote no model.onnx for {hf_folder}")
    model = onnx.load(str(graph))
    add_logits_slice(model)
    sliced = out_dir / "sliced" / "model.onnx"
    sliced.parent.mkdir()
    save_graph(model, sliced)
    return sliced


def check_supported(model_type: str) -> None:
    from optimum.exporters.tasks import TasksManager

    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(model_type, exporter="onnx", library_name="transformers")
    except KeyError:
        tasks = {}
    if TASK not in tasks:
        raise EdgelmError(
            f"optimum's ONNX exporter does not support {model_type!r} for {TASK}; "
            "edgelm can export the architectures optimum supports (gpt2, llama, gemma3_text, qwen2, mistral, phi3, ...)"
        )


def _window_sizes(model: onnx.ModelProto, layers: int) -> list[int] | None:
    """Per layer, the window of a GroupQueryAttention that keeps a window-sized cache (0: full); None if none do."""
    windows = [0] * layers
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "GroupQueryAttention" and attrs.get("sliding_window_cache") == 1:
            windows[int(PAST.match(node.input[3]).group(1))] = int(attrs["local_window_size"])
    return windows if any(windows) else None


def read_interface(graph_path: Path) -> tuple[list[str], KVCacheSpec]:
    """The graph's non-cache inputs and its KV cache layout, as the manifest records them."""
    model = onnx.load(str(graph_path), load_external_data=False)
    inputs, layers, kv = [], set(), {}
    for value in model.graph.input:
        match = PAST.match(value.name)
        if not match:
            inputs.append(value.name)
            continue
        layers.add(int(match.group(1)))
        dims = [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
        kv[value.name] = (dims, onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name)
    if not layers or sorted(layers) != list(range(len(layers))):
        raise EdgelmError(f"{graph_path} has no past_key_values.N.key/value inputs in order; cannot run it with a cache")
    (_, heads, _, head_dim), dtype = kv["past_key_values.0.key"]
    if not isinstance(heads, int) or not isinstance(head_dim, int):
        raise EdgelmError(f"{graph_path}: the cache's head count and head size must be fixed, got {heads}, {head_dim}")
    outputs = {o.name for o in model.graph.output}
    spec = KVCacheSpec(num_layers=len(layers), num_kv_heads=heads, head_dim=head_dim, dtype=dtype,
                       windows=_window_sizes(model, len(layers)))
    missing = [n for n in ["logits", *spec.present_names()] if n not in outputs]
    if missing:
        raise EdgelmError(f"{graph_path} lacks outputs {', '.join(missing[:3])}; cannot run it with a cache")
    return inputs, spec
