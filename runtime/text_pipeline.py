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

# transformers' TextGenerationPipeline (4.57) samples unless told otherwise: do_sample=True, temperature 0.7,
# top-k 50 (generate's), 256 new tokens; a model's own generation_config.json settings come first
PIPELINE_DEFAULTS = GenerationConfig(temperature=0.7, top_k=50, max_new_tokens=256)
# transformers call arguments that have nothing to do here: accepted and ignored (batches are formed by the engine,
# padding does not exist, the detokenizer writes text as the tokenizer's decoder does)
IGNORED_ARGUMENTS = ("batch_size", "pad_token_id", "clean_up_tokenization_spaces")
INSTEAD = {"stop_sequence": "stop_strings=", "generation_config": "the settings as arguments (or model.generate(text, "
           "config))", "eos_token_ids": "eos_token_id=", "max_tokens": "max_new_tokens="}


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


class PipelineTokenizer:
    """What transformers code reads from `generator.tokenizer`: the special token ids, encode and decode."""

    def __init__(self, model: Model):
        tokens = model.manifest.tokens
        self._model = model
        self.bos_token_id, self.pad_token_id = tokens.bos_token_id, tokens.pad_token_id
        self.eos_token_id = tokens.eos_token_ids[0] if tokens.eos_token_ids else None
        self.bos_token, self.eos_token = tokens.bos_token, tokens.eos_token

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._model.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._model.tokenizer.decode(list(ids), skip_special_tokens=check_bool("skip_special_tokens",
                                                                                      skip_special_tokens))


class TextGenerationPipeline:
    """Answers `generator(text, max_length=30, ...)` with `[{'generated_text': ...}]`."""

    task = "text-generation"

    def __init__(self, model: Model):
        self.model = model
        self.tokenizer = PipelineTokenizer(model)

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
        return_full_text: bool | None = None,
        stop_strings: str | list[str] | None = None,
        seed: int | None = None,
        eos_token_id: int | list[int] | None = None,
        continue_final_message: bool | None = None,
        json_schema=None,
        regex: str | None = None,
        grammar: str | None = None,
        **ignored,
    ):
        """Continues one text, a list of texts, one chat (a list of role/content dicts) or a list of chats.

        Args mirror transformers' TextGenerationPipeline (4.57): `max_length` counts prompt and new
        tokens, `max_new_tokens` only new ones (it wins when both are given; neither: the model's own
        default, else 256). Like transformers' pipeline it samples unless `do_sample=False`: at the
        model's own sampling settings where its generation_config.json has them, else temperature 0.7
        and top-k 50. `stop_strings` end the text with the stop string, as there.
        A chat whose last message is the assistant's is continued (`continue_final_message`, as in
        transformers). `batch_size`, `pad_token_id` and `clean_up_tokenization_spaces` are accepted
        and have nothing to do. `json_schema` (a dict or pydantic model), `regex` or `grammar` (Lark or
        GBNF) constrain the new text (needs llguidance: pip install 'edgelm[json]').
        Returns:
            [{'generated_text': str}] per sequence (for a chat: the conversation with the reply, or the
            reply alone with return_full_text=False); a list of such lists for a list of inputs.
        Raises:
            EdgelmError: for a setting of the wrong type or range, an argument edgelm does not know,
                do_sample=True with temperature=0, a `max_length` not above the prompt (as transformers
                raises), an empty prompt or one with a lone surrogate, or a malformed chat.
        """
        unknown = [name for name in ignored if name not in IGNORED_ARGUMENTS]
        if unknown:
            hints = "; ".join(f"for {name} use {INSTEAD[name]}" for name in unknown if name in INSTEAD)
            raise EdgelmError(f"edgelm's pipeline takes no {', '.join(unknown)}" + (f" ({hints})" if hints else "")
                              + "; it takes max_length, max_new_tokens, do_sample, temperature, top_k, top_p, min_p, "
                              "repetition_penalty, num_return_sequences, return_full_text, stop_strings, seed, "
                              "eos_token_id, continue_final_message, json_schema, regex, grammar")
        n = check_int("num_return_sequences", num_return_sequences, 1, 1024)
        full = check_bool("return_full_text", return_full_text) if return_full_text is not None else True
        if max_length is not None:
            check_int("max_length", max_length, 1, None, "None or an integer >= 1 (prompt plus new tokens)")
        if max_new_tokens is not None:
            check_int("max_new_tokens", max_new_tokens, 0, None, "None or an integer >= 0")
        if temperature is not None:
            check_number("temperature", temperature, 0, None, "a finite number > 0 with do_sample=True")
        sample = check_bool("do_sample", do_sample) if do_sample is not None else True
        if n > 1 and not sample:
            raise EdgelmError("num_return_sequences > 1 with do_sample=False gives identical greedy outputs: "
                              "leave do_sample out (or True) to sample them")
        if sample and temperature is not None and temperature == 0:
            raise EdgelmError("do_sample=True with temperature=0 cannot sample (as in transformers): "
                              "pass do_sample=False for greedy decoding, or a temperature > 0")
        settings = dict(top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
                        seed=check_seed("seed", seed), json_schema=json_schema, regex=regex, grammar=grammar)
        if stop_strings is not None:  # as in transformers, the text ends with the stop string
            settings["stop"], settings["keep_stop"] = check_strings("stop_strings", stop_strings), True
        if eos_token_id is not None:
            settings["eos_token_ids"] = eos_token_id
        if sample:  # the model's own sampling defaults, else transformers' pipeline's
            base = PIPELINE_DEFAULTS if self.model.defaults.greedy else self.model.defaults
            settings["temperature"] = temperature if temperature is not None else base.temperature
            settings["top_k"] = top_k if top_k is not None else base.top_k
        else:
            given = [name for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p),
                                              ("min_p", min_p)) if value is not None]
            if given:  # transformers warns the same way
                logger.warning("do_sample=False decodes greedily: %s ignored", ", ".join(given))
            settings["temperature"] = 0.0
        run = dict(max_length=max_length, max_new_tokens=max_new_tokens, settings=settings, n=n, full=full)
        if isinstance(text_inputs, str):
            return self._texts([text_inputs], **run)[0]
        if _is_chat(text_inputs):
            return self._chat(text_inputs, continue_final_message, **run)
        if isinstance(text_inputs, list) and text_inputs and all(_is_chat(chat) for chat in text_inputs):
            return [self._chat(chat, continue_final_message, **run) for chat in text_inputs]
        if isinstance(text_inputs, list) and all(isinstance(t, str) for t in text_inputs):
            for i, text in enumerate(text_inputs):  # all checked before any is generated
                check_text(f"text_inputs[{i}]", text, allow_empty=False)
            return self._texts(text_inputs, **run)
        raise EdgelmError("text_inputs must be a string, a list of strings, a chat (list of role/content dicts) "
                          "or a list of chats")

    def _budget(self, prompt_len: int, max_length: int | None, max_new_tokens: int | None) -> int:
        if max_new_tokens is not None:
            return max_new_tokens
        if max_length is not None:
            if max_length <= prompt_len:  # transformers raises too
                raise EdgelmError(f"max_length={max_length} is not above the prompt's {prompt_len} tokens, so "
                                  "nothing would be generated: use max_new_tokens to set the new tokens alone")
            return max_length - prompt_len
        if "max_new_tokens" in (self.model.manifest.generation_defaults or {}):  # the model's own default
            return self.model.defaults.max_new_tokens
        return PIPELINE_DEFAULTS.max_new_tokens

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

    def _texts(self, texts, max_length, max_new_tokens, settings, n, full):
        prompts = [self.model.encode(check_text("the prompt", text, allow_empty=False)) for text in texts]
        budgets = [self._budget(len(ids), max_length, max_new_tokens) for ids in prompts]
        return [
            [{"generated_text": (text if full else "") + new} for new in continuations]
            for text, continuations in zip(texts, self._continuations(prompts, budgets, settings, n))
        ]

    def _chat(self, messages, continue_final, max_length, max_new_tokens, settings, n, full):
        last = messages[-1]
        if continue_final is None:  # transformers' default: an assistant's last message is continued
            continue_final = last.get("role") == "assistant"
        ids = self._continued_ids(messages) if check_bool("continue_final_message", continue_final) \
            else self.model.chat_ids(messages)
        budget = self._budget(len(ids), max_length, max_new_tokens)
        replies = self._continuations([ids], [budget], settings, n, reuse_prefix=True)[0]
        if not full:
            return [{"generated_text": reply} for reply in replies]
        if continue_final:
            return [{"generated_text": [*messages[:-1], {**last, "content": last["content"] + reply}]}
                    for reply in replies]
        return [{"generated_text": [*messages, {"role": "assistant", "content": reply}]} for reply in replies]

    def _continued_ids(self, messages) -> list[int]:
        """The chat rendered up to the end of its last message's text, which the model then continues."""
        final = messages[-1].get("content")
        if not isinstance(final, str) or not final:
            raise EdgelmError("continue_final_message needs the last message's content as non-empty text; pass "
                              "continue_final_message=False to answer it instead")
        rendered = self.model.chat_template.render(messages, add_generation_prompt=False)
        cut = rendered.rfind(final)
        if cut < 0:
            raise EdgelmError("continue_final_message: the chat template does not write the last message's text "
                              "as it is, so it cannot be continued; pass continue_final_message=False")
        return self.model.encode(rendered[: cut + len(final)], add_special_tokens=False)


def _is_chat(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


def _device(device):
    """transformers' device spellings: -1 (the CPU), 0 or 'cuda:0' (the first GPU), besides 'cpu' and 'cuda'."""
    if isinstance(device, int) and not isinstance(device, bool) and device in (-1, 0):
        return "cpu" if device == -1 else "cuda"
    if device == "cuda:0":
        return "cuda"
    if isinstance(device, int) or (isinstance(device, str) and device.startswith("cuda:")):
        raise EdgelmError(f"device={device!r}: edgelm runs on the CPU (-1, 'cpu') or the first GPU (0, 'cuda')")
    return device


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
        device: 'cpu' or 'cuda' (transformers' -1, 0 and 'cuda:0' too).
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
    device = _device(device)
    if model is None:  # as transformers' pipeline() does: the default model, and a word that it was chosen
        from .aliases import DEFAULT_MODEL

        logger.warning("edgelm: no model given; using the default, %s (pass model=... to choose)", DEFAULT_MODEL)
        model = DEFAULT_MODEL
    return TextGenerationPipeline(open_model(resolve_model(model, precision, validate), device=device, threads=threads))
