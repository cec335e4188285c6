"""Finding each row of an ONNX weight among a GGUF file's quantized rows, by value.

transformers dequantizes a GGUF into float32 (gguf's own arithmetic), reorders some rows (the
q/k projections of llama-family models) and the graph builders stack and transpose them
(q, k, v into one MatMul; the tied LM head). Whatever was done, every output column of an
fp32 MatMul weight is, bit for bit, one dequantized row of one GGUF tensor. So rows are
matched by a hash of their float32 bytes: no table of tensor names per architecture, and the
same code serves edgelm's fused graph and optimum's generic one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.errors import EdgelmError

from .gguf_blocks import FLOAT_TYPES, SUPPORTED_TYPES, BlockWeights, check_against_gguf, decode_tensor


def row_digest(row: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(row, dtype=np.float32).tobytes(), digest_size=16).digest()


@dataclass
class GGUFRows:
    """The quantized 2-D tensors of a GGUF file, and where each distinct row lives."""

    tensors: dict[str, BlockWeights]  # GGUF tensor name -> its levels, scales and offsets
    where: dict[bytes, tuple[str, int]]  # row digest -> (tensor name, row)
    types: dict[str, str]  # GGUF tensor name -> type name, for every 2-D tensor

    def locate(self, matrix: np.ndarray) -> list[tuple[str, int]] | None:
        """(tensor, row) for each row of `matrix` (rows, cols), or None when any row is not a GGUF row."""
        found = []
        for row in matrix:
            hit = self.where.get(row_digest(row))
            if hit is None:
                return None
            found.append(hit)
        return found

    def gather(self, found: list[tuple[str, int]]) -> list[tuple[BlockWeights, np.ndarray]]:
        """Groups located rows by source tensor, keeping order: [(weights of those rows, their positions)]."""
        parts: list[tuple[BlockWeights, np.ndarray]] = []
        names = np.array([name for name, _ in found])
        rows = np.array([row for _, row in found])
        start = 0
        while start < len(found):  # runs of consecutive rows from one tensor
            end = start + 1
            while end < len(found) and names[end] == names[start]:
                end += 1
            parts.append((self.tensors[names[start]].take_rows(rows[start:end]), np.arange(start, end)))
            start = end
        return parts


def read_gguf_rows(path: Path) -> GGUFRows:
    """Decodes every quantized 2-D tensor of the GGUF at `path` (checked bit for bit against gguf)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tensors, where, types, unsupported = {}, {}, {}, []
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        if len(tensor.shape) != 2:
            continue
        types[tensor.name] = kind
        if kind in FLOAT_TYPES:
            continue  # float weights stay float in the graph: already exact
        if kind not in SUPPORTED_TYPES:
            unsupported.append(f"{tensor.name} ({kind})")
            continue
        cols, rows = int(tensor.shape[0]), int(tensor.shape[1])  # GGUF lists the fastest axis first
        raw = np.asarray(tensor.data)
        weights = decode_tensor(kind, raw, rows, cols, check=False)
        values = weights.dequantize()  # once: checked against gguf, then hashed
        check_against_gguf(kind, raw, values)
        tensors[tensor.name] = weights
        for i, row in enumerate(values):
            where.setdefault(row_digest(row), (tensor.name, i))
    if unsupported:
        raise EdgelmError(
            f"{path.name} holds tensors of types --precision gguf cannot carry over exactly: "
            f"{', '.join(unsupported[:4])}{' ...' if len(unsupported) > 4 else ''}; it carries "
            f"{', '.join(SUPPORTED_TYPES + FLOAT_TYPES)}. Export with --precision int4 or int8 instead"
        )
    return GGUFRows(tensors, where, types)
