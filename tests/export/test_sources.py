"""export/sources.py: one GGUF reader for all of transformers' loads of a file."""

import numpy as np


def test_one_gguf_reader_is_shared_within_the_block_and_undone_after(tmp_path):
    import gguf

    from edgelm.export.sources import one_gguf_reader

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.block_count", 1)
    writer.add_tensor("token_embd.weight", np.arange(8, dtype=np.float32).reshape(2, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    original = gguf.GGUFReader
    with one_gguf_reader():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(tmp_path / "." / "tiny.gguf")) is first  # parsed once, whatever the spelling
        from gguf import GGUFReader  # as transformers imports it, inside its loader

        assert GGUFReader(path) is first
        assert [t.name for t in first.tensors] == ["token_embd.weight"]
        np.testing.assert_array_equal(first.tensors[0].data.reshape(2, 4), np.arange(8).reshape(2, 4))
    assert gguf.GGUFReader is original
    assert gguf.GGUFReader(path) is not first
