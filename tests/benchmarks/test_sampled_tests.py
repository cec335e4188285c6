"""Which tests a run samples: pp, tg, the depth test, the sweeps; those too long for the model left out."""

from edgelm.benchmarks.runner import sampled_tests

SETTINGS = {"pp": 512, "tg": 128, "reps": 5, "depth": 2048, "depths": [0, 512, 2048], "prompt_lengths": [128, 2048],
            "scaling_tokens": 32, "scaling_reps": 2}


def test_the_depth_test_sits_beside_pp_and_tg_and_the_sweeps_follow():
    tests = sampled_tests(SETTINGS, context_length=8192)
    assert [t["key"] for t in tests] == ["pp512", "tg128", "tg128 sampled", "pp2048", "tg128 @ d2048", "depth 0",
                                         "depth 512", "depth 2048", "prompt 128", "prompt 2048"]
    assert [t.get("sample", False) for t in tests][:3] == [False, False, True]  # only its own test samples
    assert {t["key"]: t["reps"] for t in tests}["tg128 @ d2048"] == 5
    assert {t["key"]: t["reps"] for t in tests}["depth 512"] == 2
    depth = next(t for t in tests if t["key"] == "tg128 @ d2048")
    assert depth["test"] == "tg" and depth["n"] == 128 and depth["depth"] == 2048


def test_tests_that_do_not_fit_the_context_are_left_out():
    keys = [t["key"] for t in sampled_tests(SETTINGS, context_length=1024)]
    assert keys == ["pp512", "tg128", "tg128 sampled", "depth 0", "depth 512", "prompt 128"]
    assert [t["key"] for t in sampled_tests(SETTINGS | {"depth": 0}, 8192)][:4] == ["pp512", "tg128", "tg128 sampled",
                                                                                     "depth 0"]


def test_a_depth_equal_to_pp_is_not_sampled_twice():
    keys = [t["key"] for t in sampled_tests(SETTINGS | {"depth": 512, "depths": [], "prompt_lengths": []}, 8192)]
    assert keys == ["pp512", "tg128", "tg128 sampled", "tg128 @ d512"]
