"""ONC RPC on the wire: hand-built messages over raw sockets, and tshark's verdict on a session.

The raw tests build every call with :mod:`struct` straight from RFC 5531
(message layout, section 9; record marking, section 11) and RFC 1813, so
they share no code with DittoFS's encoders, and check the RPC-level answers
a server must give: PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS,
RPC_MISMATCH, AUTH_ERROR, record reassembly and the record size limit.

The tshark test captures a whole session (libnfs and anfs) on the loopback
interface and has Wireshark's RPC, MOUNT and NFS dissectors decode it: no
packet may be malformed and every call must have exactly one reply.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients import (
    AUTH_SYS,
    NFS3_OK,
    UNSTABLE,
    AnfsNfs3,
    Mount,
    RPCTarget,
    libnfs,
    run,
    sattr,
)
from tests.e2e.server import RunningServer

SOCKET_TIMEOUT = 10.0
MAX_FRAGMENTS = 1000

# RFC 5531 constants.
CALL, REPLY = 0, 1
MSG_ACCEPTED, MSG_DENIED = 0, 1
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS = range(5)
RPC_MISMATCH, AUTH_ERROR = 0, 1
AUTH_NONE, AUTH_SYS_FLAVOR, AUTH_DH, RPCSEC_GSS = 0, 1, 3, 6
AUTH_BADCRED, AUTH_TOOWEAK = 1, 5
LAST_FRAGMENT = 0x80000000

NFS_PROGRAM, MOUNT_PROGRAM = 100003, 100005
NFSPROC3_GETATTR, NFSPROC3_LOOKUP = 1, 3
MOUNTPROC3_MNT = 1
NF3DIR = 2


# -- XDR and RPC by hand ---------------------------------------------------------------


def xdr_opaque(data: bytes) -> bytes:
    """Variable-length opaque (and string): length, bytes, zero padding to 4."""
    return struct.pack(">I", len(data)) + data + bytes(-len(data) % 4)


def opaque_auth(flavor: int, body: bytes = b"") -> bytes:
    """An ``opaque_auth``: flavour and body."""
    return struct.pack(">I", flavor) + xdr_opaque(body)


def auth_sys_body(uid: int = 0, gid: int = 0) -> bytes:
    """An ``authsys_parms`` body: stamp, machine name, uid, gid, no extra groups."""
    return struct.pack(">I", 1) + xdr_opaque(b"raw-socket") + struct.pack(">III", uid, gid, 0)


def call_message(
    xid: int,
    program: int,
    version: int,
    procedure: int,
    args: bytes = b"",
    rpcvers: int = 2,
    cred: bytes | None = None,
) -> bytes:
    """An RPC CALL message (RFC 5531 section 9), AUTH_NONE unless *cred* is given."""
    header = struct.pack(">IIIIII", xid, CALL, rpcvers, program, version, procedure)
    return header + (cred or opaque_auth(AUTH_NONE)) + opaque_auth(AUTH_NONE) + args


def record(message: bytes, sizes: tuple[int, ...] = ()) -> bytes:
    """Record-mark *message*: fragments of the given *sizes*, then the rest as the last one."""
    out, offset = b"", 0
    for size in sizes:
        out += struct.pack(">I", size) + message[offset : offset + size]
        offset += size
    rest = message[offset:]
    return out + struct.pack(">I", LAST_FRAGMENT | len(rest)) + rest


class RawConnection:
    """A blocking TCP connection that sends bytes and reads whole RPC records."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), SOCKET_TIMEOUT)
        self.sock.settimeout(SOCKET_TIMEOUT)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Send raw bytes."""
        self.sock.sendall(data)

    def _exactly(self, size: int) -> bytes:
        chunks, missing = [], size
        while missing:
            chunk = self.sock.recv(missing)
            if not chunk:
                raise EOFError("connection closed by the server")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def receive(self) -> bytes:
        """One whole record, reassembled from its fragments."""
        parts = []
        for _ in range(MAX_FRAGMENTS):
            (header,) = struct.unpack(">I", self._exactly(4))
            parts.append(self._exactly(header & ~LAST_FRAGMENT))
            if header & LAST_FRAGMENT:
                return b"".join(parts)
        raise AssertionError(f"a reply of more than {MAX_FRAGMENTS} fragments")

    def call(self, message: bytes) -> dict[str, Any]:
        """Send *message* as one record and parse the reply."""
        self.send(record(message))
        return parse_reply(self.receive())

    def closed_by_peer(self) -> bool:
        """True once the server closes (or resets) the connection; False on timeout."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def parse_reply(message: bytes) -> dict[str, Any]:
    """Decode an RPC REPLY (RFC 5531 section 9) into a flat dict."""
    xid, msg_type, reply_stat = struct.unpack_from(">III", message)
    assert msg_type == REPLY
    reply: dict[str, Any] = {"xid": xid, "reply_stat": reply_stat}
    offset = 12
    if reply_stat == MSG_ACCEPTED:
        flavor, length = struct.unpack_from(">II", message, offset)
        offset += 8 + length + (-length % 4)
        (reply["accept_stat"],) = struct.unpack_from(">I", message, offset)
        reply["verifier_flavor"] = flavor
        offset += 4
        if reply["accept_stat"] == PROG_MISMATCH:
            reply["low"], reply["high"] = struct.unpack_from(">II", message, offset)
            offset += 8
        reply["results"] = message[offset:]
        if reply["accept_stat"] != SUCCESS:
            assert reply["results"] == b"", "nothing may follow an unsuccessful accept_stat"
    else:
        assert reply_stat == MSG_DENIED
        (reply["reject_stat"],) = struct.unpack_from(">I", message, offset)
        offset += 4
        if reply["reject_stat"] == RPC_MISMATCH:
            reply["low"], reply["high"] = struct.unpack_from(">II", message, offset)
            offset += 8
        else:
            (reply["auth_stat"],) = struct.unpack_from(">I", message, offset)
            offset += 4
        assert offset == len(message), "a rejected reply has nothing after its reason"
    return reply


@pytest.fixture
def connection(memory_server: RunningServer) -> Iterator[RawConnection]:
    """A raw TCP connection to the in-memory server."""
    conn = RawConnection(memory_server.port)
    yield conn
    conn.close()


def null_call(xid: int) -> bytes:
    """NFSPROC3_NULL."""
    return call_message(xid, NFS_PROGRAM, 3, 0)


def assert_null_reply(reply: dict[str, Any], xid: int) -> None:
    """An accepted, successful, empty reply with the given xid."""
    assert reply == {
        "xid": xid,
        "reply_stat": MSG_ACCEPTED,
        "accept_stat": SUCCESS,
        "verifier_flavor": AUTH_NONE,
        "results": b"",
    }


def root_handle(conn: RawConnection, export: str) -> bytes:
    """MOUNTPROC3_MNT by hand: the export's root handle."""
    reply = conn.call(
        call_message(
            7, MOUNT_PROGRAM, 3, MOUNTPROC3_MNT, xdr_opaque(export.encode()), cred=sys_cred()
        )
    )
    assert reply["accept_stat"] == SUCCESS
    results = reply["results"]
    status, length = struct.unpack_from(">II", results)
    assert status == 0
    return bytes(results[8 : 8 + length])


def sys_cred() -> bytes:
    """An AUTH_SYS credential for root."""
    return opaque_auth(AUTH_SYS_FLAVOR, auth_sys_body())


# -- the RPC layer ---------------------------------------------------------------------


def test_null_over_a_raw_socket(connection: RawConnection) -> None:
    """A hand-built NULL call gets an accepted, empty reply echoing its xid."""
    assert_null_reply(connection.call(null_call(0xDEADBEEF)), 0xDEADBEEF)


def test_unknown_program_is_prog_unavail(connection: RawConnection) -> None:
    """A program the server does not serve is PROG_UNAVAIL (RFC 5531 section 9)."""
    reply = connection.call(call_message(1, 400_123, 1, 0))
    assert (reply["reply_stat"], reply["accept_stat"]) == (MSG_ACCEPTED, PROG_UNAVAIL)
    assert_null_reply(connection.call(null_call(2)), 2)


def test_unsupported_version_is_prog_mismatch(connection: RawConnection) -> None:
    """NFS version 2 is PROG_MISMATCH 3..3; MOUNT version 4 is PROG_MISMATCH 1..3."""
    reply = connection.call(call_message(1, NFS_PROGRAM, 2, 0))
    assert reply["accept_stat"] == PROG_MISMATCH
    assert (reply["low"], reply["high"]) == (3, 3)
    reply = connection.call(call_message(2, NFS_PROGRAM, 4, 1))
    assert (reply["accept_stat"], reply["low"], reply["high"]) == (PROG_MISMATCH, 3, 3)
    reply = connection.call(call_message(3, MOUNT_PROGRAM, 4, 0))
    assert (reply["accept_stat"], reply["low"], reply["high"]) == (PROG_MISMATCH, 1, 3)


def test_unknown_procedure_is_proc_unavail(connection: RawConnection) -> None:
    """NFS v3 procedure 22 and MOUNT v3 procedure 6 do not exist: PROC_UNAVAIL."""
    reply = connection.call(call_message(1, NFS_PROGRAM, 3, 22))
    assert (reply["reply_stat"], reply["accept_stat"]) == (MSG_ACCEPTED, PROC_UNAVAIL)
    reply = connection.call(call_message(2, MOUNT_PROGRAM, 3, 6))
    assert reply["accept_stat"] == PROC_UNAVAIL
    reply = connection.call(call_message(3, NFS_PROGRAM, 3, 0xFFFFFFFF))
    assert reply["accept_stat"] == PROC_UNAVAIL


def test_undecodable_arguments_are_garbage_args(
    connection: RawConnection, memory_server: RunningServer
) -> None:
    """Truncated or oversized arguments are GARBAGE_ARGS and the connection stays usable."""
    truncated = struct.pack(">I", 32) + b"12345678"  # a 32-byte handle with 8 bytes sent
    reply = connection.call(call_message(1, NFS_PROGRAM, 3, NFSPROC3_GETATTR, truncated))
    assert (reply["xid"], reply["accept_stat"]) == (1, GARBAGE_ARGS)
    assert_null_reply(connection.call(null_call(2)), 2)

    too_long_handle = xdr_opaque(bytes(65))  # nfs_fh3 is opaque<NFS3_FHSIZE = 64>
    reply = connection.call(call_message(3, NFS_PROGRAM, 3, NFSPROC3_GETATTR, too_long_handle))
    assert reply["accept_stat"] == GARBAGE_ARGS

    handle = root_handle(connection, memory_server.export)
    no_name = xdr_opaque(handle)  # LOOKUP needs a filename after the directory handle
    reply = connection.call(call_message(4, NFS_PROGRAM, 3, NFSPROC3_LOOKUP, no_name))
    assert reply["accept_stat"] == GARBAGE_ARGS

    no_path = b""  # MNT needs a dirpath
    reply = connection.call(call_message(5, MOUNT_PROGRAM, 3, MOUNTPROC3_MNT, no_path))
    assert reply["accept_stat"] == GARBAGE_ARGS
    assert_null_reply(connection.call(null_call(6)), 6)


def test_rpc_version_3_is_rpc_mismatch(connection: RawConnection) -> None:
    """An RPC version other than 2 is MSG_DENIED / RPC_MISMATCH 2..2 (RFC 5531 section 9)."""
    reply = connection.call(call_message(9, NFS_PROGRAM, 3, 0, rpcvers=3))
    assert reply == {
        "xid": 9,
        "reply_stat": MSG_DENIED,
        "reject_stat": RPC_MISMATCH,
        "low": 2,
        "high": 2,
    }
    assert_null_reply(connection.call(null_call(10)), 10)


@pytest.mark.parametrize(
    ("flavor", "body"),
    [(AUTH_DH, b"\x00" * 24), (RPCSEC_GSS, struct.pack(">IIII", 1, 0, 0, 1) + xdr_opaque(b""))],
    ids=["AUTH_DH", "RPCSEC_GSS"],
)
def test_unsupported_auth_flavour_is_too_weak(
    connection: RawConnection, flavor: int, body: bytes
) -> None:
    """AUTH_DH and RPCSEC_GSS calls are denied with AUTH_ERROR / AUTH_TOOWEAK."""
    reply = connection.call(call_message(5, NFS_PROGRAM, 3, 0, cred=opaque_auth(flavor, body)))
    assert reply == {
        "xid": 5,
        "reply_stat": MSG_DENIED,
        "reject_stat": AUTH_ERROR,
        "auth_stat": AUTH_TOOWEAK,
    }
    assert_null_reply(connection.call(null_call(6)), 6)


def test_malformed_auth_sys_is_badcred(connection: RawConnection) -> None:
    """An AUTH_SYS credential whose body does not decode is AUTH_ERROR / AUTH_BADCRED."""
    cred = opaque_auth(AUTH_SYS_FLAVOR, b"\x00\x00\x00\x01\xff\xff\xff\xff")
    reply = connection.call(call_message(5, NFS_PROGRAM, 3, 0, cred=cred))
    assert (reply["reply_stat"], reply["reject_stat"], reply["auth_stat"]) == (
        MSG_DENIED,
        AUTH_ERROR,
        AUTH_BADCRED,
    )
    assert_null_reply(connection.call(null_call(6)), 6)


def test_multi_fragment_records_are_reassembled(
    connection: RawConnection, memory_server: RunningServer
) -> None:
    """Calls split into three (or more, one of them empty) fragments are served whole."""
    connection.send(record(null_call(1), (5, 17)))
    assert_null_reply(parse_reply(connection.receive()), 1)

    handle = root_handle(connection, memory_server.export)
    getattr_call = call_message(
        2, NFS_PROGRAM, 3, NFSPROC3_GETATTR, xdr_opaque(handle), cred=sys_cred()
    )
    connection.send(record(getattr_call, (3, 0, 30)))
    reply = parse_reply(connection.receive())
    assert (reply["xid"], reply["accept_stat"]) == (2, SUCCESS)
    status, ftype = struct.unpack_from(">II", reply["results"])
    assert (status, ftype) == (NFS3_OK, NF3DIR)
    assert len(reply["results"]) == 4 + 84, "GETATTR3resok is status + one 84-byte fattr3"


def test_pipelined_and_dribbled_calls(connection: RawConnection) -> None:
    """Several records in one write all get replies; a record sent byte by byte too."""
    connection.send(b"".join(record(null_call(xid)) for xid in (11, 12, 13)))
    replies = [parse_reply(connection.receive()) for _ in range(3)]
    assert sorted(r["xid"] for r in replies) == [11, 12, 13]

    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in record(null_call(14), (7,)):
        connection.send(bytes([byte]))
    assert_null_reply(parse_reply(connection.receive()), 14)


def test_reply_messages_sent_to_the_server_are_ignored(connection: RawConnection) -> None:
    """A REPLY arriving at the server gets no answer and does not break the connection."""
    stray = struct.pack(">IIIIII", 77, REPLY, MSG_ACCEPTED, AUTH_NONE, 0, SUCCESS)
    connection.send(record(stray) + record(null_call(78)))
    assert_null_reply(parse_reply(connection.receive()), 78)


@pytest.mark.parametrize("header", [0xFFFFFFFF, 0x7FFFFFFF], ids=["last", "not-last"])
def test_oversized_record_closes_the_connection(memory_server: RunningServer, header: int) -> None:
    """A record header announcing ~2 GiB closes that connection; new connections still work."""
    conn = RawConnection(memory_server.port)
    try:
        assert_null_reply(conn.call(null_call(1)), 1)
        conn.send(struct.pack(">I", header) + b"\x00" * 64)
        assert conn.closed_by_peer(), "the server must drop a connection it cannot frame"
    finally:
        conn.close()
    fresh = RawConnection(memory_server.port)
    try:
        assert_null_reply(fresh.call(null_call(2)), 2)
    finally:
        fresh.close()


# -- tshark ----------------------------------------------------------------------------

CAPTURE_START_SECONDS = 20.0
CAPTURE_FILE_SIZE = 2 * 1024 * 1024 + 12345
#: dumpcap's kernel buffer: loopback moves 64 KiB segments faster than a small one drains.
CAPTURE_BUFFER_MIB = 64
START_SENTINEL, END_SENTINEL = 0x5E000000, 0x5E0000FF
START_ATTEMPTS = 10
#: A capture that lost packets (dumpcap falling behind on a loaded machine: one
#: CI run in many) proves nothing either way, so it is taken again, this often.
CAPTURE_TAKES = 3


def _tshark_usable() -> str | None:
    if shutil.which("tshark") is None:
        return "tshark is not installed"
    if os.geteuid() != 0:
        return "capturing on lo needs root"
    return None


def _sentinel(port: int, xid: int) -> None:
    """A NULL call whose xid marks a point in the capture."""
    conn = RawConnection(port)
    try:
        assert_null_reply(conn.call(null_call(xid)), xid)
    finally:
        conn.close()


def _wait_for_sentinel(
    pcap: Path, port: int, xid: int, process: subprocess.Popen[bytes], seconds: float
) -> bool:
    """Poll the growing capture file until the sentinel's reply is in it (False: timed out)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("tshark exited during the capture")
        if pcap.exists():
            found = subprocess.run(
                [
                    *("tshark", "-r", str(pcap), "-d", f"tcp.port=={port},rpc"),
                    *("-Y", f"rpc.xid == {xid} && rpc.msgtyp == 1"),
                    *("-T", "fields", "-e", "frame.number"),
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
            if found.stdout.strip():
                return True
        time.sleep(0.2)
    return False


@contextlib.contextmanager
def capture(port: int, pcap: Path, log: Path) -> Iterator[None]:
    """Run tshark on lo for *port* while the body runs; stop it with SIGINT and wait.

    Sentinel NULL calls before and after the body, each awaited in the
    capture file, prove that the capture was running from the start and has
    written everything before it is stopped.
    """
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *("tshark", "-i", "lo", "-B", str(CAPTURE_BUFFER_MIB)),
                *("-f", f"tcp port {port}", "-w", str(pcap)),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + CAPTURE_START_SECONDS
        while b"Capturing on" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tshark did not start capturing:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        for attempt in range(START_ATTEMPTS):  # early packets may precede the filter: retry
            _sentinel(port, START_SENTINEL + attempt)
            if _wait_for_sentinel(pcap, port, START_SENTINEL + attempt, process, 2.0):
                break
        else:
            pytest.fail("the capture never showed a start sentinel")
        yield
        _sentinel(port, END_SENTINEL)
        if not _wait_for_sentinel(pcap, port, END_SENTINEL, process, CAPTURE_START_SECONDS):
            pytest.fail("the capture never showed the end sentinel")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def decode(pcap: Path, port: int, *args: str) -> str:
    """Run tshark over the capture with *port* decoded as ONC RPC."""
    result = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-d",
            f"tcp.port=={port},rpc",
            "-o",
            "rpc.defragment_rpc_over_tcp:TRUE",
            "-o",
            "tcp.desegment_tcp_streams:TRUE",
            *args,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode(errors="replace")


def lost_packets(pcap: Path, port: int) -> bool:
    """Whether the capture lost segments (dumpcap fell behind): then it proves nothing."""
    lost = decode(
        pcap,
        port,
        "-Y",
        "tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment",
        "-T",
        "fields",
        "-e",
        "frame.number",
    )
    return bool(lost.strip())


Counts = collections.Counter[tuple[str, str]]


def calls_and_replies(pcap: Path, port: int) -> tuple[Counts, Counts]:
    """How many calls and replies the capture holds, by TCP stream and xid."""
    rows = decode(
        pcap,
        port,
        "-Y",
        "rpc",
        "-T",
        "fields",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
        "-e",
        "tcp.stream",
        "-e",
        "rpc.xid",
        "-e",
        "rpc.msgtyp",
    )
    calls: Counts = collections.Counter()
    replies: Counts = collections.Counter()
    for row in rows.splitlines():
        stream, xids, kinds = row.split("\t")
        for xid, kind in zip(xids.split(","), kinds.split(","), strict=True):
            if kind:  # non-final fragments carry no RPC header of their own
                (calls if kind == "0" else replies)[(stream, xid)] += 1
    return calls, replies


def session(server: RunningServer, workdir: Path, take: int) -> None:
    """Traffic worth decoding: libnfs copies and listings, anfs calls of every kind.

    *take* numbers the names it makes, so a capture can be taken again on the same server.
    """
    local = workdir / "capture.bin"
    local.write_bytes(os.urandom(CAPTURE_FILE_SIZE))
    captured = f"captured{take}.bin"
    assert libnfs("nfs-cp", str(local), server.url(captured)).returncode == 0
    assert libnfs("nfs-ls", server.url("")).returncode == 0
    back = workdir / "back.bin"
    assert libnfs("nfs-cp", server.url(captured), str(back)).returncode == 0
    assert back.read_bytes() == local.read_bytes()
    assert libnfs("nfs-cat", server.url("missing")).returncode != 0

    async def anfs_calls() -> None:
        mount = Mount(RPCTarget("127.0.0.1", server.port, timeout=10), AUTH_SYS())
        _, error = await mount.connect()
        assert error is None
        await mount.null()
        await mount.dump()
        await mount.export()
        await mount.disconnect()  # sends UMNTALL

        async with AnfsNfs3(server.port, server.export) as nfs:
            await nfs.null()
            wire = f"wire{take}".encode()
            made = await nfs.mkdir(nfs.root, wire)
            work = bytes(made["resok"]["obj"]["handle"]["data"])
            created = await nfs.create(work, b"f")
            fh = bytes(created["resok"]["obj"]["handle"]["data"])
            await nfs.write(fh, 0, os.urandom(64 * 1024))  # 7 fragments of 10 KiB
            await nfs.write(fh, 64 * 1024, b"tail", UNSTABLE)
            await nfs.commit(fh)
            await nfs.read(fh, 0, 128 * 1024)
            await nfs.setattr(fh, sattr(mode=0o600), guard=(1, 0))  # NOT_SYNC
            await nfs.getattr(fh)
            await nfs.access(fh, 0x3F)
            await nfs.lookup(work, b"f")
            await nfs.lookup(work, b"missing")
            await nfs.link(fh, work, b"g")
            await nfs.rename(work, b"g", work, b"h")
            symlink = await nfs.symlink(work, b"s", b"f")
            await nfs.readlink(bytes(symlink["resok"]["obj"]["handle"]["data"]))
            await nfs.mknod(work, b"p", 7)
            await asyncio.gather(*(nfs.create(work, f"n{i}".encode()) for i in range(40)))
            await nfs.list_names(work, count=512)
            await nfs.readdirplus(work, 0, bytes(8), 1024, 4096)
            await nfs.fsstat(nfs.root)
            await nfs.fsinfo(nfs.root)
            await nfs.pathconf(nfs.root)
            await nfs.remove(work, b"h")
            await nfs.rmdir(nfs.root, wire)  # NOTEMPTY
            await nfs.getattr(b"\x00" * 12)  # BADHANDLE

    run(anfs_calls())


def test_tshark_decodes_a_session_cleanly(memory_server: RunningServer, tmp_path: Path) -> None:
    """Wireshark's dissectors find no malformed packet and a reply for every call."""
    reason = _tshark_usable()
    if reason:
        pytest.skip(reason)
    port = memory_server.port
    for take in range(CAPTURE_TAKES):
        workdir = tmp_path / f"take{take}"
        workdir.mkdir()
        pcap, log = workdir / "session.pcapng", workdir / "tshark.log"
        with capture(port, pcap, log):
            session(memory_server, workdir, take)
        if not lost_packets(pcap, port):
            break
    else:
        pytest.fail(
            f"all {CAPTURE_TAKES} captures lost packets, so none can judge the server;"
            f" the last one's log:\n{log.read_text(errors='replace')}"
        )
    malformed = decode(pcap, port, "-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number")
    assert malformed.strip() == "", f"malformed frames: {malformed.split()[:20]}"
    errors = decode(
        pcap, port, "-Y", "_ws.expert.severity >= 8388608", "-T", "fields", "-e", "_ws.expert"
    )
    assert errors.strip() == "", f"expert errors: {errors[:2000]}"

    calls, replies = calls_and_replies(pcap, port)
    assert sum(calls.values()) > 60, "the session should have made many calls"
    assert calls == replies, (
        f"calls without a reply: {calls - replies}; replies without a call: {replies - calls}"
    )

    procedures = decode(pcap, port, "-Y", "nfs", "-T", "fields", "-e", "nfs.procedure_v3")
    seen = {int(p) for line in procedures.split() for p in line.split(",") if p}
    assert set(range(22)) <= seen, f"NFS procedures never decoded: {set(range(22)) - seen}"
    mount_procs = decode(pcap, port, "-Y", "mount", "-T", "fields", "-e", "mount.procedure_v3")
    mount_procs += decode(pcap, port, "-Y", "mount", "-T", "fields", "-e", "mount.procedure_v1")
    seen_mount = {int(p) for line in mount_procs.split() for p in line.split(",") if p}
    assert {0, 1, 2, 4, 5} <= seen_mount
