"""Choosing the int4 method and block symmetry by measuring, not by rule.

Neither symmetry wins everywhere. With round-to-nearest, SmolLM2-135M (from a Q4_1 GGUF) did
better with symmetric blocks and Gemma 3 270M (from Q4_K_M) with asymmetric ones. So the
exporter quantizes every candidate asked for (`int4_method` rtn / calibrated / auto for both,
`symmetric` True / False / None for both), scores each on held-out text
(calibration.scoring_text, which neither the calibration nor the evaluation text overlaps),
and keeps the one whose next-token distributions stay closest to the fp32 graph's: the lowest
mean KL divergence, as llama.cpp judges its quantizations. Perplexity on 256 tokens moves with
which tokens a candidate happens to guess well (a worse model can score lower by luck); KLD
compares every position's whole distribution with the source's. Both go into the manifest.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgelm.errors import EdgelmError
from edgelm.manifest import Manifest
from edgelm.quality import kl_divergence, perplexity
from edgelm.session import GraphRunner

from .arguments import INT4_METHODS
from .calibration import scoring_text
from .int4_calibrated import calibration_ids, collect_hessians, quantize_int4_calibrated
from .quantize import quantize_int4

logger = logging.getLogger(__name__)
SCORING_TOKENS = 256


def quantize_int4_best(src: Path, dst: Path, manifest: Manifest, work: Path, method: str = "auto",
                       symmetric: bool | None = None, scorer: "Scorer | None" = None, **settings) -> dict:
    """Writes the best-scoring int4 candidate to `dst` and returns its settings with every candidate's score.

    Args:
        src: the fp32 graph.
        dst: the int4 graph to write (its folder already holds the tokenizer).
        manifest: the model's manifest.
        work: a scratch folder.
        method: "rtn" (onnxruntime's round-to-nearest), "calibrated" (GPTQ) or "auto" (both, scored).
        symmetric: block symmetry; None tries both.
        scorer: scores candidates against `src` (one is made if None; the export shares its own).
        **settings: block_size, accuracy_level, lm_head_bits, lm_head_block_size.
    """
    if method not in INT4_METHODS:
        raise EdgelmError(f"int4_method={method!r} is invalid: use one of {', '.join(INT4_METHODS)}")
    candidates = [(m, s) for m in (("rtn", "calibrated") if method == "auto" else (method,))
                  for s in ((True, False) if symmetric is None else (symmetric,))]
    if method == "auto" and symmetric is None:
        # GPTQ with zero points beat symmetric GPTQ on every run measured (SmolLM2 16.63 against 18.67
        # on the scoring text), and each GPTQ pass is most of an export's time: auto skips that one
        candidates.remove(("calibrated", True))
    hessians: dict = {}

    def write(candidate: tuple[str, bool], target: Path) -> dict:
        name, sym = candidate
        if name == "rtn":
            return quantize_int4(src, target, symmetric=sym, **settings) | {"int4_method": "rtn"}
        if not hessians:  # collected once, shared by both symmetries
            ids = calibration_ids(dst.parent / manifest.tokens.tokenizer_file)
            hessians.update(collect_hessians(src, manifest, ids, work))
        return quantize_int4_calibrated(src, target, manifest, work, symmetric=sym, hessians=hessians, **settings)

    if len(candidates) == 1:
        return write(candidates[0], dst)
    scorer = scorer or Scorer(src, dst.parent, manifest)
    scored = {}
    for candidate in candidates:
        label = f"{candidate[0]} {'symmetric' if candidate[1] else 'asymmetric'}"
        folder = work / ("int4-" + label.replace(" ", "-"))
        folder.mkdir(parents=True)
        result = write(candidate, folder / dst.name)
        scores = scorer.score(folder / dst.name)
        logger.info("int4 %s: KLD %.4f, perplexity %.3f on the scoring text", label, scores["kld"], scores["perplexity"])
        scored[label] = (scores, folder, result)
    best = min(scored, key=lambda label: scored[label][0]["kld"])
    _, folder, result = scored[best]
    for path in folder.iterdir():
        shutil.move(str(path), dst.parent / path.name)
    result["choice"] = {
        "kld": {label: round(scores["kld"], 6) for label, (scores, _, _) in scored.items()},
        "perplexity": {label: round(scores["perplexity"], 4) for label, (scores, _, _) in scored.items()},
        "kept": best,
        "criterion": "lowest mean KLD against the fp32 graph",
        "scored_tokens": scorer.tokens,
        "scoring_text": "pydoc_data.topics sections held out from calibration and evaluation",
    }
    return result


class Scorer:
    """Scores quantized graphs against the fp32 graph on the held-out scoring text.

    The fp32 logits are computed at the first score and kept (Gemma 3 270M: 256 x 262,144 floats,
    268 MB): the int4 candidates and the tied-table trial of one export share them, and each
    graph scored is then one teacher-forced pass.
    """

    def __init__(self, fp32_graph: Path, tokenizer_folder: Path, manifest: Manifest):
        self.fp32_graph, self.manifest = fp32_graph, manifest
        self.ids = scoring_ids(tokenizer_folder, manifest)
        self.tokens = int(self.ids.shape[1])
        self._reference: np.ndarray | None = None

    def score(self, graph_path: Path) -> dict[str, float]:
        """{"kld": mean KL(fp32 || graph), "perplexity": the graph's perplexity} on the scoring text."""
        if self._reference is None:
            self._reference = graph_logits(self.fp32_graph, self.manifest, self.ids)
        logits = graph_logits(graph_path, self.manifest, self.ids)
        return {"kld": kl_divergence(self._reference, logits), "perplexity": perplexity(logits, self.ids)}


def scoring_ids(folder: Path, manifest: Manifest, tokens: int = SCORING_TOKENS) -> np.ndarray:
    """(1, tokens) ids of the held-out scoring text, with the tokenizer in `folder` (at most the context length)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / manifest.tokens.tokenizer_file))
    return np.array([tokenizer.encode(scoring_text()).ids[: min(tokens, manifest.context_length)]])


def graph_logits(graph_path: Path, manifest: Manifest, ids: np.ndarray) -> np.ndarray:
    """The logits (1, tokens, vocab) of the graph at `graph_path` at every position of `ids` (scoring_ids)."""
    # that graph alone: a manifest naming a prefill graph would otherwise send these tokens through it
    runner = GraphRunner(graph_path.parent, replace(manifest, graph_file=graph_path.name, prefill_graph_file=None))
    logits = runner.forward(ids, runner.new_cache(), all_logits=True)
    del runner  # release the session before the files move
    return logits
