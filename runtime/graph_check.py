"""The manifest against the graph's own inputs and outputs, checked once at load.

A manifest that disagrees with its graph (layer count, KV heads, head size, KV dtype,
vocabulary, input names) would otherwise fail on the first generate, deep inside onnxruntime,
or worse: run and read the wrong numbers.
"""

from __future__ import annotations

import re

from .errors import EdgelmError
from .manifest import Manifest

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8", "tensor(int64)": "int64",
             "tensor(int32)": "int32"}
FIX = "the manifest does not describe this graph; re-export the model"


def check_graph(manifest: Manifest, inputs: list, outputs: list, graph_name: str, logits: bool = True,
                kv_dtype: str | None = None) -> None:
    """Raises EdgelmError when `manifest` disagrees with the graph's NodeArgs `inputs`/`outputs`.

    `logits` False: the graph returns only the cache (manifest prefill_logits false), and must not
    have a logits output either (the runtime would not bind it). `kv_dtype`: the cache type this graph
    takes, where it is not kv.dtype (a float32 prefill graph beside an int8 cache).
    """
    by_name = {i.name: i for i in inputs}
    out_by_name = {o.name: o for o in outputs}
    kv = manifest.kv
    past, present = kv.past_names(), kv.present_names()

    graph_past = sorted(n for n in by_name if n not in manifest.graph_inputs and _looks_like_cache(n))
    if set(graph_past) != set(past):
        layers = len({re.sub(r"\D", "", n) for n in graph_past})
        raise EdgelmError(
            f"{graph_name} has cache inputs for {layers} layers ({', '.join(graph_past[:2])}, ...) but the manifest "
            f"says kv.num_layers={kv.num_layers} ({past[0]}, ...); {FIX}"
        )
    required = [n for n in by_name if n not in past and n not in manifest.graph_inputs]
    if required:
        raise EdgelmError(f"{graph_name} needs inputs the manifest does not list in graph_inputs: "
                          f"{', '.join(required)}; {FIX}")
    missing = [n for n in manifest.graph_inputs if n not in by_name]
    if missing:
        raise EdgelmError(f"the graph lacks inputs the manifest names: {', '.join(missing)}; re-export the model")

    dtype = kv_dtype or kv.dtype
    for name in past:
        _check_cache_tensor(by_name[name], kv, graph_name, dtype)
    for name in [manifest.logits_output, *present] if logits else present:
        if name not in out_by_name:
            raise EdgelmError(f"{graph_name} has no output {name!r}, which the manifest names; {FIX}")
    for name in present:
        _check_cache_tensor(out_by_name[name], kv, graph_name, dtype)
    if not logits:
        if manifest.logits_output in out_by_name:
            raise EdgelmError(f"{graph_name} returns {manifest.logits_output!r}, but the manifest says prefill_logits "
                              f"is false; {FIX}")
        return

    logits = out_by_name[manifest.logits_output]
    if ORT_TYPES.get(logits.type) != "float32":
        raise EdgelmError(f"{graph_name} output {logits.name} is {logits.type}; edgelm reads float32 logits; {FIX}")
    vocab = logits.shape[-1] if logits.shape else None
    if isinstance(vocab, int) and vocab != manifest.vocab_size:
        raise EdgelmError(
            f"{graph_name} returns logits over {vocab} tokens but the manifest says vocab_size={manifest.vocab_size}; {FIX}"
        )


def _check_cache_tensor(arg, kv, graph_name: str, expected: str) -> None:
    dtype = ORT_TYPES.get(arg.type, arg.type)
    if dtype != expected:
        field = "kv.dtype" if expected == kv.dtype else "kv.prefill_dtype"
        raise EdgelmError(f"{graph_name} {arg.name} is {dtype} but the manifest says {field}={expected!r}; {FIX}")
    shape = list(arg.shape or [])
    if len(shape) != 4:
        raise EdgelmError(f"{graph_name} {arg.name} has {len(shape)} axes; the cache layout needs 4; {FIX}")
    heads, head_dim = shape[1], shape[3]
    if isinstance(heads, int) and heads != kv.num_kv_heads:
        raise EdgelmError(
            f"{graph_name} {arg.name} has {heads} key/value heads but the manifest says kv.num_kv_heads="
            f"{kv.num_kv_heads}; {FIX}"
        )
    if isinstance(head_dim, int) and head_dim != kv.head_dim:
        raise EdgelmError(
            f"{graph_name} {arg.name} has head size {head_dim} but the manifest says kv.head_dim={kv.head_dim}; {FIX}"
        )


def _looks_like_cache(name: str) -> bool:
    return "past" in name or "cache" in name or name.endswith((".key", ".value"))
