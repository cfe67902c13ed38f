"""``--log-format json`` on running servers: every line of the log is one JSON event.

A DittoFS process is started the two ways users start it: with the
end-to-end helper (``python -m twisted``, the twist runner, its log on
stdout) and with ``twistd -n --logfile`` as the README shows.  libnfs's
``nfs-ls`` and ``nfs-cp`` make real connections and calls; then every line
of the log must parse as JSON, and the connection events (INFO) and per-call
events (DEBUG) must carry host, port, XID, procedure, status and duration as
fields of their own, not only inside a sentence.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.clients import libnfs
from tests.e2e.server import dittofs_server, free_port

MEMORY = ("--metadata", "memory", "--content", "memory")
JSON_DEBUG = ("--log-format", "json", "--log-level", "DEBUG")
STARTUP_SECONDS = 30.0


def json_events(log: str) -> list[dict[str, Any]]:
    """Every line of *log* parsed as one JSON object; any other line fails the test."""
    events = []
    for number, line in enumerate(log.splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line {number} is not JSON: {line!r}") from None
        assert isinstance(event, dict), f"log line {number} is not an object: {line!r}"
        events.append(event)
    return events


def drive(port: int, source: Path) -> None:
    """Copy a small file in and list the export with libnfs, failing on any tool error."""
    ports = f"nfsport={port}&mountport={port}"
    for args in (("nfs-cp", str(source), f"nfs://127.0.0.1/export/hello.txt?{ports}"),
                 ("nfs-ls", f"nfs://127.0.0.1/export/?{ports}")):  # fmt: skip
        result = libnfs(*args)
        assert result.returncode == 0, result.stderr.decode(errors="replace")


def check_events(events: list[dict[str, Any]]) -> None:
    """Connections open and close at INFO; each call is a DEBUG event with its own fields."""
    protocol = [e for e in events if e.get("log_namespace") == "dittofs.rpc.protocol"]
    opened = [e for e in protocol if e.get("log_format") == "Connection from {host}:{port}"]
    closed = [e for e in protocol if e.get("log_format") == "Connection from {host}:{port} closed"]
    assert opened, "no connection event"
    assert sorted((e["host"], e["port"]) for e in opened) == sorted(
        (e["host"], e["port"]) for e in closed
    ), "every connection opened is closed"
    for event in opened + closed:
        assert event["host"] == "127.0.0.1"
        assert isinstance(event["port"], int)
        assert event["log_level"]["name"] == "info"
        assert event["text"].startswith(f"Connection from 127.0.0.1:{event['port']}")

    calls = [e for e in events if e.get("log_namespace") == "dittofs.rpc.dispatch"]
    assert calls, "no per-call event"
    for call in calls:
        assert call["log_level"]["name"] == "debug"
        assert isinstance(call["xid"], int)
        assert isinstance(call["procedure"], str)
        assert call["status"] is None or isinstance(call["status"], int)
        assert isinstance(call["ms"], float)
        assert call["ms"] >= 0
        assert f"xid {call['xid']} " in call["text"]
    by_procedure = {(call["program"], call["procedure"]): call for call in calls}
    assert by_procedure[("mount", "MNT")]["status"] == 0
    for procedure in ("CREATE", "WRITE", "READDIRPLUS"):
        assert by_procedure[("nfs", procedure)]["status"] == 0, procedure  # NFS3_OK


def test_json_lines_under_twist(tmp_path: Path) -> None:
    """The helper's server (twist, whose own format is text) logs JSON lines, DEBUG included."""
    source = tmp_path / "hello.txt"
    source.write_bytes(b"hello, world\n")
    with dittofs_server(tmp_path, *MEMORY, *JSON_DEBUG) as server:
        drive(server.port, source)
    assert server.process.returncode == 0, server.log()
    events = json_events(server.log())
    check_events(events)
    serving = (
        f"DittoFS listens on tcp:{server.port}:interface=127.0.0.1 and serves /export "
        "with memory metadata and memory content"
    )
    assert any(e.get("text") == serving for e in events)


def wait_for(path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until the file at *path* contains *text* (bounded; fails if the process dies)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while text not in (path.read_text() if path.exists() else ""):
        assert process.poll() is None, f"twistd exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.1)


def test_json_lines_in_twistds_logfile(tmp_path: Path) -> None:
    """``twistd -n --logfile FILE dittofs --log-format json``: the file holds only JSON lines.

    Nothing is left on stdout or stderr: every event, twistd's own start-up
    lines included, went to the file as JSON.
    """
    port = free_port()
    log_path = tmp_path / "dittofs.json"
    twistd = Path(sys.executable).with_name("twistd")
    command = [
        str(twistd), "-n", "--pidfile=", "--logfile", str(log_path), "dittofs",
        "--listen", f"tcp:{port}:interface=127.0.0.1", *MEMORY, *JSON_DEBUG,
    ]  # fmt: skip
    source = tmp_path / "hello.txt"
    source.write_bytes(b"hello, world\n")
    with subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        try:
            wait_for(log_path, "DittoFS listens", process)
            drive(port, source)
        finally:
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert (stdout, stderr) == (b"", b"")
    events = json_events(log_path.read_text())
    check_events(events)
    assert events[0]["log_format"].startswith("twistd {version}")
    assert events[-1]["text"] == "Server Shut Down."
