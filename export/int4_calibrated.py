"""int4 method `calibrated`: GPTQ block scales and levels from calibration activations, as MatMulNBits nodes.

Same format and kernel as round-to-nearest (`--int4-method rtn`): 4-bit levels in blocks of 32
along K, one fp32 scale per block and output, uint8 zero points only for asymmetric blocks,
accuracy level 4. Only the choice of levels and scales differs: every MatMul's weight goes
through GPTQ (gptq.py) with H = X^T X of its inputs on a held-out calibration text
(calibration.py), so rounding errors that the next inputs can cancel are cancelled. The token
embedding has no calibration inputs (its rows are looked up, not multiplied): it gets
round-to-nearest with the plain-error clipping search (same symmetry), as GatherBlockQuantized.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgelm.manifest import Manifest

from .calibration import CALIBRATION_TOKENS, POSITIONS, calibration_text, collect_hessians
from .gptq import DAMPING, gptq_int4
from .int4_blocks import RATIOS, Int4Matrix, rtn_int4
from .logits_slice import find_lm_head
from .progress import progress_bar
from .quantize import _count, drop_unused_initializers, materialize_transposed_weights, save_graph

logger = logging.getLogger(__name__)
MS = "com.microsoft"


def matmul_nbits(node: onnx.NodeProto, q: Int4Matrix, weight: str, accuracy_level: int) -> tuple[onnx.NodeProto, list]:
    """The MatMulNBits node replacing `node` (x @ W, W (K, N)), and its new initializers."""
    n, k = q.levels.shape
    inits = [numpy_helper.from_array(q.packed_levels(), f"{weight}_Q4"),
             numpy_helper.from_array(q.scales, f"{weight}_scales")]  # (N, blocks), as onnxruntime's quantizer writes
    if q.zeros is not None:
        inits.append(numpy_helper.from_array(q.packed_zeros().reshape(n, -1), f"{weight}_zero_points"))
    new = helper.make_node("MatMulNBits", [node.input[0]] + [i.name for i in inits], list(node.output),
                           name=(node.name or node.output[0]) + "_Q4", domain=MS, K=k, N=n, bits=4,
                           block_size=q.block, accuracy_level=accuracy_level)
    return new, inits


def gather_block_quantized(node: onnx.NodeProto, q: Int4Matrix, table: str) -> tuple[onnx.NodeProto, list]:
    """GatherBlockQuantized replacing an embedding lookup Gather(table (vocab, hidden), ids); zero points if `q` has them."""
    vocab = q.levels.shape[0]
    inits = [numpy_helper.from_array(q.packed_levels().reshape(vocab, -1), f"{table}_Q4"),
             numpy_helper.from_array(q.scales, f"{table}_scales")]
    if q.zeros is not None:  # two per byte along each row, as the levels
        inits.append(numpy_helper.from_array(q.packed_zeros().reshape(vocab, -1), f"{table}_zero_points"))
    new = helper.make_node("GatherBlockQuantized", [inits[0].name, node.input[1]] + [i.name for i in inits[1:]],
                           list(node.output),
                           name=(node.name or node.output[0]) + "_Q4", domain=MS, gather_axis=0, quantize_axis=1,
                           block_size=q.block, bits=4)
    return new, inits


def calibration_ids(tokenizer_path: Path, tokens: int = CALIBRATION_TOKENS) -> np.ndarray:
    """(1, tokens) ids of the held-out calibration text."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tokenizer_path)).encode(calibration_text()).ids[:tokens]
    return np.array([ids], dtype=np.int64)


def quantize_int4_calibrated(src: Path, dst: Path, manifest: Manifest, work: Path, symmetric: bool = False,
                             block_size: int = 32, accuracy_level: int = 4, lm_head_bits: int = 4,
                             tokens: int = CALIBRATION_TOKENS, hessians: dict | None = None,
                             lm_head_block_size: int | None = None) -> dict:
    """Writes `dst`: the fp32 graph `src` with GPTQ 4-bit MatMulNBits weights and a 4-bit embedding.

    Args:
        src: the fp32 graph.
        dst: the int4 graph to write (its folder holds the tokenizer named by `manifest`).
        manifest: the model's manifest (cache shapes, tokenizer file).
        work: a scratch folder.
        symmetric: zero level 8 everywhere, or a uint8 zero point per block.
        block_size: inputs per block.
        accuracy_level: MatMulNBits compute type (4: int8).
        lm_head_bits: 4, or 8 for an 8-bit round-to-nearest LM head.
        tokens: calibration positions.
        hessians: collect_hessians' result for `src`, to reuse across calls; None: collected here.
        lm_head_block_size: the LM head's inputs per block; None: `block_size`.
    Returns:
        The settings for the manifest's `quantization` block.
    """
    started = time.perf_counter()
    if hessians is None:
        ids = calibration_ids(dst.parent / manifest.tokens.tokenizer_file, tokens)
        hessians = collect_hessians(src, manifest, ids, work)
    model = onnx.load(str(src))
    materialize_transposed_weights(model)
    head_block = lm_head_block_size or block_size
    head_node = find_lm_head(model)
    head_output = head_node.output[0]  # outputs are unique, names may be empty
    head = head_node.name if lm_head_bits != 4 else None  # left to _head_8bit
    inits = {i.name: i for i in model.graph.initializer}
    nodes, added, report = [], [], {"matmuls": 0, "float_matmuls": [], "embedding": "float"}
    for node in progress_bar(list(model.graph.node), description="GPTQ int4, graph nodes"):
        is_matmul = node.op_type == "MatMul" and node.input[1] in inits and not (
            head is not None and node.output[0] == head_output)
        is_gather = node.op_type == "Gather" and node.input[0] in inits
        weight = numpy_helper.to_array(inits[node.input[1 if is_matmul else 0]]) if is_matmul or is_gather else None
        block = head_block if node.output[0] == head_output else block_size
        if weight is None or weight.ndim != 2 or weight.shape[1 if is_gather else 0] % block:
            if is_matmul:
                report["float_matmuls"].append(node.name or node.output[0])
            nodes.append(node)
            continue
        if is_matmul:  # weight (K, N)
            # act order everywhere but the LM head, whose levels may also become a tied embedding table:
            # an in-order head made the better shared table (Gemma 3 KLD 0.105 against 0.129)
            head_now = node.output[0] == head_output
            q = gptq_int4(weight, hessians[node.input[0]], symmetric, block, act_order=not head_now)
            new, tensors = matmul_nbits(node, q, node.input[1], accuracy_level)
            report["matmuls"] += 1
        else:  # embedding (vocab, hidden): rows are looked up, so plain error; the candidate's symmetry
            # (asymmetric rows: SmolLM2 KLD 0.0986 against 0.1003 with symmetric ones, for 0.4 MB of zero points)
            q = rtn_int4(weight.T, symmetric, None, block_size, RATIOS)  # blocks along hidden
            new, tensors = gather_block_quantized(node, q, node.input[0])
            report["embedding"] = (f"GatherBlockQuantized 4-bit, {'symmetric' if symmetric else 'asymmetric'}, "
                                   "clipping search")
        nodes.append(new)
        added += tensors
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(added)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    if head is not None:
        model = _head_8bit(model, head, head_block, accuracy_level)
    drop_unused_initializers(model)
    save_graph(model, dst)
    logger.info("calibrated int4: %d MatMuls in %.0f s", report["matmuls"], time.perf_counter() - started)
    return {
        "method": "calibrated (GPTQ, numpy)", "bits": 4, "block_size": block_size, "symmetric": symmetric,
        "accuracy_level": accuracy_level, "lm_head_bits": lm_head_bits, "lm_head_block_size": head_block,
        "int4_method": "calibrated",
        "calibration_tokens": int(hessians[POSITIONS]),
        "calibration_text": "calibration.calibration_text (pydoc_data sections held out from evaluation)", "damping": DAMPING,
        "clipping_ratios": [float(r) for r in RATIOS], "gptq_matmuls": report["matmuls"],
        "gptq_order": "act order (descending diag H, static groups); the LM head in order",
        "float_matmuls": report["float_matmuls"], "embedding": report["embedding"],
        "quantized_nodes": _count(dst, "MatMulNBits") + _count(dst, "GatherBlockQuantized"),
    }


def _head_8bit(model: onnx.ModelProto, head: str, block_size: int, accuracy_level: int) -> onnx.ModelProto:
    """The LM head as 8-bit round-to-nearest blocks (onnxruntime's quantizer), as `--lm-head-bits 8` does for rtn."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level,
                                          op_types_to_quantize=("MatMul",), quant_axes=(("MatMul", 0),), bits=8)
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_include=[head])
    quantizer.process()
    return quantizer.model.model
