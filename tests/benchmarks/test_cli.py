"""The harness's command line: extra edgelm folders as rows (--also)."""

import pytest

from benchmarks.cli import _label_and_folder


def test_also_takes_a_label_and_a_model_folder(tmp_path):
    (tmp_path / "edgelm.json").write_text("{}")
    assert _label_and_folder(f"int4 head128={tmp_path}") == ("int4 head128", tmp_path)


@pytest.mark.parametrize("item", ["no-equals-sign", "=/tmp", "label=/definitely/not/a/folder"])
def test_also_refuses_what_is_not_label_and_model_folder(item):
    with pytest.raises(SystemExit, match="LABEL=FOLDER"):
        _label_and_folder(item)
