"""The ONNX Runtime session and its key/value cache: prefill a prompt, then one token a step."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .attention_kernel import flash_pays, plain_attention
from .errors import EdgelmError
from .graph_check import check_graph
from .kv_cache import ConcatCache, SharedBufferCache
from .kv_quant import absorb, float_copy, load_scales
from .manifest import Manifest
from .memory import release_after_load
from .versions import release

DEVICES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
PREFILL_CHUNK = 256  # prompt tokens per graph run: measured best for TTFT and memory on SmolLM2
# runs of at least this many tokens take the prefill graph where the folder has one and its manifest names no
# other length (prefill_min_tokens): the fp32 graph's products beat the decode graph's from about 32-64 rows up
PREFILL_GRAPH_MIN_TOKENS = 64
# GroupQueryAttention's int8 cache: 1.25 and 1.26 load such a graph, then fail at its first run (measured)
INT8_CACHE_ONNXRUNTIME = (1, 27)


def default_threads() -> int:
    """One thread per core the process may use; ONNX Runtime's own default also counts hyper-threads."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def make_session(graph_path: Path, device: str = "cpu", threads: int | None = None, spinning: bool = True,
                 made_with: str | None = None, flash_attention: bool = True,
                 arena: bool = True, profile: str | None = None) -> ort.InferenceSession:
    """An InferenceSession on `device` ('cpu' or 'cuda') with full graph optimization.

    `spinning` False: its idle threads sleep at once instead of spinning for the next run (a session
    used now and then, beside the decode session, must not take the cores the steps run on).
    `made_with`: the onnxruntime version that exported the graph (manifest `versions`), named in the
    error when this process has an older one: its graphs use operator attributes of recent releases.
    `flash_attention` False: its attention takes onnxruntime's plain kernel (attention_kernel.py).
    `arena` False: intermediate tensors come from malloc, not onnxruntime's CPU arena (the harness measures both).
    `profile`: a path prefix; onnxruntime's profiler records every run into a JSON file named from it
    (`session.end_profiling()` writes it; the harness's `profile` command reads it).
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise EdgelmError(f"threads={threads!r} is invalid: use None (one per core) or an integer >= 1")
    if threads is not None and threads > default_threads():  # 64 on 2 cores: 3.9 s for 3 tokens; 1000 never ends
        raise EdgelmError(f"threads={threads} is more than the {default_threads()} cores this process may use, and "
                          "threads beyond the cores only take turns on them, slower; use None (one per core) or "
                          f"at most {default_threads()}")
    if not isinstance(device, str) or device not in DEVICES:
        raise EdgelmError(f"device {device!r} is not supported: use one of {', '.join(DEVICES)}")
    provider = DEVICES[device]
    if provider not in ort.get_available_providers():
        raise EdgelmError(
            f"device {device!r} needs {provider}, which this onnxruntime build lacks "
            f"(it has {', '.join(ort.get_available_providers())}); for CUDA: pip install onnxruntime-gpu"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = default_threads() if threads is None else threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = arena
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    try:
        with plain_attention(enabled=not flash_attention):
            return ort.InferenceSession(str(graph_path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise EdgelmError(f"onnxruntime could not load {graph_path}: {exc}; {_load_fix(made_with)}") from exc


def _load_fix(made_with: str | None) -> str:
    """What to do about a graph onnxruntime refused: upgrade it if it is older than the exporter's, else re-export."""
    if made_with and release(ort.__version__) < release(made_with):
        return (f"the folder was exported with onnxruntime {made_with} and this process has {ort.__version__}, "
                f"which may lack operators or attributes its graph uses: pip install -U 'onnxruntime>={made_with}'")
    return "re-export the model"


def existing_graph(folder: Path, manifest: Manifest, field: str) -> Path:
    """The path of the graph the manifest's `field` names; EdgelmError when the file is not there."""
    graph_path = manifest.path(folder, getattr(manifest, field), field)
    if not graph_path.is_file():
        raise EdgelmError(f"{graph_path} is missing; the model folder is incomplete: re-export the model")
    return graph_path


def open_graph(folder: Path, manifest: Manifest, field: str, device: str, threads: int | None,
               spinning: bool = True, logits: bool = True, kv_dtype: str | None = None,
               flash_attention: bool | None = None, arena: bool = True,
               profile: str | None = None) -> ort.InferenceSession:
    """A session on the graph the manifest's `field` names, checked against the manifest's interface.

    `logits` False: the graph returns only the cache (a prefill graph without its LM head). `kv_dtype`:
    the graph's cache type where it is not kv.dtype. `flash_attention` None: the attention kernel that
    suits the cache (attention_kernel.flash_pays); True or False: the tiled or the plain one. `profile`: as
    make_session's.
    """
    graph_path = existing_graph(folder, manifest, field)
    if (kv_dtype or manifest.kv.dtype) == "int8" and release(ort.__version__) < INT8_CACHE_ONNXRUNTIME:
        needed = ".".join(map(str, INT8_CACHE_ONNXRUNTIME))
        raise EdgelmError(
            f"{graph_path.name} keeps its KV cache in int8, which onnxruntime runs from {needed} on, and this "
            f"process has onnxruntime {ort.__version__}: pip install -U 'onnxruntime>={needed}' (or re-export "
            "the model with --kv-dtype float32)"
        )
    session = make_session(graph_path, device, threads, spinning=spinning,
                           made_with=(manifest.versions or {}).get("onnxruntime"),
                           flash_attention=flash_pays(kv_dtype or manifest.kv.dtype, device)
                           if flash_attention is None else flash_attention, arena=arena, profile=profile)
    check_graph(manifest, session.get_inputs(), session.get_outputs(), graph_path.name, logits=logits,
                kv_dtype=kv_dtype)
    return session


def float_cache_view(manifest: Manifest, device: str) -> Manifest:
    """An int8-cache folder's manifest as its float32-cache twin: kv.float_graph_file as the decode graph."""
    if manifest.kv.float_graph_file is None:
        raise EdgelmError(
            f"this folder's KV cache is int8, which edgelm runs on the CPU only, and the folder has no "
            f"float32-cache graph (kv.float_graph_file) for device {device!r}: re-export it with "
            "--kv-dtype float32 (export_model(..., kv_dtype='float32'))"
        )
    kv = replace(manifest.kv, dtype="float32", scales_file=None, prefill_dtype=None, float_graph_file=None)
    return replace(manifest, graph_file=manifest.kv.float_graph_file, kv=kv)


class GraphRunner:
    """Runs the exported decoder graph, feeding `present.*` back as `past_key_values.*`.

    A folder with a prefill graph (manifest.prefill_graph_file) gets a second session for runs of at
    least manifest.prefill_min_tokens (else PREFILL_GRAPH_MIN_TOKENS) tokens on CPU, sharing the
    cache with the first. That session opens on the first such run (or `open_prefill_graph()`): a
    process that only ever sends short prompts never holds its weights (~110 MB on SmolLM2 int4).
    `prefill_graph` False leaves it out (every run on the decode graph: slower prompts). Where the
    prefill graph's cache is float32 beside an int8 one (kv.prefill_dtype), its runs go through a float32
    copy of the cache (kv_quant.py). An int8-cache folder runs its float32-cache twin
    (kv.float_graph_file) with `float_cache`, which defaults to True off the CPU: the int8 cache is
    measured and tested on onnxruntime's CPU attention only.
    """

    def __init__(self, folder: Path, manifest: Manifest, device: str = "cpu", threads: int | None = None,
                 prefill_graph: bool = True, float_cache: bool | None = None):
        if manifest.kv.dtype == "int8" and (float_cache or (float_cache is None and device != "cpu")):
            manifest = float_cache_view(manifest, device)
        self.manifest = manifest
        self.device = device
        self.session = open_graph(folder, manifest, "graph_file", device, threads)
        self.has_prefill_graph = bool(prefill_graph and manifest.prefill_graph_file and device == "cpu")
        if self.has_prefill_graph:  # a missing file is named at load, not at the first long prompt
            existing_graph(folder, manifest, "prefill_graph_file")
        self._prefill_session: ort.InferenceSession | None = None
        self._open_prefill = threading.Lock()
        self._folder, self._threads = folder, threads
        self.prefill_min_tokens = manifest.prefill_min_tokens or PREFILL_GRAPH_MIN_TOKENS
        self.past_names = manifest.kv.past_names()
        self.present_names = manifest.kv.present_names()
        self.inputs = set(manifest.graph_inputs)
        self.kv_dtype = np.dtype(manifest.kv.dtype)
        self._ort_device = "cuda" if device == "cuda" else "cpu"
        kv = manifest.kv
        self.prefill_kv_dtype = kv.prefill_dtype if kv.prefill_dtype not in (None, kv.dtype) else None
        self._kv_scales = None  # the int8 cache's scales, where prompts run on a float copy of it
        if self.has_prefill_graph and self.prefill_kv_dtype:
            self._kv_scales = load_scales(manifest.path(folder, kv.scales_file, "kv.scales_file"), kv)

    @property
    def prefill_session(self) -> ort.InferenceSession | None:
        """The prefill graph's session (opened now if it was not yet), or None when there is none."""
        if self.has_prefill_graph and self._prefill_session is None:
            self.open_prefill_graph()
        return self._prefill_session

    @property
    def stages_prompts(self) -> bool:
        """Whether prompt runs on the prefill graph go through a float copy of the (int8) cache (kv_quant.py)."""
        return self._kv_scales is not None

    @property
    def prefill_graph_open(self) -> bool:
        return self._prefill_session is not None

    def open_prefill_graph(self, profile: str | None = None) -> None:
        """Opens the prefill graph's session now (a server does so at start, not on its first long prompt).

        `profile`: opens it anew, with onnxruntime's profiler on (make_session's; the harness's `profile`).
        """
        if not self.has_prefill_graph:
            return
        with self._open_prefill:  # two threads with long prompts open it once
            if self._prefill_session is None or profile:  # its threads sleep between prompts: the steps keep the cores
                self._prefill_session = None  # an old session's memory goes first
                self._prefill_session = open_graph(self._folder, self.manifest, "prefill_graph_file", self.device,
                                                   self._threads, spinning=False,
                                                   logits=self.manifest.prefill_logits,
                                                   kv_dtype=self.prefill_kv_dtype, profile=profile)
                # its weights stay on small pages: prompts are bound by arithmetic, not by the pages (huge_pages.py),
                # and moving them would delay the first long prompt by the move's 0.05-0.4 s
                release_after_load(self._folder)

    def new_cache(self, batch: int = 1) -> ConcatCache | SharedBufferCache:
        kv = self.manifest.kv
        shape, count, windows = (batch, kv.num_kv_heads, kv.head_dim), len(self.past_names), kv.tensor_windows()
        # the shared buffer grows through host memory, so other devices keep the (also valid) concat layout
        if kv.shared_buffer and self._ort_device == "cpu":
            return SharedBufferCache(shape, count, self.kv_dtype, self._ort_device, windows=windows)
        return ConcatCache(shape, count, self.kv_dtype, self._ort_device, windows=windows)

    def prefill(self, input_ids: np.ndarray, cache, chunk: int | None = None) -> np.ndarray:
        """Runs a prompt in chunks of `chunk` tokens (default PREFILL_CHUNK); returns the last logits (batch, vocab).

        Chunks give the same logits as one pass (the cache carries the past), and bound the
        attention scratch memory of a long prompt: one pass over 2,048 tokens needs
        heads x 2,048 x 2,048 scores per layer at once.
        """
        chunk = chunk or PREFILL_CHUNK
        length = input_ids.shape[1]
        if isinstance(cache, SharedBufferCache):  # grown once for the whole prompt, not copied at every doubling
            cache.reserve(cache.length + length)
        for start in range(0, length, chunk):
            logits = self.forward(input_ids[:, start : start + chunk], cache, logits=start + chunk >= length)
        return logits

    def forward(self, input_ids: np.ndarray, cache: ConcatCache | SharedBufferCache, all_logits: bool = False,
                logits: bool = True) -> np.ndarray | None:
        """Runs `input_ids` (batch, seq) after what `cache` holds; updates the cache.

        Returns the logits of the last position (batch, vocab), or of every position
        (batch, seq, vocab) with `all_logits`; None with `logits` False where the run only fills the
        cache. Runs of prefill_min_tokens or more take the prefill graph; where that graph returns no
        logits (manifest prefill_logits false), the run's last token goes to the decode graph, and a
        run that needs every position's logits runs there whole.
        """
        seq = input_ids.shape[1]
        if not (self.has_prefill_graph and seq >= self.prefill_min_tokens):
            return self._run(self.session, input_ids, cache, all_logits)
        if self.manifest.prefill_logits:
            return self._run_prefill(input_ids, cache, all_logits)
        if all_logits:
            return self._run(self.session, input_ids, cache, all_logits)
        if not logits:
            return self._run_prefill(input_ids, cache, logits=False)
        if seq > 1:
            self._run_prefill(input_ids[:, :-1], cache, logits=False)
        return self._run(self.session, input_ids[:, -1:], cache)

    def _run_prefill(self, input_ids: np.ndarray, cache, all_logits: bool = False, logits: bool = True):
        """A run on the prefill graph; through a float copy of an int8 cache where that graph's cache is float."""
        if self._kv_scales is None:
            return self._run(self.prefill_session, input_ids, cache, all_logits, logits)
        if not isinstance(cache, SharedBufferCache):  # no float copy to make: int8 attention, ~3x slower prompts
            return self._run(self.session, input_ids, cache, all_logits, logits)
        session, start = self.prefill_session, cache.length
        staged = float_copy(cache, self._kv_scales, self.prefill_kv_dtype)
        result = self._run(session, input_ids, staged, all_logits, logits)
        absorb(cache, staged, start, self._kv_scales)
        return result

    def _run(self, session: ort.InferenceSession, input_ids: np.ndarray, cache: ConcatCache | SharedBufferCache,
             all_logits: bool = False, logits: bool = True) -> np.ndarray | None:
        """One run of `session`; `logits` False binds no logits output (the prefill graph may have none)."""
        batch, seq = input_ids.shape
        total = cache.length + seq
        binding = cache.binding(session)
        binding.bind_cpu_input("input_ids", np.ascontiguousarray(input_ids, dtype=np.int64))
        if "num_logits_to_keep" in self.inputs:  # logits for the last position only, unless all are asked for
            binding.bind_cpu_input("num_logits_to_keep", np.array([seq if all_logits else 1], dtype=np.int64))
        if "attention_mask" in self.inputs:
            binding.bind_cpu_input("attention_mask", np.ones((batch, total), dtype=np.int64))
        if "position_ids" in self.inputs:
            positions = np.arange(cache.length, total, dtype=np.int64)
            binding.bind_cpu_input("position_ids", np.broadcast_to(positions, (batch, seq)).copy())
        if logits:
            kept = seq if all_logits or "num_logits_to_keep" not in self.inputs else 1
            out = ort.OrtValue.ortvalue_from_shape_and_type((batch, kept, self.manifest.vocab_size), np.float32, "cpu")
            binding.bind_ortvalue_output(self.manifest.logits_output, out)
        cache.bind(binding, self.past_names, self.present_names, total)
        session.run_with_iobinding(binding)
        cache.update(binding, total)
        if batch == 1:
            cache.tokens += input_ids[0].tolist()
        if not logits:
            return None
        scores = out.numpy()  # (batch, kept, vocab)
        return scores if all_logits else scores[:, -1, :]
