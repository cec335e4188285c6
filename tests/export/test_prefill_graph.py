"""The fp32 prefill graph (int4 and gguf exports): the decode graph's nodes at accuracy level 0, on the same weight file.

The int8 one, and how the export chooses between them: test_prefill_int8.py.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelm.export.graph_prune import remove_output
from edgelm.manifest import Manifest


def _levels(path):
    graph = onnx.load(str(path), load_external_data=False).graph
    levels = {}
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            levels[node.name] = (attrs["N"], attrs.get("accuracy_level", 0))
    return graph, levels


def test_int4_writes_a_prefill_graph_on_the_same_weights(prefill_folder):
    folder = prefill_folder
    manifest = Manifest.load(folder)
    assert manifest.prefill_graph_file == "prefill.onnx" and manifest.prefill_min_tokens == 64
    assert manifest.quantization["prefill_graph"] == {"kept": True, "measured": False, "compute": "fp32"}
    decode, decode_levels = _levels(folder / manifest.graph_file)
    prefill, prefill_levels = _levels(folder / manifest.prefill_graph_file)
    # the same nodes but those only the logits need: the LM head, the final norm, the last layer after its k and v
    assert manifest.prefill_logits is False
    assert [o.name for o in prefill.output] == [o.name for o in decode.output if o.name != manifest.logits_output]
    names = [n.name for n in decode.node]
    assert [n.name for n in prefill.node] == [name for name in names if name in {n.name for n in prefill.node}]
    dropped = {n.name for n in decode.node} - {n.name for n in prefill.node}
    head = next(n for n in decode.node if n.output[0] == manifest.logits_output)
    assert head.name in dropped and len(dropped) > 2
    assert set(prefill_levels) == set(decode_levels) - dropped and len(prefill_levels) > 1
    for name, (n, level) in prefill_levels.items():
        assert n != manifest.vocab_size and level == 0 and decode_levels[name][1] == 4
    # every weight is read from the decode graph's data file: nothing stored twice
    locations = {entry.value for t in prefill.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for entry in t.external_data if entry.key == "location"}
    assert locations == {manifest.graph_file + ".data"}
    assert not (folder / (manifest.prefill_graph_file + ".data")).exists()
    assert manifest.prefill_graph_file in manifest.files  # its digest is recorded like every file's


def test_remove_output_keeps_what_other_outputs_read(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["shared"], name="shared"),
             helper.make_node("Neg", ["shared"], ["kept"], name="kept"),
             helper.make_node("MatMul", ["shared", "w"], ["only_logits"], name="only_logits"),
             helper.make_node("Abs", ["only_logits"], ["logits"], name="head")]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [value("x", TensorProto.FLOAT, [1, 4])],
                              [value("logits", TensorProto.FLOAT, [1, 4]), value("kept", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")])
    onnx.save(helper.make_model(graph), str(tmp_path / "g.onnx"))
    assert remove_output(tmp_path / "g.onnx", "logits") == 2
    pruned = onnx.load(str(tmp_path / "g.onnx")).graph
    assert [n.name for n in pruned.node] == ["shared", "kept"] and not pruned.initializer
    assert [o.name for o in pruned.output] == ["kept"] and [i.name for i in pruned.input] == ["x"]
    with pytest.raises(ValueError, match="no output 'logits'"):
        remove_output(tmp_path / "g.onnx", "logits")


def test_none_when_told_or_nothing_to_change(exported, hf_folder, tmp_path):
    from edgelm.export import export_model

    manifest = export_model(str(hf_folder("llama")), tmp_path / "m", precision="int4", int4_method="rtn",
                            prefill_graph=False, check=False, quiet=True)
    assert manifest.prefill_graph_file is None and "prefill_graph" not in manifest.quantization
    assert not (tmp_path / "m" / "prefill.onnx").exists()
    assert Manifest.load(exported("llama", "fp32")).prefill_graph_file is None
    assert Manifest.load(exported("llama", "int8")).prefill_graph_file is None  # 8-bit blocks only


def test_only_4_bit_blocks_below_the_lm_head_change_level(tmp_path):
    """A gguf graph mixes 4- and 8-bit blocks: level 0 has no fast kernel for 8 bits, so those keep theirs."""
    from edgelm.export.prefill_graph import write_prefill_graph
    from edgelm.export.quantize import save_graph

    k, vocab, nodes, inits, previous = 64, 96, [], [], "x"
    for name, bits, n in (("four", 4, 64), ("eight", 8, 64), ("head", 4, vocab)):
        blocks = k // 32
        inits += [numpy_helper.from_array(np.ones((n, blocks, 32 * bits // 8), np.uint8), name + ".B"),
                  numpy_helper.from_array(np.ones(n * blocks, np.float32), name + ".S")]
        nodes.append(helper.make_node("MatMulNBits", [previous, name + ".B", name + ".S"], [name], name=name,
                                      domain="com.microsoft", K=k, N=n, bits=bits, block_size=32, accuracy_level=4))
        previous = name
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("head", TensorProto.FLOAT, [1, vocab])], inits)
    save_graph(helper.make_model(graph), tmp_path / "model.onnx")
    assert write_prefill_graph(tmp_path / "model.onnx", vocab) == "prefill.onnx"
    _, levels = _levels(tmp_path / "prefill.onnx")
    assert {name: level for name, (_, level) in levels.items()} == {"four": 0, "eight": 4, "head": 4}
    # a graph with nothing left to change (the prefill graph itself) gets none
    before = (tmp_path / "prefill.onnx").read_bytes()
    assert write_prefill_graph(tmp_path / "prefill.onnx", vocab) is None
    assert (tmp_path / "prefill.onnx").read_bytes() == before


def test_chunk_times_are_the_runs_least_disturbed(prefill_folder, monkeypatch):
    """Three of a graph's five timed runs slowed by other work must not decide whether its graph is kept."""
    from edgelm.export import prefill_graph

    clock = [0.0]
    cost = {"model.onnx": 0.02, "candidate.onnx": 0.01}  # the candidate runs a chunk twice as fast
    disturbed = iter([False, True, True, True, False, False])  # the candidate's warm-up, then its 5 timed runs

    class FakeRunner:
        def __init__(self, folder, manifest, prefill_graph=True):
            self.graph = manifest.graph_file

        def new_cache(self):
            return None

        def forward(self, ids, cache):
            clock[0] += cost[self.graph] + (0.05 if self.graph == "candidate.onnx" and next(disturbed) else 0.0)

    monkeypatch.setattr(prefill_graph, "GraphRunner", FakeRunner)
    monkeypatch.setattr(prefill_graph.time, "perf_counter", lambda: clock[0])
    seconds = prefill_graph._chunk_seconds(prefill_folder, Manifest.load(prefill_folder), ["candidate.onnx"])
    assert seconds == pytest.approx({"model.onnx": 0.02, "candidate.onnx": 0.01})
