"""`python -m benchmarks kernels`: ONNX Runtime's matrix kernels one by one, at the row counts of decode and prompts.

Which MatMulNBits accuracy level is fastest depends on the rows (one token a step, or a prompt
chunk) and on the CPU (VNNI, AMX): on a 2-core Intel Xeon with AVX-512 VNNI (no BF16, no AMX), level 4 (int8
activations) is 2.3x faster at one row and level 0 (fp32) 1.75x faster at 256. The export's
prefill graph (export/prefill_graph.py) rests on that crossover; this command measures it on
the machine at hand, with its CPU flags, so a decision can be checked where it is used.

"int8 rows" is the int8 prefill graph's chain for one linear (export/prefill_int8.py: int8
activations per row, int8 weights per column, MatMulIntegerToFloat), quantizer included.

Each kernel is one node (int8 rows: its chain) in its own session (random weights: speed does not depend on values),
timed over the given (K, N) shapes together; GOPS counts 2 * M * K * N per product.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SMOLLM2_SHAPES = "576x960,576x576,576x3072,1536x576"  # qkv, o, gate_up, down of SmolLM2-135M
KERNELS = ("4-bit level 4", "4-bit level 0", "8-bit level 4", "8-bit level 0", "DynamicQuantizeMatMul", "fp32 MatMul",
           "int8 rows")  # the last: the int8 prefill graph's chain (export/prefill_int8.py) for one 4-bit linear


def kernel_model(kind: str, k: int, n: int, rng: np.random.Generator, block: int = 32):
    """One node computing Y (M, n) = X (M, k) @ W, in the kernel `kind` (one of KERNELS)."""
    from onnx import TensorProto, helper, numpy_helper

    inputs, inits = ["X"], []
    if kind.endswith("-bit level 4") or kind.endswith("-bit level 0"):
        bits, level = int(kind.split("-")[0]), int(kind[-1])
        blocks = -(-k // block)
        inits = [numpy_helper.from_array(rng.integers(0, 256, (n, blocks, block * bits // 8), dtype=np.uint8), "B"),
                 numpy_helper.from_array((rng.random(n * blocks, dtype=np.float32) + 0.5) / 100, "S")]
        node = helper.make_node("MatMulNBits", ["X", "B", "S"], ["Y"], domain="com.microsoft", K=k, N=n, bits=bits,
                                block_size=block, accuracy_level=level)
    elif kind == "DynamicQuantizeMatMul":
        inits = [numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "W"),
                 numpy_helper.from_array(np.full(n, 0.01, np.float32), "S")]
        node = helper.make_node("DynamicQuantizeMatMul", ["X", "W", "S"], ["Y"], domain="com.microsoft")
    elif kind == "int8 rows":
        return _int8_rows_model(kernel_model("4-bit level 4", k, n, rng, block))
    elif kind == "fp32 MatMul":
        inits = [numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "W")]
        node = helper.make_node("MatMul", ["X", "W"], ["Y"])
    else:
        raise ValueError(f"kernel {kind!r} is not one of {', '.join(KERNELS)}")
    graph = helper.make_graph([node], "kernel", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])


def _int8_rows_model(model):
    """The one-node 4-bit model as the int8 prefill graph computes it: per-row int8 X, per-column int8 W.

    The chain reads (batch, seq, K) activations, so X is unsqueezed to (1, M, K) and Y squeezed back.
    """
    from onnx import helper, numpy_helper

    from edgelm.export.prefill_int8 import rewrite_as_int8

    node = model.graph.node[0]
    node.input[0], node.output[0] = "X3", "Y3"
    rewrite_as_int8(model, Path("."), [node], {})
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    model.graph.node.insert(0, helper.make_node("Unsqueeze", ["X", "axis0"], ["X3"]))
    model.graph.node.append(helper.make_node("Squeeze", ["Y3", "axis0"], ["Y"]))
    return model


def measure(rows: list[int], shapes: list[tuple[int, int]], threads: int, repeats: int = 10) -> list[dict]:
    """{kernel, rows, ms, gops} for every kernel and row count: the shapes' products summed, median of `repeats`."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {(kind, shape): ort.InferenceSession(kernel_model(kind, *shape, rng).SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])
                for kind in KERNELS for shape in shapes}
    results = []
    for m in rows:
        inputs = {shape: rng.standard_normal((m, shape[0]), dtype=np.float32) for shape in shapes}
        for kind in KERNELS:
            total = 0.0
            for shape in shapes:
                session, feed = sessions[(kind, shape)], {"X": inputs[shape]}
                session.run(None, feed)  # warm-up
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    session.run(None, feed)
                    times.append(time.perf_counter() - started)
                total += float(np.median(times))
            ops = sum(2 * m * k * n for k, n in shapes)
            results.append({"kernel": kind, "rows": m, "ms": round(total * 1000, 4), "gops": round(ops / total / 1e9, 1)})
    return results


def to_markdown(results: list[dict], machine: dict, shapes: list[tuple[int, int]], threads: int) -> str:
    rows = sorted({r["rows"] for r in results})
    by = {(r["kernel"], r["rows"]): r for r in results}
    lines = [f"MatMul kernels, GOPS (ms) over shapes {', '.join(f'{k}x{n}' for k, n in shapes)}; {threads} threads.",
             f"Machine: {machine['cpu']}, flags {' '.join(machine['cpu_flags'])}; onnxruntime "
             f"{machine['packages'].get('onnxruntime')}.", "",
             "| rows | " + " | ".join(KERNELS) + " |", "| ---: | " + " | ".join("---:" for _ in KERNELS) + " |"]
    for m in rows:
        cells = [f"{by[(kind, m)]['gops']} ({by[(kind, m)]['ms']:.2f})" for kind in KERNELS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from edgelm.session import default_threads

    from .machine import fingerprint

    parser = argparse.ArgumentParser(prog="python -m benchmarks kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,16,32,64,256,1024", help="row counts M (default 1,16,32,64,256,1024)")
    parser.add_argument("--shapes", default=SMOLLM2_SHAPES, help=f"KxN shapes (default SmolLM2's: {SMOLLM2_SHAPES})")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: one per core)")
    parser.add_argument("--out", default=None, help="folder for kernels.json and kernels.md (default: print only)")
    args = parser.parse_args(argv)
    try:
        rows = [int(r) for r in args.rows.split(",")]
        shapes = [tuple(int(x) for x in s.lower().split("x")) for s in args.shapes.split(",")]
    except ValueError:
        parser.error(f"--rows {args.rows!r} / --shapes {args.shapes!r}: give integers like 1,64 and shapes like 576x960")
    if any(r < 1 for r in rows) or any(len(s) != 2 or min(s) < 1 or s[0] % 32 for s in shapes):
        parser.error("rows must be >= 1 and each shape KxN positive with K a multiple of 32 (the block size)")
    threads = args.threads or default_threads()
    results = measure(rows, shapes, threads)
    machine = fingerprint()
    markdown = to_markdown(results, machine, shapes, threads)
    print(markdown)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "kernels.json").write_text(json.dumps({"machine": machine, "threads": threads, "shapes": shapes,
                                                      "results": results}, indent=2) + "\n", encoding="utf-8")
        (out / "kernels.md").write_text(markdown, encoding="utf-8")
        print(f"results written to {out}/kernels.json, kernels.md", file=sys.stderr)
    return 0
