"""docs/examples/embed.py runs as the documentation says: NFS beside another service."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.server import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_embedded_server_answers_libnfs_and_echo() -> None:
    """libnfs lists the embedded export, and the echo service shares the reactor."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "embed.py"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"nfs://127.0.0.1/export/?nfsport={port}&mountport={port}"
        deadline = time.monotonic() + 30
        while True:
            listed = subprocess.run(["nfs-ls", url], capture_output=True, check=False, timeout=30)
            if listed.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert listed.returncode == 0, listed.stderr
        with socket.create_connection(("127.0.0.1", port + 1), 10) as echo:
            echo.sendall(b"ping")
            assert echo.recv(4) == b"ping"
    finally:
        process.terminate()
        assert process.wait(15) == 0, "the example stops cleanly on SIGTERM"
