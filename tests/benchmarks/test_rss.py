import subprocess
import sys

from edgelm.benchmarks.rss import current_rss_mb, peak_rss_mb

PROBE = """
from edgelm.benchmarks.rss import peak_rss_mb
before = peak_rss_mb()
block = bytearray(300 * 1024 * 1024)  # touch 300 MB
block[::4096] = b"x" * len(block[::4096])
del block
after = peak_rss_mb()
print(before, after)
"""


def test_peak_rss_sees_a_transient_allocation():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    before, after = map(float, out)
    assert 280 <= after - before <= 400  # the process's own peak, not the machine's used memory


def test_current_never_exceeds_peak():
    assert 0 < current_rss_mb() <= peak_rss_mb()
