"""`python -m benchmarks profile FOLDER`: where a long prompt's and a step's time go, beside this machine's rates.

One PROMPT-token prompt, then STEPS decode steps, on an exported folder: timed twice as edgelm runs them (the second
time is reported), then once more under onnxruntime's profiler, on edgelm's own sessions (the decode graph, and the
prefill graph where the folder has one) made as a load makes them, weights moved to huge pages as a load moves them,
with profiling on. The profiler costs time of its own (~10 us a node: SmolLM2's step ~7 ms plain, ~12 ms profiled), so
its figures are shares and rates of the kernels, not the step's time. Kernel time is summed per operator type for the
prompt and for a step, and two rates are set beside what this machine reaches:

- decode: the weight bytes the matrix kernels read a step (their initializers' sizes in the graph) per second of their
  time, against the memory bandwidth onnxruntime reaches streaming one large array (`ReduceSum`, a row a thread);
- prompt: the attention arithmetic (4 x heads x head_dim per query-key pair, the causal pairs only, each sliding-window
  layer's window kept) per second of `GroupQueryAttention`'s time, against onnxruntime's fp32 `MatMul` on one
  1,024 x 1,024 x 1,024 product and on attention's own shape (a 256-row chunk of every head against PROMPT keys).

So a step's or a prompt's distance from what the hardware allows is measured, not assumed: a decode step whose
kernels stream at half the bandwidth is bound by the kernel, and a prompt whose attention already runs near the fp32
GEMM rate is bound by arithmetic (its floor: the attention's FLOPs at that rate).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

MATRIX_OPS = {"MatMulNBits", "MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeMatMul", "MatMul", "Gemm",
              "FusedMatMul"}  # the nodes whose weights a step streams (gathers read one row of theirs: not counted)
TOP = 10  # operator types listed per session


def profiled_runs(path: Path) -> list[list[dict]]:
    """The runs of one onnxruntime profile, in order, each its node events: {name, op, us, params (bytes), shapes}."""
    runs, nodes = [], []
    for event in json.loads(path.read_text()):
        if event.get("name") == "model_run":
            runs.append((event["ts"], event["ts"] + event["dur"]))
        elif event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            args = event.get("args", {})
            nodes.append({"ts": event["ts"], "name": event["name"][: -len("_kernel_time")],
                          "op": args.get("op_name", "?"), "us": float(event.get("dur", 0)),
                          "params": int(args.get("parameter_size", 0) or 0),
                          "shapes": [next(iter(s.values())) for s in args.get("input_type_shape", []) if s]})
    runs.sort()
    return [sorted((n for n in nodes if begin <= n["ts"] <= end), key=lambda n: n["ts"]) for begin, end in runs]


def by_op(events: list[dict], runs: int = 1) -> list[dict]:
    """{op, ms (per run, over `runs`), calls, share %} per operator type, the most time first."""
    total = sum(e["us"] for e in events) or 1.0
    us, calls = defaultdict(float), defaultdict(int)
    for e in events:
        us[e["op"]] += e["us"]
        calls[e["op"]] += 1
    return [{"op": op, "ms": round(t / 1000 / runs, 3), "calls": calls[op], "share": round(100 * t / total, 1)}
            for op, t in sorted(us.items(), key=lambda item: -item[1])]


def attention_flops(runs: list[list[dict]], attention: dict[str, dict], held: dict[str, int]) -> float:
    """FLOPs of the runs' GroupQueryAttention nodes: 4 x heads x head_dim per causal query-key pair.

    `attention`: node name -> {heads, head_dim, window} (window 0: none). `held`: positions each node's cache held
    before these runs (the part of the sequence another session ran), advanced in place.
    """
    flops = 0.0
    for run in runs:
        for e in run:
            if e["op"] != "GroupQueryAttention" or e["name"] not in attention:
                continue
            node, seq = attention[e["name"]], e["shapes"][0][1]  # query (batch, seq, hidden)
            before = held.get(e["name"], 0)
            keys = np.arange(before + 1, before + seq + 1, dtype=np.float64)  # query i sees the positions up to its own
            if node["window"] > 0:
                keys = np.minimum(keys, node["window"])
            flops += 4.0 * node["heads"] * node["head_dim"] * float(keys.sum())
            held[e["name"]] = before + seq
    return flops


def graph_facts(graph: Path, head_dim: int) -> tuple[dict[str, dict], dict[str, int]]:
    """From an ONNX graph (its weights not read): GroupQueryAttention node name -> {heads, head_dim, window}, and
    node name -> bytes of the initializers it reads, for the matrix nodes.

    The bytes come from the graph, not the profiler: onnxruntime packs a MatMulNBits' weights at load and drops the
    initializer, so the profiler's parameter_size no longer counts them.
    """
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    sizes = {t.name: int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
             for t in model.graph.initializer}
    attention, weights = {}, {}
    for node in model.graph.node:
        if node.op_type == "GroupQueryAttention":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            attention[node.name] = {"heads": int(attrs["num_heads"]), "head_dim": head_dim,
                                    "window": max(0, int(attrs.get("local_window_size", -1)))}
        elif node.op_type in MATRIX_OPS:
            weights[node.name] = sum(sizes.get(name, 0) for name in node.input)
    return attention, weights


def _fastest(session, feed: dict, repeats: int) -> float:
    """The shortest of `repeats` runs after a warm-up: a ceiling of what the machine does, not a typical time."""
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return min(times)


def machine_rates(threads: int, heads: int, head_dim: int, keys: int) -> dict:
    """What onnxruntime reaches here: {read_gb_s, matmul_gflops, attention_gflops} (the fastest of a few runs)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads

    def session(node, inputs, output_shape, initializers=()):
        graph = helper.make_graph([node], "rate", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                   for n, s in inputs],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, output_shape)],
                                  list(initializers))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    big = rng.standard_normal((threads, (256 << 20) // 4 // threads), dtype=np.float32)  # 256 MB, past every cache
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [1])  # a row a thread: the fastest reduction measured
    read = session(helper.make_node("ReduceSum", ["X", "axis"], ["Y"], keepdims=0), [("X", list(big.shape))],
                   [threads], [axis])
    square = rng.standard_normal((1024, 1024), dtype=np.float32)
    product = session(helper.make_node("MatMul", ["A", "B"], ["Y"]), [("A", [1024, 1024]), ("B", [1024, 1024])],
                      [1024, 1024])
    q = rng.standard_normal((heads, 256, head_dim), dtype=np.float32)
    k = rng.standard_normal((heads, head_dim, keys), dtype=np.float32)
    scores = session(helper.make_node("MatMul", ["A", "B"], ["Y"]), [("A", list(q.shape)), ("B", list(k.shape))],
                     [heads, 256, keys])
    read_s = _fastest(read, {"X": big}, 10)
    square_s = _fastest(product, {"A": square, "B": square}, 10)
    scores_s = _fastest(scores, {"A": q, "B": k}, 10)
    return {"read_gb_s": round(big.nbytes / read_s / 1e9, 1), "matmul_gflops": round(2 * 1024 ** 3 / square_s / 1e9, 1),
            "attention_gflops": round(2 * heads * 256 * head_dim * keys / scores_s / 1e9, 1)}


def profile_folder(folder: Path, prompt: int, steps: int, threads: int | None, work: Path) -> dict:
    """Runs the prompt and the steps on `folder` under the profiler; returns the report's figures."""
    import edgelm
    from edgelm.errors import EdgelmError
    from edgelm.memory import settled_load
    from edgelm.session import open_graph

    model = edgelm.load(folder, threads=threads)
    runner = model.runner
    if prompt > model.manifest.context_length - steps:
        raise EdgelmError(f"--prompt {prompt} + --steps {steps} is beyond the model's context of "
                         f"{model.manifest.context_length} tokens: ask for fewer")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.manifest.vocab_size, prompt).tolist()  # any tokens: the kernels' time is the same
    config = model.config(max_new_tokens=steps + 1, eos_token_ids=(), temperature=0.0)
    _timed_generation(model, ids, config)  # warm-up: the prefill session opens, buffers grow
    plain = _timed_generation(model, ids, config)  # the profiler's own cost shows against this
    runner.session = None  # the load's session goes first, as in a load; the profiled ones replace it
    with settled_load(model.folder):
        runner.session = open_graph(model.folder, runner.manifest, "graph_file", "cpu", threads,
                                    profile=str(work / "decode"))
    runner.open_prefill_graph(profile=str(work / "prefill"))
    profiled = _timed_generation(model, ids, config)
    sessions = {"prefill": runner.prefill_session, "decode": runner.session}
    runs = {name: profiled_runs(Path(s.end_profiling())) for name, s in sessions.items() if s is not None}
    prompt_runs = runs.get("prefill", []) + runs["decode"][: len(runs["decode"]) - steps]
    step_runs = runs["decode"][-steps:]
    attention, weights = graph_facts(model.folder / runner.manifest.graph_file, runner.manifest.kv.head_dim)
    if "prefill" in runs:  # its attention nodes keep the decode graph's names, but read them from its own graph
        attention.update(graph_facts(model.folder / runner.manifest.prefill_graph_file, runner.manifest.kv.head_dim)[0])
    for event in (e for run in step_runs for e in run if e["op"] in MATRIX_OPS):
        event["params"] = weights.get(event["name"], event["params"])
    held: dict[str, int] = {}  # the prompt's chunks come first (on the prefill graph, whose nodes keep their names)
    prompt_flops = attention_flops(prompt_runs, attention, held)
    step_flops = attention_flops(step_runs, attention, held)
    return {"folder": str(folder), "prompt": prompt, "steps": steps, "first_token_s": plain[0], "step_ms": plain[1],
            "profiled_first_token_s": profiled[0], "profiled_step_ms": profiled[1],
            "prompt_runs": prompt_runs, "step_runs": step_runs, "prompt_flops": prompt_flops, "step_flops": step_flops,
            "heads": max((n["heads"] for n in attention.values()), default=1), "head_dim": runner.manifest.kv.head_dim}


def _timed_generation(model, ids: list[int], config) -> tuple[float, float]:
    """(seconds to the first token, ms a step after it) of one greedy generation."""
    started = time.perf_counter()
    stamps = [time.perf_counter() for _ in model.generate_ids(ids, config)]
    return round(stamps[0] - started, 3), round((stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1000, 2)


def summary(figures: dict, rates: dict) -> dict:
    """The report's figures: per-op tables of the prompt and of a step, and the rates beside the machine's."""
    steps = figures["steps"]
    prompt_events = [e for run in figures["prompt_runs"] for e in run]
    step_events = [e for run in figures["step_runs"] for e in run]
    matrix = [e for e in step_events if e["op"] in MATRIX_OPS]
    matrix_s = sum(e["us"] for e in matrix) / 1e6 / steps
    matrix_bytes = sum(e["params"] for e in matrix) / steps
    attention_s = sum(e["us"] for e in prompt_events if e["op"] == "GroupQueryAttention") / 1e6
    step_attention_s = sum(e["us"] for e in step_events if e["op"] == "GroupQueryAttention") / 1e6
    best_fp32 = max(rates["matmul_gflops"], rates["attention_gflops"])
    return {
        "prompt": figures["prompt"], "steps": steps, "first_token_s": figures["first_token_s"],
        "step_ms": figures["step_ms"], "profiled_first_token_s": figures["profiled_first_token_s"],
        "profiled_step_ms": figures["profiled_step_ms"],
        "prompt_ops": by_op(prompt_events), "step_ops": by_op(step_events, steps),
        "prompt_kernels_s": round(sum(e["us"] for e in prompt_events) / 1e6, 3),
        "step_kernels_ms": round(sum(e["us"] for e in step_events) / 1000 / steps, 3),
        "step_matrix_ms": round(matrix_s * 1000, 3), "step_matrix_bytes": int(matrix_bytes),
        "step_matrix_gb_s": round(matrix_bytes / matrix_s / 1e9, 1) if matrix_s else None,
        "prompt_attention_s": round(attention_s, 3), "prompt_attention_gflop": round(figures["prompt_flops"] / 1e9, 1),
        "prompt_attention_gflops": round(figures["prompt_flops"] / attention_s / 1e9, 1) if attention_s else None,
        "prompt_attention_floor_s": round(figures["prompt_flops"] / best_fp32 / 1e9, 3),
        "step_attention_ms": round(step_attention_s / steps * 1000, 3),
        "step_attention_gflops": round(figures["step_flops"] / step_attention_s / 1e9, 1) if step_attention_s else None,
        "rates": rates,
    }


def to_markdown(report: dict, folder: Path, machine: dict, threads: int) -> str:
    rates = report["rates"]
    lines = [f"Profile of `{folder}`: a {report['prompt']}-token prompt, then {report['steps']} decode steps; "
             f"{threads} threads; onnxruntime {machine['packages'].get('onnxruntime')}.",
             f"Machine: {machine['cpu']}, flags {' '.join(machine['cpu_flags'])}.", "",
             f"- Time to first token {report['first_token_s']:.3f} s, a step {report['step_ms']:.2f} ms; under the "
             f"profiler (every figure below) {report['profiled_first_token_s']:.3f} s (kernels "
             f"{report['prompt_kernels_s']:.3f} s) and {report['profiled_step_ms']:.2f} ms (kernels "
             f"{report['step_kernels_ms']:.2f} ms).",
             f"- A step's matrix kernels read {report['step_matrix_bytes'] / 1e6:.1f} MB of weights in "
             f"{report['step_matrix_ms']} ms: "
             f"{report['step_matrix_gb_s']} GB/s; onnxruntime reads {rates['read_gb_s']} GB/s from memory here.",
             f"- The prompt's attention: {report['prompt_attention_gflop']} GFLOP (causal pairs) in "
             f"{report['prompt_attention_s']:.3f} s, {report['prompt_attention_gflops']} GFLOPS; fp32 MatMul here "
             f"{rates['matmul_gflops']} GFLOPS (1024^3), {rates['attention_gflops']} at attention's shape: at the "
             f"faster, the attention alone takes {report['prompt_attention_floor_s']:.3f} s.",
             f"- A step's attention: {report['step_attention_ms']} ms, {report['step_attention_gflops']} GFLOPS.", ""]
    for title, key, unit in (("The prompt", "prompt_ops", "ms in all"), ("A decode step", "step_ops", "ms a step")):
        lines += [f"{title}, by operator type:", "", f"| operator | {unit} | calls | share |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| {r['op']} | {r['ms']:.3f} | {r['calls']} | {r['share']} % |" for r in report[key][:TOP]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from edgelm.errors import EdgelmError
    from edgelm.session import default_threads

    from .machine import fingerprint

    parser = argparse.ArgumentParser(prog="python -m benchmarks profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="an exported edgelm model folder")
    parser.add_argument("--prompt", type=int, default=2048, help="prompt tokens (default 2048)")
    parser.add_argument("--steps", type=int, default=64, help="decode steps after it (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: one per core)")
    parser.add_argument("--out", default=None, help="folder for profile.json and profile.md (default: print only)")
    args = parser.parse_args(argv)
    if args.prompt < 1 or args.steps < 1:
        parser.error("--prompt and --steps must be at least 1")
    threads = args.threads or default_threads()
    with tempfile.TemporaryDirectory(prefix="edgelm-profile-") as work:
        try:
            figures = profile_folder(Path(args.folder), args.prompt, args.steps, threads, Path(work))
        except EdgelmError as exc:
            parser.error(str(exc))
    gc.collect()  # the profiled model and its sessions (their threads) gone before the machine's rates
    rates = machine_rates(threads, figures["heads"], figures["head_dim"], args.prompt)
    report = summary(figures, rates)
    machine = fingerprint()
    markdown = to_markdown(report, Path(args.folder), machine, threads)
    print(markdown)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "profile.json").write_text(json.dumps({"machine": machine, "threads": threads, "folder": args.folder,
                                                       **report}, indent=2) + "\n", encoding="utf-8")
        (out / "profile.md").write_text(markdown, encoding="utf-8")
        print(f"results written to {out}/profile.json, profile.md", file=sys.stderr)
    return 0
