"""`edgelm info`'s text: the manifest in words, the export's measured choices each on a line of its own."""

from dataclasses import replace

from edgelm.manifest import Manifest
from edgelm.model_info import describe

SMOLLM2_PREFILL = {  # as the export recorded it for SmolLM2 int4 on a 2-core EPYC
    "measured": True, "tokens": 256, "decode_graph_s": 0.354141, "min_speedup": 1.3, "kept": True, "compute": "int8",
    "candidates": {"int8": {"seconds": 0.228373, "speedup": 1.551, "decode_graph_kld": 0.097612, "share": 1.0,
                            "kld": 0.100974, "passes": True},
                   "fp32": {"seconds": 0.375861, "speedup": 0.942, "passes": False}},
}


def test_the_int4_choice_is_a_line_of_scores_not_a_dict(exported):
    folder = exported("llama", "int4")
    manifest = Manifest.load(folder)
    choice = manifest.quantization["choice"]
    text = describe(folder, manifest)
    kept = choice["kept"]
    assert "int4 candidates: mean KLD against fp32 " in text
    assert f"{kept} {choice['kld'][kept]:.4f} (kept)" in text
    assert "{" not in text  # no record printed raw
    record = manifest.quantization["prefill_graph"]  # timed on a tiny model: kept or not, its times are said
    line = next(line for line in text.splitlines() if line.startswith("  prefill graph: "))
    for kind, candidate in record["candidates"].items():
        assert f"{kind} {candidate['speedup']:.2f}x" in line
    # dropped: none, or beside an int8 cache the decode graph's float32-cache twin and "none of its own"
    assert (line.startswith("  prefill graph: none (") or "none of its own (" in line) != record["kept"]

def test_a_prefill_graph_kept_untimed_names_its_runs(prefill_folder):
    text = describe(prefill_folder)
    assert "prefill graph: prefill.onnx (fp32, kept without timing), for prompt runs of 64+ tokens" in text


def test_a_timed_prefill_graph_gives_its_speed_and_quality(prefill_folder):
    manifest = Manifest.load(prefill_folder)
    kept = replace(manifest, prefill_min_tokens=32,
                   quantization=manifest.quantization | {"prefill_graph": SMOLLM2_PREFILL,
                                                         "clipping_ratios": [1.0, 0.95, 0.9, 0.85, 0.8, 0.75]})
    text = describe(prefill_folder, kept)
    assert ("prefill graph: prefill.onnx (int8), for prompt runs of 32+ tokens, all but the last token (cache only: "
            "the logits come from the decode graph); a 256-token chunk against the decode graph: int8 1.55x (scoring KLD 0.1010 against the decode graph's 0.0976), fp32 0.94x") in text
    assert "clipping_ratios 6 values from 1.0 to 0.75" in text
    dropped = {**SMOLLM2_PREFILL, "kept": False, "compute": None,
               "candidates": {"int8": {**SMOLLM2_PREFILL["candidates"]["int8"], "speedup": 1.21, "share": 0.5}}}
    text = describe(prefill_folder, replace(kept, prefill_graph_file=None,
                                            quantization=manifest.quantization | {"prefill_graph": dropped}))
    assert ("prefill graph: none (a 256-token chunk against the decode graph: int8 1.21x (on 50% of the "
            "activations, scoring KLD 0.1010 against the decode graph's 0.0976); one is kept at 1.3x or more "
            "within the quality bound)") in text
    int8_cache = replace(kept.kv, dtype="int8", scales_file="kv_scales.npy", prefill_dtype="float32",
                         float_graph_file="model-float-kv.onnx")  # the int8 step made its twin the prefill graph
    text = describe(prefill_folder, replace(kept, kv=int8_cache, prefill_graph_file="model-float-kv.onnx",
                                            prefill_logits=True,
                                            quantization=manifest.quantization | {"prefill_graph": dropped}))
    assert ("prefill graph: model-float-kv.onnx, the decode graph with a float32 cache, for prompt runs of 32+ tokens "
            "beside the int8 cache; none of its own (a 256-token chunk against the decode graph: int8 1.21x") in text


def test_an_fp32_folder_says_none_and_no_prefill_line(exported):
    text = describe(exported("llama", "fp32"))
    assert "quantization: none (fp32 weights)" in text and "prefill graph" not in text
