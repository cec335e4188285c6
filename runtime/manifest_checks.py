"""Checking a manifest read from disk: a model folder is untrusted input.

`check_manifest_data` checks every field's type and range in the raw JSON (so a bad field is
named, not hit later as a TypeError deep inside the runtime); `inside_folder` makes sure every
path the manifest names stays inside the model folder, symlinks included.
"""

from __future__ import annotations

import re
from pathlib import Path

from .checks import is_int
from .errors import EdgelmError

FIX = "re-export the model with `edgelm export` (the folder is damaged or was not written by edgelm)"
KNOWN_INPUTS = ("input_ids", "attention_mask", "position_ids", "num_logits_to_keep")  # what the runtime can feed
KV_DTYPES = ("float32", "float16", "int8")
KV_LAYOUT = "batch,kv_heads,seq,head_dim"
MAX_DIM = 1 << 24  # far above any real vocabulary, layer count, head count or context
NAME_TEMPLATE = re.compile(r"^[^{}]*\{layer\}[^{}]*$")  # exactly one {layer} and no other braces
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Fields:
    """Reads one JSON object's fields, failing with the field's full name."""

    def __init__(self, data, where: str):
        if not isinstance(data, dict):
            raise _bad(where or "the manifest", f"must be a JSON object, got {_kind(data)}")
        self.data, self.where, self.seen = data, where, set()

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, required: bool):
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise _bad(self.name(key), "is missing")
            return None
        return self.data[key]

    def str(self, key: str, required: bool = True, optional: bool = False, choices: tuple = ()) -> None:
        value = self.get(key, required)
        if value is None and (optional or key not in self.data):
            return
        if not isinstance(value, str) or not value:
            raise _bad(self.name(key), f"must be a non-empty string, got {_kind(value)}")
        if choices and value not in choices:
            raise _bad(self.name(key), f"{value!r} is not one of {', '.join(choices)}")

    def int(self, key: str, low: int, high: int = MAX_DIM, required: bool = True, optional: bool = False) -> None:
        value = self.get(key, required)
        if value is None and (optional or key not in self.data):
            return
        if not is_int(value) or not low <= value <= high:
            raise _bad(self.name(key), f"must be an integer in [{low}, {high}], got {_kind(value)}")

    def bool(self, key: str) -> None:
        value = self.get(key, False)
        if key in self.data and not isinstance(value, bool):
            raise _bad(self.name(key), f"must be true or false, got {_kind(value)}")

    def dict(self, key: str) -> None:
        value = self.get(key, False)
        if key in self.data and not isinstance(value, dict):
            raise _bad(self.name(key), f"must be a JSON object, got {_kind(value)}")

    def int_list(self, key: str, low: int, high: int, optional: bool = False) -> None:
        value = self.get(key, False)
        if optional and value is None:
            return
        if key in self.data and (not isinstance(value, list) or not all(is_int(v) and low <= v <= high for v in value)):
            raise _bad(self.name(key), f"must be a list of integers in [{low}, {high}], got {_kind(value)}")

    def name_template(self, key: str) -> None:
        value = self.get(key, False)
        if key in self.data and (not isinstance(value, str) or not NAME_TEMPLATE.match(value)):
            raise _bad(self.name(key), f"must be a tensor name with one '{{layer}}' and no other braces, got {_kind(value)}")

    def no_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise _bad(self.where or "the manifest", f"has unknown field(s) {', '.join(map(repr, unknown))}")


def check_manifest_data(data, precisions: tuple[str, ...], format_version: int) -> None:
    """Raises EdgelmError naming the first field of `data` (edgelm.json, parsed) that is wrong."""
    top = _Fields(data, "")
    version = top.get("format_version", False)
    if not is_int(version) or version != format_version:
        raise EdgelmError(
            f"manifest format_version {version!r} is not supported (this edgelm reads {format_version}); "
            "re-export the model with this edgelm version"
        )
    top.str("model_type")
    top.int("vocab_size", 1)
    vocab = data["vocab_size"]
    top.int("context_length", 1)
    top.str("precision", choices=precisions)
    top.int("parameters", 0, 1 << 50, required=False)
    for key in ("graph_builder", "graph_file", "logits_output"):
        top.str(key, required=False)
    top.str("prefill_graph_file", required=False, optional=True)
    top.int("prefill_min_tokens", 1, required=False, optional=True)
    top.bool("prefill_logits")
    top.int("export_revision", 1, required=False)
    inputs = top.get("graph_inputs", False)
    if "graph_inputs" in data:
        if not isinstance(inputs, list) or "input_ids" not in inputs or not all(i in KNOWN_INPUTS for i in inputs):
            raise _bad("graph_inputs", f"must be a list with 'input_ids' and only names from {', '.join(KNOWN_INPUTS)}"
                       f", got {_kind(inputs)}")
    for key in ("quantization", "source", "generation_defaults", "validation", "versions"):
        top.dict(key)
    files = top.get("files", False)
    if "files" in data and (not isinstance(files, dict)
                            or not all(isinstance(k, str) and isinstance(v, str) and SHA256.match(v)
                                       for k, v in files.items())):
        raise _bad("files", "must map file names to sha256 hex digests")
    top.get("kv", True)
    top.get("tokens", True)
    top.no_unknown()

    kv = _Fields(data["kv"], "kv")
    kv.int("num_layers", 1)
    kv.int("num_kv_heads", 1)
    kv.int("head_dim", 1)
    kv.str("dtype", required=False, choices=KV_DTYPES)
    kv.str("layout", required=False, choices=(KV_LAYOUT,))
    for key in ("past_key", "past_value", "present_key", "present_value"):
        kv.name_template(key)
    kv.bool("shared_buffer")
    kv.int_list("windows", 0, MAX_DIM, optional=True)  # per layer: the window of a window-sized cache, 0 for a full-length one
    windows = data["kv"].get("windows")
    if windows is not None and is_int(data["kv"].get("num_layers")) and len(windows) != data["kv"]["num_layers"]:
        raise _bad("kv.windows", f"must have one entry per layer ({data['kv']['num_layers']}), got {len(windows)}")
    kv.str("scales_file", required=False, optional=True)
    kv.str("prefill_dtype", required=False, optional=True, choices=KV_DTYPES)
    kv.str("float_graph_file", required=False, optional=True)
    _check_int8_cache(data)
    kv.no_unknown()

    tokens = _Fields(data["tokens"], "tokens")
    tokens.str("tokenizer_file", required=False)
    tokens.str("chat_template_file", required=False, optional=True)
    tokens.int("bos_token_id", 0, vocab - 1, required=False, optional=True)
    tokens.int("pad_token_id", 0, vocab - 1, required=False, optional=True)
    tokens.int_list("eos_token_ids", 0, vocab - 1)
    tokens.str("bos_token", required=False, optional=True)
    tokens.str("eos_token", required=False, optional=True)
    tokens.no_unknown()


def _check_int8_cache(data: dict) -> None:
    """An int8 cache needs its scales file and a shared buffer (runtime/kv_quant.py); only it has those fields."""
    kv = data["kv"]
    if kv.get("dtype") == "int8":
        if kv.get("scales_file") is None:
            raise _bad("kv.scales_file", "is missing: an int8 cache (kv.dtype 'int8') needs the file of its scales")
        if not kv.get("shared_buffer"):
            raise _bad("kv.shared_buffer", "must be true for an int8 cache (kv.dtype 'int8')")
    elif any(kv.get(key) is not None for key in ("scales_file", "prefill_dtype", "float_graph_file")):
        raise _bad("kv.scales_file", f"kv.prefill_dtype and kv.float_graph_file belong to an int8 cache, but kv.dtype "
                   f"is {kv.get('dtype')!r}")


def inside_folder(folder: Path, relative, field: str) -> Path:
    """`folder / relative`, refused unless it is a plain relative path that stays inside `folder`."""
    if not isinstance(relative, str) or not relative:
        raise _bad(field, f"must be a file name inside the model folder, got {_kind(relative)}")
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts or "\\" in relative or "\0" in relative:
        raise _bad(field, f"is {relative!r}: it must name a file inside the model folder (no absolute path, no '..')")
    root = folder.resolve()
    target = (folder / path).resolve()
    if target != root and root not in target.parents:
        raise _bad(field, f"is {relative!r}, which leads outside the model folder (a symlink to {target})")
    return folder / path


def _bad(field: str, problem: str) -> EdgelmError:
    return EdgelmError(f"manifest (edgelm.json) {field} {problem}; {FIX}")


def _kind(value) -> str:
    text = repr(value)
    text = text if len(text) <= 50 else text[:47] + "..."
    return f"{type(value).__name__} {text}" if not isinstance(value, (str, int, float)) or isinstance(value, bool) \
        else text
