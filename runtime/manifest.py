"""The model folder's manifest (`edgelm.json`): the contract between export and runtime.

Export writes it; the runtime reads nothing else about the architecture. Anything
model-specific the decode loop needs (KV names, shapes, which inputs the graph takes,
special token ids) lives here, so the loop itself stays generic.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import EdgelmError
from .manifest_checks import check_manifest_data, inside_folder

FORMAT_VERSION = 1
PRECISIONS = ("fp32", "int8", "int4", "gguf")  # gguf: the GGUF source's own quantized blocks, carried over exactly
# Raised when an exporter fix changes what a folder exported from the same source holds, so that
# pipeline()'s cached exports of an older revision are made again; each revision names the precisions
# whose folders it changed, so that a change to one precision does not re-export the others.
REVISION_CHANGES = {
    2: PRECISIONS,  # GGUF tokenizers as llama.cpp reads them (export/gguf_tokenizer.py); before: 2026-12-01 evening
    3: ("int4", "gguf"),  # a prefill graph without logits (export/graph_prune.py: no second LM head packed)
    4: ("int4",),  # an int8 KV cache where it keeps the model (export/kv_int8.py)
    5: ("gguf",),  # the int8 KV cache for the exact GGUF blocks where it pays (export/kv_int8.py: float_cache_share)
}
EXPORT_REVISION = max(REVISION_CHANGES)
MANIFEST_NAME = "edgelm.json"


def changed_since(revision: int, precision: str) -> bool:
    """Whether the exporter changed what a `precision` folder holds since export revision `revision`."""
    return any(precision in precisions for made, precisions in REVISION_CHANGES.items() if made > revision)


@dataclass
class KVCacheSpec:
    """How the graph takes and returns its key/value cache."""

    num_layers: int  # decoder layers, one key and one value tensor each
    num_kv_heads: int  # heads in the cache (fewer than attention heads with GQA)
    head_dim: int  # size of each cached head vector
    dtype: str = "float32"  # numpy dtype name of the cache tensors
    layout: str = "batch,kv_heads,seq,head_dim"  # axis order of every cache tensor
    past_key: str = "past_key_values.{layer}.key"  # graph input name template
    past_value: str = "past_key_values.{layer}.value"
    present_key: str = "present.{layer}.key"  # graph output name template
    present_value: str = "present.{layer}.value"
    shared_buffer: bool = False  # True: the graph updates the past buffer in place (bind it as present too)
    # per layer: the sliding window of a layer whose cache holds only that many recent positions (the graph
    # evicts older ones itself), 0 for a full-length cache; None: every layer full-length
    windows: list[int] | None = None
    # an int8 cache (dtype "int8"): its scales, (num_layers, 2 for key/value, num_kv_heads, head_dim) float32 in
    # a .npy file, and the prefill graph's cache type when that graph attends in float32 (runtime/kv_quant.py)
    scales_file: str | None = None
    prefill_dtype: str | None = None
    # an int8 cache's twin: the decode graph with a float32 cache on the same weights, which devices other than
    # the CPU run (GraphRunner float_cache)
    float_graph_file: str | None = None

    def past_names(self) -> list[str]:
        return [n.format(layer=i) for i in range(self.num_layers) for n in (self.past_key, self.past_value)]

    def present_names(self) -> list[str]:
        return [n.format(layer=i) for i in range(self.num_layers) for n in (self.present_key, self.present_value)]

    def tensor_windows(self) -> list[int]:
        """The window of each past tensor, in past_names() order (0: full length)."""
        return [w for w in (self.windows or [0] * self.num_layers) for _ in range(2)]


@dataclass
class TokenSpec:
    """Special tokens and tokenizer files."""

    tokenizer_file: str = "tokenizer.json"  # a `tokenizers` JSON file in the folder
    chat_template_file: str | None = None  # a Jinja2 chat template in the folder, if the model has one
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)  # generation stops at any of these
    pad_token_id: int | None = None
    bos_token: str | None = None  # text forms, handed to the chat template
    eos_token: str | None = None


@dataclass
class Manifest:
    """Everything the runtime needs to know about an exported model folder."""

    model_type: str  # transformers model_type, e.g. "llama", "gpt2", "gemma3_text"
    vocab_size: int  # width of the logits output
    context_length: int  # most positions the model was trained for
    kv: KVCacheSpec
    tokens: TokenSpec
    precision: str  # one of PRECISIONS
    parameters: int = 0  # weights in the source model (tied weights counted once)
    graph_builder: str = "optimum"  # "optimum" (its exporter) or edgelm's fused graph: "fused-llama", "fused-gemma3", ...
    graph_file: str = "model.onnx"
    prefill_graph_file: str | None = None  # the same weights for prompt chunks, faster there (export/prefill_graph.py)
    prefill_min_tokens: int | None = None  # runs this long or longer take it (None: session.PREFILL_GRAPH_MIN_TOKENS)
    prefill_logits: bool = True  # False: the prefill graph returns only the cache; a prompt's last token runs on graph_file
    graph_inputs: list[str] = field(default_factory=list)  # non-cache inputs the graph takes
    logits_output: str = "logits"  # (batch, seq, vocab)
    quantization: dict = field(default_factory=dict)  # method and settings, {} for fp32
    source: dict = field(default_factory=dict)  # what was exported: kind, id, sha256
    generation_defaults: dict = field(default_factory=dict)  # from the model's generation_config
    validation: dict = field(default_factory=dict)  # numbers measured at export time
    versions: dict = field(default_factory=dict)  # packages that made the folder
    files: dict = field(default_factory=dict)  # {file name: sha256} recorded at export, for load(verify=True)
    format_version: int = FORMAT_VERSION
    export_revision: int = 1  # the exporter's EXPORT_REVISION when the folder was made (absent: 1)

    def __post_init__(self):
        check_manifest_data(asdict(self), PRECISIONS, FORMAT_VERSION)

    def path(self, folder: str | Path, relative: str, field_name: str) -> Path:
        """`folder / relative`, refused unless it stays inside the folder (the manifest is untrusted)."""
        return inside_folder(Path(folder), relative, field_name)

    def check_paths(self, folder: str | Path) -> None:
        """Every file the manifest names resolves inside `folder` (no '..', absolute path or symlink out)."""
        self.path(folder, self.graph_file, "graph_file")
        if self.prefill_graph_file is not None:
            self.path(folder, self.prefill_graph_file, "prefill_graph_file")
        self.path(folder, self.tokens.tokenizer_file, "tokens.tokenizer_file")
        if self.kv.scales_file is not None:
            self.path(folder, self.kv.scales_file, "kv.scales_file")
        if self.kv.float_graph_file is not None:
            self.path(folder, self.kv.float_graph_file, "kv.float_graph_file")
        if self.tokens.chat_template_file is not None:
            self.path(folder, self.tokens.chat_template_file, "tokens.chat_template_file")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        """A Manifest from parsed JSON; every field's type and range is checked first."""
        check_manifest_data(data, PRECISIONS, FORMAT_VERSION)
        data = dict(data)
        data["kv"] = KVCacheSpec(**data["kv"])
        data["tokens"] = TokenSpec(**data["tokens"])
        return cls(**data)

    @classmethod
    def load(cls, folder: str | Path) -> "Manifest":
        """Reads and checks `folder`/edgelm.json, including that its paths stay inside `folder`."""
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise EdgelmError(
                f"{folder} is not an edgelm model folder (no {MANIFEST_NAME}); "
                f"create one with: edgelm export SOURCE -o {folder}"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise EdgelmError(f"{path} is not valid JSON ({exc}); re-export the model") from None
        except OSError as exc:
            raise EdgelmError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions") from None
        manifest = cls.from_dict(data)
        manifest.check_paths(folder)
        return manifest
