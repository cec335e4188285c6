import json

import pytest

from edgelm.errors import EdgelmError
from edgelm.manifest import KVCacheSpec, Manifest, TokenSpec


def make() -> Manifest:
    return Manifest(model_type="llama", vocab_size=99, context_length=128, kv=KVCacheSpec(2, 2, 8),
                    tokens=TokenSpec(eos_token_ids=[2]), precision="int4", graph_inputs=["input_ids"])


def test_round_trip(tmp_path):
    manifest = make()
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path) == manifest
    assert manifest.kv.past_names()[:2] == ["past_key_values.0.key", "past_key_values.0.value"]
    assert manifest.kv.present_names()[-1] == "present.1.value"


def test_missing_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(EdgelmError, match="edgelm export SOURCE"):
        Manifest.load(tmp_path)


def test_future_format_is_refused(tmp_path):
    data = json.loads(make().to_json())
    data["format_version"] = 99
    (tmp_path / "edgelm.json").write_text(json.dumps(data))
    with pytest.raises(EdgelmError, match="format_version 99"):
        Manifest.load(tmp_path)


def test_bad_precision_is_named():
    with pytest.raises(EdgelmError, match="precision 'int3'"):
        Manifest(model_type="x", vocab_size=1, context_length=1, kv=KVCacheSpec(1, 1, 1), tokens=TokenSpec(),
                 precision="int3", graph_inputs=["input_ids"])
