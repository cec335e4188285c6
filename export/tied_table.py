"""One quantized table for a tied embedding and LM head, instead of two copies.

Models with `tie_word_embeddings` use one (vocab, hidden) matrix twice: to look tokens up and
to score the next token. After quantization the LM head is a `MatMulNBits` whose packed
levels B are (vocab, blocks, block_bytes) and the embedding a second, separately quantized
table. `GatherBlockQuantized` reads that very layout (data of rank 3, quantized along its last
axis), so the lookup can gather rows of the LM head's own levels: the table is stored and
loaded once. On SmolLM2 that is 18 MB of a 108 MB int4 folder; on Gemma 3 270M (vocab
262,144) 105 MB at int4 and 168 MB with `--precision gguf`. The embedding's values become the
LM head's (same bits, same blocks), which the export's validation then measures.

Only the small per-block scales and zero points are written a second time, in the shape the
lookup wants: (vocab, blocks, 1).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .int4_blocks import unpack_nibbles
from .quantize import drop_unused_initializers, node_attr

MS = "com.microsoft"


def share_tied_table(model: onnx.ModelProto, vocab_size: int) -> str | None:
    """Points the embedding lookup at the LM head's quantized levels, in place.

    Args:
        model: a quantized decoder graph with its initializers loaded.
        vocab_size: the model's vocabulary size (the LM head's N, the table's rows).
    Returns:
        A line for the manifest saying what was shared, or None when the graph has no
        `MatMulNBits` LM head and embedding lookup of that vocabulary to share.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    head = _lm_head(graph, inits, vocab_size)
    lookup = _embedding_lookup(graph, inits, vocab_size)
    if head is None or lookup is None:
        return None
    bits, block, k = node_attr(head, "bits"), node_attr(head, "block_size"), node_attr(head, "K")
    levels = inits[head.input[1]]
    if len(levels.dims) != 3 or levels.dims[0] != vocab_size or k % block:
        return None
    blocks = levels.dims[1]
    zeros = _zeros_per_block(inits, head, bits, vocab_size, blocks)
    if zeros is False:
        return None
    scales = numpy_helper.to_array(inits[head.input[2]]).reshape(vocab_size, blocks, 1)
    if scales.dtype != np.float32:
        return None
    stem = lookup.output[0].strip("/").replace("/", "_")
    new_inits = [numpy_helper.from_array(scales, f"{stem}_shared_scales"),
                 numpy_helper.from_array(np.array([0, 0, k], np.int64), f"{stem}_shared_shape")]
    inputs = [levels.name, lookup.input[1], new_inits[0].name]
    if zeros is not None:
        new_inits.append(numpy_helper.from_array(zeros, f"{stem}_shared_zero_points"))
        inputs.append(new_inits[-1].name)
    rows = f"{lookup.output[0]}/shared_rows"  # (batch, seq, blocks, block)
    gather = helper.make_node("GatherBlockQuantized", inputs, [rows], name=f"{lookup.output[0]}/SharedGather",
                              domain=MS, gather_axis=0, quantize_axis=2, block_size=block, bits=bits)
    reshape = helper.make_node("Reshape", [rows, new_inits[1].name], list(lookup.output),
                               name=f"{lookup.output[0]}/SharedReshape")
    position = list(graph.node).index(lookup)
    graph.node.remove(lookup)
    graph.node.insert(position, reshape)
    graph.node.insert(position, gather)
    graph.initializer.extend(new_inits)
    drop_unused_initializers(model)
    return f"embedding gathers the LM head's {bits}-bit blocks of {block} (one table for both)"


def _lm_head(graph, inits, vocab_size: int):
    """The MatMulNBits with N == vocab, packed uint8 levels and no g_idx or bias; None if not exactly one."""
    heads = [n for n in graph.node if n.op_type == "MatMulNBits" and n.domain == MS and node_attr(n, "N") == vocab_size
             and len(n.input) <= 4 and n.input[1] in inits and n.input[2] in inits]
    return heads[0] if len(heads) == 1 else None


def _embedding_lookup(graph, inits, vocab_size: int):
    """The one lookup of token ids in a (vocab, ...) table: Gather or GatherBlockQuantized on an initializer."""
    found = []
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] in inits and len(inits[node.input[0]].dims) == 2:
            if inits[node.input[0]].dims[0] == vocab_size and node_attr(node, "axis", 0) == 0:
                found.append(node)
        elif node.op_type == "GatherBlockQuantized" and node.input[0] in inits:
            if inits[node.input[0]].dims[0] == vocab_size and node_attr(node, "gather_axis", 0) == 0:
                found.append(node)
    return found[0] if len(found) == 1 else None


def _zeros_per_block(inits, head, bits: int, vocab: int, blocks: int):
    """The head's zero points as (vocab, blocks, 1) uint8; None when it has none (default levels), False if float."""
    if len(head.input) < 4 or not head.input[3]:
        return None
    packed = numpy_helper.to_array(inits[head.input[3]])
    if packed.dtype != np.uint8:
        return False  # float zero points: GatherBlockQuantized takes integer ones only
    if bits == 8:
        return packed.reshape(vocab, blocks, 1)
    if bits != 4:
        return False
    unpacked = unpack_nibbles(packed.reshape(vocab, -1))[:, :blocks]  # each row padded to whole bytes
    return np.ascontiguousarray(unpacked, dtype=np.uint8).reshape(vocab, blocks, 1)

