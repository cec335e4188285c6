import math

import numpy as np
import pytest

from edgelm.benchmarks.stats import latency_summary, mean_std, percentile, summarize


def test_mean_and_sample_std_match_numpy():
    samples = [10.0, 12.0, 11.5, 9.0, 13.25]
    mean, std = mean_std(samples)
    assert mean == pytest.approx(np.mean(samples))
    assert std == pytest.approx(np.std(samples, ddof=1))
    assert mean_std([4.0]) == (4.0, 0.0)


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentiles_match_numpy_linear(q):
    samples = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    assert percentile(samples, q) == pytest.approx(np.percentile(samples, q))


def test_summaries_keep_every_sample():
    s = summarize([1.0, 2.0, 3.0])
    assert s["samples"] == [1.0, 2.0, 3.0] and s["min"] == 1.0 and s["max"] == 3.0
    lat = latency_summary([0.010, 0.020, 0.030, 0.040])
    assert lat["p50"] == pytest.approx(25.0) and lat["mean"] == pytest.approx(25.0)
    assert lat["p99"] == pytest.approx(39.7)


def test_empty_and_bad_input_raise():
    with pytest.raises(ValueError):
        mean_std([])
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    assert not math.isnan(percentile([3.0], 50))
