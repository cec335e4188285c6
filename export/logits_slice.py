"""Letting the graph compute logits only for the positions the caller needs.

optimum's graph applies the LM head to every position. During generation only the last
position's logits are used, so a 2,048-token prompt would compute (and allocate) 2,047 rows of
vocabulary-sized logits for nothing: 400 MB for SmolLM2. We add an input `num_logits_to_keep`
(as transformers' `logits_to_keep`) and slice the hidden states before the LM head:
the runtime feeds 1 while generating and the sequence length when it needs every position
(perplexity).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from edgelm.errors import EdgelmError

INPUT = "num_logits_to_keep"
HEADS = ("MatMul", "Gemm", "MatMulNBits")
PASS_THROUGH = ("Mul", "Div", "Tanh", "Add", "Cast", "Softcap")  # elementwise steps after the LM head (e.g. softcapping)


def find_lm_head(model: onnx.ModelProto, logits: str = "logits") -> onnx.NodeProto:
    """The matrix multiply that makes `logits`, looking back through elementwise steps such as softcapping."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(logits)
    while node is not None and node.op_type in PASS_THROUGH:
        node = next((producers[i] for i in node.input if i in producers), None)
    if node is None or node.op_type not in HEADS:
        raise EdgelmError("could not find the LM head MatMul feeding 'logits'; the graph layout is unexpected")
    return node


def add_logits_slice(model: onnx.ModelProto, logits: str = "logits") -> None:
    """Inserts Slice(hidden, -num_logits_to_keep:, axis 1) before the LM head feeding `logits`."""
    node = find_lm_head(model, logits)
    hidden = node.input[0]  # (batch, seq, hidden)
    sliced = hidden + "_last_positions"
    model.graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.INT64, [1]))
    model.graph.initializer.extend([
        helper.make_tensor("logits_slice_end", TensorProto.INT64, [1], [2**62]),
        helper.make_tensor("logits_slice_axis", TensorProto.INT64, [1], [1]),
    ])
    new_nodes = [
        helper.make_node("Neg", [INPUT], ["logits_slice_start"], name="logits_slice/Neg"),
        helper.make_node("Slice", [hidden, "logits_slice_start", "logits_slice_end", "logits_slice_axis"], [sliced],
                         name="logits_slice/Slice"),
    ]
    node.input[0] = sliced
    position = list(model.graph.node).index(node)
    for offset, new in enumerate(new_nodes):
        model.graph.node.insert(position + offset, new)
    for output in model.graph.output:
        if output.name == logits:  # (batch, kept positions, vocab)
            output.type.tensor_type.shape.dim[1].dim_param = "kept_positions"


def keep_all_logits(model: onnx.ModelProto) -> None:
    """The reverse, for tools that expect optimum's interface: the input becomes a constant 'all positions'."""
    inputs = [i for i in model.graph.input if i.name == INPUT]
    for value in inputs:
        model.graph.input.remove(value)
        model.graph.initializer.append(helper.make_tensor(INPUT, TensorProto.INT64, [1], [2**62]))
