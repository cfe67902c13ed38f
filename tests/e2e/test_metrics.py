"""The metrics endpoint, scraped after known calls; /ready following the database and S3.

The server runs in a subprocess with ``--metrics``; its PostgreSQL metadata
(or its S3 content) goes through a loopback proxy the test can cut, so
/ready can be watched turning 503 while the service is unreachable and 200
when it returns.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.seaweedfs import credentials_env, shared_seaweedfs
from tests.e2e.server import RunningServer, dittofs_server, fetch, free_port
from tests.proxy import CuttableProxy
from tests.unit.backends import postgres_schema, postgres_url
from tests.unit.test_s3_content import BUCKET


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, 0 when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_metrics_count_known_calls(tmp_path: Path) -> None:
    """After one copy in and one read, the counters and histograms moved by what was done."""
    metrics_port = free_port()
    with dittofs_server(
        tmp_path, "--metadata", "memory", "--content", "memory",
        "--metrics", f"tcp:{metrics_port}:interface=127.0.0.1",
    ) as server:  # fmt: skip
        base = f"http://127.0.0.1:{metrics_port}"
        _, before = fetch(f"{base}/metrics")
        data = tmp_path / "data"
        data.write_bytes(b"m" * 100_000)
        copy = subprocess.run(
            ["nfs-cp", str(data), server.url("m")], check=False, capture_output=True, timeout=60
        )
        assert copy.returncode == 0, copy.stderr
        out = tmp_path / "out"
        back = subprocess.run(
            ["nfs-cp", server.url("m"), str(out)], check=False, capture_output=True, timeout=60
        )
        assert back.returncode == 0, back.stderr
        assert out.read_bytes() == data.read_bytes()
        status, after = fetch(f"{base}/metrics")
        assert status == 200
        assert (
            sample(after, "dittofs_written_bytes_total")
            - sample(before, "dittofs_written_bytes_total")
            == 100_000
        )
        assert sample(after, "dittofs_read_bytes_total") >= 100_000
        assert sample(after, "dittofs_nfs_replies_total", procedure="CREATE", status="OK") == 1
        assert sample(after, "dittofs_rpc_calls_total", program="mount", procedure="MNT") == 2
        writes = sample(
            after, "dittofs_rpc_call_duration_seconds_count", program="nfs", procedure="WRITE"
        )
        assert writes >= 1
        assert (
            sample(
                after,
                "dittofs_rpc_call_duration_seconds_bucket",
                program="nfs",
                procedure="WRITE",
                le="+Inf",
            )
            == writes
        )
        assert sample(after, "dittofs_connections_total") >= 2
        assert (
            sample(
                after,
                "dittofs_store_operation_duration_seconds_count",
                kind="content",
                backend="memory",
                operation="write",
            )
            >= 1
        )
        assert fetch(f"{base}/health") == (
            200,
            json.dumps({"status": "serving", "checks": {"process": "ok"}}),
        )


def test_ready_follows_postgresql(tmp_path: Path) -> None:
    """/ready is 503 naming the metadata store while PostgreSQL is unreachable, 200 when back."""
    proxy = CuttableProxy(5432)
    metrics_port = free_port()
    with postgres_schema("ready") as schema:
        try:
            with dittofs_server(
                tmp_path, "--metadata", postgres_url(schema, proxy.port), "--content", "memory",
                "--metrics", f"tcp:{metrics_port}:interface=127.0.0.1",
            ):  # fmt: skip
                ready = f"http://127.0.0.1:{metrics_port}/ready"
                assert fetch(ready)[0] == 200
                proxy.cut()
                status, body = fetch(ready)
                assert status == 503, body
                checks = json.loads(body)["checks"]
                assert checks["/export metadata (postgresql)"].startswith("failed"), checks
                proxy.restore()
                deadline = time.monotonic() + 30
                while fetch(ready)[0] != 200:
                    assert time.monotonic() < deadline, "/ready did not recover"
                    time.sleep(0.5)
        finally:
            proxy.cut()


def wait_ready(url: str, seconds: float = 30) -> None:
    """Poll /ready until it answers 200 (bounded)."""
    deadline = time.monotonic() + seconds
    while fetch(url)[0] != 200:
        assert time.monotonic() < deadline, f"{url} did not turn 200"
        time.sleep(0.5)


def test_ready_follows_s3_and_cache_metrics_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/ready is 503 naming the content store while S3 is cut off; the cache metrics count use.

    The S3 store answers ordinary calls from its cache, so /ready must ask
    S3 itself.  A copy in and a read back move the cache's hit counter and
    used bytes.
    """
    for key, value in credentials_env().items():
        monkeypatch.setenv(key, value)
    weed = shared_seaweedfs()
    weed.create_bucket(BUCKET)  # the unit tests' bucket: each new one takes volumes of its own
    relay = CuttableProxy(weed.ports["s3"])
    metrics_port = free_port()
    spec = weed.spec(
        BUCKET, f"metrics-{tmp_path.name}", cache_dir=tmp_path / "cache", cache_size="64MiB"
    ).replace(weed.endpoint, relay.endpoint)
    try:
        with dittofs_server(
            tmp_path, "--metadata", "memory", "--content", spec,
            "--metrics", f"tcp:{metrics_port}:interface=127.0.0.1",
        ) as server:  # fmt: skip
            base = f"http://127.0.0.1:{metrics_port}"
            wait_ready(f"{base}/ready")
            data = tmp_path / "data"
            data.write_bytes(os.urandom(3_000_000))
            back = tmp_path / "back"
            for source, target in ((str(data), server.url("c")), (server.url("c"), str(back))):
                copy = subprocess.run(
                    ["nfs-cp", source, target], check=False, capture_output=True, timeout=60
                )
                assert copy.returncode == 0, copy.stderr
            assert back.read_bytes() == data.read_bytes()
            _, text = fetch(f"{base}/metrics")
            assert sample(text, "dittofs_cache_capacity_bytes", export="/export") == 64 << 20
            assert sample(text, "dittofs_cache_used_bytes", export="/export") >= 3_000_000
            assert sample(text, "dittofs_cache_hits_total", export="/export") >= 1
            assert sample(text, "dittofs_cache_misses_total", export="/export") == 0
            assert "dittofs_cache_pending_upload_bytes{" in text
            assert "dittofs_cache_pending_upload_files{" in text
            relay.cut()
            status, body = fetch(f"{base}/ready")
            assert status == 503, body
            checks = json.loads(body)["checks"]
            assert checks["/export content (s3)"].startswith("failed"), checks
            assert checks["/export metadata (memory)"] == "ok", checks
            relay.restore()
            wait_ready(f"{base}/ready")
    finally:
        relay.cut()


__all__ = ["RunningServer"]
