"""Writing the self-contained model folder: all or nothing."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from edgelm.errors import EdgelmError
from edgelm.integrity import folder_digests
from edgelm.manifest import TokenSpec

from .output_guard import (
    check_output, make_staging, missing_parents, remove_empty, remove_stale, sigterm_as_interrupt,
)

PACKAGES = ("edgelm", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers")


@contextmanager
def staged_folder(output: Path, force: bool = False, source: str | None = None):
    """Yields an empty staging folder beside `output`; renames it to `output` only if the block succeeds.

    An error, Ctrl-C or SIGTERM inside the block removes the staging folder and any parent folders
    made for it, so `output` is either the complete new export or untouched. `force` replaces only
    an existing edgelm model folder, never `source`, a folder holding it, the current directory or
    home (see output_guard.py). Staging folders of exports that were killed are removed first.
    """
    output = Path(output).expanduser().resolve()
    check_output(output, source, force)
    created = missing_parents(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgelmError(f"cannot create {output.parent} ({exc.strerror or exc}); choose another -o folder") from None
    remove_stale(output)
    staging = make_staging(output)
    done = False
    try:
        with sigterm_as_interrupt():
            yield staging
            recheck(output, source, force)
            readable_as_umask_says(staging)
            if output.exists():
                retired = output.with_name(f".{output.name}.partial-{os.getpid()}-old")  # removed if we die here
                shutil.rmtree(retired, ignore_errors=True)
                output.rename(retired)
                staging.rename(output)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                staging.rename(output)
            done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            remove_empty(created)


def recheck(output: Path, source: str | None, force: bool) -> None:
    """check_output again at the end: what appeared at `output` while the export ran is never replaced unasked
    (another export to the same folder, files the user put there)."""
    try:
        check_output(output, source, force)
    except EdgelmError as exc:
        raise EdgelmError(f"{exc} (it appeared while this export ran: nothing was replaced, and this export was "
                          "discarded)") from None


def readable_as_umask_says(folder: Path) -> None:
    """Gives the staged folder and its files the modes the process' umask gives new ones: the staging folder
    comes from mkdtemp (0700) and onnx writes external data files 0600, which would keep a folder exported
    for a service from everyone else."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    """The process' umask, read without changing it (Linux's /proc; elsewhere the usual 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def file_digests(folder: Path) -> dict[str, str]:
    """{file name: sha256} of the folder's files, for the manifest (checked by `edgelm.load(verify=True)`)."""
    return folder_digests(folder)


def write_tokenizer_files(hf_folder: Path, out: Path) -> TokenSpec:
    """Copies tokenizer.json and the chat template; returns the special tokens the runtime needs."""
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    if not getattr(tokenizer, "is_fast", False):
        raise EdgelmError(f"{hf_folder} has no fast tokenizer (tokenizer.json); edgelm's runtime needs one")
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    if template:
        (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    eos = _ids(tokenizer.eos_token_id)
    try:
        eos += _ids(GenerationConfig.from_pretrained(hf_folder).eos_token_id)
    except OSError:  # the folder has no generation_config.json
        pass
    return TokenSpec(
        tokenizer_file="tokenizer.json",
        chat_template_file="chat_template.jinja" if template else None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_ids=sorted(set(eos)),
        pad_token_id=tokenizer.pad_token_id,
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
    )


def generation_defaults(hf_folder: Path) -> dict:
    """The model's own sampling defaults, when its generation_config asks to sample."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(hf_folder)
    except OSError:
        return {}
    if not config.do_sample:
        return {}
    return {"temperature": config.temperature or 1.0, "top_k": config.top_k or 0, "top_p": config.top_p or 1.0}


def count_parameters(hf_folder: Path) -> int:
    """Weights in the folder's safetensors files, read from their headers (no tensor is loaded)."""
    import json
    import struct

    total = 0
    for path in hf_folder.glob("*.safetensors"):
        with open(path, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= dim
                total += count
    return total


def folder_size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 1)


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


