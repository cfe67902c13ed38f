"""The benchmark runs in CI in its quick mode, so it cannot rot (the full mode is run by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_against_ganesha() -> None:
    """benchmarks/run --quick runs every workload against DittoFS and nfs-ganesha."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    assert "ratio DittoFS/ganesha" in run.stdout
    for workload in ("seq write", "seq read", "random read", "create", "REMOVE", "32 clients"):
        assert workload in run.stdout, workload
    print(run.stdout[run.stdout.index("| workload") :])


def test_quick_gateway_benchmark() -> None:
    """benchmarks/run --gateways 2 --quick measures one and two S3 gateways and the baseline."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run"), "--gateways", "2", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith(("| 1 ", "| 2 "))]
    assert len(rows) == 2, run.stdout
    assert "| this tree" in run.stdout and "| before block maps" in run.stdout, run.stdout
    assert "SeaweedFS takes plain PUTs" in run.stdout, run.stdout
    print(run.stdout[run.stdout.index("| gateways") :])


def test_quick_benchmark_on_the_default_store() -> None:
    """--metadata sqlite puts the embedded default against ganesha."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run"), "--quick", "--metadata", "sqlite",
         "--only", "meta"],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    assert "DittoFS (sqlite metadata + fs content) vs nfs-ganesha" in run.stdout, run.stdout
    for workload in ("create", "LOOKUP+GETATTR", "READDIRPLUS", "REMOVE"):
        assert workload in run.stdout, workload
