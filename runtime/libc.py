"""The C library's functions through ctypes, on Linux only (None elsewhere, or where the library lacks one)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.lru_cache(maxsize=None)
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


@functools.lru_cache(maxsize=None)
def libc_function(name: str, argtypes: tuple = (), restype=ctypes.c_int):
    """The C function `name` with its argument and result types set, or None (not Linux, or musl's lack of it)."""
    function = getattr(_libc(), name, None)
    if function is not None:
        function.argtypes, function.restype = list(argtypes), restype
    return function
