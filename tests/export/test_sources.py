"""export/sources.py: one fast GGUF reader for all of an export's reads of a file."""

import numpy as np


def test_one_gguf_reader_is_shared_within_the_block_and_undone_after(tmp_path):
    import gguf

    from edgelm.export.sources import one_gguf_reader

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.block_count", 1)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "bé", ""])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.25, -3.0])
    writer.add_tensor("token_embd.weight", np.arange(8, dtype=np.float32).reshape(2, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    original, name_maps = gguf.GGUFReader, gguf.get_tensor_name_map
    with one_gguf_reader():
        llama = next(arch for arch, name in gguf.MODEL_ARCH_NAMES.items() if name == "llama")
        table = gguf.get_tensor_name_map(llama, 2)
        assert gguf.get_tensor_name_map(llama, 2) is table  # built once (transformers asks once per module)
        assert table.get_name("model.layers.1.self_attn.q_proj") == name_maps(llama, 2).get_name(
            "model.layers.1.self_attn.q_proj") == "blk.1.attn_q"
        first = gguf.GGUFReader(path)
        assert type(first).__name__ == "PlainArrayReader"  # this gguf-py's _get is the one it was written against
        assert gguf.GGUFReader(str(tmp_path / "." / "tiny.gguf")) is first  # parsed once, whatever the spelling
        from gguf import GGUFReader  # as transformers imports it, inside its loader

        assert GGUFReader(path) is first
        assert [t.name for t in first.tensors] == ["token_embd.weight"]
        np.testing.assert_array_equal(first.tensors[0].data.reshape(2, 4), np.arange(8).reshape(2, 4))
    assert gguf.GGUFReader is original and gguf.get_tensor_name_map is name_maps
    again = gguf.GGUFReader(path)
    assert again is not first
    # the shared reader parses exactly what gguf-py's own does (it slices a plain view of the same mapping)
    assert list(first.fields) == list(again.fields)
    for name, field in again.fields.items():
        mine = first.fields[name]
        assert (mine.offset, mine.types, mine.data) == (field.offset, field.types, field.data), name
        assert [p.tobytes() for p in mine.parts] == [p.tobytes() for p in field.parts], name
    assert first.fields["tokenizer.ggml.tokens"].contents() == ["<s>", "a", "bé", ""]
