"""`python -m benchmarks kernels`: every kernel computes the same product shape and gets a time."""

import json

import numpy as np
import pytest

from benchmarks.kernels import KERNELS, kernel_model, main


@pytest.mark.parametrize("kind", KERNELS)
def test_each_kernel_is_one_node_of_the_asked_shape(kind):
    import onnxruntime as ort

    model = kernel_model(kind, 64, 48, np.random.default_rng(0))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"X": np.ones((3, 64), np.float32)})
    assert out.shape == (3, 48) and np.isfinite(out).all()


def test_writes_a_row_per_kernel_and_row_count(tmp_path, capsys):
    assert main(["--rows", "1,8", "--shapes", "64x48", "--threads", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "kernels.json").read_text())
    assert {(r["kernel"], r["rows"]) for r in report["results"]} == {(k, m) for k in KERNELS for m in (1, 8)}
    assert all(r["ms"] > 0 and r["gops"] > 0 for r in report["results"])
    assert report["machine"]["cpu_flags"] is not None and "| 8 |" in (tmp_path / "kernels.md").read_text()


def test_bad_shapes_are_refused_with_a_message(capsys):
    with pytest.raises(SystemExit):
        main(["--shapes", "60x48"])
    assert "multiple of 32" in capsys.readouterr().err
