"""DittoFS's memory stops growing under a bounded mixed workload: a leak test, not a speed test.

The server runs every benchmark workload (benchmarks/soak.py, driven by the
C libnfs client) cycle after cycle at the benchmark's quick sizes; after a
warm-up, neither its resident set nor the interpreter's allocated blocks may
climb more than 10% past the warm-up's peak. Every cycle moves the same
data, so a per-request leak would climb cycle after cycle.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench import QUICK
from benchmarks.client import Client, build
from benchmarks.servers import DittoServer
from benchmarks.soak import report, soak, verdict

#: Enough cycles to pass the duplicate-request cache and the stores' containers filling up
#: (about ten quick cycles), with twice as many after: about a minute here.
CYCLES = 30
#: Bound on the whole soak, whatever the machine's speed.
SECONDS = 600.0


def test_memory_is_flat_after_warm_up(tmp_path: Path) -> None:
    """RSS and allocated blocks stay within 10% of their warm-up peak for the later cycles."""
    client = Client(build(), uid=1000, gid=1000, timeout=QUICK.client_timeout)
    with DittoServer(
        tmp_path / "dittofs", "memory", f"fs:{tmp_path / 'content'}", metrics=True
    ) as server:
        samples = soak(client, server, QUICK, SECONDS, CYCLES)
    print(report(samples))
    assert len(samples) == CYCLES, f"only {len(samples)} cycles in {SECONDS:.0f}s"
    flat, _ = verdict(samples)
    assert flat, report(samples)
