"""A real DittoFS process under hostile load: connection floods, stalled readers, replays.

Each test starts its own server (``dittofs_server``) with the limits it
exercises and attacks it over 127.0.0.1 with raw sockets, while a
well-behaved client (raw RPC calls built with ``struct``, libnfs's
``nfs-ls``, anfs) checks that service goes on.  The server's memory is read
from ``/proc/PID/status`` (VmRSS) and must stay under the bound each test
states.  Every loop is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import NFS3_OK, UNCHECKED, AnfsNfs3, libnfs, run
from tests.e2e.server import RunningServer, dittofs_server
from tests.e2e.test_wire import (
    MOUNT_PROGRAM,
    NFS_PROGRAM,
    SUCCESS,
    RawConnection,
    call_message,
    parse_reply,
    record,
    root_handle,
    sys_cred,
    xdr_opaque,
)

MEMORY = ("--metadata", "memory", "--content", "memory", "--squash", "no_root_squash")
NFSPROC3_GETATTR, NFSPROC3_READ, NFSPROC3_REMOVE = 1, 6, 12
MIB = 1024 * 1024


def rss_mib(server: RunningServer) -> float:
    """The server process's resident memory (VmRSS), in MiB."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc status")


def fd_count(server: RunningServer) -> int:
    """How many descriptors the server process has open."""
    return len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


def raise_fd_limit(wanted: int) -> None:
    """Let this process (and the server it starts) hold *wanted* descriptors, or skip."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard descriptor limit {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def getattr_ok(port: int, handle: bytes, xid: int, timeout: float = 10.0) -> float:
    """A well-behaved client: GETATTR on a fresh connection; return the seconds it took."""
    started = time.monotonic()
    conn = RawConnection(port)
    try:
        conn.sock.settimeout(timeout)
        reply = conn.call(
            call_message(xid, NFS_PROGRAM, 3, NFSPROC3_GETATTR, xdr_opaque(handle), cred=sys_cred())
        )
    finally:
        conn.close()
    assert reply["accept_stat"] == SUCCESS
    assert struct.unpack_from(">I", reply["results"])[0] == NFS3_OK
    return time.monotonic() - started


def mounted_root(server: RunningServer) -> bytes:
    """The export's root handle, by MNT over a raw connection."""
    conn = RawConnection(server.port)
    try:
        return root_handle(conn, server.export)
    finally:
        conn.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True if the server has closed (or reset) *sock*; never blocks."""
    try:
        return sock.recv(4096, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    """A list of sockets closed on exit, however the test ends."""
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for sock in held:
            sock.close()


FLOOD = 2500
#: Bytes each flooding connection sends: a mark announcing 64 KiB, then 1 KiB of it.
PARTIAL = struct.pack(">I", 0x80000000 | 65536) + b"\xab" * 1024
FLOOD_RSS_MIB = 250.0


def test_connection_flood_with_partial_records(tmp_path: Path) -> None:
    """Thousands of connections held open at once, each then sending half a record (a
    slow-loris flood), neither starve a well-behaved client nor blow up the server's
    memory (VmRSS under FLOOD_RSS_MIB), and with ``--record-deadline 3`` the server cuts
    every one of them off by itself."""
    raise_fd_limit(FLOOD + 1000)
    options = (*MEMORY, "--max-client-connections", str(FLOOD + 100))
    options += ("--max-connections", str(FLOOD + 200), "--record-deadline", "3")
    with dittofs_server(tmp_path, *options) as server, sockets() as flood:
        root = mounted_root(server)
        before = rss_mib(server)
        slowest = 0.0
        started = time.monotonic()
        for index in range(FLOOD):
            assert time.monotonic() - started < 60, f"only {index} connections in 60 s"
            flood.append(socket.create_connection(("127.0.0.1", server.port), 10))
            if index % 250 == 0:
                slowest = max(slowest, getattr_ok(server.port, root, 1000 + index))
        connected = time.monotonic() - started
        # Every connection is open at the server at once (idle ones may stay 900 s), once
        # it has accepted the last few from its backlog.
        server_fds = fd_count(server)
        for _ in range(50):
            if server_fds >= FLOOD:
                break
            time.sleep(0.2)
            server_fds = fd_count(server)
        for sock in flood:
            sock.sendall(PARTIAL)
        sent = time.monotonic()
        slowest = max(slowest, getattr_ok(server.port, root, 9999))
        peak = rss_mib(server)
        listing = libnfs("nfs-ls", server.url(), timeout=30)
        assert listing.returncode == 0, listing.stderr
        # Every partial connection is closed by the deadline (3 s after its bytes came).
        open_ones = {sock.fileno(): sock for sock in flood}
        poller = select.poll()
        for fd in open_ones:
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while open_ones and time.monotonic() < sent + 30:
            for fd, _ in poller.poll(1000):
                if fd in open_ones and closed_by_server(open_ones[fd]):
                    poller.unregister(fd)
                    del open_ones[fd]
            peak = max(peak, rss_mib(server))
        all_closed = time.monotonic() - sent
        slowest = max(slowest, getattr_ok(server.port, root, 10_000))
        after = rss_mib(server)
        log = server.log()
    print(f"{FLOOD} connections in {connected:.1f} s ({server_fds} server fds), all cut off "
          f"{all_closed:.1f} s after their partial record; RSS before {before:.0f} MiB, "
          f"peak {peak:.0f}, after {after:.0f}; slowest GETATTR {slowest:.2f} s")  # fmt: skip
    assert server_fds >= FLOOD, f"the server held only {server_fds} descriptors"
    assert not open_ones, f"{len(open_ones)} partial connections outlived the record deadline"
    assert peak < FLOOD_RSS_MIB, f"server RSS {peak:.0f} MiB with {FLOOD} connections"
    assert slowest < 10
    assert "Traceback" not in log
    assert "took longer than 3 s to arrive" in log


#: Enough calls (about 14 MB) to outgrow every kernel buffer between the two ends.
STALL_CALLS = 100_000
STALL_FILE = 8 * MIB
#: A stalled reader may cost at most its in-flight calls' replies (64 x 1 MiB) plus slack.
STALL_RSS_GROWTH_MIB = 160.0


def copied_in(
    server: RunningServer, tmp_path: Path, held: list[socket.socket]
) -> tuple[Path, bytes, bytes]:
    """STALL_FILE bytes copied in as ``big`` with nfs-cp: the local file, the export
    root's handle and the copy's, looked up over a raw connection added to *held*."""
    source = tmp_path / "big"
    source.write_bytes(bytes(range(256)) * (STALL_FILE // 256))
    copied = libnfs("nfs-cp", str(source), server.url("big"), timeout=60)
    assert copied.returncode == 0, copied.stderr
    root = mounted_root(server)
    conn = RawConnection(server.port)
    held.append(conn.sock)
    reply = conn.call(
        call_message(2, NFS_PROGRAM, 3, 3, xdr_opaque(root) + xdr_opaque(b"big"), cred=sys_cred())
    )
    handle_length = struct.unpack_from(">I", reply["results"], 4)[0]
    return source, root, reply["results"][8 : 8 + handle_length]


def pipelined_reads(handle: bytes, first_xid: int, count: int) -> bytes:
    """*count* record-marked 1 MiB READs of *handle*, round the STALL_FILE bytes."""
    return b"".join(
        record(
            call_message(
                first_xid + n, NFS_PROGRAM, 3, NFSPROC3_READ,
                xdr_opaque(handle) + struct.pack(">QI", (n * MIB) % STALL_FILE, MIB),
                cred=sys_cred(),
            )
        )
        for n in range(count)
    )  # fmt: skip


def test_client_that_never_reads_its_replies(tmp_path: Path) -> None:
    """A client pipelining READs of a big file without ever reading the replies is slowed
    down by TCP (the server stops reading it once its replies back up) instead of making
    the server buffer gigabytes: server RSS grows by less than STALL_RSS_GROWTH_MIB while
    other clients are still served."""
    with dittofs_server(tmp_path, *MEMORY) as server, sockets() as held:
        _, root, handle = copied_in(server, tmp_path, held)
        before = rss_mib(server)

        stalled = socket.create_connection(("127.0.0.1", server.port), 10)
        held.append(stalled)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        stalled.setblocking(False)
        pending = pipelined_reads(handle, 10_000, STALL_CALLS)
        total = len(pending)
        peak = before
        served = 0
        started = time.monotonic()
        while time.monotonic() - started < 12:
            try:
                sent = stalled.send(pending[:65536])
                pending = pending[sent:]
            except BlockingIOError:
                time.sleep(0.2)
            except OSError as error:
                assert error.errno in (errno.EPIPE, errno.ECONNRESET)
                break
            if int(time.monotonic() - started) > served:
                served += 1
                getattr_ok(server.port, root, 20_000 + served)
                peak = max(peak, rss_mib(server))
            if not pending:
                break
        peak = max(peak, rss_mib(server))
        ok = libnfs("nfs-ls", server.url(), timeout=30)
        assert ok.returncode == 0, ok.stderr
        log = server.log()
    print(f"stalled reader: sent {total - len(pending)} of {total} bytes; "
          f"RSS before {before:.0f} MiB, peak {peak:.0f}")  # fmt: skip
    assert pending, "the server read every call although no reply was ever read"
    assert served >= 5, "the well-behaved client was not checked during the stall"
    assert peak - before < STALL_RSS_GROWTH_MIB, f"RSS grew {peak - before:.0f} MiB"
    assert "Traceback" not in log


#: Stalled connections reading big files from fs content: more than the reactor's
#: thread pool (10), whose threads send regions of files (``dittofs/rpc/sendfile.py``).
STALLED_READERS = 16


def test_stalled_readers_hold_no_sending_thread(tmp_path: Path) -> None:
    """Clients that pipeline 1 MiB READs of an fs file and never read the replies (more of
    them than there are threads to send file regions) do not stall anyone else's large
    READs: nfs-cp copies the file out whole while they wait, and the server's
    descriptors stay bounded."""
    options = ("--metadata", "memory", "--content", f"fs:{tmp_path / 'content'}")
    with (
        dittofs_server(tmp_path, *options, "--squash", "no_root_squash") as server,
        sockets() as held,
    ):
        source, _, handle = copied_in(server, tmp_path, held)
        calls = pipelined_reads(handle, 30_000, 64)
        descriptors_before = fd_count(server)
        for _ in range(STALLED_READERS):
            stalled = socket.create_connection(("127.0.0.1", server.port), 10)
            held.append(stalled)
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.settimeout(10)
            stalled.sendall(calls)
        time.sleep(2)  # their replies fill their sockets
        back = tmp_path / "back"
        started = time.monotonic()
        out = libnfs("nfs-cp", server.url("big"), str(back), timeout=60)
        took = time.monotonic() - started
        assert out.returncode == 0, out.stderr
        assert back.read_bytes() == source.read_bytes()
        descriptors = fd_count(server)
        log = server.log()
    print(f"{STALLED_READERS} stalled readers: nfs-cp of 8 MiB took {took:.1f} s; "
          f"descriptors {descriptors_before} before, {descriptors} while stalled")  # fmt: skip
    assert took < 30, f"nfs-cp took {took:.0f} s beside the stalled readers"
    # Each stalled connection holds its socket, the sender's copy of it, and the file
    # regions of the replies it sends and holds (at most 17 each: HELD_REGIONS).
    assert descriptors - descriptors_before <= STALLED_READERS * (2 + 2 * 17)
    assert "Traceback" not in log


def test_per_client_connection_limit(tmp_path: Path) -> None:
    """With ``--max-client-connections 4`` a fifth connection from the same address is
    closed at once, the refusal is logged once (not once per attempt), the four
    admitted connections keep working and a slot freed is usable again."""
    with dittofs_server(tmp_path, *MEMORY, "--max-client-connections", "4") as server:
        with sockets() as admitted:
            for index in range(4):
                conn = RawConnection(server.port)
                admitted.append(conn.sock)
                assert conn.call(call_message(index, NFS_PROGRAM, 3, 0))["accept_stat"] == SUCCESS
            for attempt in range(5):
                refused_at = time.monotonic()
                extra = socket.create_connection(("127.0.0.1", server.port), 10)
                extra.settimeout(5)
                try:
                    extra.sendall(record(call_message(100 + attempt, NFS_PROGRAM, 3, 0)))
                    answer = extra.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    answer = b""
                finally:
                    extra.close()
                assert answer == b"", f"connection {5 + attempt} was served: {answer!r}"
                assert time.monotonic() - refused_at < 3, "the refusal was not immediate"
            again = RawConnection(server.port)
            admitted.append(again.sock)
            assert again.closed_by_peer()
            # The admitted ones still work.
            conn = RawConnection.__new__(RawConnection)
            conn.sock = admitted[0]
            assert conn.call(call_message(200, NFS_PROGRAM, 3, 0))["accept_stat"] == SUCCESS
            admitted.pop(0).close()
        time.sleep(0.5)
        fresh = RawConnection(server.port)
        try:
            assert fresh.call(call_message(300, NFS_PROGRAM, 3, 0))["accept_stat"] == SUCCESS
        finally:
            fresh.close()
        log = server.log()
    refusals = [line for line in log.splitlines() if "Refusing a connection" in line]
    assert len(refusals) == 1, refusals
    assert "4 connections from this client" in refusals[0]


def test_retransmitted_remove_gets_the_same_reply(tmp_path: Path) -> None:
    """A REMOVE retransmitted with the same XID (its reply was lost, say) must not be run
    again, which would answer NFS3ERR_NOENT for a removal that succeeded: the duplicate
    request cache answers both copies with the same NFS3_OK reply, byte for byte, whether
    the copy comes after the reply or while the first is still in flight."""

    async def create(port: int, names: list[bytes]) -> None:
        async with AnfsNfs3(port) as nfs:
            for name in names:
                created = await nfs.create(nfs.root, name, UNCHECKED)
                assert created["status"] == NFS3_OK

    with dittofs_server(tmp_path, *MEMORY) as server:
        run(create(server.port, [b"doomed", b"doomed2"]))
        conn = RawConnection(server.port)
        try:
            root = root_handle(conn, server.export)

            def remove(xid: int, name: bytes) -> bytes:
                return record(
                    call_message(
                        xid, NFS_PROGRAM, 3, NFSPROC3_REMOVE,
                        xdr_opaque(root) + xdr_opaque(name), cred=sys_cred(),
                    )
                )  # fmt: skip

            conn.send(remove(0x5EED, b"doomed"))
            first = conn.receive()
            conn.send(remove(0x5EED, b"doomed"))
            second = conn.receive()
            conn.send(remove(0x5EEE, b"doomed2") * 2)
            third, fourth = conn.receive(), conn.receive()
            # A new XID is a new call: now the file is gone.
            conn.send(remove(0x5EEF, b"doomed"))
            fresh = parse_reply(conn.receive())
        finally:
            conn.close()
    for reply in (first, third):
        parsed = parse_reply(reply)
        assert parsed["accept_stat"] == SUCCESS
        assert struct.unpack_from(">I", parsed["results"])[0] == NFS3_OK
    assert second == first
    assert fourth == third
    assert struct.unpack_from(">I", fresh["results"])[0] == 2  # NFS3ERR_NOENT
    assert MOUNT_PROGRAM  # the root handle came from MNT (MOUNT program) above
