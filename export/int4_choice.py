"""Choosing symmetric or asymmetric 4-bit blocks by measuring perplexity, not by rule.

Neither wins everywhere. On SmolLM2-135M (from a Q4_1 GGUF) symmetric blocks gave perplexity
20.5 against 22.0 asymmetric; on Gemma 3 270M (from Q4_K_M) asymmetric gave 98 against 139
symmetric (fp32: 16.5 and 72.6). So the exporter quantizes both ways, scores each on a slice
of the reference text, and keeps the better one; both scores go into the manifest.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgelm.manifest import Manifest
from edgelm.quality import perplexity, reference_text
from edgelm.session import GraphRunner

from .quantize import quantize_int4

SCORING_TOKENS = 256


def quantize_int4_best_blocks(src: Path, dst: Path, manifest: Manifest, work: Path, **settings) -> dict:
    """quantize_int4 with the block symmetry that scores the lower perplexity; writes the winner to `dst`."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(dst.parent / manifest.tokens.tokenizer_file))
    ids = np.array([tokenizer.encode(reference_text()).ids[: min(SCORING_TOKENS, manifest.context_length)]])
    scored = {}
    for symmetric in (True, False):
        folder = work / ("int4-symmetric" if symmetric else "int4-asymmetric")
        folder.mkdir(parents=True)
        result = quantize_int4(src, folder / dst.name, symmetric=symmetric, **settings)
        runner = GraphRunner(folder, replace(manifest, graph_file=dst.name))
        score = perplexity(runner.forward(ids, runner.new_cache(), all_logits=True), ids)
        del runner  # release the session before the files move
        scored[symmetric] = (score, folder, result)
    best = min(scored, key=lambda s: scored[s][0])
    _, folder, result = scored[best]
    for path in folder.iterdir():
        shutil.move(str(path), dst.parent / path.name)
    result["block_choice"] = {
        "symmetric_perplexity": round(scored[True][0], 4),
        "asymmetric_perplexity": round(scored[False][0], 4),
        "scored_tokens": int(ids.shape[1]),
    }
    return result
