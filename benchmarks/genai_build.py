"""onnxruntime-genai's builder, with the Gemma 3 config in the form it reads.

Run with the builder's own Python (.venv-genai) exactly like `python -m onnxruntime_genai.models.builder`:
`python -m benchmarks.genai_build -i HF_FOLDER -o OUT -p int4 -e cpu ...` (also as a plain file path).

onnxruntime-genai 0.18's Gemma 3 builder reads `config.rope_local_base_freq` and a flat
`config.rope_parameters["rope_type"]`, but transformers 5 turns a Gemma 3 config into one
`rope_parameters` entry per layer type ({"sliding_attention": {...}, "full_attention": {...}})
and drops rope_local_base_freq (`KeyError: 'rope_type'` in make_rope_init). The config the
builder loads is given both forms back: the global layers' parameters flat, the sliding
layers' theta as rope_local_base_freq. Nothing else changes.
"""

from __future__ import annotations

import runpy


def flatten_rope(config):
    """A Gemma 3 config with per-layer-type rope parameters, given the flat fields the builder reads."""
    rope = getattr(config, "rope_parameters", None)
    if isinstance(rope, dict) and "full_attention" in rope and "rope_type" not in rope:
        sliding = rope.get("sliding_attention", rope["full_attention"])
        config.rope_local_base_freq = sliding["rope_theta"]
        config.rope_theta = rope["full_attention"]["rope_theta"]
        config.rope_parameters = dict(rope["full_attention"])
    return config


def main() -> None:
    from transformers import AutoConfig

    load = AutoConfig.from_pretrained

    def from_pretrained(*args, **kwargs):
        return flatten_rope(load(*args, **kwargs))

    AutoConfig.from_pretrained = from_pretrained
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
