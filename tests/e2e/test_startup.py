"""Starting a real DittoFS process: what it says, and what it does when it cannot serve.

A store that cannot open must not leave a server that is not a server: no
port may ever accept a connection, the log must say in one line which store
failed and why (its password hidden), and the process must end with status
1 within seconds, under twist, ``twistd -n`` and a daemonising ``twistd``
alike.  The failing store is PostgreSQL asked to use a schema that does not
exist, so the connection succeeds and the first ``CREATE TABLE`` fails: the
case that used to leave the process running until ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import dittofs
from tests.e2e.server import dittofs_server, free_port
from tests.unit.backends import postgres_schema, postgres_url

#: Far more than a failed start takes (well under a second); the bound on every wait.
STOP_SECONDS = 30.0
VENV_BIN = Path(sys.executable).parent
PASSWORD = "NotThisOne"  # trust authentication ignores it; the log must not show it


def with_password(url: str) -> str:
    """*url* with a password for its user, so redaction has something to hide."""
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def missing_schema_url() -> tuple[str, str]:
    """A PostgreSQL URL whose search_path names no schema, and its redacted form."""
    url = postgres_url(f"nosuchschema_{secrets.token_hex(4)}")
    return with_password(url), url.replace("postgres@", "postgres:***@", 1)


def accepts(port: int) -> bool:
    """Whether something accepts a TCP connection on 127.0.0.1:*port* right now."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def ours(marker: str) -> list[int]:
    """Processes whose command line mentions *marker* (the test's own directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if marker in cmdline and state != "Z":
                    found.append(int(entry.name))
    return found


def watch_port(port: int, marker: str) -> tuple[int, bool]:
    """Probe the port without pause until no process of this test is left, for at most
    :data:`STOP_SECONDS`; return how often it accepted a connection, and whether they ended.

    A refused connection on loopback costs microseconds, so even a port open
    for a few milliseconds is seen.
    """
    accepted = 0
    done = threading.Event()

    def probe() -> None:
        nonlocal accepted
        while not done.is_set():
            accepted += accepts(port)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    deadline = time.monotonic() + STOP_SECONDS
    while ours(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    prober.join()
    return accepted, not ours(marker)


@contextlib.contextmanager
def reaped(marker: str) -> Iterator[None]:
    """Kill (SIGKILL) whatever process of this test is left when the block ends."""
    try:
        yield
    finally:
        for pid in ours(marker):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)


TWIST = [sys.executable, "-m", "twisted", "--log-format", "text", "dittofs"]
RUNNERS = {
    "twist": TWIST,
    "twistd -n": [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "dittofs"],
    # A supervisor and its workers, whatever the number of cores (auto gives 1 on one).
    "twist, 2 workers": [*TWIST, "--workers", "2"],
}


def refused_start(command: list[str], tmp_path: Path, port: int, line: str) -> str:
    """Run *command* (a start whose store cannot open) and return its output, after
    checking what every such start must do: no connection ever accepted on *port*, exit
    status 1, one line ending with *line* that says which store and why, no traceback,
    and no line saying it listens."""
    with reaped(str(tmp_path)), (tmp_path / "out.log").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        accepted, ended = watch_port(port, str(tmp_path))
    output = (tmp_path / "out.log").read_text()
    assert accepted == 0, f"the port accepted {accepted} connections:\n{output}"
    assert ended, f"still running after {STOP_SECONDS} s:\n{output}"
    assert process.wait(STOP_SECONDS) == 1, output
    failures = [each for each in output.splitlines() if "Could not" in each]
    assert len(failures) == 1, output
    assert failures[0].endswith(line), output
    assert "Traceback" not in output, output
    assert "DittoFS listens" not in output, output
    return output


def test_sqlite_file_that_cannot_open_exits_1(tmp_path: Path) -> None:
    """A SQLite database that cannot be opened (its path is a directory): one line says
    which and why, and the server exits 1 instead of waiting for a connection."""
    database = tmp_path / "data" / "metadata.db"
    database.mkdir(parents=True)
    port = free_port()
    command = [
        *TWIST, "--listen", f"tcp:{port}:interface=127.0.0.1", "--workers", "1",
        "--data-dir", str(tmp_path / "data"), "--metadata", f"sqlite:{database}",
    ]  # fmt: skip
    refused_start(
        command,
        tmp_path,
        port,
        f"#critical] Could not open sqlite metadata ({database}) for /export: "
        "OperationalError: unable to open database file",
    )


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_store_that_cannot_open_exits_1_and_never_listens(tmp_path: Path, runner: str) -> None:
    """One line names the store (password hidden) and why; exit status 1; no port ever open.

    The port is probed every 20 ms for the whole life of the process.  Before,
    twistd bound it before opening the stores and both runners then hung:
    the stop waited for a content store that had never opened, and SIGTERM
    only logged ``ReactorNotRunning``.
    """
    url, redacted = missing_schema_url()
    port = free_port()
    command = [
        *RUNNERS[runner], "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--data-dir", str(tmp_path / "data"), "--metadata", url,
    ]  # fmt: skip
    # Logged by the one process, or by the supervisor of the default workers.
    output = refused_start(
        command,
        tmp_path,
        port,
        f"#critical] Could not open postgresql metadata ({redacted}) for /export: "
        "InvalidSchemaName: no schema has been selected to create in",
    )
    assert PASSWORD not in output


def test_daemonised_twistd_exits_1_and_its_daemon_ends(tmp_path: Path) -> None:
    """``twistd`` (daemonising) exits 1 with the reason, its daemon ends and nothing listens.

    twistd's first process waits for the daemon to say it started; DittoFS
    answers only once its stores are open, so the shell (or systemd with
    ``Type=forking``) sees the failure, not a 0 from a server that is about
    to die.  The daemon logs the same one line to ``--logfile``, and removes
    its pidfile.
    """
    url, redacted = missing_schema_url()
    port = free_port()
    log_file, pid_file = tmp_path / "dittofs.log", tmp_path / "dittofs.pid"
    command = [
        str(VENV_BIN / "twistd"), "--pidfile", str(pid_file), "--logfile", str(log_file),
        "dittofs", "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--data-dir", str(tmp_path / "data"), "--metadata", url,
    ]  # fmt: skip
    with reaped(str(tmp_path)), (tmp_path / "out.log").open("wb") as out:
        started = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        accepted, ended = watch_port(port, str(tmp_path))  # twistd's first process, its daemon
    output, log = (tmp_path / "out.log").read_text(), log_file.read_text()
    assert accepted == 0, f"the port accepted {accepted} connections:\n{log}"
    assert ended, f"still running after {STOP_SECONDS} s:\n{log}"
    assert started.wait(STOP_SECONDS) == 1, (output, log)
    assert "An error has occurred: b'Could not open postgresql metadata" in output, output
    assert PASSWORD not in output + log
    failures = [line for line in log.splitlines() if "Could not" in line]
    assert len(failures) == 1, log
    assert failures[0].endswith(
        f"Could not open postgresql metadata ({redacted}) for /export: "
        "InvalidSchemaName: no schema has been selected to create in"
    ), log
    assert "DittoFS stopped" in log
    assert not pid_file.exists()


def test_start_up_line_says_where_it_listens_and_which_stores(tmp_path: Path) -> None:
    """The start-up line names the endpoint and each store, where its data is, password hidden.

    One process: each worker's line names its seat, and the supervisor's
    its workers (``tests/e2e/test_workers.py``).
    """
    with postgres_schema("startup") as schema:
        url = postgres_url(schema)
        port = free_port()
        options = (
            *("--metadata", with_password(url), "--content", f"fs:{tmp_path / 'blocks'}"),
            *("--workers", "1"),
        )
        with dittofs_server(tmp_path, *options, port=port) as server:
            deadline = time.monotonic() + STOP_SECONDS
            while "DittoFS listens" not in server.log():
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
            log = server.log()
    redacted = url.replace("postgres@", "postgres:***@", 1)
    assert (
        f"DittoFS listens on tcp:{port}:interface=127.0.0.1 and serves /export with "
        f"postgresql metadata ({redacted}) and fs content ({tmp_path / 'blocks'})\n"
    ) in log, log
    assert PASSWORD not in log


def test_version_is_dittofs_own(tmp_path: Path) -> None:
    """``dittofs --version`` and ``twistd dittofs --version`` print DittoFS's version."""
    dittofs_command = [str(VENV_BIN / "dittofs"), "--version"]
    twistd_command = [str(VENV_BIN / "twistd"), "dittofs", "--version"]
    for command in (dittofs_command, twistd_command):
        shown = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"dittofs {dittofs.__version__} (Twisted "), shown.stdout
