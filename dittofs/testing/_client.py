"""An in-process DittoFS and a client that speaks real RPC records to it.

:func:`build_server` puts an :class:`~dittofs.exports.ExportTable`, the NFSv3
and MOUNT programs and an :class:`~dittofs.rpc.dispatch.RpcDispatcher` over
the stores it is given; :class:`NFSClient` encodes call records, hands them to
the dispatcher and decodes the replies.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs

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
)
from dittofs.nfs3.service import NFSv3Program
from dittofs.nfs3.types import (
    decode_fattr3,
    decode_nfstime3,
    decode_post_op_attr,
    decode_post_op_fh3,
    decode_wcc_data,
    encode_sattr3,
)
from dittofs.policy import AccessPolicy
from dittofs.rpc.dispatch import RpcDispatcher
from dittofs.rpc.message import CALL, MSG_ACCEPTED, REPLY, RPC_VERSION, AcceptStat, AuthFlavor
from dittofs.rpc.xdr import XdrError, XdrReader, XdrWriter, as_bytes
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.testing._replies import (
    AccessReply,
    CommitReply,
    CreateReply,
    DirEntryReply,
    FsinfoReply,
    FsstatReply,
    GetattrReply,
    LinkReply,
    LookupReply,
    PathconfReply,
    ReaddirReply,
    ReadlinkReply,
    ReadReply,
    RenameReply,
    RpcCallFailed,
    RpcReply,
    WccReply,
    WriteReply,
)
from dittofs.testing._synchronous import TickingClock, synchronous_result
from dittofs.vocabulary import CreateMode, FileType, Status

NS = 1_000_000_000


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
        reader = XdrReader(b"".join(as_bytes(part) for part in synchronous_result(outcome)))
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
            seconds, nanoseconds = divmod(guard_ctime, NS)
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
            time_delta=decode_nfstime3(reader),
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
