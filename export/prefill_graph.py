"""A second graph for long prompts: the same weights, its matrix products computed in fp32.

`MatMulNBits` at accuracy level 4 quantizes the activations to int8 and multiplies with VNNI:
the fastest kernel at one token a step, but not for a prompt. On a 2-core AVX-512 VNNI EPYC
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
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

PREFILL_FILE = "prefill.onnx"
MS = "com.microsoft"


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
