"""llama.cpp is built for the instruction sets the CPU reports, never more."""

from edgelm.benchmarks.llama_cpp_flags import cmake_args, cpu_flags

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma f16c bmi2\n"
XEON = "flags\t\t: avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_int8\n"


def test_an_avx2_machine_gets_no_avx512():
    args = cmake_args(cpu_flags(AVX2_ONLY))
    assert "-DGGML_AVX2=ON" in args and "-DGGML_FMA=ON" in args
    assert "-DGGML_AVX512=OFF" in args and "-DGGML_AVX512_VNNI=OFF" in args and "-DGGML_NATIVE=OFF" in args


def test_a_xeon_gets_avx512_but_never_amx():
    args = cmake_args(cpu_flags(XEON))
    assert "-DGGML_AVX512=ON" in args and "-DGGML_AVX512_VNNI=ON" in args and "-DGGML_AVX512_BF16=ON" in args
    assert "-DGGML_AMX_INT8=OFF" in args and "-DGGML_AMX_TILE=OFF" in args


def test_no_flags_line_means_nothing_switched_on():
    assert "=ON" not in cmake_args(cpu_flags("")).replace("-DGGML_NATIVE=OFF", "")
