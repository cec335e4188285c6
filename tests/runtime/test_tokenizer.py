"""runtime/tokenizer.py: a tokenizer.json this process cannot read says what to do about it."""

import pytest
import tokenizers

from edgelm.errors import EdgelmError
from edgelm.tokenizer import load_tokenizer


@pytest.fixture
def unreadable(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"type": "a model this release does not know"}}')
    return path


def test_a_file_from_a_newer_tokenizers_asks_for_an_upgrade(unreadable, monkeypatch):
    monkeypatch.setattr(tokenizers, "__version__", "0.19.1")
    with pytest.raises(EdgelmError, match=r"written with tokenizers 0\.22\.2 and this process has 0\.19\.1.*"
                                          r"pip install -U 'tokenizers>=0\.22\.2'"):
        load_tokenizer(unreadable, made_with="0.22.2")


@pytest.mark.parametrize("made_with", [None, "0.19.0"])
def test_a_bad_file_from_the_same_or_an_older_tokenizers_asks_for_a_re_export(unreadable, made_with):
    with pytest.raises(EdgelmError, match="is not a valid tokenizers JSON file .*; re-export the model$"):
        load_tokenizer(unreadable, made_with=made_with)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(EdgelmError, match="tokenizer.json is missing"):
        load_tokenizer(tmp_path / "tokenizer.json")
