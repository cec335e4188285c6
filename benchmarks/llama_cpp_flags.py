"""CMake flags for building llama.cpp (llama-cpp-python) for the CPU this runs on.

The build names its instruction sets instead of GGML_NATIVE: a native build crashed at the
first decode on one Xeon of this machine kind (AVX-512 + AMX), so the sets are switched on one
by one from what /proc/cpuinfo reports. Machines of this kind come with and without AVX-512,
BF16 and AMX (one here was an AMD EPYC with AVX2 only, where an AVX-512 build dies with an
illegal instruction), so nothing is assumed. AMX stays off (the crash above), and the
multimodal library, which the benchmark never loads, is not built.

Usage: CMAKE_ARGS="$(python -m benchmarks.llama_cpp_flags)" pip install llama-cpp-python
"""

from __future__ import annotations

import sys
from pathlib import Path

# ggml option -> the /proc/cpuinfo flags it needs (all of them)
OPTIONS = {
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_AVX512": ("avx512f", "avx512bw", "avx512vl"),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
    "GGML_AVX_VNNI": ("avx_vnni",),
}


def cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_args(flags: set[str]) -> str:
    args = ["-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF",
            "-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"]
    args += [f"-D{option}={'ON' if all(f in flags for f in needs) else 'OFF'}" for option, needs in OPTIONS.items()]
    return " ".join(args)


def main() -> int:
    print(cmake_args(cpu_flags(Path("/proc/cpuinfo").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
