"""The load generator: ``nfsbench.c`` compiled against libnfs, run once per measurement.

The C program is built with the system compiler into ``.e2e-cache/bench/``
under a name carrying the hash of its source and flags, so it is rebuilt
only when one of them changes.  Each run prints one JSON object; any error
(an RPC failure, a non-OK NFS status, a short transfer, wrong data, its own
deadline) makes it exit non-zero, which becomes :class:`BenchError` here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".e2e-cache" / "bench"
SOURCE = Path(__file__).with_name("nfsbench.c")
HEADER = Path("/usr/include/nfsc/libnfs-raw.h")
CFLAGS = ("-O2", "-Wall", "-Wextra")
LIBS = ("-lnfs",)
#: Seconds the harness waits beyond the client's own deadline before killing it.
GRACE_SECONDS = 30


class BenchError(Exception):
    """A benchmark step failed; the message says which and why."""


class Endpoint(Protocol):
    """Where a server under test takes MOUNT and NFS calls."""

    label: str
    nfsport: int
    mountport: int
    export: str


def build(compiler: str | None = None) -> Path:
    """Compile ``nfsbench.c`` unless a binary of this exact source is cached; return its path."""
    compiler = compiler or os.environ.get("CC") or "cc"
    if not HEADER.exists():
        raise BenchError(
            f"{HEADER} is missing: install Debian's libnfs-dev (apt-get install -y libnfs-dev)"
        )
    if shutil.which(compiler) is None:
        raise BenchError(f"no C compiler {compiler!r} on PATH (apt-get install -y gcc)")
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(repr((compiler, CFLAGS, LIBS)).encode())
    binary = CACHE / f"nfsbench-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    command = [compiler, *CFLAGS, "-o", str(partial), str(SOURCE), *LIBS]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BenchError(f"building nfsbench failed ({' '.join(command)}):\n{result.stderr}")
    os.replace(partial, binary)
    for stale in CACHE.glob("nfsbench-*"):
        if stale != binary:
            stale.unlink(missing_ok=True)
    return binary


class Client:
    """Runs ``nfsbench`` workloads against one server at a time, as one AUTH_SYS user."""

    def __init__(self, binary: Path, uid: int, gid: int, timeout: float) -> None:
        self.binary = binary
        self.uid = uid
        self.gid = gid
        self.timeout = timeout

    def run(self, server: Endpoint, *arguments: object) -> dict[str, Any]:
        """Run one workload; return its JSON result or raise :class:`BenchError`."""
        command = [
            str(self.binary),
            "--host", "127.0.0.1",
            "--nfsport", str(server.nfsport),
            "--mountport", str(server.mountport),
            "--export", server.export,
            "--uid", str(self.uid),
            "--gid", str(self.gid),
            "--timeout", str(int(self.timeout)),
            *(str(argument) for argument in arguments),
        ]  # fmt: skip
        what = f"nfsbench {' '.join(str(argument) for argument in arguments)} on {server.label}"
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.timeout + GRACE_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise BenchError(f"{what}: killed after {error.timeout:.0f}s") from None
        if result.returncode != 0:
            raise BenchError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()}")
        try:
            parsed: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            raise BenchError(f"{what} printed no JSON result: {result.stdout!r}") from None
        return parsed
