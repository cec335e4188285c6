"""A fingerprint of the machine and software a benchmark ran on."""

from __future__ import annotations

import os
import platform

from edgelm.versions import package_versions

FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd")
PACKAGES = ("edgelm", "onnxruntime", "numpy", "tokenizers", "torch", "transformers", "optimum", "optimum-onnx",
            "onnxruntime-genai", "llama_cpp_python")


def fingerprint() -> dict:
    cpu, flags = _cpuinfo()
    return {
        "cpu": cpu,
        "cpu_flags": [f for f in FLAGS if f in flags],
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cores_total": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(PACKAGES),
    }


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None
