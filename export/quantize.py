"""Quantizing the fp32 graph: int8 dynamic per channel, or int4 weight-only MatMulNBits."""

from __future__ import annotations

from pathlib import Path

import onnx

from edgelm.errors import EdgelmError

DATA_SUFFIX = ".data"


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Saves with the weights in one external file beside the graph (`model.onnx.data`).

    onnx appends to an existing data file, so one left by an earlier save of the same path is
    removed first (the model's tensors are in memory by then).
    """
    (path.parent / (path.name + DATA_SUFFIX)).unlink(missing_ok=True)
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=path.name + DATA_SUFFIX, size_threshold=1024,
    )


def copy_fp32(src: Path, dst: Path) -> dict:
    """The fp32 graph as built: its files were written by save_graph already, so they are copied, not re-serialized."""
    import shutil

    if src.name != dst.name:  # the external data location inside the graph names the file
        save_graph(onnx.load(str(src)), dst)
        return {}
    for name in (src.name, src.name + DATA_SUFFIX):
        shutil.copy(src.parent / name, dst.parent / name)
    return {}


def quantize_int8(src: Path, dst: Path, method: str = "weight-only") -> dict:
    """int8 weights for every MatMul with constant weights.

    "weight-only" (the default): MatMulNBits with 8-bit symmetric blocks of 32 (activations
    stay float, int8 compute per block): nearly lossless (SmolLM2 perplexity 16.7 against 16.5).
    "dynamic": onnxruntime's quantize_dynamic, per-channel int8 weights, activations quantized
    per tensor at run time; its prompts run on AMX int8 where the CPU has it (the fastest
    prefill there), but per-tensor activations cost quality (27.7 on a Xeon; 29.3 with the
    7-bit weight range below, on an AMD EPYC).
    """
    if method == "weight-only":
        return _quantize_nbits(src, dst, bits=8, block_size=32, accuracy_level=4, symmetric=True,
                               ops=("MatMul",), lm_head_bits=8) | {"method": "onnxruntime.MatMulNBitsQuantizer (RTN), 8-bit"}
    if method != "dynamic":
        raise EdgelmError(f"int8 method {method!r} is not one of dynamic, weight-only")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    if materialize_transposed_weights(model):
        src = dst.with_name("untied.onnx")
        save_graph(model, src)
    del model
    settings = {"method": "onnxruntime.quantize_dynamic", "weight_type": "int8 (7-bit range)", "per_channel": True,
                "op_types": ["MatMul"], "activations": "uint8, dynamic per tensor"}
    # reduce_range: 7-bit weights. x86 CPUs without VNNI multiply uint8 activations by int8 weights
    # with vpmaddubsw, whose 16-bit pair sums saturate with full-range weights: on an AVX2-only EPYC
    # the 8-bit graph scored perplexity 62 million (every answer garbage). A folder may be moved to
    # such a machine, so every export takes the range that is correct everywhere.
    quantize_dynamic(
        str(src), str(dst), op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
        use_external_data_format=True, reduce_range=True,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    for leftover in dst.parent.glob("untied.onnx*"):
        leftover.unlink()
    _rename_external_data(dst)
    settings["quantized_nodes"] = _count(dst, "MatMulInteger") + _count(dst, "DynamicQuantizeMatMul")
    return settings


def quantize_int4(src: Path, dst: Path, block_size: int = 32, accuracy_level: int = 4, lm_head_bits: int = 4,
                  symmetric: bool = True, lm_head_block_size: int | None = None) -> dict:
    """Weight-only 4-bit blocks (MatMulNBits) for every MatMul with constant weights, the LM head included.

    accuracy_level 4 lets the CPU kernel multiply in int8 (VNNI/AMX). The token embedding
    table is stored in 4 bits too (GatherBlockQuantized). `lm_head_bits=8` keeps the LM head
    at 8 bits: perplexity 19.3 instead of 20.5 on SmolLM2 for 14 MB more. Which block
    symmetry is better depends on the model: see int4_choice.py. `lm_head_block_size` gives the
    LM head blocks of its own size (None: `block_size`).
    """
    if block_size < 16 or block_size & (block_size - 1):
        raise EdgelmError(f"block_size={block_size} must be a power of two >= 16 (32 is the default)")
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise EdgelmError(f"accuracy_level={accuracy_level} must be 0-4 (4: int8 compute, the fastest on CPU)")
    if lm_head_bits not in (4, 8):
        raise EdgelmError(f"lm_head_bits={lm_head_bits} must be 4 or 8")
    return _quantize_nbits(src, dst, bits=4, block_size=block_size, accuracy_level=accuracy_level,
                           symmetric=symmetric, ops=("MatMul", "Gather"), lm_head_bits=lm_head_bits,
                           lm_head_block_size=lm_head_block_size or block_size)


def _quantize_nbits(src: Path, dst: Path, bits: int, block_size: int, accuracy_level: int, symmetric: bool,
                    ops: tuple[str, ...], lm_head_bits: int, lm_head_block_size: int | None = None) -> dict:
    """MatMulNBits for MatMuls (GatherBlockQuantized for a Gather in `ops`); the LM head at `lm_head_bits`
    in blocks of `lm_head_block_size` (None: `block_size`)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from .logits_slice import find_lm_head

    model = onnx.load(str(src))
    materialize_transposed_weights(model)
    head = find_lm_head(model).name

    head_block = lm_head_block_size or block_size

    def config(n_bits: int, op_types: tuple[str, ...], block: int = block_size):
        return DefaultWeightOnlyQuantConfig(
            block_size=block, is_symmetric=symmetric, accuracy_level=accuracy_level, op_types_to_quantize=op_types,
            quant_axes=(("MatMul", 0), ("Gather", 1)), bits=n_bits,
        )

    separate_head = lm_head_bits != bits or head_block != block_size
    quantizer = MatMulNBitsQuantizer(model, algo_config=config(bits, ops), nodes_to_exclude=[head] if separate_head else None)
    quantizer.process()
    model = quantizer.model.model
    if separate_head:
        quantizer = MatMulNBitsQuantizer(model, algo_config=config(lm_head_bits, ("MatMul",), head_block),
                                         nodes_to_include=[head])
        quantizer.process()
        model = quantizer.model.model
    drop_unused_initializers(model)
    save_graph(model, dst)
    return {
        "method": "onnxruntime.MatMulNBitsQuantizer (RTN)", "bits": bits, "block_size": block_size,
        "symmetric": symmetric, "accuracy_level": accuracy_level, "op_types": list(ops), "lm_head_bits": lm_head_bits,
        "lm_head_block_size": head_block,
        "quantized_nodes": _count(dst, "MatMulNBits") + _count(dst, "GatherBlockQuantized"),
    }


def materialize_transposed_weights(model: onnx.ModelProto) -> int:
    """Replaces `Transpose(initializer)` feeding a MatMul with a transposed initializer.

    optimum stores a tied LM head as Transpose(embedding table) to save disk; the quantizers
    only quantize MatMuls whose weight is an initializer, so the LM head would stay fp32
    (the largest single matrix in a small model). Returns how many were replaced.
    """
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced = []
    for node in model.graph.node:
        if node.op_type != "Transpose" or node.input[0] not in inits:
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type != "MatMul" or u.input[1] != node.output[0] for u in users):
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        weight = numpy_helper.to_array(inits[node.input[0]]).transpose(perm)
        model.graph.initializer.append(numpy_helper.from_array(weight.copy(), node.output[0]))
        replaced.append(node)
    for node in replaced:
        model.graph.node.remove(node)
    return len(replaced)


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Removes initializers no node or output reads (a quantizer leaves the originals of replaced weights behind)."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def node_attr(node: onnx.NodeProto, name: str, default=None):
    """The value of `node`'s attribute `name`, or `default` if it has none."""
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _rename_external_data(path: Path) -> None:
    """quantize_dynamic names the data file itself; re-save so every precision has `model.onnx.data`."""
    model = onnx.load(str(path))
    for stale in path.parent.glob("*.data"):
        stale.unlink()
    save_graph(model, path)


def _count(path: Path, op_type: str) -> int:
    return sum(n.op_type == op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


QUANTIZERS = {"fp32": copy_fp32, "int8": quantize_int8, "int4": quantize_int4}
