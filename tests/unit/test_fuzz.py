"""Structured fuzzing of every MOUNT and NFSv3 procedure through the real dispatcher.

Hostile clients do not send random bytes; they send calls that are *almost*
right: a real procedure with a handle from another export, a name with a
slash in it, a READ of four gigabytes at offset 2**64-1, a WRITE whose count
disagrees with its data, a record cut short.  The generators below build
valid-shaped calls for every procedure of both programs and then mutate them,
and feed them either straight to :class:`~dittofs.rpc.dispatch.RpcDispatcher`
or, framed into random record-marking streams, through
:class:`~dittofs.rpc.protocol.RpcServerProtocol` over a ``StringTransport``.

The invariants: every call that can be answered gets exactly one well-formed
reply (checked by the strict ``struct``-based parser below, including that an
``nfsstat3`` or ``mountstat3`` is one RFC 1813 defines), nothing raises into
the caller, no procedure crashes into SYSTEM_ERR (nor logs a failure), and
the server still answers a good call afterwards.

The generators take a plain :class:`random.Random` so the same code drives
hypothesis here (``st.randoms()``, which shrinks) and the long-running
``fuzz/run.py`` (plain ``random``, as fast as possible).
"""

from __future__ import annotations

import random
import struct

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dittofs.mount import MountStat
from dittofs.policy import AccessPolicy, Squash
from dittofs.rpc.protocol import Limits, RpcServerFactory, RpcServerProtocol
from dittofs.testing import InProcessServer, build_server
from dittofs.vocabulary import Status

MOUNT_PROGRAM, MOUNT_V3 = 100005, 3
NFS_PROGRAM, NFS_V3 = 100003, 3
#: MOUNT v3 procedures (RFC 1813 section 5.2) and NFSv3 procedures (section 3.3).
MOUNT_PROCEDURES = range(6)
NFS_PROCEDURES = range(22)
EXPORT_PATH = b"/export"
EXPORT_ID = 1
PEER = ("127.0.0.1", 800)
#: A small record limit, so that oversized records are cheap to generate.
FUZZ_MAX_RECORD = 256 * 1024
RECORD_DEADLINE = 5.0

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HANDLE = struct.Struct(">BBHQI")

NFS_STATUSES = frozenset(int(status) for status in Status)
MOUNT_STATUSES = frozenset(int(status) for status in MountStat)


# -- XDR by hand: the fuzzer must not trust the encoder it is testing --------------------


def u32(value: int) -> bytes:
    """An XDR unsigned int (wrapped into range, so generators may overshoot)."""
    return _U32.pack(value & 0xFFFFFFFF)


def u64(value: int) -> bytes:
    """An XDR unsigned hyper."""
    return _U64.pack(value & 0xFFFFFFFFFFFFFFFF)


def opaque(data: bytes, declared: int | None = None) -> bytes:
    """Variable-length opaque data, optionally announcing a length it does not have."""
    size = len(data) if declared is None else declared
    return u32(size) + data + b"\0" * (-len(data) % 4)


def auth_sys(uid: int, gid: int, gids: tuple[int, ...] = (), machine: bytes = b"fuzz") -> bytes:
    """The body of an AUTH_SYS credential."""
    return (
        u32(0) + opaque(machine) + u32(uid) + u32(gid) + u32(len(gids)) + b"".join(map(u32, gids))
    )


# -- what the fuzzer knows about the server it attacks -----------------------------------


@attrs.define
class Corpus:
    """Handles and names that exist on the fuzzed server, so calls reach deep code."""

    handles: list[bytes]
    names: list[bytes]


def populated_server() -> tuple[InProcessServer, Corpus]:
    """A memory-store server (root not squashed) with a file, a directory and a symlink."""
    server = build_server(policy=AccessPolicy(squash=Squash.NONE))
    client = server.client(uid=0, gid=0)
    root = client.mnt(EXPORT_PATH)
    handles = [root]
    file_handle = client.write_file(root, b"file", b"0123456789" * 100)
    handles.append(file_handle)
    directory = client.mkdir(root, b"dir").expect_ok().handle
    assert directory is not None
    handles.append(directory)
    handles.append(client.write_file(directory, b"inner", b"inner data"))
    link = client.symlink(root, b"link", b"file").expect_ok().handle
    assert link is not None
    handles.append(link)
    return server, Corpus(handles, [b"file", b"dir", b"inner", b"link", b"new"])


# -- generators: plain random.Random in, bytes out --------------------------------------


#: 32-bit values where arithmetic breaks.
EDGE_U32 = (0, 1, 2, 7, 0x7F, 0x80, 0xFFF, 0x1000, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE)
#: 64-bit offsets and sizes where arithmetic overflows.
EDGE_U64 = (0, 1, 10, 999, 1000, 4096, 2**31, 2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**63)
EDGE_U64 += (2**64 - 4096, 2**64 - 1)
MOUNT_PATHS = (EXPORT_PATH, EXPORT_PATH + b"/", EXPORT_PATH + b"/dir", b"/", b"", b"/nope")
MOUNT_PATHS += (b"/export\0", b"x" * 1025, b"/" * 300)


def gen_uint(rng: random.Random) -> int:
    """A 32-bit value biased to the edges where arithmetic breaks."""
    return rng.choice((*EDGE_U32, 0xFFFFFFFF, rng.getrandbits(32), rng.randrange(0, 70000)))


def gen_offset(rng: random.Random) -> int:
    """A 64-bit offset or size, biased to overflows."""
    return rng.choice((*EDGE_U64, rng.getrandbits(64), rng.randrange(0, 1 << 20)))


def gen_handle(rng: random.Random, corpus: Corpus) -> bytes:
    """A file handle: real, valid-looking with random parts, or plain wrong."""
    kind = rng.randrange(8)
    if kind <= 2:
        return rng.choice(corpus.handles)
    if kind == 3:
        export_id = rng.choice((EXPORT_ID, 0, 2, 0xFFFF, rng.getrandbits(16)))
        fileid = rng.choice((0, 1, 2, 3, 4, 5, 6, 2**63, 2**64 - 1, rng.getrandbits(64)))
        generation = rng.choice((0, 1, 2, 0xFFFFFFFF, rng.getrandbits(32)))
        return _HANDLE.pack(1, 0, export_id, fileid, generation)
    if kind == 4:
        handle = bytearray(rng.choice(corpus.handles))
        handle[rng.randrange(len(handle))] ^= 1 << rng.randrange(8)
        return bytes(handle)
    if kind == 5:
        return rng.randbytes(rng.choice((0, 1, 15, 17, 32, 63, 64)))
    if kind == 6:
        return rng.randbytes(16)
    return rng.choice(corpus.handles)[: rng.randrange(16)]


def gen_name(rng: random.Random, corpus: Corpus) -> bytes:
    """A file name: existing, fresh, or one no file system should accept."""
    return rng.choice(
        (
            rng.choice(corpus.names),
            b"n%d" % rng.randrange(50),
            b"",
            b".",
            b"..",
            b"a/b",
            b"/",
            b"a\0b",
            b"\0",
            b"x" * 255,
            b"y" * 256,
            b"z" * rng.randrange(257, 1100),
            rng.randbytes(rng.randrange(1, 40)),
            "é✓".encode(),
            b"\xff\xfe",
        )
    )


def gen_time(rng: random.Random) -> bytes:
    """A set_atime/set_mtime union, including an invalid discriminant."""
    how = rng.choice((0, 1, 2, 2, 3, 0xFFFFFFFF))
    if how == 2:
        return u32(2) + u32(gen_uint(rng)) + u32(gen_uint(rng))
    return u32(how)


def gen_sattr(rng: random.Random) -> bytes:
    """An ``sattr3`` with each field set or not, values at the edges."""
    out = b""
    for _ in range(3):  # mode, uid, gid
        present = rng.choice((0, 1, 1, 2))
        out += u32(present) + (u32(gen_uint(rng)) if present == 1 else b"")
    present = rng.choice((0, 0, 1))
    out += u32(present) + (u64(gen_offset(rng)) if present else b"")
    return out + gen_time(rng) + gen_time(rng)


def gen_mount_args(rng: random.Random, procedure: int) -> bytes:
    """Arguments of MOUNT procedure *procedure* (MNT and UMNT take a dirpath)."""
    if procedure not in (1, 3):
        return b"" if rng.random() < 0.8 else rng.randbytes(rng.randrange(12))
    path = rng.choice((*MOUNT_PATHS, rng.randbytes(rng.randrange(30))))
    return opaque(path)


def gen_nfs_args(rng: random.Random, procedure: int, corpus: Corpus) -> bytes:
    """Valid-shaped arguments of NFSv3 procedure *procedure* (RFC 1813 section 3.3)."""

    def fh() -> bytes:
        return opaque(gen_handle(rng, corpus))

    def dirop() -> bytes:
        return fh() + opaque(gen_name(rng, corpus))

    def verifier() -> bytes:
        return rng.choice((bytes(8), rng.randbytes(8)))

    if procedure == 0:
        return b""
    if procedure in (1, 5, 18, 19, 20):  # GETATTR READLINK FSSTAT FSINFO PATHCONF
        return fh()
    if procedure == 2:  # SETATTR: sattr3 and a guard
        guard = rng.choice((0, 1, 1, 5))
        return (
            fh()
            + gen_sattr(rng)
            + u32(guard)
            + (u32(gen_uint(rng)) + u32(gen_uint(rng)) if guard == 1 else b"")
        )
    if procedure in (3, 12, 13):  # LOOKUP REMOVE RMDIR
        return dirop()
    if procedure == 4:  # ACCESS
        return fh() + u32(gen_uint(rng))
    if procedure in (6, 21):  # READ COMMIT
        return fh() + u64(gen_offset(rng)) + u32(gen_uint(rng))
    if procedure == 7:  # WRITE: count may disagree with the data
        data = rng.randbytes(rng.choice((0, 1, 5, 100, 4096, rng.randrange(0, 70000))))
        count = rng.choice((len(data), len(data), gen_uint(rng)))
        declared = rng.choice((None, None, None, gen_uint(rng)))
        return (
            fh()
            + u64(gen_offset(rng))
            + u32(count)
            + u32(rng.choice((0, 1, 2, 3)))
            + opaque(data, declared)
        )
    if procedure == 8:  # CREATE
        mode = rng.choice((0, 1, 2, 3))
        return dirop() + u32(mode) + (verifier() if mode == 2 else gen_sattr(rng))
    if procedure == 9:  # MKDIR
        return dirop() + gen_sattr(rng)
    if procedure == 10:  # SYMLINK
        target = rng.choice((b"file", b"", b"/etc/passwd", b"a\0b", b"t" * 5000))
        return dirop() + gen_sattr(rng) + opaque(target)
    if procedure == 11:  # MKNOD: the union's arm depends on the type
        kind = rng.choice((1, 2, 3, 4, 5, 6, 7, 0, 8))
        out = dirop() + u32(kind)
        if kind in (3, 4):
            out += gen_sattr(rng) + u32(gen_uint(rng)) + u32(gen_uint(rng))
        elif kind in (6, 7):
            out += gen_sattr(rng)
        return out
    if procedure == 14:  # RENAME
        return dirop() + dirop()
    if procedure == 15:  # LINK
        return fh() + dirop()
    if procedure == 16:  # READDIR
        return fh() + u64(gen_offset(rng)) + verifier() + u32(gen_uint(rng))
    if procedure == 17:  # READDIRPLUS
        return fh() + u64(gen_offset(rng)) + verifier() + u32(gen_uint(rng)) + u32(gen_uint(rng))
    return rng.randbytes(rng.randrange(40))


def gen_credential(rng: random.Random) -> tuple[int, bytes]:
    """AUTH_SYS as root or a user, AUTH_NONE, or a credential that must be refused."""
    kind = rng.randrange(10)
    if kind <= 3:
        return 1, auth_sys(0, 0)
    if kind <= 5:
        return 1, auth_sys(1000, 1000, (1000, 100))
    if kind == 6:
        return 0, b""
    if kind == 7:
        return 1, auth_sys(gen_uint(rng), gen_uint(rng), tuple(range(rng.choice((0, 16, 17)))))
    if kind == 8:
        return 1, rng.randbytes(rng.randrange(40))
    return rng.choice((2, 3, 6, 0xFFFFFFFF)), rng.randbytes(rng.randrange(12))


def gen_call(rng: random.Random, corpus: Corpus, xid: int | None = None) -> bytes:
    """A well-formed call of a real MOUNT or NFSv3 procedure (or a near miss)."""
    if xid is None:
        xid = rng.getrandbits(32)
    which = rng.random()
    if which < 0.2:
        program, version, procedure = MOUNT_PROGRAM, MOUNT_V3, rng.choice(MOUNT_PROCEDURES)
        args = gen_mount_args(rng, procedure)
    elif which < 0.95:
        program, version, procedure = NFS_PROGRAM, NFS_V3, rng.choice(NFS_PROCEDURES)
        args = gen_nfs_args(rng, procedure, corpus)
    else:  # unknown program, version or procedure
        program = rng.choice((MOUNT_PROGRAM, NFS_PROGRAM, 100000, rng.getrandbits(32)))
        version = rng.choice((1, 2, 3, 4, 0xFFFFFFFF))
        procedure = rng.choice((0, 6, 22, 99, 0xFFFFFFFF))
        args = rng.randbytes(rng.randrange(20))
    flavor, body = gen_credential(rng)
    return (
        u32(xid)
        + u32(0)  # CALL
        + u32(rng.choice((2, 2, 2, 2, 2, 2, 2, 2, 2, 3)))  # rpcvers
        + u32(program)
        + u32(version)
        + u32(procedure)
        + u32(flavor)
        + opaque(body)
        + u32(0)
        + opaque(b"")
        + args
    )


def mutate(rng: random.Random, record: bytes) -> bytes:
    """Damage a record: truncate, flip, overwrite with huge lengths, insert or append."""
    data = bytearray(record)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(6)
        if kind == 0 and data:
            del data[rng.randrange(len(data)) :]
        elif kind == 1 and data:
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
        elif kind == 2 and len(data) >= 4:
            position = rng.randrange(0, len(data) - 3) & ~3
            data[position : position + 4] = u32(rng.choice((0xFFFFFFFF, 0x7FFFFFFF, 0x10000, 65)))
        elif kind == 3:
            position = rng.randrange(len(data) + 1)
            data[position:position] = rng.randbytes(rng.choice((1, 3, 4, 8)))
        elif kind == 4:
            data += rng.randbytes(rng.randrange(1, 64))
        elif kind == 5 and data:
            position = rng.randrange(len(data))
            del data[position : position + rng.randrange(1, 9)]
    return bytes(data)


def gen_record(rng: random.Random, corpus: Corpus, xid: int | None = None) -> bytes:
    """A record for the dispatcher: a good call, a damaged call, or raw bytes."""
    roll = rng.random()
    if roll < 0.55:
        return gen_call(rng, corpus, xid)
    if roll < 0.95:
        return mutate(rng, gen_call(rng, corpus, xid))
    return rng.randbytes(rng.randrange(64))


def frame(rng: random.Random, record: bytes) -> bytes:
    """Record-mark *record*, split into one or several fragments (empty ones allowed)."""
    pieces: list[bytes] = []
    rest = record
    while rest and rng.random() < 0.3:
        cut = rng.randrange(len(rest) + 1)
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    framed = b"".join(u32(len(piece)) + piece for piece in pieces[:-1])
    return framed + u32(0x80000000 | len(pieces[-1])) + pieces[-1]


def gen_stream(rng: random.Random, corpus: Corpus, count: int) -> tuple[list[bytes], bytes]:
    """Records and the byte stream carrying them; sometimes with a broken mark or a cut end."""
    records = [gen_record(rng, corpus, xid=index) for index in range(count)]
    stream = b"".join(frame(rng, record) for record in records)
    roll = rng.random()
    if roll < 0.1:  # a record mark over the size limit: the server must close
        stream += u32(rng.choice((0xFFFFFFFF, 0x80000000 | FUZZ_MAX_RECORD + 1, 0x7FFFFFFF)))
    elif roll < 0.2 and stream:  # the stream stops mid-record: the deadline closes it
        stream = stream[: rng.randrange(len(stream))]
    elif roll < 0.3:  # random noise
        stream = rng.randbytes(rng.randrange(1, 200))
    return records, stream


def chunks(rng: random.Random, stream: bytes) -> list[bytes]:
    """Split *stream* into the pieces TCP might deliver it in."""
    pieces = []
    offset = 0
    while offset < len(stream):
        size = rng.choice((1, 2, 3, 4, 5, 7, 64, 1000, len(stream)))
        pieces.append(stream[offset : offset + size])
        offset += size
    return pieces


# -- checking replies --------------------------------------------------------------------


class BadReply(AssertionError):
    """A reply breaks RFC 5531 or RFC 1813."""


def answerable(record: bytes) -> bool:
    """Does RFC 5531 call for a reply?  Not without an XID, and not to a REPLY message."""
    return len(record) >= 4 and not (len(record) >= 8 and record[4:8] != bytes(4))


def _call_header(record: bytes) -> tuple[int, int, int] | None:
    """(program, version, procedure) of a record, or None if it is too short."""
    if len(record) < 24:
        return None
    return struct.unpack_from(">III", record, 12)  # type: ignore[return-value]


def check_reply(record: bytes, message: bytes) -> tuple[int, int | None]:
    """Parse *message* strictly as the reply to *record*; return (xid, accept_stat).

    accept_stat is None for a MSG_DENIED reply.  For SUCCESS of a MOUNT or
    NFS procedure with results, the status word must be a defined
    ``mountstat3``/``nfsstat3``.
    """
    offset = 0

    def uint() -> int:
        nonlocal offset
        if offset + 4 > len(message):
            raise BadReply(f"reply truncated at {offset}: {message[:80]!r}")
        (value,) = _U32.unpack_from(message, offset)
        offset += 4
        return value

    def end() -> None:
        if offset != len(message):
            raise BadReply(f"{len(message) - offset} bytes after the reply")

    if len(message) % 4:
        raise BadReply(f"reply of {len(message)} bytes is not XDR-aligned")
    xid = uint()
    if xid != _U32.unpack_from(record)[0]:
        raise BadReply(f"reply xid {xid} does not answer the call")
    if uint() != 1:
        raise BadReply("not a REPLY")
    reply_stat = uint()
    if reply_stat == 1:  # MSG_DENIED
        reject = uint()
        if reject == 0:
            uint(), uint()
        elif reject == 1:
            if not 1 <= uint() <= 7:
                raise BadReply("bad auth_stat")
        else:
            raise BadReply(f"bad reject_stat {reject}")
        end()
        return xid, None
    if reply_stat != 0:
        raise BadReply(f"bad reply_stat {reply_stat}")
    uint()
    verifier = uint()
    if verifier > 400:
        raise BadReply("verifier too long")
    offset += verifier + (-verifier % 4)
    stat = uint()
    if stat == 2:
        uint(), uint()
        end()
    elif stat in (1, 3, 4, 5):
        end()
    elif stat == 0:
        header = _call_header(record)
        assert header is not None
        program, _, procedure = header
        if program == NFS_PROGRAM and procedure != 0:
            status = uint()
            if status not in NFS_STATUSES:
                raise BadReply(f"nfsstat3 {status} is not defined by RFC 1813")
            if procedure != 1 and len(message) - offset < 4:
                # Only GETATTR3res has a void failure arm (RFC 1813 section 3.3.1).
                raise BadReply("NFS results carry no attributes word")
        elif program == MOUNT_PROGRAM and procedure in (1,):
            status = uint()
            if status not in MOUNT_STATUSES:
                raise BadReply(f"mountstat3 {status} is not defined by RFC 1813")
        elif procedure == 0:
            end()
    else:
        raise BadReply(f"bad accept_stat {stat}")
    return xid, stat


def logged_failures(events: list[LogEvent]) -> list[LogEvent]:
    """Events carrying a Failure: a traceback the server logged."""
    return [event for event in events if "log_failure" in event]


def dispatch_one(server: InProcessServer, record: bytes) -> int | None:
    """Dispatch *record* through the real dispatcher; check the reply; return accept_stat.

    Raises AssertionError (BadReply) when an invariant breaks: an exception out
    of the dispatcher, an unanswered call, a reply that is not ready (memory
    stores answer at once), a malformed reply, or a logged failure.
    """
    with capturedLogs() as events:
        result = server.dispatcher.dispatch(record, *PEER)
    if result is None:
        if answerable(record):
            raise BadReply(f"no reply to an answerable record {record[:64]!r}")
        return None
    if not answerable(record):
        raise BadReply("a reply to a record that is not a call")
    outcome: list[object] = []
    result.addBoth(outcome.append)
    if not outcome:
        raise BadReply("reply not ready although the stores are synchronous")
    parts = outcome[0]
    if not isinstance(parts, list) or not all(type(part) is bytes for part in parts):
        raise BadReply(f"dispatcher produced {parts!r} instead of a list of bytes")
    _, stat = check_reply(record, b"".join(parts))
    failures = logged_failures(list(events))
    if failures or stat == 5:
        raise BadReply(f"SYSTEM_ERR or a logged failure for {record!r}: {failures!r}")
    return stat


def good_call_answered(server: InProcessServer, corpus: Corpus) -> None:
    """The server still serves: GETATTR of the root answers SUCCESS with NFS3_OK."""
    record = (
        u32(0xC0FFEE) + u32(0) + u32(2) + u32(NFS_PROGRAM) + u32(NFS_V3) + u32(1)
        + u32(1) + opaque(auth_sys(0, 0)) + u32(0) + opaque(b"") + opaque(corpus.handles[0])
    )  # fmt: skip
    result = server.dispatcher.dispatch(record, *PEER)
    assert result is not None
    replies: list[object] = []
    result.addBoth(replies.append)
    (parts,) = replies
    message = b"".join(parts)  # type: ignore[arg-type]
    check_reply(record, message)
    if message[20:28] != bytes(8):
        raise BadReply(f"GETATTR of the root failed after fuzzing: {message[:40]!r}")


@attrs.define
class StreamOutcome:
    """What one stream did to one connection."""

    replies: int
    closed: bool


def connect(server: InProcessServer, clock: Clock) -> tuple[RpcServerProtocol, StringTransport]:
    """A protocol from a real factory (limits small, *clock* fake) over a StringTransport."""
    limits = Limits(max_record=FUZZ_MAX_RECORD, record_deadline=RECORD_DEADLINE)
    factory = RpcServerFactory(server.dispatcher, limits=limits, clock=clock)
    address = IPv4Address("TCP", *PEER)
    protocol = factory.buildProtocol(address)
    assert isinstance(protocol, RpcServerProtocol)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def run_stream(server: InProcessServer, records: list[bytes], pieces: list[bytes]) -> StreamOutcome:
    """Feed *pieces* to a fresh connection; check every reply and the close.

    Every answerable record must be answered, in order (memory stores reply at
    once), unless the stream broke framing, in which case the connection must
    be closed and the replies so far must still answer a prefix of the calls.
    A stream that stops mid-record must be closed by the record deadline.
    """
    clock = Clock()
    with capturedLogs() as events:
        protocol, transport = connect(server, clock)
        for piece in pieces:
            protocol.dataReceived(piece)
            if transport.disconnecting:
                break
        clock.advance(RECORD_DEADLINE + 1)
        output = transport.value()
        partial = protocol._receiver is not None and protocol._receiver.partial
        protocol.connectionLost()
    failures = logged_failures(list(events))
    if failures:
        raise BadReply(f"the protocol logged a failure: {failures!r}")
    expected = [record for record in records if answerable(record)]
    messages = []
    offset = 0
    while offset < len(output):
        (mark,) = _U32.unpack_from(output, offset)
        if not mark & 0x80000000:
            raise BadReply("reply is not a single final fragment")
        end = offset + 4 + (mark & 0x7FFFFFFF)
        if end > len(output):
            raise BadReply("reply record cut short")
        messages.append(output[offset + 4 : end])
        offset = end
    if len(messages) > len(expected):
        raise BadReply(f"{len(messages)} replies to {len(expected)} calls")
    for record, message in zip(expected, messages, strict=False):
        _, stat = check_reply(record, message)
        if stat == 5:
            raise BadReply(f"SYSTEM_ERR for {record!r}")
    if not transport.disconnecting and partial:
        raise BadReply("a partial record outlived the record deadline")
    return StreamOutcome(len(messages), transport.disconnecting)


def fuzz_case(rng: random.Random, server: InProcessServer, corpus: Corpus) -> None:
    """One fuzz case: usually one record to the dispatcher, sometimes a whole stream."""
    if rng.random() < 0.9:
        dispatch_one(server, gen_record(rng, corpus))
        return
    records, stream = gen_stream(rng, corpus, rng.randrange(1, 6))
    run_stream(server, records, chunks(rng, stream))


# -- the tests ---------------------------------------------------------------------------


#: The generators draw many values per case on purpose; that is not a problem here.
QUIET = [HealthCheck.too_slow, HealthCheck.large_base_example, HealthCheck.data_too_large]


class StructuredFuzzTests(SynchronousTestCase):
    """Valid-shaped, then damaged, calls to every procedure never break the server."""

    def setUp(self) -> None:
        self.server, self.corpus = populated_server()

    def tearDown(self) -> None:
        good_call_answered(self.server, self.corpus)
        self.server.close()

    @settings(
        max_examples=2000,
        deadline=None,
        database=None,
        suppress_health_check=QUIET,
    )
    @given(st.randoms(use_true_random=False))
    def test_valid_shaped_calls(self, rng: random.Random) -> None:
        """Every MOUNT and NFSv3 procedure with edge-case arguments gets a well-formed
        reply with a defined status, never an exception or SYSTEM_ERR."""
        dispatch_one(self.server, gen_call(rng, self.corpus))

    @settings(
        max_examples=2000,
        deadline=None,
        database=None,
        suppress_health_check=QUIET,
    )
    @given(st.randoms(use_true_random=False))
    def test_damaged_calls(self, rng: random.Random) -> None:
        """Truncated, bit-flipped and length-inflated calls are answered (GARBAGE_ARGS or
        a status) or ignored when RFC 5531 allows no reply; nothing crashes."""
        dispatch_one(self.server, mutate(rng, gen_call(rng, self.corpus)))

    def test_every_procedure_is_reached(self) -> None:
        """The generators do reach every procedure with arguments that decode: each one
        answers SUCCESS at least once in a fixed-seed sample (else the fuzz is blind)."""
        rng = random.Random(1813)
        reached: set[tuple[int, int]] = set()
        for _ in range(6000):
            record = gen_call(rng, self.corpus)
            stat = dispatch_one(self.server, record)
            header = _call_header(record)
            if stat == 0 and header is not None:
                reached.add((header[0], header[2]))
        wanted = {(MOUNT_PROGRAM, p) for p in MOUNT_PROCEDURES}
        wanted |= {(NFS_PROGRAM, p) for p in NFS_PROCEDURES}
        self.assertEqual(wanted - reached, set())

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=QUIET,
    )
    @given(st.randoms(use_true_random=False), st.integers(1, 8))
    def test_record_streams(self, rng: random.Random, count: int) -> None:
        """Random record-marking streams, delivered in random pieces through the real
        protocol, get one well-formed reply per call or a clean close; a stream cut
        mid-record is closed by the record deadline; nothing raises."""
        records, stream = gen_stream(rng, self.corpus, count)
        run_stream(self.server, records, chunks(rng, stream))

    def test_oversized_mark_closes(self) -> None:
        """A record mark beyond max_record closes the connection at once, with the calls
        received before it answered."""
        rng = random.Random(5)
        records = [gen_call(rng, self.corpus, xid=1)]
        outcome = run_stream(self.server, records, [frame(rng, records[0]), u32(0xFFFFFFFF)])
        self.assertEqual(outcome, StreamOutcome(1, True))

    def test_trickled_record_is_closed_by_deadline(self) -> None:
        """Half a record, never finished, is cut off when the record deadline passes."""
        rng = random.Random(6)
        record = gen_call(rng, self.corpus, xid=2)
        outcome = run_stream(self.server, [record], [frame(rng, record)[:-3]])
        self.assertEqual(outcome, StreamOutcome(0, True))


class FuzzRegressionTests(SynchronousTestCase):
    """Crashes the fuzzer found, each kept as the smallest call sequence that shows it."""

    def setUp(self) -> None:
        self.server, self.corpus = populated_server()
        self.client = self.server.client(uid=0, gid=0)
        self.root = self.corpus.handles[0]

    def tearDown(self) -> None:
        self.server.close()

    def setattr_size(self, name: bytes, size: int) -> tuple[bytes, int | None, int]:
        """SETATTR a fresh file's size to *size* by hand: (handle, accept_stat, nfsstat3)."""
        handle = self.client.write_file(self.root, name, b"")
        sattr = u32(0) * 3 + u32(1) + u64(size) + u32(0) + u32(0)
        record = (
            u32(77) + u32(0) + u32(2) + u32(NFS_PROGRAM) + u32(NFS_V3) + u32(2)
            + u32(1) + opaque(auth_sys(0, 0)) + u32(0) + opaque(b"")
            + opaque(handle) + sattr + u32(0)
        )  # fmt: skip
        with capturedLogs():
            result = self.server.dispatcher.dispatch(record, *PEER)
        assert result is not None
        message = b"".join(self.successResultOf(result))
        self.flushLoggedErrors()
        status = _U32.unpack_from(message, 24)[0] if len(message) >= 28 else -1
        return handle, check_reply(record, message)[1], status

    def test_setattr_size_beyond_maxfilesize_is_fbig(self) -> None:
        """FSINFO promises maxfilesize 2**63-1, so SETATTR to a larger size must fail
        (NFS3ERR_FBIG) rather than give the file a size no client can address."""
        handle, stat, status = self.setattr_size(b"big", 2**63)
        self.assertEqual((stat, status), (0, Status.FBIG))
        attributes = self.client.getattr(handle).expect_ok().attributes
        assert attributes is not None
        self.assertEqual(attributes.size, 0)

    def test_setattr_size_near_2_64_does_not_poison_the_file(self) -> None:
        """Found by fuzz/run.py: SETATTR size 2**64-1 rounded ``used`` up to 2**64, which
        fattr3 cannot carry; the call got SYSTEM_ERR and from then on every call returning
        the file's attributes (GETATTR, LOOKUP, READDIRPLUS of its directory) did too."""
        handle, stat, _ = self.setattr_size(b"huge", 2**64 - 1)
        self.assertNotEqual(stat, 5, "SETATTR answered SYSTEM_ERR")
        with capturedLogs() as events:
            reply = self.client.getattr(handle)
        self.assertEqual(logged_failures(list(events)), [])
        reply.expect_ok()
        self.flushLoggedErrors()

    def test_create_with_size_near_2_64_does_not_poison_the_directory(self) -> None:
        """Found by fuzz/run.py (seed 232204836985890): CREATE UNCHECKED whose sattr3 sets
        size 2**64-1 answered SYSTEM_ERR, and the file it left made every READDIRPLUS of
        its directory fail with SYSTEM_ERR too."""
        sattr = u32(0) * 3 + u32(1) + u64(2**64 - 1) + u32(0) + u32(0)
        record = (
            u32(78) + u32(0) + u32(2) + u32(NFS_PROGRAM) + u32(NFS_V3) + u32(8)
            + u32(1) + opaque(auth_sys(0, 0)) + u32(0) + opaque(b"")
            + opaque(self.root) + opaque(b"huge") + u32(0) + sattr
        )  # fmt: skip
        with capturedLogs() as events:
            result = self.server.dispatcher.dispatch(record, *PEER)
            assert result is not None
            _, stat = check_reply(record, b"".join(self.successResultOf(result)))
            listing = self.client.readdirplus(self.root)
        self.flushLoggedErrors()
        self.assertNotEqual(stat, 5, "CREATE answered SYSTEM_ERR")
        self.assertEqual(logged_failures(list(events)), [])
        listing.expect_ok()
