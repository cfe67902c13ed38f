"""A small NFSv4.1 client for the unit tests: encodes COMPOUNDs, decodes their results.

It speaks real RPC records to an in-process dispatcher (``dittofs.testing``)
that serves NFSv3, MOUNT and NFSv4.1 over the same exports.  The encoders
follow RFC 5662 field by field; the Linux kernel client in the guest suite
is the judge that this is what clients really send.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import attrs

from dittofs.nfs4.const import Attr, Op
from dittofs.nfs4.service import NFSv41Program
from dittofs.rpc.dispatch import RpcDispatcher
from dittofs.rpc.message import CALL, MSG_ACCEPTED, REPLY, RPC_VERSION, AcceptStat, AuthFlavor
from dittofs.rpc.xdr import XdrReader, XdrWriter
from dittofs.testing import InProcessServer
from dittofs.testing._replies import RpcCallFailed, RpcReply
from dittofs.vocabulary import Status

NFS_PROGRAM = 100003
ALL_ONES = 2**64 - 1
READ_LT, WRITE_LT = 1, 2
ANONYMOUS = (0, bytes(12))
CURRENT = (1, bytes(12))

Arg = tuple[int, bytes]
StateId = tuple[int, bytes]


def with_v41(server: InProcessServer, **options: Any) -> tuple[InProcessServer, NFSv41Program]:
    """*server* with NFSv4.1 served beside NFSv3 and MOUNT, over the same exports."""
    nfs4 = NFSv41Program(server.exports, server.nfs.write_verifier, **options)
    dispatcher = RpcDispatcher([server.mount, server.nfs, nfs4])
    return InProcessServer(server.exports, server.nfs, server.mount, dispatcher), nfs4


def _encode(build: Callable[[XdrWriter], object]) -> bytes:
    writer = XdrWriter()
    build(writer)
    return writer.getvalue()


def bitmap(bits: Iterable[int]) -> bytes:
    """Encode a ``bitmap4``."""
    words: list[int] = []
    for bit in bits:
        while len(words) <= bit // 32:
            words.append(0)
        words[bit // 32] |= 1 << (bit % 32)
    return struct.pack(f">I{len(words)}I", len(words), *words)


def _stateid(writer: XdrWriter, stateid: StateId) -> None:
    writer.uint(stateid[0])
    writer.fixed_opaque(stateid[1])


def fattr(values: dict[int, bytes]) -> bytes:
    """An ``fattr4`` of already-encoded values, by attribute number."""
    return bitmap(values) + _encode(lambda w: w.opaque(b"".join(values[k] for k in sorted(values))))


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def text(value: bytes) -> bytes:
    return _encode(lambda w: w.string(value))


# -- operations ---------------------------------------------------------------------------------


def putrootfh() -> Arg:
    return Op.PUTROOTFH, b""


def putfh(fh: bytes) -> Arg:
    return Op.PUTFH, _encode(lambda w: w.opaque(fh))


def getfh() -> Arg:
    return Op.GETFH, b""


def savefh() -> Arg:
    return Op.SAVEFH, b""


def restorefh() -> Arg:
    return Op.RESTOREFH, b""


def lookup(name: bytes) -> Arg:
    return Op.LOOKUP, text(name)


def lookupp() -> Arg:
    return Op.LOOKUPP, b""


def getattr_(*bits: int) -> Arg:
    return Op.GETATTR, bitmap(bits)


def access(bits: int) -> Arg:
    return Op.ACCESS, u32(bits)


def readlink() -> Arg:
    return Op.READLINK, b""


def remove(name: bytes) -> Arg:
    return Op.REMOVE, text(name)


def rename(old: bytes, new: bytes) -> Arg:
    return Op.RENAME, text(old) + text(new)


def link(name: bytes) -> Arg:
    return Op.LINK, text(name)


def verify(values: dict[int, bytes], negate: bool = False) -> Arg:
    return (Op.NVERIFY if negate else Op.VERIFY), fattr(values)


def setattr_(values: dict[int, bytes], stateid: StateId = ANONYMOUS) -> Arg:
    return Op.SETATTR, _encode(lambda w: _stateid(w, stateid)) + fattr(values)


def create(
    kind: int, name: bytes, attrs_: dict[int, bytes] | None = None, link: bytes = b""
) -> Arg:
    def build(w: XdrWriter) -> None:
        w.uint(kind)
        if kind == 5:
            w.string(link)
        elif kind in (3, 4):
            w.uint(1)
            w.uint(2)
        w.string(name)

    return Op.CREATE, _encode(build) + fattr(attrs_ or {})


def readdir(
    cookie: int = 0,
    verifier: bytes = bytes(8),
    maxcount: int = 65536,
    bits: Iterable[int] = (Attr.TYPE, Attr.FILEID),
) -> Arg:
    return Op.READDIR, u64(cookie) + verifier + u32(maxcount // 2) + u32(maxcount) + bitmap(bits)


def open_(
    owner: tuple[int, bytes],
    name: bytes | None,
    access: int = 3,
    deny: int = 0,
    create: int | None = None,
    attrs_: dict[int, bytes] | None = None,
    verifier: bytes = b"",
    claim: int | None = None,
) -> Arg:
    """OPEN by name (CLAIM_NULL), or of the current file (CLAIM_FH) when *name* is None."""

    def build(w: XdrWriter) -> None:
        w.uint(0)
        w.uint(access)
        w.uint(deny)
        w.uhyper(owner[0])
        w.opaque(owner[1])
        if create is None:
            w.uint(0)
        else:
            w.uint(1)
            w.uint(create)
            if create in (0, 1):
                w.raw(fattr(attrs_ or {}))
            elif create == 2:
                w.fixed_opaque(verifier)
            else:
                w.fixed_opaque(verifier)
                w.raw(fattr(attrs_ or {}))
        how = claim if claim is not None else (0 if name is not None else 4)
        w.uint(how)
        if how == 0:
            w.string(name or b"")
        elif how == 1:
            w.uint(0)

    return Op.OPEN, _encode(build)


def close(stateid: StateId) -> Arg:
    return Op.CLOSE, _encode(lambda w: (w.uint(0), _stateid(w, stateid)))


def open_downgrade(stateid: StateId, access: int, deny: int = 0) -> Arg:
    return Op.OPEN_DOWNGRADE, _encode(
        lambda w: (_stateid(w, stateid), w.uint(0), w.uint(access), w.uint(deny))
    )


def read(stateid: StateId, offset: int, count: int) -> Arg:
    return Op.READ, _encode(lambda w: (_stateid(w, stateid), w.uhyper(offset), w.uint(count)))


def write(stateid: StateId, offset: int, data: bytes, stable: int = 2) -> Arg:
    return Op.WRITE, _encode(
        lambda w: (_stateid(w, stateid), w.uhyper(offset), w.uint(stable), w.opaque(data))
    )


def commit() -> Arg:
    return Op.COMMIT, u64(0) + u32(0)


def lock_new(
    kind: int,
    offset: int,
    length: int,
    open_stateid: StateId,
    owner: tuple[int, bytes],
    reclaim: bool = False,
) -> Arg:
    def build(w: XdrWriter) -> None:
        w.uint(kind)
        w.boolean(reclaim)
        w.uhyper(offset)
        w.uhyper(length)
        w.boolean(True)
        w.uint(0)
        _stateid(w, open_stateid)
        w.uint(0)
        w.uhyper(owner[0])
        w.opaque(owner[1])

    return Op.LOCK, _encode(build)


def lock_more(kind: int, offset: int, length: int, lock_stateid: StateId) -> Arg:
    def build(w: XdrWriter) -> None:
        w.uint(kind)
        w.boolean(False)
        w.uhyper(offset)
        w.uhyper(length)
        w.boolean(False)
        _stateid(w, lock_stateid)
        w.uint(0)

    return Op.LOCK, _encode(build)


def lockt(kind: int, offset: int, length: int, owner: tuple[int, bytes]) -> Arg:
    return Op.LOCKT, _encode(
        lambda w: (
            (
                w.uint(kind),
                w.uhyper(offset),
                w.uhyper(length),
                w.uhyper(owner[0]),
                w.opaque(owner[1]),
            )
        )
    )


def locku(kind: int, lock_stateid: StateId, offset: int, length: int) -> Arg:
    return Op.LOCKU, _encode(
        lambda w: (
            (w.uint(kind), w.uint(0), _stateid(w, lock_stateid), w.uhyper(offset), w.uhyper(length))
        )
    )


def test_stateid(*stateids: StateId) -> Arg:
    return Op.TEST_STATEID, _encode(lambda w: w.array(list(stateids), _stateid))


def free_stateid(stateid: StateId) -> Arg:
    return Op.FREE_STATEID, _encode(lambda w: _stateid(w, stateid))


def secinfo_no_name(style: int = 0) -> Arg:
    return Op.SECINFO_NO_NAME, u32(style)


def reclaim_complete(one_fs: bool = False) -> Arg:
    return Op.RECLAIM_COMPLETE, u32(int(one_fs))


def exchange_id(owner: bytes, verifier: bytes = b"verifier", flags: int = 0) -> Arg:
    return Op.EXCHANGE_ID, _encode(
        lambda w: ((w.fixed_opaque(verifier), w.opaque(owner), w.uint(flags), w.uint(0), w.uint(0)))
    )


def create_session(clientid: int, sequence: int, slots: int = 8, flags: int = 2) -> Arg:
    def channel(w: XdrWriter, requests: int) -> None:
        for value in (0, 1049620, 1049480, 65536, 16, requests):
            w.uint(value)
        w.uint(0)

    def build(w: XdrWriter) -> None:
        w.uhyper(clientid)
        w.uint(sequence)
        w.uint(flags)
        channel(w, slots)
        channel(w, 1)
        w.uint(0x40000000)
        w.uint(1)
        w.uint(0)  # AUTH_NONE callback security

    return Op.CREATE_SESSION, _encode(build)


def sequence(sessionid: bytes, seqid: int, slot: int = 0, cache_this: bool = True) -> Arg:
    return Op.SEQUENCE, sessionid + u32(seqid) + u32(slot) + u32(slot) + u32(int(cache_this))


def destroy_session(sessionid: bytes) -> Arg:
    return Op.DESTROY_SESSION, sessionid


def destroy_clientid(clientid: int) -> Arg:
    return Op.DESTROY_CLIENTID, u64(clientid)


# -- results ---------------------------------------------------------------------------


def _read_stateid(r: XdrReader) -> StateId:
    return r.uint(), bytes(r.fixed_opaque(12))


def _read_bitmap(r: XdrReader) -> frozenset[int]:
    words = r.array(XdrReader.uint, 8)
    return frozenset(i * 32 + b for i, word in enumerate(words) for b in range(32) if word >> b & 1)


def _time(r: XdrReader) -> int:
    return r.hyper() * 1_000_000_000 + r.uint()


#: How each attribute's value decodes (those the tests look at, and those before them).
ATTR_DECODERS: dict[int, Callable[[XdrReader], Any]] = {
    Attr.SUPPORTED_ATTRS: _read_bitmap,
    Attr.TYPE: XdrReader.uint,
    Attr.FH_EXPIRE_TYPE: XdrReader.uint,
    Attr.CHANGE: XdrReader.uhyper,
    Attr.SIZE: XdrReader.uhyper,
    Attr.LINK_SUPPORT: XdrReader.boolean,
    Attr.SYMLINK_SUPPORT: XdrReader.boolean,
    Attr.NAMED_ATTR: XdrReader.boolean,
    Attr.FSID: lambda r: (r.uhyper(), r.uhyper()),
    Attr.UNIQUE_HANDLES: XdrReader.boolean,
    Attr.LEASE_TIME: XdrReader.uint,
    Attr.RDATTR_ERROR: XdrReader.uint,
    Attr.ACLSUPPORT: XdrReader.uint,
    Attr.CANSETTIME: XdrReader.boolean,
    Attr.CASE_INSENSITIVE: XdrReader.boolean,
    Attr.CASE_PRESERVING: XdrReader.boolean,
    Attr.CHOWN_RESTRICTED: XdrReader.boolean,
    Attr.FILEHANDLE: lambda r: bytes(r.opaque(128)),
    Attr.FILEID: XdrReader.uhyper,
    Attr.FILES_AVAIL: XdrReader.uhyper,
    Attr.FILES_FREE: XdrReader.uhyper,
    Attr.FILES_TOTAL: XdrReader.uhyper,
    Attr.HOMOGENEOUS: XdrReader.boolean,
    Attr.MAXFILESIZE: XdrReader.uhyper,
    Attr.MAXLINK: XdrReader.uint,
    Attr.MAXNAME: XdrReader.uint,
    Attr.MAXREAD: XdrReader.uhyper,
    Attr.MAXWRITE: XdrReader.uhyper,
    Attr.MODE: XdrReader.uint,
    Attr.NO_TRUNC: XdrReader.boolean,
    Attr.NUMLINKS: XdrReader.uint,
    Attr.OWNER: lambda r: r.string(1024),
    Attr.OWNER_GROUP: lambda r: r.string(1024),
    Attr.RAWDEV: lambda r: (r.uint(), r.uint()),
    Attr.SPACE_AVAIL: XdrReader.uhyper,
    Attr.SPACE_FREE: XdrReader.uhyper,
    Attr.SPACE_TOTAL: XdrReader.uhyper,
    Attr.SPACE_USED: XdrReader.uhyper,
    Attr.TIME_ACCESS: _time,
    Attr.TIME_DELTA: _time,
    Attr.TIME_METADATA: _time,
    Attr.TIME_MODIFY: _time,
    Attr.MOUNTED_ON_FILEID: XdrReader.uhyper,
    Attr.SUPPATTR_EXCLCREAT: _read_bitmap,
}


def read_fattr(r: XdrReader) -> dict[int, Any]:
    """Decode an ``fattr4`` into {attribute number: value}."""
    mask = _read_bitmap(r)
    values = XdrReader(r.opaque(1 << 20))
    decoded = {bit: ATTR_DECODERS[bit](values) for bit in sorted(mask)}
    assert not values.remaining, "attribute values longer than their mask"
    return decoded


def _cinfo(r: XdrReader) -> tuple[bool, int, int]:
    return r.boolean(), r.uhyper(), r.uhyper()


def _nothing(r: XdrReader) -> None:
    return None


def _entries(r: XdrReader) -> dict[str, Any]:
    verifier = bytes(r.fixed_opaque(8))
    entries = []
    while r.boolean():
        entries.append((r.uhyper(), r.string(1024), read_fattr(r)))
    return {"verifier": verifier, "entries": entries, "eof": r.boolean()}


def _denied(r: XdrReader) -> dict[str, Any]:
    return {
        "offset": r.uhyper(),
        "length": r.uhyper(),
        "type": r.uint(),
        "owner": (r.uhyper(), bytes(r.opaque(1024))),
    }


def _channel(r: XdrReader) -> list[int]:
    values = [r.uint() for _ in range(6)]
    r.array(XdrReader.uint, 1)
    return values


RESULTS: dict[int, Callable[[XdrReader], Any]] = {
    Op.SEQUENCE: lambda r: {
        "sessionid": bytes(r.fixed_opaque(16)),
        "seqid": r.uint(),
        "slot": r.uint(),
        "highest": r.uint(),
        "target": r.uint(),
        "flags": r.uint(),
    },
    Op.EXCHANGE_ID: lambda r: {
        "clientid": r.uhyper(),
        "sequence": r.uint(),
        "flags": r.uint(),
        "protect": r.uint(),
        "minor": r.uhyper(),
        "major": bytes(r.opaque(1024)),
        "scope": bytes(r.opaque(1024)),
        "impl": r.array(lambda x: None, 1),
    },
    Op.CREATE_SESSION: lambda r: {
        "sessionid": bytes(r.fixed_opaque(16)),
        "sequence": r.uint(),
        "flags": r.uint(),
        "fore": _channel(r),
        "back": _channel(r),
    },
    Op.GETFH: lambda r: bytes(r.opaque(128)),
    Op.GETATTR: read_fattr,
    Op.ACCESS: lambda r: (r.uint(), r.uint()),
    Op.OPEN: lambda r: {
        "stateid": _read_stateid(r),
        "cinfo": _cinfo(r),
        "rflags": r.uint(),
        "attrset": _read_bitmap(r),
        "delegation": r.uint(),
    },
    Op.CLOSE: _read_stateid,
    Op.OPEN_DOWNGRADE: _read_stateid,
    Op.LOCK: _read_stateid,
    Op.LOCKU: _read_stateid,
    Op.READ: lambda r: (r.boolean(), bytes(r.opaque(1 << 21))),
    Op.WRITE: lambda r: (r.uint(), r.uint(), bytes(r.fixed_opaque(8))),
    Op.COMMIT: lambda r: bytes(r.fixed_opaque(8)),
    Op.CREATE: lambda r: (_cinfo(r), _read_bitmap(r)),
    Op.REMOVE: _cinfo,
    Op.LINK: _cinfo,
    Op.RENAME: lambda r: (_cinfo(r), _cinfo(r)),
    Op.READDIR: _entries,
    Op.READLINK: lambda r: r.string(4096),
    Op.SECINFO: lambda r: r.array(XdrReader.uint, 8),
    Op.SECINFO_NO_NAME: lambda r: r.array(XdrReader.uint, 8),
    Op.TEST_STATEID: lambda r: r.array(XdrReader.uint, 1024),
    Op.BIND_CONN_TO_SESSION: lambda r: (bytes(r.fixed_opaque(16)), r.uint(), r.boolean()),
}


@attrs.frozen
class Result:
    op: int
    status: int
    value: Any = None


@attrs.frozen
class Reply:
    status: int
    tag: bytes
    results: list[Result]

    def __getitem__(self, index: int) -> Result:
        return self.results[index]

    @property
    def last(self) -> Result:
        return self.results[-1]


def decode_reply(body: bytes) -> Reply:
    """Decode COMPOUND4res (every byte must be accounted for)."""
    r = XdrReader(body)
    status, tag, count = r.uint(), r.string(1024), r.uint()
    results = []
    for _ in range(count):
        op, op_status = r.uint(), r.uint()
        value = None
        if op_status == Status.OK:
            value = RESULTS.get(op, _nothing)(r)
        elif op in (Op.LOCK, Op.LOCKT) and op_status == 10010:
            value = _denied(r)
        if op == Op.SETATTR:
            value = _read_bitmap(r)
        results.append(Result(op, op_status, value))
    assert not r.remaining, f"{r.remaining} bytes left after the results"
    return Reply(status, tag, results)


class Caller(Protocol):
    """What sends one RPC call: the in-process harness's client, or :class:`SocketRpc`."""

    def call(self, program: int, version: int, procedure: int, arguments: bytes) -> RpcReply: ...


class SocketRpc:
    """RPC calls over a real TCP connection, one at a time, as AUTH_SYS root."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self._socket = socket.create_connection((host, port), timeout=timeout)
        self._xids = itertools.count(1)

    def close(self) -> None:
        self._socket.close()

    def _receive(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self._socket.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data

    def call(self, program: int, version: int, procedure: int, arguments: bytes) -> RpcReply:
        xid = next(self._xids)
        writer = XdrWriter()
        for value in (xid, CALL, RPC_VERSION, program, version, procedure):
            writer.uint(value)
        credentials = XdrWriter()
        credentials.uint(0)  # stamp
        credentials.string(b"dittofs-host-client")
        for value in (0, 0, 0):  # uid, gid, no supplementary groups
            credentials.uint(value)
        writer.uint(AuthFlavor.AUTH_SYS)
        writer.opaque(credentials.getvalue())
        writer.uint(AuthFlavor.AUTH_NONE)
        writer.opaque(b"")
        writer.raw(arguments)
        record = writer.getvalue()
        self._socket.sendall(struct.pack(">I", 0x80000000 | len(record)) + record)
        reply = b""
        while True:
            (mark,) = struct.unpack(">I", self._receive(4))
            reply += self._receive(mark & 0x7FFFFFFF)
            if mark & 0x80000000:
                break
        reader = XdrReader(reply)
        if reader.uint() != xid or reader.uint() != REPLY:
            raise AssertionError(f"the reply does not answer xid {xid}")
        if reader.uint() != MSG_ACCEPTED:
            return RpcReply(xid, False, reader.uint(), bytes(reader.fixed_opaque(reader.remaining)))
        reader.uint()
        reader.opaque(400)
        stat = reader.uint()
        return RpcReply(xid, True, stat, bytes(reader.fixed_opaque(reader.remaining)))


class V41Client:
    """One NFSv4.1 client: its own client owner, session and slot sequence."""

    def __init__(
        self,
        server: InProcessServer | None,
        owner: bytes = b"unit-client",
        uid: int = 0,
        gid: int = 0,
        port: int = 700,
        rpc: Caller | None = None,
    ) -> None:
        self.rpc: Caller
        if rpc is not None:
            self.rpc = rpc
        else:
            assert server is not None
            self.rpc = server.client(uid, gid, port=port)
        self.owner = owner
        self.clientid = 0
        self.sessionid = b""
        self._seqids = itertools.count(1)
        self._owners = itertools.count(1)

    def compound(self, ops: Iterable[Arg], minor: int = 1, tag: bytes = b"t") -> Reply:
        """Send a COMPOUND of *ops* as they are (no SEQUENCE is added)."""
        ops = list(ops)
        writer = XdrWriter()
        writer.string(tag)
        writer.uint(minor)
        writer.uint(len(ops))
        for op, args in ops:
            writer.uint(op)
            writer.raw(args)
        reply = self.rpc.call(NFS_PROGRAM, 4, 1, writer.getvalue())
        if not reply.accepted or reply.stat != AcceptStat.SUCCESS:
            raise RpcCallFailed(reply)
        return decode_reply(reply.body)

    def connect(self) -> V41Client:
        """EXCHANGE_ID and CREATE_SESSION, as a client mounting does."""
        exchanged = self.compound([exchange_id(self.owner)])
        assert exchanged.status == Status.OK, exchanged
        self.clientid = exchanged[0].value["clientid"]
        created = self.compound([create_session(self.clientid, exchanged[0].value["sequence"])])
        assert created.status == Status.OK, created
        self.sessionid = created[0].value["sessionid"]
        return self

    def seq(self, slot: int = 0) -> Arg:
        """The next SEQUENCE of slot 0."""
        return sequence(self.sessionid, next(self._seqids), slot)

    def call(self, *ops: Arg) -> Reply:
        """A COMPOUND of SEQUENCE and *ops*; the SEQUENCE result is dropped from the reply."""
        reply = self.compound([self.seq(), *ops])
        assert reply[0].status == Status.OK, reply
        return Reply(reply.status, reply.tag, reply.results[1:])

    def ok(self, *ops: Arg) -> Reply:
        """As :meth:`call`, asserting that every operation succeeded."""
        reply = self.call(*ops)
        assert reply.status == Status.OK, reply
        return reply

    def new_owner(self) -> tuple[int, bytes]:
        """An open or lock owner of this client, unused so far."""
        return self.clientid, b"owner-%d" % next(self._owners)

    def root_of_export(self, path: bytes = b"export") -> list[Arg]:
        """PUTROOTFH and the LOOKUPs down to an export."""
        return [putrootfh(), *(lookup(name) for name in path.split(b"/") if name)]
