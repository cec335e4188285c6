"""Calibration statistics for int4: what each MatMul of the fp32 graph sees on real text.

For every MatMul with a constant weight, `collect_hessians` runs the fp32 graph on a
calibration text with the MatMul's input added as a graph output and sums `H = X^T X` over
all positions (X: (positions, K)). H is all GPTQ needs: the output error of a quantized
weight W' on these inputs is `trace((W - W')^T H (W - W'))`.

The calibration text is held out from the evaluation text: other sections of Python's
language reference (`pydoc_data.topics`) than `edgelm.quality.TOPICS`, which perplexity uses.
Those sections are split in two, alternately by name: calibration text and scoring text (for
choosing between quantized candidates), so neither fits what the other measures.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgelm.manifest import Manifest
from edgelm.quality import TOPICS

logger = logging.getLogger(__name__)

CALIBRATION_TOKENS = 8192  # positions summed into each H (2,048 gave SmolLM2 KLD 0.118, 8,192 0.101, 16,384 0.102)
CHUNK = 512  # positions per graph run (each run starts from an empty cache)
POSITIONS = "positions"  # the key under which collect_hessians records how many positions it summed


def _held_out_sections(part: int, chars: int) -> str:
    from pydoc_data.topics import topics

    names = [name for name in sorted(topics) if name not in TOPICS][part::2]
    return "\n\n".join(topics[name] for name in names)[:chars]


def calibration_text(chars: int = 80000) -> str:
    """Half of the language reference's sections that perplexity does not use (every other one by name)."""
    return _held_out_sections(0, chars)


def scoring_text(chars: int = 12000) -> str:
    """The other half: text to choose between quantized candidates on, seen by neither calibration nor evaluation."""
    return _held_out_sections(1, chars)


def weight_inputs(model: onnx.ModelProto) -> dict[str, str]:
    """{weight initializer name: the activation tensor it multiplies} for MatMuls with a 2-D constant weight."""
    shapes = {init.name: len(init.dims) for init in model.graph.initializer}
    return {node.input[1]: node.input[0] for node in model.graph.node
            if node.op_type == "MatMul" and shapes.get(node.input[1]) == 2}


def collect_hessians(graph: Path, manifest: Manifest, ids: np.ndarray, work: Path) -> dict[str, np.ndarray]:
    """{activation name: X^T X (K, K) float64} over the positions of `ids` (1, seq), for every MatMul input.

    Args:
        graph: the fp32 graph (with external data beside it).
        manifest: the model's manifest (cache shapes and graph inputs).
        ids: calibration token ids, (1, seq); run in chunks of CHUNK from an empty cache.
        work: a folder for the tapped copy of the graph.
    Returns:
        One symmetric matrix per distinct MatMul input, summed over all positions, and under
        POSITIONS the number of positions.
    """
    import onnxruntime as ort

    from edgelm.session import make_session

    from .quantize import materialize_transposed_weights, save_graph

    model = onnx.load(str(graph))
    materialize_transposed_weights(model)  # a tied LM head (Transpose of the embedding) becomes a plain weight
    taps = sorted(set(weight_inputs(model).values()))
    outputs = {o.name for o in model.graph.output}
    new_outputs = [t for t in taps if t not in outputs]
    model.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in new_outputs)
    tapped = work / "calibration" / graph.name
    tapped.parent.mkdir(parents=True, exist_ok=True)
    save_graph(model, tapped)
    del model
    session: ort.InferenceSession = make_session(tapped)
    sums: dict[str, np.ndarray] = {}
    chunk = min(CHUNK, manifest.context_length)
    for start in range(0, ids.shape[1], chunk):
        piece = ids[:, start : start + chunk]
        values = session.run(taps, empty_cache_feeds(session, manifest, piece))
        for name, value in zip(taps, values):
            x = value.reshape(-1, value.shape[-1]).astype(np.float64)  # (positions, K)
            sums[name] = sums.get(name, 0) + x.T @ x
    logger.info("calibration: %d MatMul inputs over %d positions", len(taps), ids.shape[1])
    sums[POSITIONS] = ids.shape[1]
    return sums


def empty_cache_feeds(session, manifest: Manifest, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs for one run of `ids` (1, seq) from an empty cache, every position's logits kept."""
    batch, seq = ids.shape
    kv = manifest.kv
    feeds = {"input_ids": ids.astype(np.int64)}
    names = {i.name for i in session.get_inputs()}
    if "attention_mask" in names:
        feeds["attention_mask"] = np.ones((batch, seq), dtype=np.int64)
    if "position_ids" in names:
        feeds["position_ids"] = np.arange(seq, dtype=np.int64)[None].repeat(batch, 0)
    if "num_logits_to_keep" in names:
        feeds["num_logits_to_keep"] = np.array([seq], dtype=np.int64)
    # an empty past; a window-sized cache is a buffer of its window all the same (GroupQueryAttention needs the rows)
    feeds.update({name: np.zeros((batch, kv.num_kv_heads, window, kv.head_dim), dtype=kv.dtype)
                  for name, window in zip(kv.past_names(), kv.tensor_windows())})
    return feeds
