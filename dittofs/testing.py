"""Helpers for testing code against an in-process DittoFS, without a reactor or sockets.

:func:`build_server` puts an :class:`~dittofs.exports.ExportTable`, the NFSv3
and MOUNT programs and an :class:`~dittofs.rpc.dispatch.RpcDispatcher` over
the stores you give it (in-memory ones by default).  :class:`NFSClient` then
encodes real RPC call records, hands them to the dispatcher and decodes the
replies into plain values, so a test sees exactly what a client on the wire
would see.  Stores whose Deferreds fire synchronously (the memory stores, or
a threaded store given :class:`SynchronousThreadPool` and
:class:`SynchronousReactorThreads`) need no reactor at all, which suits
``twisted.trial.unittest.SynchronousTestCase``::

    from dittofs.testing import build_server
    from dittofs.nfs3.const import Status

    server = build_server()
    client = server.client(uid=1000, gid=1000)
    root = client.mnt(b"/export")
    created = client.create(root, b"hello.txt").expect_ok()
    client.write(created.handle, 0, b"hello").expect_ok()
    assert client.read(created.handle, 0, 100).data == b"hello"
    assert client.lookup(root, b"missing").status == Status.NOENT

The same helpers serve the project's own tests; see ``docs/testing.md``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from zope.interface import implementer

from dittofs.exports import Export, ExportTable
from dittofs.interfaces import IContentStore, IMetadataStore
from dittofs.model import SetAttributes
from dittofs.mount import MOUNT_PROGRAM, MOUNT_V3, MountProc, MountProgram, MountStat
from dittofs.nfs3.const import (
    NFS3_COOKIEVERFSIZE,
    NFS3_CREATEVERFSIZE,
    NFS3_FHSIZE,
    NFS3_WRITEVERFSIZE,
    NFS_PROGRAM,
    NFS_V3,
    PATH_MAX,
    Proc,
    StableHow,
    TimeHow,
)
from dittofs.nfs3.service import NFSv3Program
from dittofs.policy import AccessPolicy
from dittofs.rpc.dispatch import RpcDispatcher
from dittofs.rpc.message import (
    CALL,
    MSG_ACCEPTED,
    REPLY,
    RPC_VERSION,
    AcceptStat,
    AuthFlavor,
)
from dittofs.rpc.xdr import XdrError, XdrReader, XdrWriter
from dittofs.stores.memory_content import MemoryContentStore
from dittofs.stores.memory_metadata import MemoryMetadataStore
from dittofs.vocabulary import CreateMode, FileType, Status

__all__ = [
    "SERVER_TIME",
    "AccessReply",
    "CommitReply",
    "CreateReply",
    "DirEntryReply",
    "Fattr",
    "FsinfoReply",
    "FsstatReply",
    "GetattrReply",
    "InProcessServer",
    "LinkReply",
    "LookupReply",
    "NFSClient",
    "NotSynchronousError",
    "PathconfReply",
    "PreOpAttr",
    "ReadReply",
    "ReaddirReply",
    "ReadlinkReply",
    "RenameReply",
    "Reply",
    "RpcCallFailed",
    "RpcReply",
    "SynchronousReactorThreads",
    "SynchronousThreadPool",
    "TickingClock",
    "Wcc",
    "WccReply",
    "WriteReply",
    "build_server",
    "decode_fattr3",
    "decode_post_op_attr",
    "decode_post_op_fh3",
    "decode_wcc_data",
    "encode_sattr3",
    "serve_exports",
    "synchronous_result",
]

#: Pass as ``atime`` or ``mtime`` in a :class:`~dittofs.model.SetAttributes` given to
#: :class:`NFSClient` to send ``SET_TO_SERVER_TIME`` instead of a client time.
SERVER_TIME = -1

_NS = 1_000_000_000


# -- running Deferreds and thread pools without a reactor ---------------------------


class NotSynchronousError(AssertionError):
    """A Deferred that the harness needed at once had not fired.

    The harness drives the server without a reactor, so every store it uses
    must fire its Deferreds before returning them (see :class:`SynchronousThreadPool`).
    """


def synchronous_result(deferred: Deferred[Any]) -> Any:
    """Return the result of an already-fired Deferred, or raise its exception.

    Raises :class:`NotSynchronousError` if it has not fired yet.
    """
    outcome: list[object] = []
    deferred.addBoth(outcome.append)
    if not outcome:
        raise NotSynchronousError(f"{deferred!r} has not fired; is a store waiting on a reactor?")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


class TickingClock:
    """A clock for stores under test: every reading is *step* ns later than the last.

    ``MemoryMetadataStore(clock=TickingClock())`` makes "the ctime changed"
    a strict, deterministic comparison rather than a race with the real clock.
    """

    def __init__(self, start: int | None = None, step: int = 1_000) -> None:
        self.now = time.time_ns() if start is None else start
        self.step = step

    def __call__(self) -> int:
        """Return the next time, in nanoseconds since the epoch."""
        self.now += self.step
        return self.now


class SynchronousThreadPool:
    """A stand-in for :class:`twisted.python.threadpool.ThreadPool` that runs work inline.

    Together with :class:`SynchronousReactorThreads`, ``deferToThreadPool``
    returns an already-fired Deferred, so a store that does blocking work in
    a pool can be tested with ``SynchronousTestCase`` (the idea of tahoe-lafs'
    synchronous ``cputhreadpool`` mode).  The constructor accepts (and
    ignores) ``ThreadPool``'s arguments so it can replace the class.
    """

    def __init__(self, minthreads: int = 0, maxthreads: int = 1, name: str | None = None) -> None:
        self.name = name
        self.started = False
        self.calls = 0

    def start(self) -> None:
        """Nothing to start; recorded for tests that check the store's lifecycle."""
        self.started = True

    def stop(self) -> None:
        """Nothing to stop."""
        self.started = False

    def callInThread(self, func: Callable[..., object], *args: Any, **kw: Any) -> None:
        """Run *func* now, in the calling thread."""
        self.calls += 1
        func(*args, **kw)

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object],
        func: Callable[..., object],
        *args: Any,
        **kw: Any,
    ) -> None:
        """Run *func* now and report its outcome the way ``ThreadPool`` does."""
        self.calls += 1
        try:
            result = func(*args, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


@implementer(IReactorFromThreads)
class SynchronousReactorThreads:
    """An ``IReactorFromThreads`` whose ``callFromThread`` calls at once."""

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call *callable* now: with :class:`SynchronousThreadPool` there is no other thread."""
        callable(*args, **kwargs)


# -- decoded results ------------------------------------------------------------------


@attrs.frozen
class Fattr:
    """A decoded ``fattr3``; times are nanoseconds since the epoch."""

    type: FileType
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    fsid: int
    fileid: int
    atime: int
    mtime: int
    ctime: int


@attrs.frozen
class PreOpAttr:
    """A decoded ``wcc_attr``: what the client had cached before a change."""

    size: int
    mtime: int
    ctime: int


@attrs.frozen
class Wcc:
    """A decoded ``wcc_data``: either half may be absent."""

    before: PreOpAttr | None
    after: Fattr | None


@attrs.frozen(kw_only=True)
class Reply:
    """The common part of every NFS result: its ``nfsstat3``."""

    status: Status

    def expect_ok(self) -> Self:
        """Return this reply if it succeeded; raise ``AssertionError`` naming the status if not."""
        if self.status != Status.OK:
            raise AssertionError(f"{type(self).__name__} failed with NFS3ERR_{self.status.name}")
        return self


@attrs.frozen(kw_only=True)
class GetattrReply(Reply):
    """GETATTR3res."""

    attributes: Fattr | None = None


@attrs.frozen(kw_only=True)
class WccReply(Reply):
    """A result that is only ``wcc_data`` (SETATTR, REMOVE, RMDIR)."""

    wcc: Wcc


@attrs.frozen(kw_only=True)
class LookupReply(Reply):
    """LOOKUP3res."""

    handle: bytes | None = None
    attributes: Fattr | None = None
    dir_attributes: Fattr | None = None


@attrs.frozen(kw_only=True)
class AccessReply(Reply):
    """ACCESS3res."""

    attributes: Fattr | None
    access: int | None = None


@attrs.frozen(kw_only=True)
class ReadlinkReply(Reply):
    """READLINK3res."""

    attributes: Fattr | None
    target: bytes | None = None


@attrs.frozen(kw_only=True)
class ReadReply(Reply):
    """READ3res."""

    attributes: Fattr | None
    count: int | None = None
    eof: bool | None = None
    data: bytes | None = None


@attrs.frozen(kw_only=True)
class WriteReply(Reply):
    """WRITE3res."""

    wcc: Wcc
    count: int | None = None
    committed: StableHow | None = None
    verifier: bytes | None = None


@attrs.frozen(kw_only=True)
class CreateReply(Reply):
    """CREATE3res, MKDIR3res, SYMLINK3res and MKNOD3res, which share one shape."""

    dir_wcc: Wcc
    handle: bytes | None = None
    attributes: Fattr | None = None


@attrs.frozen(kw_only=True)
class RenameReply(Reply):
    """RENAME3res."""

    from_wcc: Wcc
    to_wcc: Wcc


@attrs.frozen(kw_only=True)
class LinkReply(Reply):
    """LINK3res."""

    attributes: Fattr | None
    dir_wcc: Wcc


@attrs.frozen
class DirEntryReply:
    """One READDIR or READDIRPLUS entry; ``attributes``/``handle`` only from READDIRPLUS."""

    fileid: int
    name: bytes
    cookie: int
    attributes: Fattr | None = None
    handle: bytes | None = None


@attrs.frozen(kw_only=True)
class ReaddirReply(Reply):
    """READDIR3res and READDIRPLUS3res."""

    dir_attributes: Fattr | None
    verifier: bytes | None = None
    entries: list[DirEntryReply] = attrs.field(factory=list)
    eof: bool | None = None


@attrs.frozen(kw_only=True)
class FsstatReply(Reply):
    """FSSTAT3res."""

    attributes: Fattr | None
    tbytes: int | None = None
    fbytes: int | None = None
    abytes: int | None = None
    tfiles: int | None = None
    ffiles: int | None = None
    afiles: int | None = None
    invarsec: int | None = None


@attrs.frozen(kw_only=True)
class FsinfoReply(Reply):
    """FSINFO3res; ``time_delta`` in nanoseconds."""

    attributes: Fattr | None
    rtmax: int | None = None
    rtpref: int | None = None
    rtmult: int | None = None
    wtmax: int | None = None
    wtpref: int | None = None
    wtmult: int | None = None
    dtpref: int | None = None
    maxfilesize: int | None = None
    time_delta: int | None = None
    properties: int | None = None


@attrs.frozen(kw_only=True)
class PathconfReply(Reply):
    """PATHCONF3res."""

    attributes: Fattr | None
    linkmax: int | None = None
    name_max: int | None = None
    no_trunc: bool | None = None
    chown_restricted: bool | None = None
    case_insensitive: bool | None = None
    case_preserving: bool | None = None


@attrs.frozen(kw_only=True)
class CommitReply(Reply):
    """COMMIT3res."""

    wcc: Wcc
    verifier: bytes | None = None


@attrs.frozen
class RpcReply:
    """A decoded RPC reply header and the raw results that follow it.

    ``accepted`` is False for MSG_DENIED, in which case ``stat`` is the
    ``reject_stat`` and ``body`` the rest of the rejection.
    """

    xid: int
    accepted: bool
    stat: int
    body: bytes


class RpcCallFailed(AssertionError):
    """The server did not run the call (not MSG_ACCEPTED with SUCCESS)."""

    def __init__(self, reply: RpcReply) -> None:
        super().__init__(f"RPC call not run: accepted={reply.accepted} stat={reply.stat}")
        self.reply = reply


# -- XDR of arguments and results -----------------------------------------------------


def _encode_time(writer: XdrWriter, value: int | None) -> None:
    if value is None:
        writer.uint(TimeHow.DONT_CHANGE)
    elif value == SERVER_TIME:
        writer.uint(TimeHow.SET_TO_SERVER_TIME)
    else:
        writer.uint(TimeHow.SET_TO_CLIENT_TIME)
        seconds, nanoseconds = divmod(value, _NS)
        writer.uint(seconds)
        writer.uint(nanoseconds)


def encode_sattr3(writer: XdrWriter, changes: SetAttributes) -> None:
    """Encode ``sattr3``; an ``atime``/``mtime`` of :data:`SERVER_TIME` asks for server time."""
    for value in (changes.mode, changes.uid, changes.gid):
        writer.boolean(value is not None)
        if value is not None:
            writer.uint(value)
    writer.boolean(changes.size is not None)
    if changes.size is not None:
        writer.uhyper(changes.size)
    _encode_time(writer, changes.atime)
    _encode_time(writer, changes.mtime)


def _time(reader: XdrReader) -> int:
    seconds = reader.uint()
    return seconds * _NS + reader.uint()


def decode_fattr3(reader: XdrReader) -> Fattr:
    """Decode ``fattr3``."""
    return Fattr(
        type=FileType(reader.uint()),
        mode=reader.uint(),
        nlink=reader.uint(),
        uid=reader.uint(),
        gid=reader.uint(),
        size=reader.uhyper(),
        used=reader.uhyper(),
        rdev=(reader.uint(), reader.uint()),
        fsid=reader.uhyper(),
        fileid=reader.uhyper(),
        atime=_time(reader),
        mtime=_time(reader),
        ctime=_time(reader),
    )


def decode_post_op_attr(reader: XdrReader) -> Fattr | None:
    """Decode ``post_op_attr``."""
    return decode_fattr3(reader) if reader.boolean() else None


def decode_wcc_data(reader: XdrReader) -> Wcc:
    """Decode ``wcc_data``."""
    before = None
    if reader.boolean():
        before = PreOpAttr(size=reader.uhyper(), mtime=_time(reader), ctime=_time(reader))
    return Wcc(before, decode_post_op_attr(reader))


def decode_post_op_fh3(reader: XdrReader) -> bytes | None:
    """Decode ``post_op_fh3``."""
    return bytes(reader.opaque(NFS3_FHSIZE)) if reader.boolean() else None


def _status(reader: XdrReader) -> Status:
    return Status(reader.uint())


def _entries(reader: XdrReader, plus: bool) -> list[DirEntryReply]:
    entries = []
    while reader.boolean():
        fileid = reader.uhyper()
        name = reader.string(PATH_MAX)
        cookie = reader.uhyper()
        if plus:
            attributes = decode_post_op_attr(reader)
            handle = decode_post_op_fh3(reader)
            entries.append(DirEntryReply(fileid, name, cookie, attributes, handle))
        else:
            entries.append(DirEntryReply(fileid, name, cookie))
    return entries


# -- the server and the client --------------------------------------------------------


@attrs.define
class InProcessServer:
    """NFSv3 and MOUNT over an export table, reached only through :meth:`client`."""

    exports: ExportTable
    nfs: NFSv3Program
    mount: MountProgram
    dispatcher: RpcDispatcher

    @property
    def export(self) -> Export:
        """The first (usually the only) export."""
        return next(iter(self.exports))

    def client(
        self,
        uid: int | None = 0,
        gid: int | None = 0,
        gids: Sequence[int] = (),
        host: str = "127.0.0.1",
        port: int = 700,
    ) -> NFSClient:
        """A client calling as AUTH_SYS *uid*/*gid*/*gids*, or AUTH_NONE when *uid* is None."""
        return NFSClient(self, uid=uid, gid=gid, gids=tuple(gids), host=host, port=port)

    def root_handle(self) -> bytes:
        """The first export's root handle, as MNT would give it."""
        export = self.export
        assert export.root is not None
        return export.handle(export.root)

    def close(self) -> None:
        """Close every store (synchronously, like everything here)."""
        synchronous_result(self.exports.close())


def serve_exports(
    exports: Sequence[Export], write_verifier: bytes | None = None
) -> InProcessServer:
    """Open *exports* (their stores must fire synchronously) and serve them."""
    table = ExportTable(list(exports))
    synchronous_result(table.open())
    nfs = NFSv3Program(table, write_verifier)
    mount = MountProgram(table)
    return InProcessServer(table, nfs, mount, RpcDispatcher([mount, nfs]))


def build_server(
    metadata: IMetadataStore | None = None,
    content: IContentStore | None = None,
    *,
    path: bytes = b"/export",
    export_id: int = 1,
    write_verifier: bytes | None = None,
    policy: AccessPolicy | None = None,
) -> InProcessServer:
    """Serve one export over the given stores; by default fresh memory stores.

    The default metadata store uses a :class:`TickingClock`, so every change
    moves mtime/ctime forward by a visible amount.  *policy* defaults to the
    server's own default (loopback clients, root squashed).
    """
    if metadata is None:
        metadata = MemoryMetadataStore(clock=TickingClock())
    if content is None:
        content = MemoryContentStore()
    export = Export(export_id, path, metadata, content, policy or AccessPolicy())
    return serve_exports([export], write_verifier)


class NFSClient:
    """Encode NFSv3 and MOUNT calls, dispatch them in-process and decode the replies.

    Every NFS method returns a ``*Reply`` whose ``status`` says how it went;
    the fields that a failure does not carry are None.  A call the RPC layer
    refuses (GARBAGE_ARGS, SYSTEM_ERR ...) raises :class:`RpcCallFailed`.
    """

    def __init__(
        self,
        server: InProcessServer,
        *,
        uid: int | None,
        gid: int | None,
        gids: tuple[int, ...],
        host: str,
        port: int,
    ) -> None:
        self.server = server
        self.uid = uid
        self.gid = gid
        self.gids = gids
        self.host = host
        self.port = port
        self._xids = itertools.count(1)

    # -- raw RPC ----------------------------------------------------------------------

    def _credentials(self, writer: XdrWriter) -> None:
        if self.uid is None:
            writer.uint(AuthFlavor.AUTH_NONE)
            writer.opaque(b"")
            return
        body = XdrWriter()
        body.uint(0)  # stamp
        body.string(b"dittofs-testing")
        body.uint(self.uid)
        body.uint(self.gid or 0)
        body.array(list(self.gids), XdrWriter.uint)
        writer.uint(AuthFlavor.AUTH_SYS)
        writer.opaque(body.getvalue())

    def call(self, program: int, version: int, procedure: int, arguments: bytes) -> RpcReply:
        """Send one call with already-encoded *arguments*; return the decoded reply header."""
        xid = next(self._xids)
        writer = XdrWriter()
        for value in (xid, CALL, RPC_VERSION, program, version, procedure):
            writer.uint(value)
        self._credentials(writer)
        writer.uint(AuthFlavor.AUTH_NONE)  # verifier
        writer.opaque(b"")
        writer.raw(arguments)
        outcome = self.server.dispatcher.dispatch(writer.getvalue(), self.host, self.port)
        if outcome is None:
            raise AssertionError("the dispatcher found no call to answer")
        reader = XdrReader(b"".join(synchronous_result(outcome)))
        reply_xid = reader.uint()
        if reply_xid != xid or reader.uint() != REPLY:
            raise AssertionError(f"reply does not answer xid {xid}")
        if reader.uint() != MSG_ACCEPTED:
            stat = reader.uint()
            return RpcReply(xid, False, stat, bytes(reader.fixed_opaque(reader.remaining)))
        reader.uint()  # verifier flavour
        reader.opaque(400)
        stat = reader.uint()
        return RpcReply(xid, True, stat, bytes(reader.fixed_opaque(reader.remaining)))

    def _run(self, program: int, version: int, procedure: int, arguments: XdrWriter) -> XdrReader:
        reply = self.call(program, version, procedure, arguments.getvalue())
        if not reply.accepted or reply.stat != AcceptStat.SUCCESS:
            raise RpcCallFailed(reply)
        return XdrReader(reply.body)

    def _nfs(self, procedure: Proc, arguments: XdrWriter) -> XdrReader:
        return self._run(NFS_PROGRAM, NFS_V3, procedure, arguments)

    @staticmethod
    def _done(reader: XdrReader) -> None:
        if reader.remaining:
            raise XdrError(f"{reader.remaining} bytes left over after the results")

    @staticmethod
    def _fh(fh: bytes) -> XdrWriter:
        writer = XdrWriter()
        writer.opaque(fh)
        return writer

    @staticmethod
    def _dirop(directory: bytes, name: bytes) -> XdrWriter:
        writer = XdrWriter()
        writer.opaque(directory)
        writer.string(name)
        return writer

    # -- MOUNT ------------------------------------------------------------------------

    def mnt(self, path: bytes) -> bytes:
        """MOUNTPROC3_MNT: the root handle of the export at *path* (AssertionError if refused)."""
        writer = XdrWriter()
        writer.string(path)
        reader = self._run(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, writer)
        status = MountStat(reader.uint())
        if status != MountStat.OK:
            raise AssertionError(f"MNT {path!r} failed with {status.name}")
        handle = bytes(reader.opaque(NFS3_FHSIZE))
        reader.array(XdrReader.uint, 16)
        self._done(reader)
        return handle

    # -- NFSv3 procedures, RFC 1813 section 3.3 ----------------------------------------

    def null(self) -> None:
        """NULL (3.3.0)."""
        self._done(self._nfs(Proc.NULL, XdrWriter()))

    def getattr(self, fh: bytes) -> GetattrReply:
        """GETATTR (3.3.1)."""
        reader = self._nfs(Proc.GETATTR, self._fh(fh))
        status = _status(reader)
        attributes = decode_fattr3(reader) if status == Status.OK else None
        self._done(reader)
        return GetattrReply(status=status, attributes=attributes)

    def setattr(
        self, fh: bytes, changes: SetAttributes, guard_ctime: int | None = None
    ) -> WccReply:
        """SETATTR (3.3.2), guarded by *guard_ctime* (ns) when given."""
        writer = self._fh(fh)
        encode_sattr3(writer, changes)
        writer.boolean(guard_ctime is not None)
        if guard_ctime is not None:
            seconds, nanoseconds = divmod(guard_ctime, _NS)
            writer.uint(seconds)
            writer.uint(nanoseconds)
        return self._wcc_only(Proc.SETATTR, writer)

    def _wcc_only(self, procedure: Proc, arguments: XdrWriter) -> WccReply:
        reader = self._nfs(procedure, arguments)
        status = _status(reader)
        wcc = decode_wcc_data(reader)
        self._done(reader)
        return WccReply(status=status, wcc=wcc)

    def lookup(self, directory: bytes, name: bytes) -> LookupReply:
        """LOOKUP (3.3.3)."""
        reader = self._nfs(Proc.LOOKUP, self._dirop(directory, name))
        status = _status(reader)
        if status != Status.OK:
            reply = LookupReply(status=status, dir_attributes=decode_post_op_attr(reader))
        else:
            reply = LookupReply(
                status=status,
                handle=bytes(reader.opaque(NFS3_FHSIZE)),
                attributes=decode_post_op_attr(reader),
                dir_attributes=decode_post_op_attr(reader),
            )
        self._done(reader)
        return reply

    def access(self, fh: bytes, requested: int) -> AccessReply:
        """ACCESS (3.3.4)."""
        writer = self._fh(fh)
        writer.uint(requested)
        reader = self._nfs(Proc.ACCESS, writer)
        status = _status(reader)
        attributes = decode_post_op_attr(reader)
        access = reader.uint() if status == Status.OK else None
        self._done(reader)
        return AccessReply(status=status, attributes=attributes, access=access)

    def readlink(self, fh: bytes) -> ReadlinkReply:
        """READLINK (3.3.5)."""
        reader = self._nfs(Proc.READLINK, self._fh(fh))
        status = _status(reader)
        attributes = decode_post_op_attr(reader)
        target = reader.string(2**20) if status == Status.OK else None
        self._done(reader)
        return ReadlinkReply(status=status, attributes=attributes, target=target)

    def read(self, fh: bytes, offset: int, count: int) -> ReadReply:
        """READ (3.3.6)."""
        writer = self._fh(fh)
        writer.uhyper(offset)
        writer.uint(count)
        reader = self._nfs(Proc.READ, writer)
        status = _status(reader)
        attributes = decode_post_op_attr(reader)
        if status != Status.OK:
            self._done(reader)
            return ReadReply(status=status, attributes=attributes)
        got = reader.uint()
        eof = reader.boolean()
        data = bytes(reader.opaque(2**32 - 1))
        self._done(reader)
        return ReadReply(status=status, attributes=attributes, count=got, eof=eof, data=data)

    def write(
        self,
        fh: bytes,
        offset: int,
        data: bytes,
        stable: StableHow = StableHow.FILE_SYNC,
        count: int | None = None,
    ) -> WriteReply:
        """WRITE (3.3.7); *count* defaults to ``len(data)``."""
        writer = self._fh(fh)
        writer.uhyper(offset)
        writer.uint(len(data) if count is None else count)
        writer.uint(stable)
        writer.opaque(data)
        reader = self._nfs(Proc.WRITE, writer)
        status = _status(reader)
        wcc = decode_wcc_data(reader)
        if status != Status.OK:
            self._done(reader)
            return WriteReply(status=status, wcc=wcc)
        written = reader.uint()
        committed = StableHow(reader.uint())
        verifier = bytes(reader.fixed_opaque(NFS3_WRITEVERFSIZE))
        self._done(reader)
        return WriteReply(
            status=status, wcc=wcc, count=written, committed=committed, verifier=verifier
        )

    def _created(self, procedure: Proc, arguments: XdrWriter) -> CreateReply:
        reader = self._nfs(procedure, arguments)
        status = _status(reader)
        if status != Status.OK:
            reply = CreateReply(status=status, dir_wcc=decode_wcc_data(reader))
        else:
            handle = decode_post_op_fh3(reader)
            attributes = decode_post_op_attr(reader)
            reply = CreateReply(
                status=status,
                handle=handle,
                attributes=attributes,
                dir_wcc=decode_wcc_data(reader),
            )
        self._done(reader)
        return reply

    def create(
        self,
        directory: bytes,
        name: bytes,
        how: CreateMode = CreateMode.UNCHECKED,
        attributes: SetAttributes | None = None,
        verifier: bytes = bytes(NFS3_CREATEVERFSIZE),
    ) -> CreateReply:
        """CREATE (3.3.8); *verifier* is used for EXCLUSIVE, *attributes* otherwise."""
        writer = self._dirop(directory, name)
        writer.uint(how)
        if how == CreateMode.EXCLUSIVE:
            writer.fixed_opaque(verifier)
        else:
            encode_sattr3(writer, attributes or SetAttributes())
        return self._created(Proc.CREATE, writer)

    def mkdir(
        self, directory: bytes, name: bytes, attributes: SetAttributes | None = None
    ) -> CreateReply:
        """MKDIR (3.3.9)."""
        writer = self._dirop(directory, name)
        encode_sattr3(writer, attributes or SetAttributes())
        return self._created(Proc.MKDIR, writer)

    def symlink(
        self,
        directory: bytes,
        name: bytes,
        target: bytes,
        attributes: SetAttributes | None = None,
    ) -> CreateReply:
        """SYMLINK (3.3.10)."""
        writer = self._dirop(directory, name)
        encode_sattr3(writer, attributes or SetAttributes())
        writer.string(target)
        return self._created(Proc.SYMLINK, writer)

    def mknod(
        self,
        directory: bytes,
        name: bytes,
        file_type: FileType,
        attributes: SetAttributes | None = None,
        rdev: tuple[int, int] = (0, 0),
    ) -> CreateReply:
        """MKNOD (3.3.11); other types than CHR/BLK/SOCK/FIFO send the void arm."""
        writer = self._dirop(directory, name)
        writer.uint(file_type)
        if file_type in (FileType.CHR, FileType.BLK):
            encode_sattr3(writer, attributes or SetAttributes())
            writer.uint(rdev[0])
            writer.uint(rdev[1])
        elif file_type in (FileType.SOCK, FileType.FIFO):
            encode_sattr3(writer, attributes or SetAttributes())
        return self._created(Proc.MKNOD, writer)

    def remove(self, directory: bytes, name: bytes) -> WccReply:
        """REMOVE (3.3.12)."""
        return self._wcc_only(Proc.REMOVE, self._dirop(directory, name))

    def rmdir(self, directory: bytes, name: bytes) -> WccReply:
        """RMDIR (3.3.13)."""
        return self._wcc_only(Proc.RMDIR, self._dirop(directory, name))

    def rename(
        self, from_dir: bytes, from_name: bytes, to_dir: bytes, to_name: bytes
    ) -> RenameReply:
        """RENAME (3.3.14)."""
        writer = self._dirop(from_dir, from_name)
        writer.opaque(to_dir)
        writer.string(to_name)
        reader = self._nfs(Proc.RENAME, writer)
        status = _status(reader)
        reply = RenameReply(
            status=status, from_wcc=decode_wcc_data(reader), to_wcc=decode_wcc_data(reader)
        )
        self._done(reader)
        return reply

    def link(self, fh: bytes, directory: bytes, name: bytes) -> LinkReply:
        """LINK (3.3.15)."""
        writer = self._fh(fh)
        writer.opaque(directory)
        writer.string(name)
        reader = self._nfs(Proc.LINK, writer)
        status = _status(reader)
        reply = LinkReply(
            status=status, attributes=decode_post_op_attr(reader), dir_wcc=decode_wcc_data(reader)
        )
        self._done(reader)
        return reply

    def readdir(
        self,
        directory: bytes,
        cookie: int = 0,
        verifier: bytes = bytes(NFS3_COOKIEVERFSIZE),
        count: int = 8192,
    ) -> ReaddirReply:
        """READDIR (3.3.16)."""
        writer = self._fh(directory)
        writer.uhyper(cookie)
        writer.fixed_opaque(verifier)
        writer.uint(count)
        return self._listing(Proc.READDIR, writer, plus=False)

    def readdirplus(
        self,
        directory: bytes,
        cookie: int = 0,
        verifier: bytes = bytes(NFS3_COOKIEVERFSIZE),
        dircount: int = 8192,
        maxcount: int = 32768,
    ) -> ReaddirReply:
        """READDIRPLUS (3.3.17)."""
        writer = self._fh(directory)
        writer.uhyper(cookie)
        writer.fixed_opaque(verifier)
        writer.uint(dircount)
        writer.uint(maxcount)
        return self._listing(Proc.READDIRPLUS, writer, plus=True)

    def _listing(self, procedure: Proc, arguments: XdrWriter, plus: bool) -> ReaddirReply:
        reader = self._nfs(procedure, arguments)
        status = _status(reader)
        dir_attributes = decode_post_op_attr(reader)
        if status != Status.OK:
            self._done(reader)
            return ReaddirReply(status=status, dir_attributes=dir_attributes)
        verifier = bytes(reader.fixed_opaque(NFS3_COOKIEVERFSIZE))
        entries = _entries(reader, plus)
        eof = reader.boolean()
        self._done(reader)
        return ReaddirReply(
            status=status,
            dir_attributes=dir_attributes,
            verifier=verifier,
            entries=entries,
            eof=eof,
        )

    def fsstat(self, fh: bytes) -> FsstatReply:
        """FSSTAT (3.3.18)."""
        reader = self._nfs(Proc.FSSTAT, self._fh(fh))
        status = _status(reader)
        attributes = decode_post_op_attr(reader)
        if status != Status.OK:
            self._done(reader)
            return FsstatReply(status=status, attributes=attributes)
        values = [reader.uhyper() for _ in range(6)]
        reply = FsstatReply(
            status=status,
            attributes=attributes,
            tbytes=values[0],
            fbytes=values[1],
            abytes=values[2],
            tfiles=values[3],
            ffiles=values[4],
            afiles=values[5],
            invarsec=reader.uint(),
        )
        self._done(reader)
        return reply

    def fsinfo(self, fh: bytes) -> FsinfoReply:
        """FSINFO (3.3.19)."""
        reader = self._nfs(Proc.FSINFO, self._fh(fh))
        status = _status(reader)
        attributes = decode_post_op_attr(reader)
        if status != Status.OK:
            self._done(reader)
            return FsinfoReply(status=status, attributes=attributes)
        sizes = [reader.uint() for _ in range(7)]
        reply = FsinfoReply(
            status=status,
            attributes=attributes,
            rtmax=sizes[0],
            rtpref=sizes[1],
            rtmult=sizes[2],
            wtmax=sizes[3],
            wtpref=sizes[4],
            wtmult=sizes[5],
            dtpref=sizes[6],
            maxfilesize=reader.uhyper(),
            time_delta=_time(reader),
            properties=reader.uint(),
        )
        self._done(reader)
        return reply

    def pathconf(self, fh: bytes) -> PathconfReply:
        """PATHCONF (3.3.20)."""
        reader = self._nfs(Proc.PATHCONF, self._fh(fh))
        status = _status(reader)
        attributes = decode_post_op_attr(reader)
        if status != Status.OK:
            self._done(reader)
            return PathconfReply(status=status, attributes=attributes)
        reply = PathconfReply(
            status=status,
            attributes=attributes,
            linkmax=reader.uint(),
            name_max=reader.uint(),
            no_trunc=reader.boolean(),
            chown_restricted=reader.boolean(),
            case_insensitive=reader.boolean(),
            case_preserving=reader.boolean(),
        )
        self._done(reader)
        return reply

    def commit(self, fh: bytes, offset: int = 0, count: int = 0) -> CommitReply:
        """COMMIT (3.3.21)."""
        writer = self._fh(fh)
        writer.uhyper(offset)
        writer.uint(count)
        reader = self._nfs(Proc.COMMIT, writer)
        status = _status(reader)
        wcc = decode_wcc_data(reader)
        verifier = bytes(reader.fixed_opaque(NFS3_WRITEVERFSIZE)) if status == Status.OK else None
        self._done(reader)
        return CommitReply(status=status, wcc=wcc, verifier=verifier)

    # -- conveniences built from the procedures above ----------------------------------

    def write_file(self, directory: bytes, name: bytes, data: bytes = b"") -> bytes:
        """Create (or reuse) *name*, write *data* stably, and return its handle."""
        created = self.create(directory, name).expect_ok()
        assert created.handle is not None
        if data:
            self.write(created.handle, 0, data).expect_ok()
        return created.handle

    def read_file(self, fh: bytes, chunk: int = 65536) -> bytes:
        """Read a whole file with as many READs as it takes."""
        parts: list[bytes] = []
        offset = 0
        while True:
            reply = self.read(fh, offset, chunk).expect_ok()
            assert reply.data is not None
            parts.append(reply.data)
            offset += len(reply.data)
            if reply.eof:
                return b"".join(parts)

    def list_dir(self, directory: bytes, count: int = 8192) -> list[DirEntryReply]:
        """Every entry of a directory (``.`` and ``..`` included), paging with READDIR."""
        entries: list[DirEntryReply] = []
        cookie, verifier = 0, bytes(NFS3_COOKIEVERFSIZE)
        while True:
            page = self.readdir(directory, cookie, verifier, count).expect_ok()
            entries.extend(page.entries)
            if page.eof:
                return entries
            if not page.entries:
                raise AssertionError("READDIR returned no entries and no eof")
            assert page.verifier is not None
            cookie, verifier = page.entries[-1].cookie, page.verifier
