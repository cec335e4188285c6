"""Checking `export_model`'s arguments before any slow work starts (loading torch, reading weights)."""

from __future__ import annotations

import os
from pathlib import Path

from edgelm.checks import check_bool, check_int
from edgelm.errors import EdgelmError

GRAPHS = ("auto", "fused", "optimum")
INT8_METHODS = ("dynamic", "weight-only")
INT4_METHODS = ("auto", "rtn", "calibrated")
KV_DTYPES = ("float32", "float16", "int8")


def check_export_args(args: dict) -> None:
    """Raises EdgelmError for the first bad argument in `args` (export_model's locals(); unknown keys are skipped)."""
    source, output = args.get("source"), args.get("output")
    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise EdgelmError(f"source={source!r} is invalid: give a Hugging Face folder or hub id, a .gguf file or an alias")
    path = Path(source).expanduser()
    if path.is_file() and path.suffix != ".gguf":
        raise EdgelmError(f"{path} is a file but not a .gguf file: give a Hugging Face model folder, a .gguf file, "
                          "a hub id or an alias")
    if not isinstance(output, (str, os.PathLike)) or not str(output):
        raise EdgelmError(f"output={output!r} is invalid: give the folder to write")
    if "block_size" in args:
        _check_block("block_size", args["block_size"], "a power of two from 16 to 65536 (32 is the default)")
    if args.get("lm_head_block_size") is not None:
        _check_block("lm_head_block_size", args["lm_head_block_size"],
                     "None (the block size) or a power of two from 16 to 65536")
    if "accuracy_level" in args:
        check_int("accuracy_level", args["accuracy_level"], 0, 4, "0-4 (4: int8 compute, the fastest on CPU)")
    if "lm_head_bits" in args and args["lm_head_bits"] not in (4, 8) or isinstance(args.get("lm_head_bits"), bool):
        raise EdgelmError(f"lm_head_bits={args['lm_head_bits']!r} is invalid: use 4 or 8")
    if args.get("symmetric") is not None:
        check_bool("symmetric", args["symmetric"])
    if "int8_method" in args and args["int8_method"] not in INT8_METHODS:
        raise EdgelmError(f"int8_method={args['int8_method']!r} is invalid: use one of {', '.join(INT8_METHODS)}")
    if "int4_method" in args and args["int4_method"] not in INT4_METHODS:
        raise EdgelmError(f"int4_method={args['int4_method']!r} is invalid: use one of {', '.join(INT4_METHODS)}")
    if "kv_dtype" in args and args["kv_dtype"] is not None and args["kv_dtype"] not in KV_DTYPES:
        raise EdgelmError(f"kv_dtype={args['kv_dtype']!r} is invalid: use None (int8 where it keeps the model) "
                          f"or one of {', '.join(KV_DTYPES)}")
    if "graph" in args and args["graph"] not in GRAPHS:
        raise EdgelmError(f"graph={args['graph']!r} is invalid: use one of {', '.join(GRAPHS)}")
    for name in ("share_tied_table", "prefill_graph"):
        if args.get(name) is not None:
            check_bool(name, args[name])
    for flag in ("check", "force", "quiet"):
        if flag in args and not (flag == "check" and args[flag] is None):  # check=None: follow $EDGELM_VALIDATE
            check_bool(flag, args[flag])


def _check_block(name: str, block, allowed: str) -> None:
    """An int4 block size: a power of two from 16 to 65536."""
    check_int(name, block, 16, 1 << 16, allowed)
    if block & (block - 1):
        raise EdgelmError(f"{name}={block} is invalid: use {allowed}")


def check_block_fits(name: str, block: int, widths: dict[str, int]) -> None:
    """int4 blocks (`name`: block_size or lm_head_block_size) must tile every input width in `widths`.

    GPTQ leaves a weight its blocks do not tile in fp32, and the shared table needs whole blocks:
    `--block-size 128` on SmolLM2 (hidden size 576) wrote a 563 MB folder of mostly fp32 weights.
    """
    for what, width in widths.items():
        if width % block:
            fitting = [b for b in (256, 128, 64, 32, 16) if all(w % b == 0 for w in widths.values())]
            raise EdgelmError(f"{name}={block} does not divide this model's {what} {width}: int4 blocks must tile "
                              f"every weight; use one of {', '.join(map(str, fitting)) or 'the default'}")


def linear_widths(config) -> dict[str, int]:
    """The input widths of a decoder's linears, from its transformers config: what int4 blocks must tile."""
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if hidden and heads else None)
    inner = (getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
             or (4 * hidden if hidden else None))
    widths = {"hidden size": hidden, "intermediate size": inner,
              "attention width (heads x head size)": heads * head_dim if heads and head_dim else None}
    return {what: int(width) for what, width in widths.items() if isinstance(width, int) and width > 0}
