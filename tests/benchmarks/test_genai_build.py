"""The Gemma 3 config fix-up for onnxruntime-genai's builder (no builder needed)."""

from types import SimpleNamespace

from edgelm.benchmarks.genai_build import flatten_rope


def test_per_layer_type_rope_becomes_the_flat_fields_the_builder_reads():
    config = SimpleNamespace(rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                              "full_attention": {"rope_type": "default", "rope_theta": 1e6}})
    flatten_rope(config)
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 1e6}
    assert config.rope_local_base_freq == 10000.0 and config.rope_theta == 1e6


def test_other_configs_are_left_alone():
    flat = {"rope_type": "default", "rope_theta": 1e4}
    config = SimpleNamespace(rope_parameters=dict(flat))
    assert flatten_rope(config).rope_parameters == flat and not hasattr(config, "rope_local_base_freq")
    assert not hasattr(flatten_rope(SimpleNamespace()), "rope_parameters")


def test_no_module_beside_the_builder_script_shadows_the_standard_library():
    """genai_build.py runs as a script, so its folder comes first on sys.path: a `benchmarks/profile.py` once hid the
    standard library's `profile` from transformers (cProfile imports it) and every genai row of a run failed."""
    import sys
    from pathlib import Path

    import edgelm.benchmarks.genai_build as builder

    folder = Path(builder.__file__).parent
    modules = {p.stem for p in folder.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert not modules & set(sys.stdlib_module_names)
