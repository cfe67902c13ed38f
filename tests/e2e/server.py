"""Run a real DittoFS server in a subprocess for end-to-end tests.

It runs ``python -m twisted dittofs``: the same plugin ``twistd`` runs.

The server listens on a free loopback port; its log is kept in a file so a
failing test can show it.  Every client in these tests is one nobody here
wrote (libnfs, anfs, the Linux kernel), pointed at that port for both MOUNT
and NFS, with no portmapper.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

STARTUP_SECONDS = 30.0


def fetch(url: str) -> tuple[int, str]:
    """GET a URL (the metrics endpoint); return the status code and body, error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@attrs.define
class RunningServer:
    """A DittoFS process: where it listens and where its log goes."""

    port: int
    export: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def url(self, path: str = "") -> str:
        """A libnfs URL for *path* inside the export, naming the port for MOUNT and NFS."""
        return (
            f"nfs://127.0.0.1{self.export}/{path.lstrip('/')}"
            f"?nfsport={self.port}&mountport={self.port}"
        )

    def log(self) -> str:
        """The server's log so far."""
        return self.log_path.read_text(errors="replace")


def _wait_listening(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"DittoFS exited with {process.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"DittoFS did not listen within {STARTUP_SECONDS}s:\n{log_path.read_text()}")


@contextlib.contextmanager
def dittofs_server(
    workdir: Path,
    *options: str,
    export: str = "/export",
    port: int | None = None,
    launcher: Sequence[str] = (sys.executable, "-m", "twisted", "--log-format", "text"),
) -> Iterator[RunningServer]:
    """Start the dittofs plugin with *options* on a free loopback port; stop it after.

    *launcher* is the command before ``dittofs``: ``twist`` of this
    environment unless told otherwise.  ``DITTOFS_E2E_WORKERS`` (a count,
    or ``auto``) adds ``--workers`` where the test chose none.  Its temporary directory is
    *workdir*'s ``tmp``, so the change tables of caches over PostgreSQL and
    Redis are shared by the servers of one test, and go with it.
    """
    port = port or free_port()
    log_path = workdir / f"dittofs-{port}.log"
    workers = os.environ.get("DITTOFS_E2E_WORKERS")
    if workers and "--workers" not in options:
        options = (*options, "--workers", workers)
    command = [
        *launcher, "dittofs",
        "--listen", f"tcp:{port}:interface=127.0.0.1", "--export", export,
        "--data-dir", str(workdir / f"data-{port}"), *options,
    ]  # fmt: skip
    temporary = workdir / "tmp"
    temporary.mkdir(exist_ok=True)
    environment = {**os.environ, "TMPDIR": str(temporary)}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir, env=environment
        )
    try:
        _wait_listening(port, process, log_path)
        yield RunningServer(port, export, log_path, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
