"""Tiny random models built from a config with a fixed seed, saved as Hugging Face folders.

No test touches the hub: each model gets a character-level tokenizer of 99 tokens
(95 printable ASCII characters and 4 specials), the vocabulary size transformers' own
testers use.
"""

from __future__ import annotations

import logging
import os
import string
from pathlib import Path

import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # the tests write nothing into ~/.cache/Microsoft either

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0-3: unk, bos, eos, pad
CHARS = [c for c in string.printable if c.isprintable()]  # 95 characters, space included
VOCAB_SIZE = len(SPECIALS) + len(CHARS)  # 99
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
ARCHITECTURES = ("gpt2", "llama", "gemma3_text")
# (architecture, graph builder): llama is exported both ways, fused (the default) and through optimum
VARIANTS = (("gpt2", "auto"), ("llama", "auto"), ("llama", "optimum"), ("gemma3_text", "auto"))


def char_tokenizer():
    """A transformers fast tokenizer mapping every printable character to one id, with BOS prepended."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    backend.add_special_tokens(SPECIALS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(architecture: str):
    """A randomly initialised model (seed 0) with 2 layers and hidden size 32."""
    import torch
    from transformers import (
        Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
    )

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB_SIZE, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=1024, **common))
    if architecture == "llama":
        # 2 heads of 16 (GroupQueryAttention needs multiples of 16), sharing 1 key/value head
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                             num_key_value_heads=1, max_position_embeddings=1024, **common)
        return LlamaForCausalLM(config)
    if architecture == "gemma3_text":
        # a sliding window shorter than the tests' sequences, so the exported mask handles it
        config = Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                                  sliding_window=8, layer_types=["sliding_attention", "full_attention"], **common)
        return Gemma3ForCausalLM(config)
    raise ValueError(architecture)


@pytest.fixture(scope="session")
def hf_folder(tmp_path_factory):
    """hf_folder(arch) -> a saved Hugging Face folder of the tiny model."""
    made: dict[str, Path] = {}

    def make(architecture: str) -> Path:
        if architecture not in made:
            folder = tmp_path_factory.mktemp(f"hf-{architecture}")
            build_tiny_model(architecture).save_pretrained(folder)
            char_tokenizer().save_pretrained(folder)
            made[architecture] = folder
        return made[architecture]

    return make


@pytest.fixture(scope="session")
def exported(tmp_path_factory, hf_folder):
    """exported(arch, precision, graph, kv_dtype) -> an edgelm model folder made by the real export code."""
    from edgelm.export import export_model

    made: dict[tuple[str, str, str, str | None], Path] = {}

    def make(architecture: str, precision: str = "fp32", graph: str = "auto", kv_dtype: str | None = None) -> Path:
        key = (architecture, precision, graph, kv_dtype)
        if key not in made:
            out = tmp_path_factory.mktemp(f"onnx-{architecture}-{precision}-{graph}-{kv_dtype}") / "model"
            export_model(str(hf_folder(architecture)), out, precision=precision, graph=graph, kv_dtype=kv_dtype,
                         quiet=True)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def prefill_folder(hf_folder, tmp_path_factory):
    """A tiny llama int4 export told to keep its prefill graph (by default a timed chunk decides), with a float32
    cache: an int8 one beside a prefill graph has tests of its own (test_kv_int8.py, the engine's)."""
    from edgelm.export import export_model

    out = tmp_path_factory.mktemp("prefill") / "model"
    export_model(str(hf_folder("llama")), out, precision="int4", int4_method="rtn", prefill_graph=True,
                 kv_dtype="float32", check=False, quiet=True)
    return out


@pytest.fixture
def in_process_cli():
    """For tests that call `edgelm.cli.main` in this process: the handler it adds to the `edgelm` logger writes to
    the test's stderr (capsys: closed afterwards), so the logger is put back as it was."""
    logger = logging.getLogger("edgelm")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate
