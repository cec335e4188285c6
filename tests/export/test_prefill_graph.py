"""The int4 export's prefill graph: the decode graph's nodes at accuracy level 0, on the same weight file."""

import onnx

from edgelm.manifest import Manifest


def _levels(path):
    graph = onnx.load(str(path), load_external_data=False).graph
    levels = {}
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            levels[node.name] = (attrs["N"], attrs.get("accuracy_level", 0))
    return graph, levels


def test_int4_writes_a_prefill_graph_on_the_same_weights(exported):
    folder = exported("llama", "int4")
    manifest = Manifest.load(folder)
    assert manifest.prefill_graph_file == "prefill.onnx"
    decode, decode_levels = _levels(folder / manifest.graph_file)
    prefill, prefill_levels = _levels(folder / manifest.prefill_graph_file)
    assert [n.op_type for n in prefill.node] == [n.op_type for n in decode.node]
    assert set(prefill_levels) == set(decode_levels) and len(decode_levels) > 1
    for name, (n, level) in prefill_levels.items():
        if n == manifest.vocab_size:  # the LM head runs on one position: it keeps the int8 kernel
            assert level == decode_levels[name][1] == 4
        else:
            assert level == 0 and decode_levels[name][1] == 4
    # every weight is read from the decode graph's data file: nothing stored twice
    locations = {entry.value for t in prefill.initializer if t.data_location == onnx.TensorProto.EXTERNAL
                 for entry in t.external_data if entry.key == "location"}
    assert locations == {manifest.graph_file + ".data"}
    assert not (folder / (manifest.prefill_graph_file + ".data")).exists()
    assert manifest.prefill_graph_file in manifest.files  # its digest is recorded like every file's


def test_other_precisions_have_none(exported):
    assert Manifest.load(exported("llama", "fp32")).prefill_graph_file is None
    assert Manifest.load(exported("llama", "int8")).prefill_graph_file is None
