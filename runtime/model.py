"""A loaded model folder: the public generate / stream / chat API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from .chat_session import ChatSession
from .chat_template import ChatTemplate
from .checks import check_bool, check_text, check_token_ids
from .config import GenerationConfig
from .constraints import make_constraint, tokenizer_info
from .detokenizer import IncrementalDecoder
from .engine import Engine
from .errors import EdgelmError
from .generation import Timings, generate_tokens
from .integrity import verify_digests
from .manifest import Manifest
from .memory import settled_load
from .prefix_cache import PrefixCache
from .session import GraphRunner
from .stopping import StopStrings
from .tokenizer import load_tokenizer


MAX_BATCH = 16  # sequences decoded together by generate([...]) at most; more wait for a free row


class Model:
    """An exported model, ready to generate. Build it with `edgelm.load(folder)`.

    Example:
        model = edgelm.load("smollm2-int4")
        print(model.generate("Machine learning is", max_new_tokens=30))
        for piece in model.stream("Once upon a time"):
            print(piece, end="", flush=True)
    """

    def __init__(self, folder: str | Path, device: str = "cpu", threads: int | None = None, verify: bool = False,
                 prefill_graph: bool = True):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise EdgelmError(f"model folder {folder} does not exist; export one with: edgelm export SOURCE -o {folder}")
        self.manifest = Manifest.load(self.folder)
        if check_bool("verify", verify):
            verify_digests(self.folder, self.manifest.files)
        with settled_load(self.folder):  # then: what the load left behind goes back, the packed weights to huge pages
            tokens = self.manifest.tokens
            tokenizer_path = self.manifest.path(self.folder, tokens.tokenizer_file, "tokens.tokenizer_file")
            self.tokenizer = load_tokenizer(tokenizer_path, (self.manifest.versions or {}).get("tokenizers"))
            base_vocab = self.tokenizer.get_vocab_size(with_added_tokens=False)
            if base_vocab > self.manifest.vocab_size:
                raise EdgelmError(
                    f"{tokens.tokenizer_file} has {base_vocab} tokens but the graph's vocabulary has "
                    f"{self.manifest.vocab_size}: they are not from the same model; re-export the model"
                )
            self.runner = GraphRunner(self.folder, self.manifest, device=device, threads=threads,
                                      prefill_graph=check_bool("prefill_graph", prefill_graph))
        try:
            self.defaults = GenerationConfig(**_known_defaults(self.manifest.generation_defaults))
        except EdgelmError as exc:
            raise EdgelmError(f"manifest (edgelm.json) generation_defaults: {exc}; re-export the model") from None
        self._local = threading.local()  # timings belong to the thread that generated
        self._chat_template: ChatTemplate | None = None
        self.prefix_cache = PrefixCache(self.runner.new_cache)  # recent chat caches, reused by common prefix
        self._token_tables: dict[tuple[int, ...], object] = {}  # eos ids -> llguidance's tokenizer view
        self._token_tables_lock = threading.Lock()

    @property
    def last_timings(self) -> Timings:
        """The timings of the last generation finished or running in this thread."""
        return getattr(self._local, "timings", None) or Timings()

    @last_timings.setter
    def last_timings(self, timings: Timings) -> None:
        self._local.timings = timings

    # -- tokens ---------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids as transformers' tokenizer gives them (BOS added where the model wants it).

        Raises:
            EdgelmError: when `text` is not a str, holds a lone surrogate, or becomes an id the graph lacks.
        """
        ids = self.tokenizer.encode(check_text("the prompt", text), add_special_tokens=add_special_tokens).ids
        vocab = self.manifest.vocab_size
        for i in ids:
            if i >= vocab:
                raise EdgelmError(
                    f"the tokenizer turned {self.tokenizer.id_to_token(i)!r} into id {i}, beyond the graph's "
                    f"vocabulary of {vocab}: tokenizer.json does not match the graph; re-export the model"
                )
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # -- generation -----------------------------------------------------------------------
    def config(self, config: GenerationConfig | None = None, **settings) -> GenerationConfig:
        """The model's defaults, updated by `config` and then by keyword settings."""
        if config is not None and not isinstance(config, GenerationConfig):
            raise EdgelmError(f"config must be a GenerationConfig or None, got {type(config).__name__}; "
                              "pass settings as keywords instead, e.g. max_new_tokens=20")
        base = config or self.defaults
        return base.updated(**settings)

    def generate_ids(self, prompt_ids: list[int], config: GenerationConfig, cache=None) -> Iterator[int]:
        """The one generator underneath everything: new token ids, one at a time.

        Args:
            prompt_ids: the prompt's token ids.
            config: the settings; json_schema, regex or grammar constrain the output.
            cache: a key/value cache from `runner.new_cache()` to run in (and keep) instead of a new one;
                what it already holds for a prefix of `prompt_ids` is reused.
        Raises:
            EdgelmError: on an empty or over-long prompt, an id outside the vocabulary, or a schema,
                regex or grammar that does not compile (or no llguidance to compile it).
        """
        prompt_ids = check_token_ids("prompt_ids", prompt_ids, self.manifest.vocab_size)
        if not isinstance(config, GenerationConfig):
            raise EdgelmError(f"config must be a GenerationConfig, got {type(config).__name__}")
        prompt_ids = self._checked_prompt(prompt_ids)
        eos = config.eos_token_ids if config.eos_token_ids is not None else tuple(self.manifest.tokens.eos_token_ids)
        constraint = self.constraint(config, eos)
        timings = Timings()
        self.last_timings = timings
        yield from generate_tokens(self.runner, prompt_ids, config, eos, self.manifest.context_length, timings,
                                   cache=cache, constraint=constraint)

    def stream_ids(self, prompt_ids: list[int], config: GenerationConfig, cache=None,
                   reuse_prefix: bool = False) -> Iterator[str]:
        """Text pieces for generated tokens: complete characters only, cut before any stop string.

        With `reuse_prefix` (and no `cache`), the cache of a recent generation that shares the longest
        prefix with `prompt_ids` is reused, and kept afterwards for the next one (`self.prefix_cache`).
        """
        if cache is None and reuse_prefix:
            cache = self.prefix_cache.take(prompt_ids)
            try:
                yield from self.stream_ids(prompt_ids, config, cache)
            finally:
                self.prefix_cache.put(cache)
            return
        decoder = IncrementalDecoder(self.tokenizer, prompt_ids)
        stops = StopStrings(config.stop, keep=config.keep_stop)
        tokens = self.generate_ids(prompt_ids, config, cache)
        for token in tokens:
            piece = stops.feed(decoder.push(token))
            if piece:
                yield piece
            if stops.stopped:
                tokens.close()
                self.last_timings.finish_reason = "stop"
                return
        tail = stops.feed(decoder.flush()) + stops.flush()
        if tail:
            yield tail

    def constraint(self, config: GenerationConfig, eos: tuple[int, ...] | None = None):
        """A fresh constraint for one generation under `config` (see constraints.py), or None when the
        config constrains nothing. Pass it to `Sampler(config, constraint)`.

        Raises:
            EdgelmError: when llguidance is missing, or the schema, regex or grammar does not compile.
        """
        if not config.constrained:
            return None
        if eos is None:
            eos = config.eos_token_ids if config.eos_token_ids is not None else tuple(self.manifest.tokens.eos_token_ids)
        if not eos:
            raise EdgelmError("a constrained output (json_schema, regex, grammar) ends on an end-of-sequence token, "
                              "and this model names none (manifest tokens.eos_token_ids): give eos_token_ids=[...]")
        return make_constraint(self._token_table(eos), config.json_schema, config.regex, config.grammar)

    def _token_table(self, eos: tuple[int, ...]):
        """llguidance's view of this model's tokens, built on first use (per set of eos ids)."""
        with self._token_tables_lock:
            if eos not in self._token_tables:
                path = self.manifest.path(self.folder, self.manifest.tokens.tokenizer_file, "tokens.tokenizer_file")
                self._token_tables[eos] = tokenizer_info(path.read_text(encoding="utf-8"), self.manifest.vocab_size,
                                                         list(eos))
            return self._token_tables[eos]

    def stream(self, prompt: str, config: GenerationConfig | None = None, **settings) -> Iterator[str]:
        """Yields the continuation of `prompt` piece by piece, as it is decoded.

        Args:
            prompt: text to continue: a non-empty str.
            config: a GenerationConfig; keyword settings (max_new_tokens, temperature, top_k,
                top_p, min_p, repetition_penalty, stop, seed, json_schema, regex, grammar,
                logprobs) override it.
        Yields:
            Text pieces; joined they are the whole continuation. Afterwards `last_timings` tells how
            it ended (`finish_reason`: 'stop' or 'length') and, with logprobs=True, each token's
            log-probability.
        Raises:
            EdgelmError: on a prompt that is not a str, is empty, holds a lone surrogate or is over-long,
                or on an invalid setting.
        """
        cfg = self.config(config, **settings)
        ids = self.encode(check_text("the prompt", prompt, allow_empty=False))
        return self.stream_ids(ids, cfg)

    def generate(self, prompt: str | list[str], config: GenerationConfig | None = None, **settings) -> str | list[str]:
        r"""The continuation of `prompt` (without the prompt). Same arguments as `stream`.

        A list of prompts runs as one batch (continuous batching: every step decodes all of them
        in one graph run) and returns a list of continuations; greedy ones equal those made alone.
        A batch records no `last_timings` and no logprobs (those are one generation's).
        Example:
            model.generate("Machine learning is", max_new_tokens=20)
            model.generate(["Once upon a time", "The capital of France is"], max_new_tokens=20)
            model.generate("The answer is ", regex=r"(yes|no)\.")
        """
        if isinstance(prompt, list):
            cfg = self.config(config, **settings)
            ids = [self.encode(check_text(f"prompt {i}", p, allow_empty=False)) for i, p in enumerate(prompt)]
            return self.generate_batch(ids, [cfg] * len(ids))
        return "".join(self.stream(prompt, config, **settings))

    def generate_batch(self, prompts: list[list[int]], configs: list[GenerationConfig]) -> list[str]:
        """Continuations of many prompt id lists (each with its own config), decoded together.

        Raises:
            EdgelmError: on an empty or over-long prompt, an id outside the vocabulary, or a failed generation.
        """
        if len(prompts) != len(configs):
            raise EdgelmError(f"{len(prompts)} prompts but {len(configs)} configs: give one config per prompt")
        if any(cfg.logprobs for cfg in configs):
            raise EdgelmError("logprobs=True records one generation's log-probabilities (in last_timings): "
                              "generate one prompt at a time to have them")
        self.last_timings = Timings()  # timings are one generation's: a batch leaves none (not the last one's)
        checked = [self._checked_prompt(ids, f"prompts[{i}]") for i, ids in enumerate(prompts)]
        if not checked:
            return []
        if self.runner.device != "cpu":  # the batched caches live in host memory for now
            return ["".join(self.stream_ids(ids, cfg)) for ids, cfg in zip(checked, configs)]
        engine = Engine(self.runner, self.tokenizer, tuple(self.manifest.tokens.eos_token_ids),
                        self.manifest.context_length, max_batch=min(len(checked), MAX_BATCH))
        seqs = engine.generate([engine.sequence(ids, cfg, constraint=self.constraint(cfg))
                                for ids, cfg in zip(checked, configs)])
        return [seq.text for seq in seqs]

    def _checked_prompt(self, prompt_ids: list[int], name: str = "prompt_ids") -> list[int]:
        prompt_ids = check_token_ids(name, prompt_ids, self.manifest.vocab_size)
        if not prompt_ids:
            raise EdgelmError("the prompt is empty: give at least one token of text")
        if len(prompt_ids) >= self.manifest.context_length:
            raise EdgelmError(
                f"the prompt has {len(prompt_ids)} tokens; this model's context holds {self.manifest.context_length}"
            )
        return prompt_ids

    # -- chat -----------------------------------------------------------------------------
    @property
    def chat_template(self) -> ChatTemplate:
        if self._chat_template is None:
            tokens = self.manifest.tokens
            if not tokens.chat_template_file:
                raise EdgelmError(f"{self.folder} has no chat template: this model is not a chat model; use generate()")
            path = self.manifest.path(self.folder, tokens.chat_template_file, "tokens.chat_template_file")
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise EdgelmError(f"the chat template {path} cannot be read ({exc}); re-export the model") from None
            self._chat_template = ChatTemplate(source, tokens.bos_token, tokens.eos_token, name=str(path))
        return self._chat_template

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """The token ids of `messages` rendered by the chat template, ready for the assistant's reply."""
        prompt = self.chat_template.render(messages, add_generation_prompt=True)
        if not prompt.strip():
            raise EdgelmError(f"the chat template of {self.folder} turned these messages into no text; check the "
                              "folder's template (manifest tokens.chat_template_file) or re-export the model")
        return self.encode(prompt, add_special_tokens=False)  # the template already wrote BOS if the model wants it

    def chat_stream(self, messages: list[dict], config: GenerationConfig | None = None, **settings) -> Iterator[str]:
        """Streams the assistant's reply to `messages` ([{'role': 'user', 'content': '...'}, ...]).

        The cache of a recent chat that shares a prefix with these messages is reused, so a conversation
        sent again with one more message runs only the new tokens.
        """
        ids = self.chat_ids(messages)
        return self.stream_ids(ids, self.config(config, **settings), reuse_prefix=True)

    def chat(self, messages: list[dict], config: GenerationConfig | None = None, **settings) -> str:
        """The assistant's whole reply to `messages`.

        Example:
            model.chat([{"role": "user", "content": "Name a colour."}], json_schema={"type": "string"})
        """
        return "".join(self.chat_stream(messages, config, **settings))

    def chat_session(self, system: str | None = None, config: GenerationConfig | None = None,
                     **settings) -> ChatSession:
        """A conversation that keeps its key/value cache between turns: each turn runs only its new tokens.

        Example:
            session = model.chat_session(system="Answer briefly.")
            print(session.send("Hi!"))
            for piece in session.stream("And who are you?"):
                print(piece, end="")
        """
        return ChatSession(self, system, self.config(config, **settings))


def _known_defaults(defaults: dict) -> dict:
    """The manifest's generation defaults that GenerationConfig understands."""
    known = {"max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty"}
    return {k: v for k, v in defaults.items() if k in known and v is not None}
