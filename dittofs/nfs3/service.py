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
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import attrs
from twisted.logger import Logger

from dittofs import log as dittofs_log
from dittofs.errors import NFSError
from dittofs.exports import Export, ExportTable, release_orphan
from dittofs.metrics import Metrics
from dittofs.model import Attributes, NewNode, Renamed, SetAttributes, WccAttributes
from dittofs.nfs3 import args as a
from dittofs.nfs3.access import (
    EXECUTE,
    READ,
    WRITE,
    allowed_access,
    caller_ids,
    check_setattr,
    in_group,
    is_root,
    mode_after_write,
    require,
    require_readable,
    require_sticky,
)
from dittofs.nfs3.const import (
    NAME_MAX,
    NFS_PROGRAM,
    NFS_V3,
    Access,
    FsInfoProperties,
    Proc,
    StableHow,
)
from dittofs.nfs3.handle import FileHandle
from dittofs.nfs3.types import (
    encode_fattr3,
    encode_post_op_attr,
    encode_post_op_fh3,
    encode_wcc_data,
)
from dittofs.rpc.dispatch import NULL_PROCEDURE, CallContext, Procedure
from dittofs.rpc.message import Credentials
from dittofs.rpc.xdr import XdrWriter
from dittofs.vocabulary import CreateMode, FileType, Status

log = Logger(observer=dittofs_log.observer)

#: Largest READ/WRITE transfer (FSINFO rtmax/wtmax).
MAX_IO = a.MAX_IO
#: Preferred READDIR size (FSINFO dtpref).
DIR_PREFERRED = 64 * 1024
MAX_FILE_SIZE = 2**63 - 1

_SETGID = 0o2000
_STICKY = 0o1000
_GROUP_EXECUTE = 0o010
#: RENAME errors that Linux gives only after its loop checks (INVAL, NOTEMPTY).
_OUTRANKED_BY_LOOPS = frozenset({Status.ACCES, Status.PERM, Status.ISDIR, Status.NOTDIR})
#: How far up the tree a walk towards the root goes before giving up.
_MAX_DEPTH = 4096
#: What mkdir(2) keeps of the mode asked for: permissions and sticky, never setuid or setgid.
_DIRECTORY_MODE_BITS = 0o1777
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


def check_size(attributes: SetAttributes) -> None:
    """A size past FSINFO's maxfilesize is FBIG (and could not be reported in fattr3)."""
    if attributes.size is not None and attributes.size > MAX_FILE_SIZE:
        raise NFSError(Status.FBIG)


def check_name(name: bytes) -> None:
    """Reject names no file may have (RFC 1813 section 3.3.8 and friends)."""
    if not name:
        raise NFSError(Status.INVAL, "empty name")
    if len(name) > NAME_MAX:
        raise NFSError(Status.NAMETOOLONG)
    if b"/" in name or b"\0" in name:
        raise NFSError(Status.INVAL, "name contains '/' or NUL")


def check_new_name(name: bytes) -> None:
    """Names for new entries: also not ``.`` or ``..``, which always exist."""
    check_name(name)
    if name in (b".", b".."):
        raise NFSError(Status.EXIST)


def check_existing_name(name: bytes) -> None:
    """Names of entries to remove or rename: ``.`` and ``..`` are not theirs to change."""
    check_name(name)
    if name in (b".", b".."):
        raise NFSError(Status.INVAL, "cannot remove or rename '.' or '..'")


def _cookie_verifier(directory: Attributes) -> bytes:
    """Our cookies never go stale, so a directory's verifier is fixed for its lifetime."""
    return struct.pack(">II", directory.generation, directory.fileid & 0xFFFFFFFF)


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
        """Map a file handle to its export and current attributes.

        BADHANDLE for a handle we never issued, STALE for a file that is gone,
        ACCES for a client the export does not admit (checked on every call,
        so a leaked handle is useless elsewhere), ROFS for a change to a
        read-only export.
        """
        handle = FileHandle.decode(fh)
        export = self.exports.by_handle(handle)
        if not export.policy.admits(context.client_host, context.client_port):
            raise NFSError(Status.ACCES, f"{context.client_host} may not use {export.path!r}")
        if change and export.policy.read_only:
            raise NFSError(Status.ROFS)
        attributes: Attributes = await export.metadata.getattr(handle.fileid)
        if attributes.generation != handle.generation:
            raise NFSError(Status.STALE, "generation mismatch")
        return export, attributes

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

    async def _delete_content(self, export: Export, fileid: int) -> None:
        try:
            await export.content.delete(fileid)
        except Exception:
            log.failure("Could not delete the content of file {fileid}", fileid=fileid)

    async def _forget_content(self, export: Export, orphan: int | None) -> None:
        """Delete the content of a file whose last link is gone; the call already succeeded.

        A failure is only logged: the orphan stays pending in the metadata
        store and is reaped the next time the stores open.
        """
        if orphan is None:
            return
        try:
            await release_orphan(export, orphan)
        except Exception:
            log.failure("Could not delete the content of file {fileid}", fileid=orphan)

    async def _require_new_entry(
        self, export: Export, directory: Attributes, name: bytes, caller: Credentials
    ) -> None:
        """May *caller* add *name* to *directory*?  In POSIX's order: a name that
        exists is EEXIST before a missing write permission is EACCES (the kernel
        looks the name up before ``may_create``), for anyone who may search."""
        require(directory, caller, EXECUTE)
        check_new_name(name)
        try:
            require(directory, caller, WRITE)
        except NFSError:
            await self._refuse_existing(export, directory, name)
            raise

    async def _refuse_existing(self, export: Export, directory: Attributes, name: bytes) -> None:
        """Raise EXIST if *name* is in *directory*; nothing if it is not."""
        try:
            await export.metadata.lookup(directory.fileid, name)
        except NFSError as error:
            if error.status != Status.NOENT:
                raise
        else:
            raise NFSError(Status.EXIST)

    async def _require_change_entry(
        self, export: Export, directory: Attributes, name: bytes, caller: Credentials
    ) -> None:
        """May *caller* remove or rename *name* in *directory*?  In POSIX's order: a
        missing name is ENOENT before a missing write permission is EACCES."""
        require(directory, caller, EXECUTE)
        check_existing_name(name)
        try:
            require(directory, caller, WRITE)
        except NFSError:
            await export.metadata.lookup(directory.fileid, name)
            raise

    # -- 3.3.1 GETATTR -------------------------------------------------------------

    async def getattr(self, args: a.HandleArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.1: the attributes of a file system object (no permission needed)."""
        export, attributes = await self._resolve(args.fh, context)
        writer = self._ok()
        encode_fattr3(writer, attributes, export.fsid)
        return writer

    # -- 3.3.2 SETATTR -------------------------------------------------------------

    async def setattr(self, args: a.SetAttrArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.2: change attributes, optionally guarded by the ctime the client saw.

        The metadata change (and its guard) comes first; only then is the
        content cut, so a failed guard never loses data.
        """
        export, attributes = await self._resolve(args.fh, context, change=True)
        caller = export.policy.identity(context.credentials)
        if args.attributes.size is not None and attributes.type == FileType.DIR:
            raise NFSError(Status.ISDIR)
        check_size(args.attributes)
        changes = check_setattr(attributes, args.attributes, args.client_times, caller)
        if changes.size == attributes.size:
            # POSIX truncate: mtime and ctime move only "if the file size is changed".
            changes = attrs.evolve(changes, size=None)
        wcc: WccAttributes = await export.metadata.setattr(
            attributes.fileid, changes, args.guard_ctime
        )
        if changes.size is not None and changes.size < attributes.size:
            await export.content.truncate(attributes.fileid, changes.size)
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
            check_name(args.name)
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
        """RFC 1813 3.3.6: bytes from a regular file, with EOF judged by the file's size.

        Content shorter than the size (a sparse extension) reads as zeros.
        """
        export, attributes = await self._resolve_file(args.fh, context)
        require_readable(attributes, export.policy.identity(context.credentials))
        wanted = max(0, min(args.count, MAX_IO, attributes.size - args.offset))
        data: bytes = b""
        if wanted:
            data = await export.content.read(attributes.fileid, args.offset, wanted)
            if len(data) < wanted:
                data = bytes(data) + bytes(wanted - len(data))
        eof = args.offset + len(data) >= attributes.size
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
        stable request, UNSTABLE otherwise, never more than the truth.  A
        write by anyone but root clears setuid and setgid first, as Linux
        does (:func:`~dittofs.nfs3.access.mode_after_write`).
        """
        export, attributes = await self._resolve_file(args.fh, context, change=True)
        caller = export.policy.identity(context.credentials)
        require(attributes, caller, WRITE, owner_override=True)
        if args.count > len(args.data):
            raise NFSError(Status.INVAL, "count exceeds the data sent")
        data = args.data[: args.count]
        if args.offset + len(data) > MAX_FILE_SIZE:
            raise NFSError(Status.FBIG)
        stable = args.stable != StableHow.UNSTABLE
        if data:
            mode = mode_after_write(attributes, caller)
            if mode != attributes.mode:
                # Before the data lands, as Linux does: a write never leaves a
                # setuid program that someone else's bytes have changed.
                await export.metadata.setattr(attributes.fileid, SetAttributes(mode=mode), None)
            await export.content.write(attributes.fileid, args.offset, data, stable)
            try:
                wcc: WccAttributes = await export.metadata.record_write(
                    attributes.fileid, args.offset + len(data)
                )
            except NFSError as error:
                if error.status == Status.STALE:
                    # Removed (by another client or gateway) while this write ran: the
                    # content just written may outlive the REMOVE's delete.  File ids are
                    # never reused, so deleting it again is always safe.
                    await self._delete_content(export, attributes.fileid)
                raise
        else:
            # Writing nothing changes nothing, wherever the offset points (as pwrite).
            wcc = WccAttributes(attributes, attributes)
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
        """Create a node of any type and encode the shared ``*3resok`` shape.

        Ownership follows POSIX: the caller's uid, and the caller's gid unless
        the directory is setgid, in which case its group is inherited (and a
        new subdirectory inherits the setgid bit too).
        """
        export, directory = await self._resolve_dir(where.dir, context, change=True)
        caller = export.policy.identity(context.credentials)
        await self._require_new_entry(export, directory, where.name, caller)
        if file_type in (FileType.CHR, FileType.BLK) and not is_root(caller):
            await self._refuse_existing(export, directory, where.name)
            raise NFSError(Status.PERM, "only root may make device nodes")
        check_size(attributes)
        uid, gid, _ = caller_ids(caller)
        if not is_root(caller) and (
            (attributes.uid is not None and attributes.uid != uid)
            or (attributes.gid is not None and not in_group(caller, attributes.gid))
        ):
            raise NFSError(Status.PERM, "only root may create files for others")
        mode = default_mode if attributes.mode is None else attributes.mode
        if file_type == FileType.DIR:
            mode &= _DIRECTORY_MODE_BITS
        if directory.mode & _SETGID:
            gid = directory.gid
            if file_type == FileType.DIR:
                mode |= _SETGID
            elif (
                mode & _SETGID
                and mode & _GROUP_EXECUTE
                and not (is_root(caller) or in_group(caller, gid))
            ):
                # Linux's mode_strip_sgid: no setgid program for a group one is not in.
                mode &= ~_SETGID
        node = NewNode(
            type=file_type,
            mode=mode,
            uid=uid if attributes.uid is None else attributes.uid,
            gid=gid if attributes.gid is None else attributes.gid,
            attributes=attributes,
            **extra,
        )
        created = await export.metadata.create(directory.fileid, where.name, node)
        if created.existed and attributes.size is not None:
            await export.content.truncate(created.node.fileid, attributes.size)
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
        await self._require_change_entry(export, directory, args.name, caller)
        if directory.mode & _STICKY:
            victim = await export.metadata.lookup(directory.fileid, args.name)
            require_sticky(directory, victim, caller)
        removed = await export.metadata.remove(directory.fileid, args.name, is_directory)
        await self._forget_content(export, removed.orphan)
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
        check_existing_name(args.target.name)
        caller = export.policy.identity(context.credentials)
        # Linux's order: search permission on both directories (its walks to them),
        # the source looked up (NOENT), the loop checks, then permissions and types.
        require(source, caller, EXECUTE)
        require(target, caller, EXECUTE)
        check_existing_name(args.source.name)
        moving = await export.metadata.lookup(source.fileid, args.source.name)
        try:
            await self._check_rename(export, source, target, moving, args, caller=caller)
            renamed = await export.metadata.rename(
                source.fileid, args.source.name, target.fileid, args.target.name
            )
        except NFSError as error:
            if error.status not in _OUTRANKED_BY_LOOPS:
                raise
            replaced = await self._refuse_rename_into_itself(export, source, moving, target, args)
            if replaced is None or replaced.fileid != moving.fileid:
                raise
            # Onto the file itself (the same name, or another link of it): rename(2)
            # does nothing and checks nothing more (Linux's vfs_rename).
            unchanged = WccAttributes(source, source), WccAttributes(target, target)
            renamed = Renamed(*unchanged, None, moving.fileid, moving.fileid)
        await self._forget_content(export, renamed.orphan)
        writer = self._ok()
        encode_wcc_data(writer, renamed.source, export.fsid)
        encode_wcc_data(writer, renamed.target, export.fsid)
        return writer

    async def _check_rename(
        self,
        export: Export,
        source: Attributes,
        target: Attributes,
        moving: Attributes,
        args: a.RenameArgs,
        *,
        caller: Credentials,
    ) -> None:
        """POSIX rename checks, in Linux's order (``vfs_rename``).

        The source's directory as ``may_delete`` checks it (write and search,
        then the sticky bit); the target's as ``may_create`` checks it, or, when
        the name is taken, as ``may_delete`` checks it (write and search, the
        sticky bit, then whether the entry may be replaced by this type: a
        directory only by a directory); and only then write permission on a
        directory that changes parent (its ``..`` entry changes).
        """
        require(source, caller, WRITE | EXECUTE)
        require_sticky(source, moving, caller)
        require(target, caller, WRITE | EXECUTE)
        try:
            replaced = await export.metadata.lookup(target.fileid, args.target.name)
        except NFSError as error:
            if error.status != Status.NOENT:
                raise
        else:
            require_sticky(target, replaced, caller)
            if moving.type == FileType.DIR and replaced.type != FileType.DIR:
                raise NFSError(Status.NOTDIR, "a directory can replace only a directory")
            if moving.type != FileType.DIR and replaced.type == FileType.DIR:
                raise NFSError(Status.ISDIR, "only a directory can replace a directory")
        if moving.type == FileType.DIR and source.fileid != target.fileid:
            require(moving, caller, WRITE)

    async def _refuse_rename_into_itself(
        self,
        export: Export,
        source: Attributes,
        moving: Attributes,
        target: Attributes,
        args: a.RenameArgs,
    ) -> Attributes | None:
        """Linux refuses a rename that would cut a loop before it checks permissions
        or types: INVAL for moving a directory below itself, NOTEMPTY for replacing an
        ancestor of the source.  Asked only when one of those checks failed (the
        store's own rename decides these otherwise).  Returns what the target name
        holds, if anything."""
        if await self._ancestry_holds(export, moving.fileid, target.fileid):
            raise NFSError(Status.INVAL, "a directory cannot move below itself")
        try:
            replaced = await export.metadata.lookup(target.fileid, args.target.name)
        except NFSError as error:
            if error.status != Status.NOENT:
                raise
            return None
        if await self._ancestry_holds(export, replaced.fileid, source.fileid):
            raise NFSError(Status.NOTEMPTY, "the target holds the source")
        return replaced

    async def _ancestry_holds(self, export: Export, ancestor: int, directory: int) -> bool:
        """Whether *ancestor* is *directory* or one of the directories above it."""
        for _ in range(_MAX_DEPTH):
            if directory == ancestor:
                return True
            parent = await export.metadata.lookup(directory, b"..")
            if parent.fileid == directory:
                return False
            directory = parent.fileid
        raise NFSError(Status.SERVERFAULT, f"deeper than {_MAX_DEPTH} directories")

    # -- 3.3.15 LINK -------------------------------------------------------------------

    async def link(self, args: a.LinkArgs, context: CallContext) -> XdrWriter:
        """RFC 1813 3.3.15: add a hard link to a non-directory."""
        export, node = await self._resolve(args.fh, context, change=True)
        link_export, directory = await self._resolve_dir(args.link.dir, context, change=True)
        if link_export is not export:
            raise NFSError(Status.XDEV)
        await self._require_new_entry(
            export, directory, args.link.name, export.policy.identity(context.credentials)
        )
        if node.type == FileType.DIR:
            # link(2)'s EPERM, after the kernel's EEXIST for a name already taken.
            await self._refuse_existing(export, directory, args.link.name)
            raise NFSError(Status.PERM, "hard links to directories are not allowed")
        linked = await export.metadata.link(node.fileid, directory.fileid, args.link.name)
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
        verifier = _cookie_verifier(directory)
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
        writer.uhyper(MAX_FILE_SIZE)
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
        writer.uint(NAME_MAX)
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
        require(attributes, export.policy.identity(context.credentials), WRITE, owner_override=True)
        await export.content.commit(attributes.fileid)
        writer = self._ok()
        encode_wcc_data(writer, WccAttributes(attributes, attributes), export.fsid)
        writer.fixed_opaque(self.write_verifier)
        return writer
