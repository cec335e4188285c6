"""export/int4_choice.py: a graph is scored on its own nodes, whatever else the folder's manifest names."""

from dataclasses import replace

import numpy as np

import edgelm
from edgelm.export.int4_choice import graph_logits
from edgelm.export.prefill_graph import write_prefill_graph
from edgelm.manifest import Manifest
from edgelm.session import GraphRunner


def test_graph_logits_never_go_through_the_folders_prefill_graph(prefill_folder):
    manifest = Manifest.load(prefill_folder)
    assert manifest.prefill_graph_file  # long runs would take it in the runtime
    model = edgelm.load(prefill_folder, prefill_graph=False)
    ids = np.array([model.encode("A prompt long enough for the prefill graph to take it in the runtime. " * 3)])
    assert ids.shape[1] >= (manifest.prefill_min_tokens or 64)
    scored = graph_logits(prefill_folder / manifest.graph_file, manifest, ids)
    alone = GraphRunner(prefill_folder, replace(manifest, prefill_graph_file=None))
    np.testing.assert_array_equal(scored, alone.forward(ids, alone.new_cache(), all_logits=True))
    # a manifest naming a prefill graph that returns logits (export revision 2 and before) sends them through it
    write_prefill_graph(prefill_folder / manifest.graph_file, manifest.vocab_size, "with-logits.onnx")
    try:
        through = GraphRunner(prefill_folder, replace(manifest, prefill_graph_file="with-logits.onnx",
                                                      prefill_logits=True))
        assert not np.array_equal(scored, through.forward(ids, through.new_cache(), all_logits=True))  # they differ
    finally:
        (prefill_folder / "with-logits.onnx").unlink()
