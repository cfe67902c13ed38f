"""The NFS version 4.1 program (RFC 8881): NULL and COMPOUND, one method per operation.

Every operation reads like its RFC 8881 section, over the same export table,
stores and POSIX rules (:mod:`dittofs.filesystem`) as NFSv3, so a file keeps
its handle and its semantics whichever version asks.  Session, open and lock
state is kept by :class:`~dittofs.nfs4.state.StateTable`; the COMPOUND loop
and the slot replay cache are :mod:`dittofs.nfs4.compound`.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from twisted.logger import Logger

from dittofs import filesystem as fs
from dittofs import log as dittofs_log
from dittofs.access import EXECUTE, READ, WRITE, Access, allowed_access, require
from dittofs.errors import NFSError
from dittofs.exports import Export, ExportTable
from dittofs.metrics import Metrics
from dittofs.model import Attributes, FileCounts, SetAttributes, SpaceUsage, WccAttributes
from dittofs.nfs4 import args as a
from dittofs.nfs4.compound import CompoundState, Handler, run_compound
from dittofs.nfs4.const import (
    CDFC4_BACK,
    CDFS4_BOTH,
    CDFS4_FORE,
    CREATE_SESSION4_FLAG_CONN_BACK_CHAN,
    EXCHGID4_FLAG_CONFIRMED_R,
    EXCHGID4_FLAG_UPD_CONFIRMED_REC_A,
    EXCHGID4_FLAG_USE_NON_PNFS,
    EXCLUSIVE4,
    EXCLUSIVE4_1,
    FILE_SYNC4,
    GUARDED4,
    NFS_V4,
    OPEN4_RESULT_LOCKTYPE_POSIX,
    OPEN4_SHARE_ACCESS_MASK,
    OPEN4_SHARE_ACCESS_READ,
    OPEN4_SHARE_ACCESS_WRITE,
    OPEN_DELEGATE_NONE,
    SECINFO_STYLE4_PARENT,
    SP4_NONE,
    UNSTABLE4,
    Attr,
    Claim,
    LockType,
    Op,
    Stat4,
)
from dittofs.nfs4.errors import NFS4Error
from dittofs.nfs4.fattr import (
    EXCLUSIVE_CREATE_ATTRS,
    NEEDS_COUNTS,
    NEEDS_SPACE,
    SETTABLE,
    SUPPORTED,
    Object,
    attribute_values,
    decode_settable,
    encode_bitmap,
    encode_fattr,
)
from dittofs.nfs4.pseudo import PSEUDO_FSID, Node, PseudoFS
from dittofs.nfs4.state import (
    CURRENT,
    LockState,
    OpenState,
    Session,
    StateTable,
    lock_range,
)
from dittofs.rpc.dispatch import NULL_PROCEDURE, CallContext, Procedure
from dittofs.rpc.message import AuthFlavor, Credentials
from dittofs.rpc.xdr import XdrWriter
from dittofs.vocabulary import CreateMode, FileType, Status

log = Logger(observer=dittofs_log.observer)

NFS_PROGRAM = 100003
#: Largest READ and WRITE (``maxread``/``maxwrite``), as for NFSv3.
MAX_IO = 1024 * 1024
#: What a session's fore channel allows at most: a 1 MiB WRITE or READ and its headers.
MAX_REQUEST = MAX_IO + 8192
MAX_CACHED_RESPONSE = 64 * 1024
DEFAULT_LEASE = 90
_READDIR_OVERHEAD = 4 + 8 + 4 + 4 + 64
_ENTRY_OVERHEAD = 4 + 8 + 4 + 4 + 4

#: What each type's CREATE makes by default (mode), for the types CREATE may make.
_CREATE_MODES = {
    FileType.DIR: 0o755,
    FileType.LNK: 0o777,
    FileType.BLK: 0o644,
    FileType.CHR: 0o644,
    FileType.SOCK: 0o644,
    FileType.FIFO: 0o644,
}


def _stateid(writer: XdrWriter, seqid: int, other: bytes) -> None:
    writer.uint(seqid)
    writer.fixed_opaque(other)


def _change_info(writer: XdrWriter, wcc: WccAttributes) -> None:
    """``change_info4`` from a change's before and after attributes."""
    writer.boolean(wcc.before is not None)
    writer.uhyper(wcc.before.ctime if wcc.before is not None else 0)
    writer.uhyper(wcc.after.ctime)


def _cookie_verifier(directory: Attributes) -> bytes:
    """Cookies never go stale, so a directory's verifier is fixed for its lifetime."""
    return struct.pack(">II", directory.generation, directory.fileid & 0xFFFFFFFF)


class NFSv41Program:
    """RPC program 100003 version 4, minor version 1, over an :class:`ExportTable`."""

    number = NFS_PROGRAM
    low_version = NFS_V4
    high_version = NFS_V4

    name = "nfs"

    def __init__(
        self,
        exports: ExportTable,
        write_verifier: bytes,
        metrics: Metrics | None = None,
        *,
        lease_time: int = DEFAULT_LEASE,
        clock: Callable[[], float] = time.monotonic,
        server_owner: bytes | None = None,
    ) -> None:
        self.exports = exports
        self.metrics = metrics if metrics is not None else Metrics()
        self.write_verifier = write_verifier
        self.pseudo = PseudoFS(exports)
        self.state = StateTable(lease_time, clock)
        #: Names this server to clients (the same for every worker of one host).
        self.server_owner = server_owner or b"dittofs@" + socket.gethostname().encode()
        self._handlers = self._build_handlers()
        compound = Procedure("COMPOUND", a.decode_compound, self.compound)
        self._table = {0: NULL_PROCEDURE, 1: compound}

    def procedures(self, version: int) -> Mapping[int, Procedure]:
        """See :class:`~dittofs.rpc.dispatch.RpcProgram`."""
        return self._table

    async def compound(self, compound: a.Compound, context: CallContext) -> XdrWriter:
        """RFC 8881 section 16.2: run the operations of one COMPOUND."""
        return await run_compound(compound, context, self._handlers, self.state, self._done)

    def _done(self, op: int, status: int) -> None:
        """Count (and at DEBUG, log) one operation of a COMPOUND, by its name and status."""
        name = Op(op).name if op in _OPS else str(op)
        status_name = _status_name(status)
        self.metrics.labelled(self.metrics.nfs4_operations, name, status_name).inc()
        if dittofs_log.switches.debugging:
            log.debug("NFSv4.1 {operation}: {status}", operation=name, status=status_name)

    def _build_handlers(self) -> dict[Op, Handler]:
        not_supported = self._not_supported
        handlers: dict[Op, Handler] = {
            Op.ACCESS: self.access,
            Op.CLOSE: self.close,
            Op.COMMIT: self.commit,
            Op.CREATE: self.create,
            Op.DELEGPURGE: not_supported,
            Op.DELEGRETURN: self.delegreturn,
            Op.GETATTR: self.getattr,
            Op.GETFH: self.getfh,
            Op.LINK: self.link,
            Op.LOCK: self.lock,
            Op.LOCKT: self.lockt,
            Op.LOCKU: self.locku,
            Op.LOOKUP: self.lookup,
            Op.LOOKUPP: self.lookupp,
            Op.NVERIFY: self.nverify,
            Op.OPEN: self.open,
            Op.OPENATTR: not_supported,
            Op.OPEN_DOWNGRADE: self.open_downgrade,
            Op.PUTFH: self.putfh,
            Op.PUTPUBFH: self.putrootfh,
            Op.PUTROOTFH: self.putrootfh,
            Op.READ: self.read,
            Op.READDIR: self.readdir,
            Op.READLINK: self.readlink,
            Op.REMOVE: self.remove,
            Op.RENAME: self.rename,
            Op.RESTOREFH: self.restorefh,
            Op.SAVEFH: self.savefh,
            Op.SECINFO: self.secinfo,
            Op.SETATTR: self.setattr,
            Op.VERIFY: self.verify,
            Op.WRITE: self.write,
            Op.BIND_CONN_TO_SESSION: self.bind_conn_to_session,
            Op.EXCHANGE_ID: self.exchange_id,
            Op.CREATE_SESSION: self.create_session,
            Op.DESTROY_SESSION: self.destroy_session,
            Op.FREE_STATEID: self.free_stateid,
            Op.SECINFO_NO_NAME: self.secinfo_no_name,
            Op.TEST_STATEID: self.test_stateid,
            Op.DESTROY_CLIENTID: self.destroy_clientid,
            Op.RECLAIM_COMPLETE: self.reclaim_complete,
        }
        assert set(handlers) == set(a.DECODERS) - {Op.SEQUENCE}  # SEQUENCE: the compound loop
        return handlers

    async def _not_supported(self, args: Any, c: CompoundState) -> XdrWriter:
        raise NFSError(Status.NOTSUPP)

    # -- the current file handle ----

    @staticmethod
    def _current(c: CompoundState) -> bytes:
        if c.current is None:
            raise NFS4Error(Stat4.NOFILEHANDLE)
        return c.current

    def _set_current(self, c: CompoundState, fh: bytes) -> None:
        c.current = fh
        c.current_stateid = None

    def _pseudo(self, c: CompoundState) -> Node | None:
        """The pseudo directory the current handle names, or None for an export's file."""
        fh = self._current(c)
        return self.pseudo.node(fh) if PseudoFS.is_pseudo(fh) else None

    async def _resolve(
        self, c: CompoundState, change: bool = False, fh: bytes | None = None
    ) -> tuple[Export, Attributes]:
        """The export and attributes of the current (or given) handle, which must be an export's."""
        fh = self._current(c) if fh is None else fh
        if PseudoFS.is_pseudo(fh):
            self.pseudo.node(fh)
            raise NFSError(Status.ROFS if change else Status.INVAL, "a pseudo directory")
        context = c.context
        return await fs.resolve(self.exports, fh, context.client_host, context.client_port, change)

    async def _resolve_dir(
        self, c: CompoundState, change: bool = False, fh: bytes | None = None
    ) -> tuple[Export, Attributes]:
        export, attributes = await self._resolve(c, change, fh)
        if attributes.type == FileType.LNK:
            raise NFS4Error(Stat4.SYMLINK)
        if attributes.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        return export, attributes

    async def _resolve_file(
        self, c: CompoundState, change: bool = False
    ) -> tuple[Export, Attributes]:
        """A regular file for READ, WRITE, COMMIT and locks (RFC 8881 section 18.22.3)."""
        if self._pseudo(c) is not None:
            raise NFSError(Status.ISDIR)
        export, attributes = await self._resolve(c, change)
        if attributes.type == FileType.DIR:
            raise NFSError(Status.ISDIR)
        if attributes.type == FileType.LNK:
            raise NFS4Error(Stat4.SYMLINK)
        if attributes.type != FileType.REG:
            raise NFS4Error(Stat4.WRONG_TYPE)
        return export, attributes

    @staticmethod
    def _caller(export: Export, c: CompoundState) -> Credentials:
        return export.policy.identity(c.context.credentials)

    async def _export_root(self, export: Export) -> Attributes:
        if export.root is None:
            export.root = await export.metadata.root()
        return export.root

    async def _object(self, c: CompoundState, requested: frozenset[int]) -> Object:
        """What GETATTR and VERIFY encode for the current handle."""
        node = self._pseudo(c)
        if node is not None:
            return Object(
                self.pseudo.attributes(node),
                PSEUDO_FSID,
                node.handle,
                node.index,
                self.state.lease_time,
                MAX_IO,
                FileCounts(0, 0),
                SpaceUsage(0, 0),
            )
        export, attributes = await self._resolve(c)
        return await self._export_object(export, attributes, requested)

    async def _export_object(
        self, export: Export, attributes: Attributes, requested: frozenset[int]
    ) -> Object:
        counts = await export.metadata.file_counts() if requested & NEEDS_COUNTS else None
        space = await export.content.space() if requested & NEEDS_SPACE else None
        return Object(
            attributes,
            (export.export_id, 0),
            export.handle(attributes),
            attributes.fileid,
            self.state.lease_time,
            MAX_IO,
            counts,
            space,
        )

    def _stateid_of(self, c: CompoundState, stateid: a.StateId) -> a.StateId:
        """A stateid with the special "current stateid" replaced (RFC 8881 section 16.2.3.1.2)."""
        if stateid == CURRENT:
            if c.current_stateid is None:
                raise NFS4Error(Stat4.BAD_STATEID, "no current stateid")
            return c.current_stateid
        return stateid

    # -- 18.35-18.37, 18.34, 18.46, 18.50, 18.51: clients and sessions ----

    async def exchange_id(self, args: a.ExchangeIdArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.35: a client introduces itself; no pNFS, no state protection."""
        if args.flags & ~(EXCHGID4_FLAG_UPD_CONFIRMED_REC_A | 0x0007_0103):
            raise NFSError(Status.INVAL, "unknown EXCHANGE_ID flags")
        if args.state_protect != SP4_NONE:
            # Only SP4_NONE is offered: AUTH_SYS has no principal to bind state to.
            raise NFSError(Status.NOTSUPP, "state protection is not offered")
        update = bool(args.flags & EXCHGID4_FLAG_UPD_CONFIRMED_REC_A)
        client = self.state.exchange_id(args.owner, args.verifier, update)
        writer = XdrWriter()
        writer.uhyper(client.clientid)
        writer.uint(client.create_seq)
        flags = EXCHGID4_FLAG_USE_NON_PNFS
        if client.confirmed:
            flags |= EXCHGID4_FLAG_CONFIRMED_R
        writer.uint(flags)
        writer.uint(SP4_NONE)
        writer.uhyper(0)  # so_minor_id
        writer.opaque(self.server_owner)  # so_major_id
        writer.opaque(self.server_owner)  # server scope
        writer.uint(0)  # no implementation id
        return writer

    async def create_session(self, args: a.CreateSessionArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.36: a session with a slot table; the back channel is never called."""
        fore = a.ChannelAttrs(
            0,
            min(args.fore.max_request, MAX_REQUEST),
            min(args.fore.max_response, MAX_REQUEST),
            min(args.fore.max_response_cached, MAX_CACHED_RESPONSE),
            min(args.fore.max_operations, a.MAX_OPERATIONS),
            min(args.fore.max_requests, 64),
        )
        if fore.max_request < 1024 or fore.max_response < 1024 or fore.max_operations < 2:
            raise NFSError(Status.TOOSMALL, "channel attributes too small")
        back_channel = bool(args.flags & CREATE_SESSION4_FLAG_CONN_BACK_CHAN)
        session, _ = self.state.create_session(
            args.clientid, args.sequence, fore, args.back, back_channel
        )
        writer = XdrWriter()
        writer.fixed_opaque(session.sessionid)
        writer.uint(args.sequence)
        writer.uint(CREATE_SESSION4_FLAG_CONN_BACK_CHAN if session.back_channel else 0)
        for channel in (session.fore, session.back):
            writer.uint(channel.header_pad)
            writer.uint(channel.max_request)
            writer.uint(channel.max_response)
            writer.uint(channel.max_response_cached)
            writer.uint(channel.max_operations)
            writer.uint(channel.max_requests)
            writer.uint(0)  # no RDMA
        return writer

    async def destroy_session(self, sessionid: bytes, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.37."""
        self.state.destroy_session(sessionid)
        return XdrWriter()

    async def bind_conn_to_session(self, args: a.BindConnArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.34: any connection may serve a session; a back channel is noted."""
        session = self.state.session(args.sessionid)
        back = bool(args.direction & CDFC4_BACK)
        session.back_channel = session.back_channel or back
        writer = XdrWriter()
        writer.fixed_opaque(session.sessionid)
        writer.uint(CDFS4_BOTH if back else CDFS4_FORE)
        writer.boolean(False)
        return writer

    async def destroy_clientid(self, clientid: int, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.50."""
        self.state.destroy_client(clientid)
        return XdrWriter()

    async def reclaim_complete(self, one_fs: bool, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.51: the client has reclaimed what it will (nothing survives a restart)."""
        session = self._session(c)
        if not one_fs:
            if session.client.reclaim_complete:
                raise NFS4Error(Stat4.COMPLETE_ALREADY)
            session.client.reclaim_complete = True
        return XdrWriter()

    @staticmethod
    def _session(c: CompoundState) -> Session:
        if c.session is None:
            raise NFS4Error(Stat4.OP_NOT_IN_SESSION)
        return c.session

    # -- 18.19-18.21, 18.24, 18.27, 18.8: file handles ----

    async def putrootfh(self, args: None, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.21: the root of the pseudo file system (an export at ``/``'s root)."""
        export = self.pseudo.root_export
        if export is None:
            self._set_current(c, self.pseudo.root.handle)
        else:
            self._set_current(c, export.handle(await self._export_root(export)))
        return XdrWriter()

    async def putfh(self, fh: bytes, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.19: a handle this server issued (BADHANDLE otherwise)."""
        if PseudoFS.is_pseudo(fh):
            self.pseudo.node(fh)
        else:
            fs.export_of(self.exports, fh, c.context.client_host, c.context.client_port, False)
        self._set_current(c, fh)
        return XdrWriter()

    async def getfh(self, args: None, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.8."""
        writer = XdrWriter()
        writer.opaque(self._current(c))
        return writer

    async def savefh(self, args: None, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.28: the saved handle (and stateid) become the current ones."""
        c.saved = self._current(c)
        c.saved_stateid = c.current_stateid
        return XdrWriter()

    async def restorefh(self, args: None, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.27."""
        if c.saved is None:
            raise NFS4Error(Stat4.RESTOREFH)
        c.current, c.current_stateid = c.saved, c.saved_stateid
        return XdrWriter()

    # -- 18.13, 18.14: LOOKUP and LOOKUPP ----

    async def lookup(self, name: bytes, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.13: a name in the current directory becomes the current handle."""
        _check_component(name)
        node = self._pseudo(c)
        if node is not None:
            child = node.children.get(name)
            if child is None:
                raise NFSError(Status.NOENT)
            if isinstance(child, Node):
                self._set_current(c, child.handle)
            else:
                if not child.policy.admits(c.context.client_host, c.context.client_port):
                    raise NFSError(
                        Status.ACCES, f"{c.context.client_host} may not use {child.path!r}"
                    )
                self._set_current(c, child.handle(await self._export_root(child)))
            return XdrWriter()
        export, directory = await self._resolve_dir(c)
        require(directory, self._caller(export, c), EXECUTE)
        found = await export.metadata.lookup(directory.fileid, name)
        self._set_current(c, export.handle(found))
        return XdrWriter()

    async def lookupp(self, args: None, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.14: the parent; from an export's root, the pseudo directory above it."""
        node = self._pseudo(c)
        if node is not None:
            if node.parent is None:
                raise NFSError(Status.NOENT, "the root has no parent")
            self._set_current(c, node.parent.handle)
            return XdrWriter()
        export, directory = await self._resolve_dir(c)
        root = await self._export_root(export)
        if directory.fileid == root.fileid:
            above = self.pseudo.mounted_on.get(export.export_id)
            if above is None:
                raise NFSError(Status.NOENT, "the root has no parent")
            self._set_current(c, above[0].handle)
            return XdrWriter()
        parent = await export.metadata.lookup(directory.fileid, b"..")
        self._set_current(c, export.handle(parent))
        return XdrWriter()

    # -- 18.7, 18.31, 18.15: attributes ----

    async def getattr(self, requested: frozenset[int], c: CompoundState) -> XdrWriter:
        """RFC 8881 18.7: the supported attributes asked for."""
        obj = await self._object(c, requested)
        writer = XdrWriter()
        encode_fattr(writer, requested, obj)
        return writer

    async def _same(self, fattr: a.Fattr, c: CompoundState) -> bool:
        for bit in fattr.mask:
            if bit not in SUPPORTED:
                raise NFS4Error(Stat4.ATTRNOTSUPP, f"attribute {bit}")
            if bit in (Attr.TIME_ACCESS_SET, Attr.TIME_MODIFY_SET, Attr.RDATTR_ERROR):
                raise NFSError(Status.INVAL, f"attribute {bit} cannot be compared")
        obj = await self._object(c, fattr.mask)
        return attribute_values(fattr.mask, obj) == fattr.values

    async def verify(self, fattr: a.Fattr, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.31: go on only if the attributes are as given (NOT_SAME otherwise)."""
        if not await self._same(fattr, c):
            raise NFS4Error(Stat4.NOT_SAME)
        return XdrWriter()

    async def nverify(self, fattr: a.Fattr, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.15: go on only if the attributes differ (SAME otherwise)."""
        if await self._same(fattr, c):
            raise NFS4Error(Stat4.SAME)
        return XdrWriter()

    async def setattr(self, args: a.SetattrArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.30: change attributes; a size change is checked against the opens."""
        changes, client_times = decode_settable(args.attributes, time.time_ns())
        export, attributes = await self._resolve(c, change=True)
        if changes.size is not None:
            if attributes.type != FileType.REG:
                raise NFSError(Status.ISDIR if attributes.type == FileType.DIR else Status.INVAL)
            key = (export.export_id, attributes.fileid)
            self.state.check_io(self._stateid_of(c, args.stateid), key, write=True)
        await fs.setattr(
            export, attributes, changes, client_times=client_times, caller=self._caller(export, c)
        )
        writer = XdrWriter()
        encode_bitmap(writer, sorted(args.attributes.mask))
        return writer

    # -- 18.1, 18.24, 18.23: ACCESS, READLINK, READDIR ----

    async def access(self, requested: int, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.1: which of the rights asked for the caller holds."""
        supported = requested & 0x3F
        node = self._pseudo(c)
        granted: int
        if node is not None:
            granted = supported & (Access.READ | Access.LOOKUP)
        else:
            export, attributes = await self._resolve(c)
            granted = allowed_access(attributes, self._caller(export, c), supported)
            if export.policy.read_only:
                granted &= ~(Access.MODIFY | Access.EXTEND | Access.DELETE)
        writer = XdrWriter()
        writer.uint(supported)
        writer.uint(granted)
        return writer

    async def readlink(self, args: None, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.24: the target of a symbolic link."""
        if self._pseudo(c) is not None:
            raise NFSError(Status.INVAL, "not a symbolic link")
        export, attributes = await self._resolve(c)
        if attributes.type != FileType.LNK:
            raise NFSError(Status.INVAL, "not a symbolic link")
        target: bytes = await export.metadata.readlink(attributes.fileid)
        writer = XdrWriter()
        writer.string(target)
        return writer

    async def readdir(self, args: a.ReaddirArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.23: entries after a cookie, with the attributes asked for.

        Cookies 1 and 2 are reserved, so cookie *n* > 2 is the store's *n* - 2
        (paging resumes in the store by bisection).  Entries are added while
        they fit ``maxcount``; none fitting is NFS4ERR_TOOSMALL.
        """
        if args.cookie in (1, 2):
            raise NFSError(Status.BAD_COOKIE)
        node = self._pseudo(c)
        if node is not None:
            entries = await self._pseudo_entries(node, args)
            return self._encode_readdir(bytes(8), entries, True, args)
        export, directory = await self._resolve_dir(c)
        require(directory, self._caller(export, c), READ)
        verifier = _cookie_verifier(directory)
        if args.cookie and args.verifier not in (verifier, bytes(8)):
            raise NFSError(Status.NOT_SYNC)
        wanted = max(1, min(args.maxcount // 64, 4096))
        store_cookie = max(args.cookie - 2, 0)
        page = await export.metadata.readdir(directory.fileid, store_cookie, wanted, True)
        candidates: list[tuple[int, bytes, Object]] = []
        template: Object | None = None
        for entry in page.entries:
            attributes = entry.attributes
            if attributes is None:
                attributes = await export.metadata.getattr(entry.fileid)
            if template is None:
                template = await self._export_object(export, attributes, args.attributes)
            obj = Object(
                attributes,
                template.fsid,
                export.handle(attributes),
                attributes.fileid,
                template.lease_time,
                MAX_IO,
                template.counts,
                template.space,
            )
            candidates.append((entry.cookie + 2, entry.name, obj))
        return self._encode_readdir(verifier, candidates, page.eof, args)

    async def _pseudo_entries(
        self, node: Node, args: a.ReaddirArgs
    ) -> list[tuple[int, bytes, Object]]:
        entries = []
        for index, (name, child) in enumerate(sorted(node.children.items())):
            cookie = index + 3
            if cookie <= args.cookie:
                continue
            if isinstance(child, Node):
                obj = Object(
                    self.pseudo.attributes(child),
                    PSEUDO_FSID,
                    child.handle,
                    child.index,
                    self.state.lease_time,
                    MAX_IO,
                    FileCounts(0, 0),
                    SpaceUsage(0, 0),
                )
            else:
                root = await self._export_root(child)
                obj = await self._export_object(child, root, args.attributes)
            entries.append((cookie, name, obj))
        return entries

    def _encode_readdir(
        self,
        verifier: bytes,
        entries: list[tuple[int, bytes, Object]],
        eof: bool,
        args: a.ReaddirArgs,
    ) -> XdrWriter:
        body = XdrWriter()
        used = _READDIR_OVERHEAD
        count = 0
        complete = True
        for cookie, name, obj in entries:
            entry = XdrWriter()
            entry.boolean(True)
            entry.uhyper(cookie)
            entry.string(name)
            encode_fattr(entry, args.attributes, obj)
            encoded = entry.getvalue()
            if used + len(encoded) > args.maxcount or (
                args.dircount
                and used + _ENTRY_OVERHEAD + len(name) > args.dircount + _READDIR_OVERHEAD
                and count
            ):
                complete = False
                break
            used += len(encoded)
            count += 1
            body.raw(encoded)
        if count == 0 and entries:
            raise NFSError(Status.TOOSMALL)
        writer = XdrWriter()
        writer.fixed_opaque(verifier)
        writer.raw(body.getvalue())
        writer.boolean(False)
        writer.boolean(complete and eof)
        return writer

    # -- 18.29, 18.45: SECINFO ----

    async def secinfo(self, name: bytes, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.29: the flavours for a name (AUTH_SYS); the current handle is consumed."""
        await self.lookup(name, c)
        c.current = None
        return self._flavours()

    async def secinfo_no_name(self, style: int, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.45: the flavours for the current directory or its parent."""
        if style == SECINFO_STYLE4_PARENT:
            await self.lookupp(None, c)
        else:
            self._current(c)
        c.current = None
        return self._flavours()

    @staticmethod
    def _flavours() -> XdrWriter:
        writer = XdrWriter()
        writer.uint(1)
        writer.uint(AuthFlavor.AUTH_SYS)
        return writer

    # -- 18.16, 18.2, 18.18, 18.49: opens and delegations ----

    async def open(self, args: a.OpenArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.16: open (and perhaps create) a regular file, with a share reservation."""
        access = args.share_access & OPEN4_SHARE_ACCESS_MASK
        if not access or access & ~3 or args.share_deny & ~3:
            raise NFSError(Status.INVAL, "bad share access or deny")
        if args.owner[0] != self._session(c).client.clientid:
            raise NFS4Error(Stat4.STALE_CLIENTID, "open owner of another client")
        if args.claim == Claim.PREVIOUS:
            raise NFS4Error(Stat4.NO_GRACE, "state does not survive a restart yet")
        if args.claim not in (Claim.NULL, Claim.FH):
            raise NFSError(Status.NOTSUPP, "no delegations are granted")
        attrset: list[int] = []
        if args.claim == Claim.FH:
            if args.create:
                raise NFSError(Status.INVAL, "CLAIM_FH cannot create")
            export, attributes = await self._open_target(c)
            cinfo = None
        else:
            _check_component(args.name)
            export, directory = await self._resolve_dir(c, change=args.create)
            caller = self._caller(export, c)
            if args.create:
                created, attrset = await self._open_create(export, directory, args, caller)
                attributes, cinfo = created.node, created.directory
                fresh = not created.existed
            else:
                require(directory, caller, EXECUTE)
                attributes = await export.metadata.lookup(directory.fileid, args.name)
                cinfo = WccAttributes(directory, directory)
                fresh = False
            _check_openable(attributes)
            if not fresh:
                _require_open(export, attributes, caller, access)
        if args.claim == Claim.FH:
            _check_openable(attributes)
            _require_open(export, attributes, self._caller(export, c), access)
        key = (export.export_id, attributes.fileid)
        opened = self.state.open(args.owner, key, access, args.share_deny)
        self._set_current(c, export.handle(attributes))
        c.current_stateid = a.StateId(opened.seqid, opened.other)
        writer = XdrWriter()
        _stateid(writer, opened.seqid, opened.other)
        if cinfo is None:
            cinfo = WccAttributes(attributes, attributes)
        _change_info(writer, cinfo)
        writer.uint(OPEN4_RESULT_LOCKTYPE_POSIX)
        encode_bitmap(writer, attrset)
        writer.uint(OPEN_DELEGATE_NONE)
        return writer

    async def _open_target(self, c: CompoundState) -> tuple[Export, Attributes]:
        if self._pseudo(c) is not None:
            raise NFSError(Status.ISDIR)
        return await self._resolve(c)

    async def _open_create(
        self, export: Export, directory: Attributes, args: a.OpenArgs, caller: Credentials
    ) -> tuple[Any, list[int]]:
        """Create the file an OPEN names: UNCHECKED, GUARDED or EXCLUSIVE (with a verifier)."""
        if export.policy.read_only:
            raise NFSError(Status.ROFS)
        changes = SetAttributes()
        asked: frozenset[int] = frozenset()
        if args.attributes is not None:
            allowed = EXCLUSIVE_CREATE_ATTRS if args.how == EXCLUSIVE4_1 else SETTABLE
            changes, _ = decode_settable(args.attributes, time.time_ns(), allowed)
            asked = args.attributes.mask
        how = {EXCLUSIVE4: CreateMode.EXCLUSIVE, EXCLUSIVE4_1: CreateMode.EXCLUSIVE}.get(
            args.how, CreateMode.GUARDED if args.how == GUARDED4 else CreateMode.UNCHECKED
        )
        created = await fs.make(
            export,
            directory,
            args.name,
            caller,
            file_type=FileType.REG,
            default_mode=0o644,
            attributes=changes,
            how=how,
            verifier=args.verifier if how == CreateMode.EXCLUSIVE else b"",
        )
        if created.existed:
            if created.node.type != FileType.REG:
                _check_openable(created.node)
            asked = frozenset({Attr.SIZE}) & asked if how == CreateMode.UNCHECKED else frozenset()
        return created, sorted(asked)

    async def close(self, args: a.CloseArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.2: the open ends (with any locks its owner's lock owners hold)."""
        export, attributes = await self._resolve_file(c)
        opened = self._open_state(c, args.stateid, (export.export_id, attributes.fileid))
        self.state.close(opened)
        writer = XdrWriter()
        _stateid(writer, opened.seqid + 1, opened.other)
        return writer

    async def open_downgrade(self, args: a.DowngradeArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.18: keep less of an open's access and deny."""
        export, attributes = await self._resolve_file(c)
        opened = self._open_state(c, args.stateid, (export.export_id, attributes.fileid))
        self.state.downgrade(opened, args.share_access & OPEN4_SHARE_ACCESS_MASK, args.share_deny)
        writer = XdrWriter()
        _stateid(writer, opened.seqid, opened.other)
        return writer

    def _open_state(self, c: CompoundState, stateid: a.StateId, key: tuple[int, int]) -> OpenState:
        state = self.state.find(self._stateid_of(c, stateid), key)
        if not isinstance(state, OpenState):
            raise NFS4Error(Stat4.BAD_STATEID, "not an open stateid")
        return state

    async def delegreturn(self, stateid: a.StateId, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.6: no delegation is ever granted, so none can be returned."""
        self._current(c)
        raise NFS4Error(Stat4.BAD_STATEID, "no delegations are granted")

    async def test_stateid(self, stateids: list[a.StateId], c: CompoundState) -> XdrWriter:
        """RFC 8881 18.48: the status of each stateid."""
        writer = XdrWriter()
        writer.uint(len(stateids))
        for stateid in stateids:
            writer.uint(self.state.test(stateid))
        return writer

    async def free_stateid(self, stateid: a.StateId, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.38: forget a lock stateid that holds no locks."""
        self.state.free(self._stateid_of(c, stateid))
        return XdrWriter()

    # -- 18.22, 18.32, 18.3: READ, WRITE, COMMIT ----

    async def read(self, args: a.ReadArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.22: bytes from a regular file, under an open, a lock or no state."""
        export, attributes = await self._resolve_file(c)
        key = (export.export_id, attributes.fileid)
        self.state.check_io(self._stateid_of(c, args.stateid), key, write=False)
        data, eof = await fs.read(
            export, attributes, args.offset, min(args.count, MAX_IO), self._caller(export, c)
        )
        self.metrics.read_bytes.inc(len(data))
        writer = XdrWriter()
        writer.boolean(eof)
        writer.opaque(data)
        return writer

    async def write(self, args: a.WriteArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.32: write, durably before replying unless UNSTABLE was asked."""
        export, attributes = await self._resolve_file(c, change=True)
        key = (export.export_id, attributes.fileid)
        self.state.check_io(self._stateid_of(c, args.stateid), key, write=True)
        stable = args.stable != UNSTABLE4
        await fs.write(
            export,
            attributes,
            args.offset,
            args.data,
            stable=stable,
            caller=self._caller(export, c),
        )
        self.metrics.written_bytes.inc(len(args.data))
        writer = XdrWriter()
        writer.uint(len(args.data))
        writer.uint(FILE_SYNC4 if stable else UNSTABLE4)
        writer.fixed_opaque(self.write_verifier)
        return writer

    async def commit(self, args: tuple[int, int], c: CompoundState) -> XdrWriter:
        """RFC 8881 18.3: earlier unstable writes made durable; the write verifier."""
        export, attributes = await self._resolve_file(c)
        await fs.commit(export, attributes, self._caller(export, c))
        writer = XdrWriter()
        writer.fixed_opaque(self.write_verifier)
        return writer

    # -- 18.4, 18.25, 18.26, 18.9: CREATE, REMOVE, RENAME, LINK ----

    async def create(self, args: a.CreateArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.4: a directory, symlink, device, socket or FIFO (OPEN makes files)."""
        default_mode = _CREATE_MODES.get(args.type)  # type: ignore[call-overload]
        if default_mode is None:
            raise NFSError(Status.BADTYPE)
        _check_component(args.name)
        export, directory = await self._resolve_dir(c, change=True)
        changes, _ = decode_settable(args.attributes, time.time_ns())
        extra: dict[str, Any] = {}
        if args.type == FileType.LNK:
            if not args.link:
                raise NFSError(Status.INVAL, "an empty symlink target")
            extra["symlink_target"] = args.link
        elif args.type in (FileType.BLK, FileType.CHR):
            extra["rdev"] = args.rdev
        created = await fs.make(
            export,
            directory,
            args.name,
            self._caller(export, c),
            file_type=FileType(args.type),
            default_mode=default_mode,
            attributes=changes,
            **extra,
        )
        self._set_current(c, export.handle(created.node))
        writer = XdrWriter()
        _change_info(writer, created.directory)
        encode_bitmap(writer, sorted(args.attributes.mask))
        return writer

    async def remove(self, name: bytes, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.25: remove a name, a file's or an empty directory's."""
        _check_component(name)
        export, directory = await self._resolve_dir(c, change=True)
        caller = self._caller(export, c)
        require(directory, caller, EXECUTE)
        victim = await export.metadata.lookup(directory.fileid, name)
        removed = await fs.remove(
            export, directory, name, caller, is_directory=victim.type == FileType.DIR
        )
        writer = XdrWriter()
        _change_info(writer, removed.directory)
        return writer

    async def rename(self, args: a.RenameArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.26: the saved directory's old name becomes the current's new name."""
        if c.saved is None:
            raise NFS4Error(Stat4.NOFILEHANDLE)
        _check_component(args.old)
        _check_component(args.new)
        export, source = await self._resolve_dir(c, change=True, fh=c.saved)
        target_export, target = await self._resolve_dir(c, change=True)
        if target_export is not export:
            raise NFSError(Status.XDEV)
        renamed = await fs.rename(
            export, source, args.old, target, args.new, caller=self._caller(export, c)
        )
        writer = XdrWriter()
        _change_info(writer, renamed.source)
        _change_info(writer, renamed.target)
        return writer

    async def link(self, name: bytes, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.9: the saved file gets a new name in the current directory."""
        if c.saved is None:
            raise NFS4Error(Stat4.NOFILEHANDLE)
        _check_component(name)
        export, node = await self._resolve(c, change=True, fh=c.saved)
        link_export, directory = await self._resolve_dir(c, change=True)
        if link_export is not export:
            raise NFSError(Status.XDEV)
        linked = await fs.link(export, node, directory, name, self._caller(export, c))
        writer = XdrWriter()
        _change_info(writer, linked.directory)
        return writer

    # -- 18.10-18.12: byte-range locks ----

    async def lock(self, args: a.LockArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.10: take or change a byte-range lock; DENIED names the holder."""
        export, attributes = await self._resolve_file(c)
        key = (export.export_id, attributes.fileid)
        if args.reclaim:
            raise NFS4Error(Stat4.NO_GRACE, "locks do not survive a restart yet")
        first, last = lock_range(args.offset, args.length)
        if args.new_owner:
            opened = self._open_state(c, args.stateid, key)
            if args.owner[0] != opened.owner[0]:
                raise NFS4Error(Stat4.BAD_STATEID, "lock owner of another client")
            locks = self.state.lock_state(opened, args.owner)
        else:
            found = self.state.find(self._stateid_of(c, args.stateid), key)
            if not isinstance(found, LockState):
                raise NFS4Error(Stat4.BAD_STATEID, "not a lock stateid")
            locks = found
        if args.type in (LockType.WRITE, LockType.WRITEW) and not (
            locks.open.access & OPEN4_SHARE_ACCESS_WRITE
        ):
            raise NFS4Error(Stat4.OPENMODE, "a write lock needs an open for writing")
        if args.type in (LockType.READ, LockType.READW) and not (
            locks.open.access & OPEN4_SHARE_ACCESS_READ
        ):
            raise NFS4Error(Stat4.OPENMODE, "a read lock needs an open for reading")
        self._refuse_conflict(key, locks.owner, first, last, args.type)
        self.state.apply_lock(locks, first, last, args.type)
        c.current_stateid = a.StateId(locks.seqid, locks.other)
        writer = XdrWriter()
        _stateid(writer, locks.seqid, locks.other)
        return writer

    def _refuse_conflict(
        self, key: tuple[int, int], owner: tuple[int, bytes], first: int, last: int, kind: LockType
    ) -> None:
        denied = self.state.conflict(key, owner, first, last, kind)
        if denied is None:
            return
        body = XdrWriter()
        body.uhyper(denied.offset)
        body.uhyper(denied.length)
        body.uint(denied.type)
        body.uhyper(denied.owner[0])
        body.opaque(denied.owner[1])
        raise NFS4Error(Stat4.DENIED, "a conflicting lock", body.getvalue())

    async def lockt(self, args: a.LocktArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.11: would this lock be granted?  DENIED names a holder if not."""
        export, attributes = await self._resolve_file(c)
        first, last = lock_range(args.offset, args.length)
        self._refuse_conflict(
            (export.export_id, attributes.fileid), args.owner, first, last, args.type
        )
        return XdrWriter()

    async def locku(self, args: a.LockuArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.12: release a range of the owner's locks."""
        export, attributes = await self._resolve_file(c)
        found = self.state.find(
            self._stateid_of(c, args.stateid), (export.export_id, attributes.fileid)
        )
        if not isinstance(found, LockState):
            raise NFS4Error(Stat4.BAD_STATEID, "not a lock stateid")
        first, last = lock_range(args.offset, args.length)
        self.state.apply_lock(found, first, last, None)
        writer = XdrWriter()
        _stateid(writer, found.seqid, found.other)
        return writer


_OPS = frozenset(int(op) for op in Op)


def _status_name(status: int) -> str:
    for kind in (Status, Stat4):
        try:
            return kind(status).name
        except ValueError:
            continue
    return str(status)


def _check_component(name: bytes) -> None:
    """A name to look up or make: UTF-8 is not required, but these never name a file."""
    if not name:
        raise NFSError(Status.INVAL, "empty name")
    if len(name) > fs.NAME_MAX:
        raise NFSError(Status.NAMETOOLONG)
    if b"/" in name or b"\0" in name or name in (b".", b".."):
        raise NFS4Error(Stat4.BADNAME, f"{name!r} cannot name a file")


def _check_openable(attributes: Attributes) -> None:
    """OPEN opens regular files only (RFC 8881 section 18.16.3)."""
    if attributes.type == FileType.DIR:
        raise NFSError(Status.ISDIR)
    if attributes.type == FileType.LNK:
        raise NFS4Error(Stat4.SYMLINK)
    if attributes.type != FileType.REG:
        raise NFS4Error(Stat4.WRONG_TYPE)


def _require_open(export: Export, attributes: Attributes, caller: Credentials, access: int) -> None:
    """The permission an open for *access* needs (a file just created needs none)."""
    if access & OPEN4_SHARE_ACCESS_WRITE:
        if export.policy.read_only:
            raise NFSError(Status.ROFS)
        require(attributes, caller, WRITE)
    if access & OPEN4_SHARE_ACCESS_READ:
        require(attributes, caller, READ)
