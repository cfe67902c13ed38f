"""The NFS version 3 program (RFC 1813 section 3): one handler per procedure.

Each handler resolves handles, asks the stores, and encodes the ``*3resok``
body.  Failures are raised as :class:`~dittofs.errors.NFSError`; a single
wrapper (:meth:`NFSv3Program._procedure`) turns them into the status and the
``*3resfail`` body the RFC gives that procedure, filling the attributes it
can still learn.  Store failures that are not ``NFSError`` are logged and
answered ``NFS3ERR_IO``, so the client sees an error, never a dropped call.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import attrs
from twisted.logger import Logger

from dittofs import filesystem as fs
from dittofs import log as dittofs_log
from dittofs.access import (
    EXECUTE,
    READ,
    Access,
    allowed_access,
    require,
)
from dittofs.errors import NFSError
from dittofs.exports import Export, ExportTable
from dittofs.metrics import Metrics
from dittofs.model import Attributes, SetAttributes, WccAttributes
from dittofs.nfs3 import args as a
from dittofs.nfs3.const import (
    NFS_PROGRAM,
    NFS_V3,
    FsInfoProperties,
    Proc,
    StableHow,
)
from dittofs.nfs3.types import (
    encode_fattr3,
    encode_post_op_attr,
    encode_post_op_fh3,
    encode_wcc_data,
)
from dittofs.rpc.dispatch import NULL_PROCEDURE, CallContext, Procedure
from dittofs.rpc.xdr import XdrWriter
from dittofs.vocabulary import CreateMode, FileType, Status

log = Logger(observer=dittofs_log.observer)

#: Largest READ/WRITE transfer (FSINFO rtmax/wtmax).
MAX_IO = a.MAX_IO
#: Preferred READDIR size (FSINFO dtpref).
DIR_PREFERRED = 64 * 1024
_ENTRY_OVERHEAD = 4 + 8 + 4 + 8  # value-follows, fileid, name length, cookie
_PLUS_OVERHEAD = 4 + 84 + 4 + 4 + 64  # post_op_attr with fattr3, post_op_fh3 with handle
_READDIR_OVERHEAD = 4 + 4 + 84 + 8 + 4 + 4  # status, dir attrs, verifier, list end, eof
_DOT_COOKIE = 1
_DOTDOT_COOKIE = 2
_STORE_COOKIE_BASE = 2

#: Procedures whose retransmission must get the first reply, not run again (a second
#: REMOVE would answer NOENT, a second GUARDED CREATE EXIST).  WRITE and COMMIT are
#: idempotent: running them again gives the same result.
NON_IDEMPOTENT = frozenset(
    {Proc.SETATTR, Proc.CREATE, Proc.MKDIR, Proc.SYMLINK, Proc.MKNOD}
    | {Proc.REMOVE, Proc.RMDIR, Proc.RENAME, Proc.LINK}
)

FailShape = tuple[tuple[Literal["attr", "wcc"], Callable[[Any], bytes]], ...]


class NFSv3Program:
    """RPC program 100003 version 3, serving the exports of an :class:`ExportTable`."""

    number = NFS_PROGRAM
    low_version = NFS_V3
    high_version = NFS_V3

    name = "nfs"

    def __init__(
        self,
        exports: ExportTable,
        write_verifier: bytes | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.exports = exports
        self.metrics = metrics if metrics is not None else Metrics()
        #: Changes on every start, so clients know to resend uncommitted writes.
        self.write_verifier = write_verifier or os.urandom(8)
        self._table = self._build_table()

    def procedures(self, version: int) -> Mapping[int, Procedure]:
        """See :class:`~dittofs.rpc.dispatch.RpcProgram`."""
        return self._table

    def _build_table(self) -> dict[int, Procedure]:
        fh: Callable[[Any], bytes] = lambda args: args.fh  # noqa: E731
        dir_: Callable[[Any], bytes] = lambda args: args.dir  # noqa: E731
        where: Callable[[Any], bytes] = lambda args: args.where.dir  # noqa: E731
        entries: list[
            tuple[Proc, Callable[..., Any], Callable[..., Awaitable[XdrWriter]], FailShape]
        ]
        entries = [
            (Proc.GETATTR, a.decode_handle_args, self.getattr, ()),
            (Proc.SETATTR, a.decode_setattr, self.setattr, (("wcc", fh),)),
            (Proc.LOOKUP, a.decode_diropargs, self.lookup, (("attr", dir_),)),
            (Proc.ACCESS, a.decode_access, self.access, (("attr", fh),)),
            (Proc.READLINK, a.decode_handle_args, self.readlink, (("attr", fh),)),
            (Proc.READ, a.decode_read, self.read, (("attr", fh),)),
            (Proc.WRITE, a.decode_write, self.write, (("wcc", fh),)),
            (Proc.CREATE, a.decode_create, self.create, (("wcc", where),)),
            (Proc.MKDIR, a.decode_mkdir, self.mkdir, (("wcc", where),)),
            (Proc.SYMLINK, a.decode_symlink, self.symlink, (("wcc", where),)),
            (Proc.MKNOD, a.decode_mknod, self.mknod, (("wcc", where),)),
            (Proc.REMOVE, a.decode_diropargs, self.remove, (("wcc", dir_),)),
            (Proc.RMDIR, a.decode_diropargs, self.rmdir, (("wcc", dir_),)),
            (
                Proc.RENAME,
                a.decode_rename,
                self.rename,
                (("wcc", lambda args: args.source.dir), ("wcc", lambda args: args.target.dir)),
            ),
            (
                Proc.LINK,
                a.decode_link,
                self.link,
                (("attr", fh), ("wcc", lambda args: args.link.dir)),
            ),
            (Proc.READDIR, a.decode_readdir, self.readdir, (("attr", dir_),)),
            (Proc.READDIRPLUS, a.decode_readdirplus, self.readdirplus, (("attr", dir_),)),
            (Proc.FSSTAT, a.decode_handle_args, self.fsstat, (("attr", fh),)),
            (Proc.FSINFO, a.decode_handle_args, self.fsinfo, (("attr", fh),)),
            (Proc.PATHCONF, a.decode_handle_args, self.pathconf, (("attr", fh),)),
            (Proc.COMMIT, a.decode_read, self.commit, (("wcc", fh),)),
        ]
        table = {int(Proc.NULL): NULL_PROCEDURE}
        for number, decode, handler, fail_shape in entries:
            procedure = self._procedure(number, decode, handler, fail_shape)
            if number in NON_IDEMPOTENT:
                procedure = attrs.evolve(procedure, replayable=True)
            table[int(number)] = procedure
        return table

    def _procedure(
        self,
        number: Proc,
        decode: Callable[..., Any],
        handler: Callable[[Any, CallContext], Awaitable[XdrWriter]],
        fail_shape: FailShape,
    ) -> Procedure:
        async def run(args: Any, context: CallContext) -> XdrWriter:
            try:
                reply = await handler(args, context)
            except NFSError as error:
                status = error.status
                if status in (Status.IO, Status.SERVERFAULT):
                    log.error(
                        "{procedure} failed: {error}", procedure=number.name, error=str(error)
                    )
                elif status is Status.JUKEBOX:
                    # A store that is away or busy: the client retries (Linux after
                    # 5 s), so the call stalls rather than fails; say why it stalls.
                    log.warn(
                        "{procedure} answered JUKEBOX, the client will retry: {error}",
                        procedure=number.name,
                        error=str(error),
                    )
            except Exception:
                log.failure("{procedure} failed in a store", procedure=number.name)
                status = Status.IO
            else:
                return reply
            return await self._failure(status, args, fail_shape, context)

        return Procedure(number.name, decode, run, status=Status)

    async def _failure(
        self, status: Status, args: Any, fail_shape: FailShape, context: CallContext
    ) -> XdrWriter:
        writer = XdrWriter()
        writer.uint(status)
        for kind, handle_of in fail_shape:
            attributes, fsid = await self._current_attributes(handle_of(args), context)
            if kind == "attr":
                encode_post_op_attr(writer, attributes, fsid)
            else:
                wcc = None if attributes is None else WccAttributes(None, attributes)
                encode_wcc_data(writer, wcc, fsid)
        return writer

    async def _current_attributes(
        self, fh: bytes, context: CallContext
    ) -> tuple[Attributes | None, int]:
        try:
            export, attributes = await self._resolve(fh, context)
        except Exception:
            return None, 0
        return attributes, export.fsid

    async def _resolve(
        self, fh: bytes, context: CallContext, change: bool = False
    ) -> tuple[Export, Attributes]:
        """Map a file handle to its export and current attributes (:func:`filesystem.resolve`)."""
        return await fs.resolve(self.exports, fh, context.client_host, context.client_port, change)

    async def _resolve_dir(
        self, fh: bytes, context: CallContext, change: bool = False
    ) -> tuple[Export, Attributes]:
        export, attributes = await self._resolve(fh, context, change)
        if attributes.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        return export, attributes

    async def _resolve_file(
        self, fh: bytes, context: CallContext, change: bool = False
    ) -> tuple[Export, Attributes]:
        """Resolve a handle that READ/WRITE/COMMIT may use: a regular file."""
        export, attributes = await self._resolve(fh, context, change)
        if attributes.type == FileType.DIR:
            raise NFSError(Status.ISDIR)
        if attributes.type != FileType.REG:
            raise NFSError(Status.INVAL, "not a regular file")
        return export, attributes

    @staticmethod
    def _ok() -> XdrWriter:
        writer = XdrWriter()
        writer.uint(Status.OK)
        return writer

    # -- 3.3.1 GETATTR -------------------------------------------------------------

    async def getattr(self, args: a.HandleArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.1: the attributes of a file system object (no permission needed)."""
        export, attributes = await self._resolve(args.fh, context)
        writer = self._ok()
        encode_fattr3(writer, attributes, export.fsid)
        return writer

    # -- 3.3.2 SETATTR -------------------------------------------------------------

    async def setattr(self, args: a.SetAttrArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.2: change attributes, optionally guarded by the ctime the client saw."""
        export, attributes = await self._resolve(args.fh, context, change=True)
        caller = export.policy.identity(context.credentials)
        wcc = await fs.setattr(
            export,
            attributes,
            args.attributes,
            client_times=args.client_times,
            caller=caller,
            guard_ctime=args.guard_ctime,
        )
        writer = self._ok()
        encode_wcc_data(writer, wcc, export.fsid)
        return writer

    # -- 3.3.3 LOOKUP --------------------------------------------------------------

    async def lookup(self, args: a.DirOpArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.3: find a name in a directory (search permission); ``.`` and ``..``."""
        export, directory = await self._resolve_dir(args.dir, context)
        require(directory, export.policy.identity(context.credentials), EXECUTE)
        if args.name == b".":
            found = directory
        elif args.name == b"..":
            found = await export.metadata.lookup(directory.fileid, b"..")
        else:
            fs.check_name(args.name)
            found = await export.metadata.lookup(directory.fileid, args.name)
        writer = self._ok()
        writer.opaque(export.handle(found))
        encode_post_op_attr(writer, found, export.fsid)
        encode_post_op_attr(writer, directory, export.fsid)
        return writer

    # -- 3.3.4 ACCESS --------------------------------------------------------------

    async def access(self, args: a.AccessArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.4: which of the requested rights the caller holds."""
        export, attributes = await self._resolve(args.fh, context)
        granted = allowed_access(
            attributes, export.policy.identity(context.credentials), args.access
        )
        if export.policy.read_only:
            granted &= ~(Access.MODIFY | Access.EXTEND | Access.DELETE)
        writer = self._ok()
        encode_post_op_attr(writer, attributes, export.fsid)
        writer.uint(granted)
        return writer

    # -- 3.3.5 READLINK ------------------------------------------------------------

    async def readlink(self, args: a.HandleArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.5: the target of a symbolic link (no permission needed)."""
        export, attributes = await self._resolve(args.fh, context)
        target: bytes = await export.metadata.readlink(attributes.fileid)
        writer = self._ok()
        encode_post_op_attr(writer, attributes, export.fsid)
        writer.string(target)
        return writer

    # -- 3.3.6 READ ------------------------------------------------------------------

    async def read(self, args: a.ReadArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.6: bytes from a regular file, with EOF judged by the file's size."""
        export, attributes = await self._resolve_file(args.fh, context)
        caller = export.policy.identity(context.credentials)
        count = min(args.count, MAX_IO)
        data, eof = await fs.read_lent(export, attributes, args.offset, count, caller)
        self.metrics.read_bytes.inc(len(data))
        writer = self._ok()
        encode_post_op_attr(writer, attributes, export.fsid)
        writer.uint(len(data))
        writer.boolean(eof)
        writer.opaque(data)
        return writer

    # -- 3.3.7 WRITE -----------------------------------------------------------------

    async def write(self, args: a.WriteArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.7: write data, durably before replying unless UNSTABLE was asked.

        The reply's ``committed`` is exactly what was done: FILE_SYNC for a
        stable request, UNSTABLE otherwise, never more than the truth.
        """
        export, attributes = await self._resolve_file(args.fh, context, change=True)
        caller = export.policy.identity(context.credentials)
        if args.count > len(args.data):
            raise NFSError(Status.INVAL, "count exceeds the data sent")
        data = args.data[: args.count]
        stable = args.stable != StableHow.UNSTABLE
        wcc = await fs.write(export, attributes, args.offset, data, stable=stable, caller=caller)
        self.metrics.written_bytes.inc(len(data))
        writer = self._ok()
        encode_wcc_data(writer, wcc, export.fsid)
        writer.uint(len(data))
        writer.uint(StableHow.FILE_SYNC if stable else StableHow.UNSTABLE)
        writer.fixed_opaque(self.write_verifier)
        return writer

    # -- 3.3.8 CREATE, 3.3.9 MKDIR, 3.3.10 SYMLINK, 3.3.11 MKNOD -------------------------

    async def _make(
        self,
        where: a.DirOpArgs,
        context: CallContext,
        file_type: FileType,
        default_mode: int,
        attributes: SetAttributes,
        **extra: Any,
    ) -> XdrWriter:
        """Create a node of any type (:func:`filesystem.make`); the shared ``*3resok`` shape."""
        export, directory = await self._resolve_dir(where.dir, context, change=True)
        caller = export.policy.identity(context.credentials)
        created = await fs.make(
            export,
            directory,
            where.name,
            caller,
            file_type=file_type,
            default_mode=default_mode,
            attributes=attributes,
            **extra,
        )
        writer = self._ok()
        encode_post_op_fh3(writer, export.handle(created.node))
        encode_post_op_attr(writer, created.node, export.fsid)
        encode_wcc_data(writer, created.directory, export.fsid)
        return writer

    async def create(self, args: a.CreateArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.8: create a regular file, UNCHECKED, GUARDED or EXCLUSIVE.

        For EXCLUSIVE the verifier is stored with the file, so a retransmitted
        create finds it and succeeds instead of failing with EXIST.
        """
        return await self._make(
            args.where,
            context,
            FileType.REG,
            0o644,
            args.attributes,
            how=args.mode,
            verifier=args.verifier if args.mode == CreateMode.EXCLUSIVE else b"",
        )

    async def mkdir(self, args: a.MkdirArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.9: create a directory."""
        return await self._make(args.where, context, FileType.DIR, 0o755, args.attributes)

    async def symlink(self, args: a.SymlinkArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.10: create a symbolic link holding the given target."""
        return await self._make(
            args.where,
            context,
            FileType.LNK,
            0o777,
            args.attributes,
            symlink_target=args.target,
        )

    async def mknod(self, args: a.MknodArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.11: create a device, socket or FIFO; other types are BADTYPE."""
        if args.type not in (FileType.CHR, FileType.BLK, FileType.SOCK, FileType.FIFO):
            raise NFSError(Status.BADTYPE)
        return await self._make(
            args.where, context, args.type, 0o644, args.attributes, rdev=args.rdev
        )

    # -- 3.3.12 REMOVE, 3.3.13 RMDIR -----------------------------------------------------

    async def _remove(
        self, args: a.DirOpArgs, context: CallContext, is_directory: bool
    ) -> XdrWriter:
        export, directory = await self._resolve_dir(args.dir, context, change=True)
        caller = export.policy.identity(context.credentials)
        removed = await fs.remove(export, directory, args.name, caller, is_directory)
        writer = self._ok()
        encode_wcc_data(writer, removed.directory, export.fsid)
        return writer

    async def remove(self, args: a.DirOpArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.12: remove a non-directory entry; content goes with the last link."""
        return await self._remove(args, context, is_directory=False)

    async def rmdir(self, args: a.DirOpArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.13: remove an empty directory."""
        return await self._remove(args, context, is_directory=True)

    # -- 3.3.14 RENAME -----------------------------------------------------------------

    async def rename(self, args: a.RenameArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.14: atomically rename, replacing a compatible target."""
        export, source = await self._resolve_dir(args.source.dir, context, change=True)
        target_export, target = await self._resolve_dir(args.target.dir, context, change=True)
        if target_export is not export:
            raise NFSError(Status.XDEV)
        caller = export.policy.identity(context.credentials)
        renamed = await fs.rename(
            export, source, args.source.name, target, args.target.name, caller=caller
        )
        writer = self._ok()
        encode_wcc_data(writer, renamed.source, export.fsid)
        encode_wcc_data(writer, renamed.target, export.fsid)
        return writer

    # -- 3.3.15 LINK -------------------------------------------------------------------

    async def link(self, args: a.LinkArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.15: add a hard link to a non-directory."""
        export, node = await self._resolve(args.fh, context, change=True)
        link_export, directory = await self._resolve_dir(args.link.dir, context, change=True)
        if link_export is not export:
            raise NFSError(Status.XDEV)
        caller = export.policy.identity(context.credentials)
        linked = await fs.link(export, node, directory, args.link.name, caller)
        writer = self._ok()
        encode_post_op_attr(writer, linked.node, export.fsid)
        encode_wcc_data(writer, linked.directory, export.fsid)
        return writer

    # -- 3.3.16 READDIR, 3.3.17 READDIRPLUS ---------------------------------------------

    async def readdir(self, args: a.ReaddirArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.16: names and file ids, paged by cookie within ``count`` bytes."""
        return await self._list(args, context, plus=False)

    async def readdirplus(self, args: a.ReaddirArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.17: like READDIR, with each entry's attributes and handle.

        ``dircount`` bounds the directory information (ids, names, cookies)
        and ``maxcount`` the whole reply.
        """
        return await self._list(args, context, plus=True)

    async def _list(self, args: a.ReaddirArgs, context: CallContext, plus: bool) -> XdrWriter:
        """Encode one page of a listing: ``.`` (cookie 1), ``..`` (2), then store entries.

        NFS cookie *n* > 2 is the store's cookie *n* - 2, so paging resumes in
        the store by bisection and never rescans the directory.
        """
        export, directory = await self._resolve_dir(args.dir, context)
        require(directory, export.policy.identity(context.credentials), READ)
        verifier = fs.cookie_verifier(directory)
        if args.cookie and args.verifier not in (verifier, bytes(8)):
            raise NFSError(Status.BAD_COOKIE)
        maxcount = min(args.maxcount, MAX_IO)
        dir_budget = args.dircount if args.dircount is not None else maxcount
        per_entry = _ENTRY_OVERHEAD + 8 + (_PLUS_OVERHEAD if plus else 0)
        wanted = max(1, min(maxcount, dir_budget) // per_entry + 1)

        candidates: list[tuple[int, bytes, Attributes | None, int]] = []
        if args.cookie < _DOT_COOKIE:
            candidates.append((_DOT_COOKIE, b".", directory, directory.fileid))
        if args.cookie < _DOTDOT_COOKIE:
            parent = await export.metadata.lookup(directory.fileid, b"..")
            candidates.append((_DOTDOT_COOKIE, b"..", parent, parent.fileid))
        store_cookie = max(args.cookie - _STORE_COOKIE_BASE, 0)
        page = await export.metadata.readdir(directory.fileid, store_cookie, wanted, plus)
        for entry in page.entries:
            candidates.append(
                (entry.cookie + _STORE_COOKIE_BASE, entry.name, entry.attributes, entry.fileid)
            )

        body = XdrWriter()
        used, dir_used, count = _READDIR_OVERHEAD, 0, 0
        complete = True
        for cookie, name, attributes, fileid in candidates:
            padded = (len(name) + 3) & ~3
            size = _ENTRY_OVERHEAD + padded + (_PLUS_OVERHEAD if plus else 0)
            dir_size = _ENTRY_OVERHEAD + padded
            if used + size > maxcount or dir_used + dir_size > dir_budget:
                complete = False
                break
            used += size
            dir_used += dir_size
            count += 1
            body.boolean(True)
            body.uhyper(fileid)
            body.string(name)
            body.uhyper(cookie)
            if plus:
                encode_post_op_attr(body, attributes, export.fsid)
                handle = export.handle(attributes) if attributes is not None else None
                encode_post_op_fh3(body, handle)
        if count == 0 and candidates:
            raise NFSError(Status.TOOSMALL)
        writer = self._ok()
        encode_post_op_attr(writer, directory, export.fsid)
        writer.fixed_opaque(verifier)
        writer.raw(body.getvalue())
        writer.boolean(False)
        writer.boolean(complete and page.eof)
        return writer

    # -- 3.3.18 FSSTAT, 3.3.19 FSINFO, 3.3.20 PATHCONF -----------------------------------

    async def fsstat(self, args: a.HandleArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.18: space and file counts, from the content and metadata stores."""
        export, attributes = await self._resolve(args.fh, context)
        space = await export.content.space()
        counts = await export.metadata.file_counts()
        writer = self._ok()
        encode_post_op_attr(writer, attributes, export.fsid)
        writer.uhyper(space.total_bytes)
        writer.uhyper(space.free_bytes)
        writer.uhyper(space.free_bytes)
        writer.uhyper(counts.files + counts.free_files)
        writer.uhyper(counts.free_files)
        writer.uhyper(counts.free_files)
        writer.uint(0)  # invarsec: the figures may change at any moment
        return writer

    async def fsinfo(self, args: a.HandleArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.19: transfer sizes and capabilities (1 MiB reads and writes)."""
        export, attributes = await self._resolve(args.fh, context)
        writer = self._ok()
        encode_post_op_attr(writer, attributes, export.fsid)
        writer.uint(MAX_IO)  # rtmax
        writer.uint(MAX_IO)  # rtpref
        writer.uint(4096)  # rtmult
        writer.uint(MAX_IO)  # wtmax
        writer.uint(MAX_IO)  # wtpref
        writer.uint(4096)  # wtmult
        writer.uint(DIR_PREFERRED)  # dtpref
        writer.uhyper(fs.MAX_FILE_SIZE)
        writer.uint(0)  # time_delta: nanosecond timestamps
        writer.uint(1)
        writer.uint(
            FsInfoProperties.LINK
            | FsInfoProperties.SYMLINK
            | FsInfoProperties.HOMOGENEOUS
            | FsInfoProperties.CANSETTIME
        )
        return writer

    async def pathconf(self, args: a.HandleArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.20: POSIX limits: 255-byte names, no truncation, case-preserving."""
        export, attributes = await self._resolve(args.fh, context)
        writer = self._ok()
        encode_post_op_attr(writer, attributes, export.fsid)
        writer.uint(0xFFFFFFFF)  # linkmax
        writer.uint(fs.NAME_MAX)
        writer.boolean(True)  # no_trunc
        writer.boolean(True)  # chown_restricted
        writer.boolean(False)  # case_insensitive
        writer.boolean(True)  # case_preserving
        return writer

    # -- 3.3.21 COMMIT -----------------------------------------------------------------

    async def commit(self, args: a.ReadArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.21: make earlier unstable writes durable, then return the verifier.

        The whole file is flushed whatever range is named; that is allowed
        and keeps every content store's job simple.
        """
        export, attributes = await self._resolve_file(args.fh, context)
        await fs.commit(export, attributes, export.policy.identity(context.credentials))
        writer = self._ok()
        encode_wcc_data(writer, WccAttributes(attributes, attributes), export.fsid)
        writer.fixed_opaque(self.write_verifier)
        return writer
