"""A loaded model folder: the public generate / stream / chat API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .chat_template import ChatTemplate
from .config import GenerationConfig
from .detokenizer import IncrementalDecoder
from .errors import EdgelmError
from .generation import Timings, generate_tokens
from .manifest import Manifest
from .session import GraphRunner
from .stopping import StopStrings
from .tokenizer import load_tokenizer


class Model:
    """An exported model, ready to generate. Build it with `edgelm.load(folder)`.

    Example:
        model = edgelm.load("smollm2-int4")
        print(model.generate("Machine learning is", max_new_tokens=30))
        for piece in model.stream("Once upon a time"):
            print(piece, end="", flush=True)
    """

    def __init__(self, folder: str | Path, device: str = "cpu", threads: int | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise EdgelmError(f"model folder {folder} does not exist; export one with: edgelm export SOURCE -o {folder}")
        self.manifest = Manifest.load(self.folder)
        self.tokenizer = load_tokenizer(self.folder / self.manifest.tokens.tokenizer_file)
        self.runner = GraphRunner(self.folder, self.manifest, device=device, threads=threads)
        self.defaults = GenerationConfig(**_known_defaults(self.manifest.generation_defaults))
        self.last_timings = Timings()
        self._chat_template: ChatTemplate | None = None

    # -- tokens ---------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids as transformers' tokenizer gives them (BOS added where the model wants it)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # -- generation -----------------------------------------------------------------------
    def config(self, config: GenerationConfig | None = None, **settings) -> GenerationConfig:
        """The model's defaults, updated by `config` and then by keyword settings."""
        base = config or self.defaults
        return base.updated(**settings)

    def generate_ids(self, prompt_ids: list[int], config: GenerationConfig) -> Iterator[int]:
        """The one generator underneath everything: new token ids, one at a time."""
        if not prompt_ids:
            raise EdgelmError("the prompt is empty: give at least one token of text")
        if len(prompt_ids) >= self.manifest.context_length:
            raise EdgelmError(
                f"the prompt has {len(prompt_ids)} tokens; this model's context holds {self.manifest.context_length}"
            )
        eos = config.eos_token_ids if config.eos_token_ids is not None else tuple(self.manifest.tokens.eos_token_ids)
        self.last_timings = Timings()
        yield from generate_tokens(
            self.runner, prompt_ids, config, eos, self.manifest.context_length, self.last_timings
        )

    def stream_ids(self, prompt_ids: list[int], config: GenerationConfig) -> Iterator[str]:
        """Text pieces for generated tokens: complete characters only, cut before any stop string."""
        decoder = IncrementalDecoder(self.tokenizer, prompt_ids)
        stops = StopStrings(config.stop)
        tokens = self.generate_ids(prompt_ids, config)
        for token in tokens:
            piece = stops.feed(decoder.push(token))
            if piece:
                yield piece
            if stops.stopped:
                tokens.close()
                return
        tail = stops.feed(decoder.flush()) + stops.flush()
        if tail:
            yield tail

    def stream(self, prompt: str, config: GenerationConfig | None = None, **settings) -> Iterator[str]:
        """Yields the continuation of `prompt` piece by piece, as it is decoded.

        Args:
            prompt: text to continue.
            config: a GenerationConfig; keyword settings (max_new_tokens, temperature, top_k,
                top_p, min_p, repetition_penalty, stop, seed) override it.
        Yields:
            Text pieces; joined they are the whole continuation.
        Raises:
            EdgelmError: on an empty or over-long prompt or an invalid setting.
        """
        cfg = self.config(config, **settings)
        return self.stream_ids(self.encode(prompt), cfg)

    def generate(self, prompt: str, config: GenerationConfig | None = None, **settings) -> str:
        """The continuation of `prompt` (without the prompt). Same arguments as `stream`.

        Example:
            model.generate("Machine learning is", max_new_tokens=20)
        """
        return "".join(self.stream(prompt, config, **settings))

    # -- chat -----------------------------------------------------------------------------
    @property
    def chat_template(self) -> ChatTemplate:
        if self._chat_template is None:
            tokens = self.manifest.tokens
            if not tokens.chat_template_file:
                raise EdgelmError(f"{self.folder} has no chat template: this model is not a chat model; use generate()")
            source = (self.folder / tokens.chat_template_file).read_text(encoding="utf-8")
            self._chat_template = ChatTemplate(source, tokens.bos_token, tokens.eos_token)
        return self._chat_template

    def chat_stream(self, messages: list[dict], config: GenerationConfig | None = None, **settings) -> Iterator[str]:
        """Streams the assistant's reply to `messages` ([{'role': 'user', 'content': '...'}, ...])."""
        prompt = self.chat_template.render(messages, add_generation_prompt=True)
        ids = self.encode(prompt, add_special_tokens=False)  # the template already wrote BOS if the model wants it
        return self.stream_ids(ids, self.config(config, **settings))

    def chat(self, messages: list[dict], config: GenerationConfig | None = None, **settings) -> str:
        """The assistant's whole reply to `messages`."""
        return "".join(self.chat_stream(messages, config, **settings))


def _known_defaults(defaults: dict) -> dict:
    """The manifest's generation defaults that GenerationConfig understands."""
    known = {"max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty"}
    return {k: v for k, v in defaults.items() if k in known and v is not None}
