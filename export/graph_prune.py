"""Removing a graph output and every node and initializer that only it needed.

The prefill graph leaves out its logits (prefill_graph.py): its LM head would otherwise be packed a
second time by its own session, beside the decode graph's (Gemma 3 270M: ~105 MB of a 262,144-row
4-bit table), to compute one row per prompt that the decode graph can compute as well.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from .quantize import drop_unused_initializers


def remove_output(graph_path: Path, output: str) -> int:
    """Rewrites the graph at `graph_path` without `output` and the nodes only it read; returns how many went.

    Only the .onnx file is written: external tensors stay where they are (a dropped initializer's
    bytes are left unread in its data file). Graph inputs stay, used or not, so the interface
    the runtime binds does not change.
    """
    model = onnx.load(str(graph_path), load_external_data=False)
    outputs = [o for o in model.graph.output if o.name != output]
    if len(outputs) == len(model.graph.output):
        raise ValueError(f"{graph_path.name} has no output {output!r}")
    needed = {o.name for o in outputs}
    kept = []
    for node in reversed(model.graph.node):  # ONNX keeps nodes in topological order
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(_reads(node))
    removed = len(model.graph.node) - len(kept)
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    drop_unused_initializers(model)
    onnx.save(model, str(graph_path))
    return removed


def _reads(node: onnx.NodeProto) -> set[str]:
    """The names `node` reads, including those its subgraphs (If, Loop, Scan) take from the outer scope."""
    names = {name for name in node.input if name}
    for attr in node.attribute:
        for graph in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in graph.node:
                names |= _reads(inner)
    return names
