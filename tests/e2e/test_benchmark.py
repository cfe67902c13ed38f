"""The benchmark runs in CI in its quick mode, so it cannot rot (the full mode is run by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(*arguments: str) -> str:
    """Run ``benchmarks/run`` with *arguments*; it must succeed. Its standard output."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run"), *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    return run.stdout


def test_quick_benchmark_against_ganesha() -> None:
    """benchmarks/run --quick runs every workload against DittoFS and nfs-ganesha."""
    output = bench("--quick")
    assert "ratio DittoFS/ganesha" in output
    for workload in ("seq write", "seq read", "random read", "create", "REMOVE", "32 clients"):
        assert workload in output, workload
    print(output[output.index("| workload") :])


def test_quick_gateway_benchmark() -> None:
    """benchmarks/run --gateways 2 --quick measures one and two S3 gateways and the baseline."""
    output = bench("--gateways", "2", "--quick")
    rows = [line for line in output.splitlines() if line.startswith(("| 1 ", "| 2 "))]
    assert len(rows) == 2, output
    assert "| this tree" in output and "| before block maps" in output, output
    assert "SeaweedFS takes plain PUTs" in output, output
    print(output[output.index("| gateways") :])


def test_quick_benchmark_on_the_default_store() -> None:
    """--metadata sqlite puts the embedded default against ganesha."""
    output = bench("--quick", "--metadata", "sqlite", "--only", "meta")
    assert "DittoFS (sqlite metadata + fs content) vs nfs-ganesha" in output, output
    for workload in ("create", "LOOKUP+GETATTR", "READDIRPLUS", "REMOVE"):
        assert workload in output, workload
