"""The process's own memory: peak resident set size (not the system's used memory)."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB: /proc's VmHWM on Linux, else getrusage (KB on Linux, bytes on macOS)."""
    peak = _proc_status_mb("VmHWM:")
    if peak is not None:
        return peak
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (1024 * 1024) if sys.platform == "darwin" else usage / 1024


def current_rss_mb() -> float:
    """Current RSS of this process in MB (Linux /proc; 0 where unavailable)."""
    return _proc_status_mb("VmRSS:") or 0.0


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024  # the kernel reports kB
    except OSError:
        pass
    return None
