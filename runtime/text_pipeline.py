"""`edgelm.pipeline('text-generation', model=...)`: transformers' call shape on the edgelm runtime."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .aliases import ALIASES, cached_export_folder
from .checks import check_bool, check_int, check_number, check_seed, check_strings, check_text
from .config import GenerationConfig
from .errors import EdgelmError
from .manifest import EXPORT_REVISION, MANIFEST_NAME, PRECISIONS, changed_since
from .model import Model
from .model_names import check_model_name

logger = logging.getLogger(__name__)

TRANSFORMERS_SAMPLING = GenerationConfig(temperature=1.0, top_k=50)  # what transformers samples with by default


def resolve_model(model: str | Path, precision: str | None = None, validate: bool | None = None) -> Path:
    """An edgelm model folder for `model`: the folder itself, or an export cached once.

    `model` is an edgelm folder, an alias (`smollm2-135m`), a Hugging Face folder or hub id,
    or a `.gguf` file. Anything but an edgelm folder is exported on first use (needs the
    exporter: the `export` extra) and reused afterwards.

    Args:
        model: what to load.
        precision: for an export made here: 'int4' (None: the default), 'int8', 'fp32' or 'gguf' (a .gguf
            source only). Given with an edgelm folder, it must be the folder's own.
        validate: compare an export made here with PyTorch; None follows $EDGELM_VALIDATE (default on).
    Raises:
        EdgelmError: for a name that is no folder, file, alias or hub id, or when exporting fails.
    """
    if not isinstance(model, (str, os.PathLike)) or not str(model):
        raise EdgelmError(f"model={model!r} is invalid: give a model folder, an alias ({', '.join(ALIASES)}), "
                          "a Hugging Face folder or hub id, or a .gguf file")
    if precision is not None and precision not in PRECISIONS:
        raise EdgelmError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    path = Path(model).expanduser()
    if (path / MANIFEST_NAME).is_file():
        held = _folder_precision(path)
        if precision is not None and held is not None and precision != held:
            raise EdgelmError(f"{path} holds a {held} export, and precision={precision!r} applies only to exports "
                              f"made here: leave precision out, or export the source again at {precision}")
        return path
    if path.exists() and not path.is_dir() and path.suffix != ".gguf":
        raise EdgelmError(f"{path} is a file but not a .gguf file: give an edgelm model folder, a Hugging Face "
                          "folder or a .gguf file")
    check_model_name(str(model))
    if path.is_dir() and not (path / "config.json").is_file():
        raise EdgelmError(f"{path} is not an edgelm model folder (no {MANIFEST_NAME}); create one with: edgelm export SOURCE -o {path}")
    precision = precision or "int4"
    folder = cached_export_folder(str(model), precision)
    if (folder / MANIFEST_NAME).is_file():
        revision = cached_revision(folder)
        if not changed_since(revision, precision):
            return folder
        return exported_again(str(model), folder, precision, validate, revision)
    export_model = export_or_explain(f"{model!r} is not an exported edgelm folder, and exporting it")
    # WARNING, not INFO: the first call takes a minute and writes to disk; say so even where logging is not set up
    logger.warning("edgelm: exporting %s to %s into %s (once; later calls reuse it)", model, precision, folder)
    export_model(str(model), folder, precision=precision, check=validate)
    return folder


def open_model(folder: Path, **options) -> Model:
    """`Model(folder, **options)`; a damaged cached export's error also says how to have it made again."""
    from .aliases import cache_root

    try:
        return Model(folder, **options)
    except EdgelmError as exc:
        if Path(folder).resolve().parent != cache_root().resolve():
            raise
        raise EdgelmError(f"{exc} ({folder.name} is a cached export: `edgelm models --remove {folder.name}` "
                          "removes it, and the next use exports it again)") from exc


def exported_again(model: str, folder: Path, precision: str, validate: bool | None, revision: int) -> Path:
    """`folder`, a cached export of an older export revision, made again by this exporter (where it is installed)."""
    try:
        export_model = export_or_explain()
    except EdgelmError:  # a runtime-only install cannot export: the older folder still runs
        logger.warning("edgelm: %s was exported by an older edgelm (revision %d, now %d); install the exporter "
                       "and remove it (edgelm models --remove %s) to export it again", folder, revision,
                       EXPORT_REVISION, folder.name)
        return folder
    logger.warning("edgelm: %s was exported by an older edgelm (revision %d, now %d): exporting it again",
                   folder, revision, EXPORT_REVISION)
    export_model(model, folder, precision=precision, check=validate, force=True)
    return folder


def _folder_precision(folder: Path) -> str | None:
    """The precision an edgelm folder's manifest records (None if unreadable: loading it names what is wrong)."""
    try:
        precision = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")).get("precision")
    except (OSError, ValueError, AttributeError):
        return None
    return precision if isinstance(precision, str) else None


def cached_revision(folder: Path) -> int:
    """The export revision a cached folder's manifest records (1 when absent; a damaged one counts as current:
    loading it names what is wrong)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        revision = data.get("export_revision", 1)
    except (OSError, ValueError, AttributeError):
        return EXPORT_REVISION
    return revision if isinstance(revision, int) and not isinstance(revision, bool) else EXPORT_REVISION


def export_or_explain(what: str = "exporting"):
    """`edgelm.export.export_model`, or an error that says how to install the exporter."""
    try:
        from edgelm.export import export_model
    except ImportError as exc:
        raise EdgelmError(
            f"{what} needs the exporter, which this install lacks (missing: {exc.name}). Install edgelm with its "
            "export extra from the project's checkout: pip install torch==2.13.0 (the CPU build; first), then "
            "pip install '.[export]' in the checkout (or `make setup` there)"
        ) from exc
    return export_model


class TextGenerationPipeline:
    """Answers `generator(text, max_length=30, ...)` with `[{'generated_text': ...}]`."""

    def __init__(self, model: Model):
        self.model = model

    def __call__(
        self,
        text_inputs,
        max_length: int | None = None,
        max_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float | None = None,
        num_return_sequences: int = 1,
        return_full_text: bool = True,
        stop_strings: str | list[str] | None = None,
        seed: int | None = None,
        json_schema=None,
        regex: str | None = None,
        grammar: str | None = None,
    ):
        """Continues one text, a list of texts, or one chat (a list of role/content dicts).

        Args mirror transformers: `max_length` counts prompt and new tokens, `max_new_tokens`
        only new ones (it wins when both are given); sampling happens only with `do_sample=True`.
        `json_schema` (a dict or pydantic model), `regex` or `grammar` (Lark or GBNF) constrain
        the new text (needs llguidance: pip install 'edgelm[json]').
        Returns:
            [{'generated_text': str}] per sequence; a list of such lists for a list of texts.
        Raises:
            EdgelmError: for a setting of the wrong type or range, do_sample=True with temperature=0,
                an empty prompt or one with a lone surrogate, or a malformed chat. A `max_length` not
                above the prompt length is only warned about (logger "edgelm.pipeline"), as in transformers.
        """
        n = check_int("num_return_sequences", num_return_sequences, 1, 1024)
        check_bool("return_full_text", return_full_text)
        if max_length is not None:
            check_int("max_length", max_length, 1, None, "None or an integer >= 1 (prompt plus new tokens)")
        if max_new_tokens is not None:
            check_int("max_new_tokens", max_new_tokens, 0, None, "None or an integer >= 0")
        if temperature is not None:
            check_number("temperature", temperature, 0, None, "a finite number > 0 with do_sample=True")
        sample = check_bool("do_sample", do_sample) if do_sample is not None else not self.model.defaults.greedy
        if n > 1 and not sample:
            raise EdgelmError("num_return_sequences > 1 gives identical greedy outputs: pass do_sample=True")
        if sample and temperature is not None and temperature == 0:
            raise EdgelmError("do_sample=True with temperature=0 cannot sample (as in transformers): "
                              "pass do_sample=False for greedy decoding, or a temperature > 0")
        settings = dict(top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
                        seed=check_seed("seed", seed), json_schema=json_schema, regex=regex, grammar=grammar)
        if stop_strings is not None:
            settings["stop"] = check_strings("stop_strings", stop_strings)
        if sample:  # the model's own sampling defaults, else transformers' (temperature 1, top-k 50)
            base = TRANSFORMERS_SAMPLING if self.model.defaults.greedy else self.model.defaults
            settings["temperature"] = temperature if temperature is not None else base.temperature
            settings["top_k"] = top_k if top_k is not None else base.top_k
        else:
            settings["temperature"] = 0.0
        if isinstance(text_inputs, str):
            return self._texts([text_inputs], max_length, max_new_tokens, settings, n, return_full_text)[0]
        if isinstance(text_inputs, list) and text_inputs and all(isinstance(m, dict) for m in text_inputs):
            return self._chat(text_inputs, max_length, max_new_tokens, settings, n)
        if isinstance(text_inputs, list) and all(isinstance(t, str) for t in text_inputs):
            for i, text in enumerate(text_inputs):  # all checked before any is generated
                check_text(f"text_inputs[{i}]", text, allow_empty=False)
            return self._texts(text_inputs, max_length, max_new_tokens, settings, n, return_full_text)
        raise EdgelmError("text_inputs must be a string, a list of strings, or a chat (list of role/content dicts)")

    def _budget(self, prompt_len: int, max_length: int | None, max_new_tokens: int | None) -> int:
        if max_new_tokens is not None:
            return max_new_tokens
        if max_length is not None:
            if max_length <= prompt_len:  # transformers warns the same way, and generates nothing
                logger.warning("max_length=%d is not above the prompt's %d tokens, so nothing is generated; "
                               "use max_new_tokens to set the new tokens alone", max_length, prompt_len)
            return max(0, max_length - prompt_len)
        return self.model.defaults.max_new_tokens

    def _continuations(self, prompts: list[list[int]], budgets: list[int], settings: dict, n: int,
                       reuse_prefix: bool = False) -> list[list[str]]:
        """n generated texts for each prompt's ids; seeds step by one per sequence so sampled ones differ.

        One sequence runs alone (reusing a cached prefix when asked); several run as one batch.
        """
        seed = settings.get("seed")
        configs = [self.model.config(max_new_tokens=budget, **dict(settings, seed=None if seed is None else seed + i))
                   for budget in budgets for i in range(n)]
        if len(configs) == 1:
            return [["".join(self.model.stream_ids(prompts[0], configs[0], reuse_prefix=reuse_prefix))]]
        texts = self.model.generate_batch([ids for ids in prompts for _ in range(n)], configs)
        return [texts[k * n : (k + 1) * n] for k in range(len(prompts))]

    def _texts(self, texts, max_length, max_new_tokens, settings, n, return_full_text):
        prompts = [self.model.encode(check_text("the prompt", text, allow_empty=False)) for text in texts]
        budgets = [self._budget(len(ids), max_length, max_new_tokens) for ids in prompts]
        return [
            [{"generated_text": (text if return_full_text else "") + new} for new in continuations]
            for text, continuations in zip(texts, self._continuations(prompts, budgets, settings, n))
        ]

    def _chat(self, messages, max_length, max_new_tokens, settings, n):
        ids = self.model.chat_ids(messages)
        budget = self._budget(len(ids), max_length, max_new_tokens)
        return [
            {"generated_text": [*messages, {"role": "assistant", "content": reply}]}
            for reply in self._continuations([ids], [budget], settings, n, reuse_prefix=True)[0]
        ]


def pipeline(
    task: str = "text-generation",
    model: str | Path | None = None,
    precision: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    validate: bool | None = None,
) -> TextGenerationPipeline:
    """A transformers-style text generator running on the edgelm runtime.

    Args:
        task: only 'text-generation'.
        model: an edgelm folder, an alias ('smollm2-135m', 'gemma3-270m'), a Hugging Face
            folder or hub id, or a .gguf file; non-folders are exported once and cached.
        precision: for exports made here: 'int4' (None: the default), 'int8', 'fp32', or 'gguf' (a .gguf
            source's own quantized blocks, unchanged: the source's quality; see the README). Given with an
            edgelm folder, it must be the folder's own.
        device: 'cpu' or 'cuda'.
        threads: CPU threads (default: one per available core; at most that many).
        validate: for exports made here, compare with PyTorch and record the numbers (slower);
            None (the default) follows $EDGELM_VALIDATE: validate unless it is 0.
    Raises:
        EdgelmError: for an unknown task or model name, or when exporting fails.
    Example:
        generator = edgelm.pipeline('text-generation', model='smollm2-135m')
        generator('Machine learning is', max_length=30)
    """
    if task != "text-generation":
        raise EdgelmError(f"task {task!r} is not supported: edgelm offers 'text-generation'")
    if model is None:  # as transformers' pipeline() does: the default model, and a word that it was chosen
        from .aliases import DEFAULT_MODEL

        logger.warning("edgelm: no model given; using the default, %s (pass model=... to choose)", DEFAULT_MODEL)
        model = DEFAULT_MODEL
    return TextGenerationPipeline(open_model(resolve_model(model, precision, validate), device=device, threads=threads))
