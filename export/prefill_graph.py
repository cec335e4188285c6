"""A second graph for long prompts: the same weights, its matrix products computed in fp32.

`MatMulNBits` at accuracy level 4 quantizes the activations to int8 and multiplies with VNNI:
the fastest kernel at one token a step, but not for a prompt. On a 2-core Intel Xeon with AVX-512 VNNI
(no AMX; ONNX Runtime 1.32, SmolLM2's shapes, 2 threads) level 0 (B dequantized to fp32 tiles,
fp32 GEMM) runs the same 4-bit weights 1.75x faster at 256 rows (261 against 149 GOPS) and
1.5x at 1,024, while at one row it is 2.3x slower; the two cross at about 32-64 rows.

8-bit blocks are another matter: level 0 has no packed kernel for them and dequantizes B on
every call (256 rows: 16.6 against 10.7 ms; one row: 44x slower), so they keep level 4.

So the export writes `prefill.onnx`: the decoder graph with every 4-bit MatMulNBits at level 0
but the LM head (which a prompt runs on its last position only), its initializers read from the
very same `model.onnx.data` (the file is a few hundred KB). The runtime runs prompt chunks
of at least PREFILL_GRAPH_MIN_TOKENS through it and the steps through the decode graph, on one
KV cache. Its fp32 products are also the more exact ones: the prompt's activations are not
rounded to int8.

The second session packs its own copy of the weights: about 100 MB more memory for SmolLM2
int4 (prompts 1.3-1.4x faster), 350 MB for Gemma 3 270M (only 1.06-1.16x: its shapes gain
less, 220 against 178 GOPS). So by default the export times one chunk on both graphs and keeps
the prefill graph only if it is at least MIN_SPEEDUP faster, recording both times: a choice
made on the exporting machine, for the machine it runs on (`prefill_graph=True/False` decides
instead).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgelm.manifest import Manifest
from edgelm.session import PREFILL_CHUNK, GraphRunner

PREFILL_FILE = "prefill.onnx"
MS = "com.microsoft"
# a second copy of the weights in memory must buy at least this much on a first prompt chunk (later chunks
# gain less: attention over the past is the same on both graphs). Measured: SmolLM2 int4 1.37 (2,048-token
# prompts 1.30x), Gemma 3 270M int4 1.23 (1.06x), SmolLM2 gguf 1.20 (1.15x)
MIN_SPEEDUP = 1.3
TIMED_RUNS = 5


def add_prefill_graph(folder: Path, manifest: Manifest, measure: bool = True) -> dict | None:
    """Writes the prefill graph into `folder` and names it in `manifest` if it pays; returns what was decided.

    With `measure`, one PREFILL_CHUNK-token chunk is timed on both graphs (interleaved, medians of
    TIMED_RUNS) and the graph is kept only at MIN_SPEEDUP or more; without, it is kept. None when
    the graph has nothing to change (write_prefill_graph).
    """
    name = write_prefill_graph(folder / manifest.graph_file, manifest.vocab_size)
    if name is None:
        return None
    if not measure:
        manifest.prefill_graph_file = name
        return {"kept": True, "measured": False}
    decode_s, prefill_s = _chunk_seconds(folder, manifest, name)
    kept = decode_s >= prefill_s * MIN_SPEEDUP
    if kept:
        manifest.prefill_graph_file = name
    else:
        (folder / name).unlink()
    return {"kept": kept, "measured": True, "tokens": PREFILL_CHUNK, "decode_graph_s": round(decode_s, 4),
            "prefill_graph_s": round(prefill_s, 4), "speedup": round(decode_s / prefill_s, 3),
            "min_speedup": MIN_SPEEDUP}


def _chunk_seconds(folder: Path, manifest: Manifest, name: str) -> tuple[float, float]:
    """Median seconds of one prompt chunk on the decode graph and on the prefill graph `name`."""
    runners = [GraphRunner(folder, replace(manifest, prefill_graph_file=None), prefill_graph=False),
               GraphRunner(folder, replace(manifest, graph_file=name, prefill_graph_file=None), prefill_graph=False)]
    tokens = min(PREFILL_CHUNK, manifest.context_length)
    ids = np.random.default_rng(0).integers(0, manifest.vocab_size, size=(1, tokens), dtype=np.int64)
    times: list[list[float]] = [[], []]
    for run in range(TIMED_RUNS + 1):  # the first round warms both up
        for runner, seconds in zip(runners, times):
            started = time.perf_counter()
            runner.forward(ids, runner.new_cache())
            if run:
                seconds.append(time.perf_counter() - started)
    del runners  # the sessions let go of the files
    return float(np.median(times[0])), float(np.median(times[1]))


def write_prefill_graph(graph_path: Path, vocab_size: int) -> str | None:
    """Writes PREFILL_FILE beside `graph_path`, sharing its external data file; returns its name.

    None (nothing written) when no 4-bit MatMulNBits below the LM head computes at a level other than 0,
    or when the graph keeps its weights inside the .onnx file (a copy would double them).
    """
    model = onnx.load(str(graph_path), load_external_data=False)
    if not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return None
    changed = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or node.domain != MS or _attr(node, "N") == vocab_size:
            continue
        if _attr(node, "bits") != 4:  # 8-bit blocks have no fp32 kernel of their own: level 0 is 1.5-40x slower
            continue
        for attr in node.attribute:
            if attr.name == "accuracy_level" and attr.i != 0:
                attr.i = 0
                changed += 1
    if not changed:
        return None
    onnx.save(model, str(graph_path.parent / PREFILL_FILE))  # the tensors stay external: only the nodes are written
    return PREFILL_FILE


def _attr(node: onnx.NodeProto, name: str):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None
