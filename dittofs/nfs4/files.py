"""NFSv4.1 operations on file handles, names, attributes and data (RFC 8881 section 18).

The operations that need no open or lock state, over the same export table,
stores and POSIX rules (:mod:`dittofs.filesystem`) as NFSv3.  The current
handle is either a pseudo directory (:mod:`dittofs.nfs4.pseudo`) or a v3
handle of an export's file.  :class:`~dittofs.nfs4.opens.StateOperations`
adds opens and locks, and :class:`~dittofs.nfs4.service.NFSv41Program` the
sessions and the COMPOUND itself.
"""

from __future__ import annotations

import time
from typing import Any

from dittofs import filesystem as fs
from dittofs.access import EXECUTE, READ, Access, allowed_access, require
from dittofs.errors import NFSError
from dittofs.exports import Export, ExportTable
from dittofs.metrics import Metrics
from dittofs.model import Attributes, FileCounts, SpaceUsage, WccAttributes
from dittofs.nfs4 import args as a
from dittofs.nfs4.compound import CompoundState
from dittofs.nfs4.const import (
    FILE_SYNC4,
    SECINFO_STYLE4_PARENT,
    UNSTABLE4,
    Attr,
    Stat4,
)
from dittofs.nfs4.errors import NFS4Error
from dittofs.nfs4.fattr import (
    NEEDS_COUNTS,
    NEEDS_SPACE,
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
    Session,
    StateTable,
)
from dittofs.policy import FLAVOURS
from dittofs.rpc.message import Credentials
from dittofs.rpc.xdr import XdrWriter
from dittofs.vocabulary import FileType, Status

#: Largest READ and WRITE (``maxread``/``maxwrite``), as for NFSv3.
MAX_IO = 1024 * 1024
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


def encode_stateid(writer: XdrWriter, seqid: int, other: bytes) -> None:
    writer.uint(seqid)
    writer.fixed_opaque(other)


def encode_change_info(writer: XdrWriter, wcc: WccAttributes) -> None:
    """``change_info4`` from a change's before and after attributes."""
    writer.boolean(wcc.before is not None)
    writer.uhyper(wcc.before.ctime if wcc.before is not None else 0)
    writer.uhyper(wcc.after.ctime)


class FileOperations:
    """The state-free operations, and the helpers every operation shares."""

    exports: ExportTable
    metrics: Metrics
    write_verifier: bytes
    pseudo: PseudoFS
    state: StateTable

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

    def _clientid(self, c: CompoundState) -> int:
        """The client of the COMPOUND's session: the only one whose stateids it may use."""
        return self._session(c).client.clientid

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
        check_component(name)
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
            self.state.check_io(
                self._stateid_of(c, args.stateid), key, write=True, clientid=self._clientid(c)
            )
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
        verifier = fs.cookie_verifier(directory)
        if args.cookie and args.verifier not in (verifier, bytes(8)):
            raise NFS4Error(Stat4.NOT_SAME, "a cookie verifier of another directory")
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
        """SECINFO4resok: the flavours MNT offers too, none of them RPCSEC_GSS."""
        writer = XdrWriter()
        writer.array(FLAVOURS, XdrWriter.uint)
        return writer

    # -- 18.22, 18.32, 18.3: READ, WRITE, COMMIT ----

    async def read(self, args: a.ReadArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.22: bytes from a regular file, under an open, a lock or no state."""
        export, attributes = await self._resolve_file(c)
        key = (export.export_id, attributes.fileid)
        self.state.check_io(
            self._stateid_of(c, args.stateid), key, write=False, clientid=self._clientid(c)
        )
        # A reply the slot keeps must outlive the call, so only one it does not keep
        # (the Linux client's READs) may send its data from the file (fs.read_lent).
        read = fs.read if c.kept else fs.read_lent
        count, caller = min(args.count, MAX_IO), self._caller(export, c)
        data, eof = await read(export, attributes, args.offset, count, caller)
        self.metrics.read_bytes.inc(len(data))
        writer = XdrWriter()
        writer.boolean(eof)
        writer.opaque(data)
        return writer

    async def write(self, args: a.WriteArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.32: write, durably before replying unless UNSTABLE was asked."""
        export, attributes = await self._resolve_file(c, change=True)
        key = (export.export_id, attributes.fileid)
        self.state.check_io(
            self._stateid_of(c, args.stateid), key, write=True, clientid=self._clientid(c)
        )
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
        check_component(args.name)
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
        encode_change_info(writer, created.directory)
        encode_bitmap(writer, sorted(args.attributes.mask))
        return writer

    async def remove(self, name: bytes, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.25: remove a name, a file's or an empty directory's."""
        check_component(name)
        export, directory = await self._resolve_dir(c, change=True)
        caller = self._caller(export, c)
        require(directory, caller, EXECUTE)
        victim = await export.metadata.lookup(directory.fileid, name)
        removed = await fs.remove(
            export, directory, name, caller, is_directory=victim.type == FileType.DIR
        )
        writer = XdrWriter()
        encode_change_info(writer, removed.directory)
        return writer

    async def rename(self, args: a.RenameArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.26: the saved directory's old name becomes the current's new name."""
        if c.saved is None:
            raise NFS4Error(Stat4.NOFILEHANDLE)
        check_component(args.old)
        check_component(args.new)
        export, source = await self._resolve_dir(c, change=True, fh=c.saved)
        target_export, target = await self._resolve_dir(c, change=True)
        if target_export is not export:
            raise NFSError(Status.XDEV)
        renamed = await fs.rename(
            export, source, args.old, target, args.new, caller=self._caller(export, c)
        )
        writer = XdrWriter()
        encode_change_info(writer, renamed.source)
        encode_change_info(writer, renamed.target)
        return writer

    async def link(self, name: bytes, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.9: the saved file gets a new name in the current directory."""
        if c.saved is None:
            raise NFS4Error(Stat4.NOFILEHANDLE)
        check_component(name)
        export, node = await self._resolve(c, change=True, fh=c.saved)
        link_export, directory = await self._resolve_dir(c, change=True)
        if link_export is not export:
            raise NFSError(Status.XDEV)
        linked = await fs.link(export, node, directory, name, self._caller(export, c))
        writer = XdrWriter()
        encode_change_info(writer, linked.directory)
        return writer


def check_component(name: bytes) -> None:
    """A name to look up or make: UTF-8 is not required, but these never name a file."""
    if not name:
        raise NFSError(Status.INVAL, "empty name")
    if len(name) > fs.NAME_MAX:
        raise NFSError(Status.NAMETOOLONG)
    if b"/" in name or b"\0" in name or name in (b".", b".."):
        raise NFS4Error(Stat4.BADNAME, f"{name!r} cannot name a file")
