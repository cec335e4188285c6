"""The harness's edgelm rows: a row's attention= option remakes its decode session on that kernel; huge_pages=off;
arena=off."""

import os

import pytest

import edgelm.session as session_module
from edgelm.attention_kernel import FLASH_SWITCH


@pytest.mark.parametrize("attention, switch", [("tiled", None), ("plain", "1")])
def test_a_rows_attention_option_builds_its_decode_session_on_that_kernel(tmp_path, monkeypatch, attention, switch):
    from benchmarks.backends.edgelm_backend import EdgelmBackend
    from tests.export.fused_models import export_fp32, tiny_model

    folder = export_fp32(tiny_model("llama"), tmp_path, kv_dtype="int8").folder
    monkeypatch.delenv(FLASH_SWITCH, raising=False)
    seen, real = [], session_module.ort.InferenceSession

    def spy(*args, **kwargs):
        seen.append(os.environ.get(FLASH_SWITCH))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_module.ort, "InferenceSession", spy)
    backend = EdgelmBackend(str(folder), 2, "int8", {"attention": attention})
    backend.load()
    assert seen == ["1", switch]  # edgelm's own int8 session (plain), then the row's
    assert len(backend.timed_generate([1, 2, 3], 4)) == 4


@pytest.mark.parametrize("options, moves", [({}, 1), ({"huge_pages": "off"}, 0)])
def test_a_rows_huge_pages_off_loads_without_moving_pages(tmp_path, monkeypatch, options, moves):
    from benchmarks.backends.edgelm_backend import EdgelmBackend
    from edgelm import memory
    from tests.export.fused_models import export_fp32, tiny_model

    folder = export_fp32(tiny_model("llama"), tmp_path).folder
    calls = []
    monkeypatch.setattr(memory, "back_new_memory_with_huge_pages", lambda before: calls.append(before) or 0)
    EdgelmBackend(str(folder), 2, "fp32", options).load()
    assert len(calls) == moves


@pytest.mark.parametrize("options, arenas", [({}, [True]), ({"arena": "off"}, [True, False])])
def test_a_rows_arena_off_remakes_its_decode_session_without_the_arena(tmp_path, monkeypatch, options, arenas):
    from benchmarks.backends.edgelm_backend import EdgelmBackend
    from tests.export.fused_models import export_fp32, tiny_model

    folder = export_fp32(tiny_model("llama"), tmp_path).folder
    seen, real = [], session_module.ort.InferenceSession

    def spy(path, options, **kwargs):
        seen.append(options.enable_cpu_mem_arena)
        return real(path, options, **kwargs)

    monkeypatch.setattr(session_module.ort, "InferenceSession", spy)
    backend = EdgelmBackend(str(folder), 2, "fp32", options)
    backend.load()
    assert seen == arenas  # edgelm's own session, then the row's
    assert len(backend.timed_generate([1, 2, 3], 4)) == 4
