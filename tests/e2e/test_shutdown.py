"""Signals to a real DittoFS process: SIGTERM stops it cleanly, SIGHUP reloads its rules.

SIGTERM in the middle of a stream of WRITE (UNSTABLE) + COMMIT pairs must
let the calls in flight finish, flush the stores and exit with status 0
within ``--shutdown-timeout``; after a restart on the same data directory
every COMMIT that was answered must read back exactly (RFC 1813 section
3.3.21: a committed write survives a server restart when the verifier has
not changed).  SIGHUP with an edited ``--config`` file applies the new
access rules to new MNT calls without dropping connections.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any

from tests.e2e.clients import NFS3_OK, UNCHECKED, UNSTABLE, AnfsNfs3, run
from tests.e2e.server import RunningServer, dittofs_server, free_port
from tests.e2e.test_wire import (
    MOUNT_PROGRAM,
    NFS_PROGRAM,
    SUCCESS,
    RawConnection,
    call_message,
    sys_cred,
    xdr_opaque,
)

FILES = 4
RULES = 'metadata = "memory"\ncontent = "memory"\nclients = ["{}"]\n'
CHUNK = 8192
#: Upper bounds on the stream, whatever happens: pairs per file and seconds.
MAX_PAIRS = 2000
STREAM_SECONDS = 30.0
SIGTERM_AFTER = 1.5
SHUTDOWN_TIMEOUT = 10
CALL_SECONDS = 5.0


def chunk(file_index: int, pair: int) -> bytes:
    """Data no other write in the test has: the file and pair numbers, repeated."""
    return struct.pack(">II", file_index, pair) * (CHUNK // 8)


def same_verifier(wrote: dict[str, Any], committed: dict[str, Any]) -> None:
    """WRITE and COMMIT of one server run carry the same verifier (RFC 1813 3.3.21)."""
    if bytes(committed["resok"]["verf"]) != bytes(wrote["resok"]["verf"]):
        raise AssertionError("write verifier changed within one server run")


async def stream(
    port: int, committed: list[tuple[int, int]], process_pid: int, signalled: list[float]
) -> None:
    """Each of FILES clients writes distinct chunks UNSTABLE then COMMITs them, until the
    server goes away; (file, pair) of every COMMIT answered NFS3_OK is kept."""
    answered_at = []
    async with AnfsNfs3(port) as setup:
        for index in range(FILES):
            created = await setup.create(setup.root, b"f%d" % index, UNCHECKED)
            assert created["status"] == NFS3_OK

    async def writer(index: int) -> None:
        try:
            async with AnfsNfs3(port) as nfs:
                found = await nfs.lookup(nfs.root, b"f%d" % index)
                handle = bytes(found["resok"]["object"]["data"])
                for pair in range(MAX_PAIRS):
                    offset = pair * CHUNK
                    wrote = await asyncio.wait_for(
                        nfs.write(handle, offset, chunk(index, pair), UNSTABLE), CALL_SECONDS
                    )
                    if wrote["status"] != NFS3_OK:
                        return
                    done = await asyncio.wait_for(nfs.commit(handle, offset, CHUNK), CALL_SECONDS)
                    if done["status"] != NFS3_OK:
                        return
                    same_verifier(wrote, done)
                    committed.append((index, pair))
                    answered_at.append(time.monotonic())
        except (TimeoutError, OSError, EOFError):
            return
        except Exception as error:  # anfs reports a dropped connection in its own ways
            if "onnect" in repr(error) or "closed" in repr(error).lower():
                return
            raise

    async def terminate() -> None:
        await asyncio.sleep(SIGTERM_AFTER)
        signalled.append(time.monotonic())
        os.kill(process_pid, signal.SIGTERM)

    await asyncio.gather(terminate(), *(writer(index) for index in range(FILES)))
    late = [at - signalled[0] for at in answered_at if at > signalled[0]]
    print(f"{len(late)} commits answered after SIGTERM, the last {max(late, default=0):.1f} s on")


async def read_back(port: int, committed: list[tuple[int, int]]) -> list[str]:
    """Every committed chunk, read after the restart; the mismatches."""
    wrong = []
    async with AnfsNfs3(port) as nfs:
        handles = {}
        for index in range(FILES):
            found = await nfs.lookup(nfs.root, b"f%d" % index)
            handles[index] = bytes(found["resok"]["object"]["data"])
        for index, pair in committed:
            got = await nfs.read(handles[index], pair * CHUNK, CHUNK)
            data = bytes(got["resok"]["data"]) if got["status"] == NFS3_OK else b""
            if data != chunk(index, pair):
                wrong.append(f"f{index} pair {pair}: status {got['status']}, {len(data)} bytes")
    return wrong


def test_sigterm_keeps_every_answered_commit(tmp_path: Path) -> None:
    """SIGTERM during a WRITE+COMMIT stream: the server exits 0 within its shutdown
    timeout, and after a restart on the same sqlite + fs data every COMMIT it answered
    reads back exactly; a clean stop must never lose acknowledged data."""
    data = tmp_path / "data"
    options = ("--metadata", "sqlite", "--content", "fs", "--data-dir", str(data))
    options += ("--shutdown-timeout", str(SHUTDOWN_TIMEOUT))
    committed: list[tuple[int, int]] = []
    with dittofs_server(tmp_path, *options) as server:
        signalled: list[float] = []
        run(stream(server.port, committed, server.process.pid, signalled), STREAM_SECONDS + 30)
        code = server.process.wait(SHUTDOWN_TIMEOUT + 15)
        stopped = time.monotonic() - signalled[0]
        log = server.log()
    assert code == 0, f"exit status {code}:\n{log[-5000:]}"
    assert stopped < SHUTDOWN_TIMEOUT, f"took {stopped:.1f} s to stop"
    assert "DittoFS stopped" in log
    assert "Traceback" not in log
    assert len(committed) >= FILES, f"only {len(committed)} commits before SIGTERM"
    with dittofs_server(tmp_path, *options) as again:
        wrong = run(read_back(again.port, committed))
    assert wrong == [], f"{len(wrong)} of {len(committed)} committed chunks lost: {wrong[:5]}"
    print(f"{len(committed)} commits answered before SIGTERM; stop took {stopped:.1f} s")


def mnt_status(conn: RawConnection, export: str, xid: int) -> int:
    """MOUNTPROC3_MNT by hand: the mountstat3."""
    reply = conn.call(
        call_message(xid, MOUNT_PROGRAM, 3, 1, xdr_opaque(export.encode()), cred=sys_cred())
    )
    assert reply["accept_stat"] == SUCCESS
    return int(struct.unpack_from(">I", reply["results"])[0])


def wait_for_log(server: RunningServer, text: str, seconds: float = 15.0) -> None:
    """Wait (bounded) until the server's log mentions *text*."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in server.log():
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged within {seconds} s:\n{server.log()[-3000:]}")


def test_sighup_applies_new_client_rules(tmp_path: Path) -> None:
    """SIGHUP after the config file's clients list stops naming 127.0.0.1: the next MNT is
    refused (MNT3ERR_ACCES), on the open connection and on a new one, while that open
    connection is not dropped (NULL still answered), so access can be revoked without a
    restart; restoring the list and SIGHUP again admits the client again."""
    config = tmp_path / "dittofs.toml"
    config.write_text(RULES.format("127.0.0.0/8"))
    port = free_port()
    with dittofs_server(tmp_path, "--config", str(config), port=port) as server:
        conn = RawConnection(server.port)
        try:
            assert mnt_status(conn, server.export, 1) == 0
            config.write_text(
                'metadata = "memory"\ncontent = "memory"\nclients = ["192.0.2.0/24"]\n'
            )
            server.process.send_signal(signal.SIGHUP)
            wait_for_log(server, "SIGHUP: new access rules")
            assert mnt_status(conn, server.export, 2) == 13  # MNT3ERR_ACCES
            assert conn.call(call_message(3, NFS_PROGRAM, 3, 0))["accept_stat"] == SUCCESS
            other = RawConnection(server.port)
            try:
                assert mnt_status(other, server.export, 4) == 13
            finally:
                other.close()
            config.write_text(RULES.format("127.0.0.1"))
            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 15
            status = 13
            while status != 0 and time.monotonic() < deadline:
                time.sleep(0.2)
                status = mnt_status(conn, server.export, 5)
            assert status == 0
        finally:
            conn.close()
        assert server.process.poll() is None, "SIGHUP stopped the server"
        log = server.log()
    assert "Traceback" not in log
    assert socket  # raw sockets only to 127.0.0.1
