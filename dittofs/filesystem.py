"""The POSIX rules of every change an NFS client makes, for NFSv3 and NFSv4.1 alike.

The programs (``nfs3/``, ``nfs4/``) decode a call, resolve its handles and
encode the reply; what a change *means* is decided here once, over an
export's stores: who may make, remove, rename or link a name (and in which
order POSIX checks, so errors match a local file system), who owns a new
file, what SETATTR may change, how a WRITE clears setuid and what a READ
returns past the end.  The stores' shared ``namespace`` then applies it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dittofs import log as dittofs_log
from dittofs.access import (
    EXECUTE,
    WRITE,
    caller_ids,
    check_setattr,
    in_group,
    is_root,
    mode_after_write,
    require,
    require_readable,
    require_sticky,
)
from dittofs.errors import NFSError
from dittofs.exports import Export, ExportTable, release_orphan
from dittofs.interfaces import IFileRegions
from dittofs.model import (
    Attributes,
    Created,
    FileRegion,
    Linked,
    NewNode,
    Removed,
    Renamed,
    SetAttributes,
    WccAttributes,
)
from dittofs.nfs3.handle import FileHandle
from dittofs.rpc.message import Credentials
from dittofs.vocabulary import CreateMode, FileType, Status

log = Logger(observer=dittofs_log.observer)

#: Longest name a directory entry may have.
NAME_MAX = 255
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


# -- names and sizes -------------------------------------------------------------------


def check_size(attributes: SetAttributes) -> None:
    """A size past the largest file size is FBIG (and could not be reported)."""
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


def cookie_verifier(directory: Attributes) -> bytes:
    """A directory's READDIR cookie verifier: the stores' cookies never go stale, so it is
    fixed for the directory's lifetime (NFSv3 and NFSv4.1 alike)."""
    return struct.pack(">II", directory.generation, directory.fileid & 0xFFFFFFFF)


# -- handles ---------------------------------------------------------------------------------


def export_of(
    exports: ExportTable, fh: bytes, host: str, port: int, change: bool
) -> tuple[Export, FileHandle]:
    """The export a handle names, if this client may use it (and change it, if asked).

    BADHANDLE for a handle we never issued, ACCES for a client the export
    does not admit (checked on every call, so a leaked handle is useless
    elsewhere), ROFS for a change to a read-only export.
    """
    handle = FileHandle.decode(fh)
    export = exports.by_handle(handle)
    if not export.policy.admits(host, port):
        raise NFSError(Status.ACCES, f"{host} may not use {export.path!r}")
    if change and export.policy.read_only:
        raise NFSError(Status.ROFS)
    return export, handle


async def resolve(
    exports: ExportTable, fh: bytes, host: str, port: int, change: bool = False
) -> tuple[Export, Attributes]:
    """Map a file handle to its export and current attributes (STALE for a file gone)."""
    export, handle = export_of(exports, fh, host, port, change)
    attributes: Attributes = await export.metadata.getattr(handle.fileid)
    if attributes.generation != handle.generation:
        raise NFSError(Status.STALE, "generation mismatch")
    return export, attributes


# -- the checks of a new or a changed entry -----------------------------------------------------


async def refuse_existing(export: Export, directory: Attributes, name: bytes) -> None:
    """Raise EXIST if *name* is in *directory*; nothing if it is not."""
    try:
        await export.metadata.lookup(directory.fileid, name)
    except NFSError as error:
        if error.status != Status.NOENT:
            raise
    else:
        raise NFSError(Status.EXIST)


async def require_new_entry(
    export: Export, directory: Attributes, name: bytes, caller: Credentials
) -> None:
    """May *caller* add *name* to *directory*?  In POSIX's order: a name that
    exists is EEXIST before a missing write permission is EACCES (the kernel
    looks the name up before ``may_create``), for anyone who may search."""
    require(directory, caller, EXECUTE)
    check_new_name(name)
    try:
        require(directory, caller, WRITE)
    except NFSError:
        await refuse_existing(export, directory, name)
        raise


async def require_change_entry(
    export: Export, directory: Attributes, name: bytes, caller: Credentials
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


# -- making, removing, renaming and linking names ---------------------------------------------


async def make(
    export: Export,
    directory: Attributes,
    name: bytes,
    caller: Credentials,
    *,
    file_type: FileType,
    default_mode: int,
    attributes: SetAttributes,
    **extra: Any,
) -> Created:
    """Create a node of any type in *directory*.

    Ownership follows POSIX: the caller's uid, and the caller's gid unless
    the directory is setgid, in which case its group is inherited (and a
    new subdirectory inherits the setgid bit too).  An existing file that
    an UNCHECKED create (or a replayed EXCLUSIVE one) returns is cut to the
    size asked for, if one was.
    """
    await require_new_entry(export, directory, name, caller)
    if extra.get("how") == CreateMode.UNCHECKED and attributes.size is not None:
        # The store cuts an existing file to the size asked: only if the caller may write it.
        await _require_truncatable(export, directory, name, caller)
    if file_type in (FileType.CHR, FileType.BLK) and not is_root(caller):
        await refuse_existing(export, directory, name)
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
    created: Created = await export.metadata.create(directory.fileid, name, node)
    if created.existed and attributes.size is not None:
        await export.content.truncate(created.node.fileid, attributes.size)
    return created


async def _require_truncatable(
    export: Export, directory: Attributes, name: bytes, caller: Credentials
) -> None:
    """An existing *name* may be cut by an UNCHECKED create only with write permission."""
    try:
        existing = await export.metadata.lookup(directory.fileid, name)
    except NFSError as error:
        if error.status != Status.NOENT:
            raise
        return
    if existing.type == FileType.REG:
        require(existing, caller, WRITE, owner_override=True)


async def remove(
    export: Export, directory: Attributes, name: bytes, caller: Credentials, is_directory: bool
) -> Removed:
    """Remove a name (a directory only when *is_directory*); content goes with the last link."""
    await require_change_entry(export, directory, name, caller)
    if directory.mode & _STICKY:
        victim = await export.metadata.lookup(directory.fileid, name)
        require_sticky(directory, victim, caller)
    removed: Removed = await export.metadata.remove(directory.fileid, name, is_directory)
    await forget_content(export, removed.orphan)
    return removed


async def rename(
    export: Export,
    source: Attributes,
    source_name: bytes,
    target: Attributes,
    target_name: bytes,
    *,
    caller: Credentials,
) -> Renamed:
    """Atomically rename, replacing a compatible target, with Linux's checks in its order.

    Search permission on both directories (its walks to them), the source
    looked up (NOENT), the loop checks, then permissions and types.
    """
    check_existing_name(target_name)
    require(source, caller, EXECUTE)
    require(target, caller, EXECUTE)
    check_existing_name(source_name)
    moving = await export.metadata.lookup(source.fileid, source_name)
    try:
        await _check_rename(export, source, target, moving, target_name, caller=caller)
        renamed: Renamed = await export.metadata.rename(
            source.fileid, source_name, target.fileid, target_name
        )
    except NFSError as error:
        if error.status not in _OUTRANKED_BY_LOOPS:
            raise
        replaced = await _refuse_rename_into_itself(export, source, moving, target, target_name)
        if replaced is None or replaced.fileid != moving.fileid:
            raise
        # Onto the file itself (the same name, or another link of it): rename(2)
        # does nothing and checks nothing more (Linux's vfs_rename).
        unchanged = WccAttributes(source, source), WccAttributes(target, target)
        renamed = Renamed(*unchanged, None, moving.fileid, moving.fileid)
    await forget_content(export, renamed.orphan)
    return renamed


async def _check_rename(
    export: Export,
    source: Attributes,
    target: Attributes,
    moving: Attributes,
    target_name: bytes,
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
        replaced = await export.metadata.lookup(target.fileid, target_name)
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
    export: Export,
    source: Attributes,
    moving: Attributes,
    target: Attributes,
    target_name: bytes,
) -> Attributes | None:
    """Linux refuses a rename that would cut a loop before it checks permissions
    or types: INVAL for moving a directory below itself, NOTEMPTY for replacing an
    ancestor of the source.  Asked only when one of those checks failed (the
    store's own rename decides these otherwise).  Returns what the target name
    holds, if anything."""
    if await _ancestry_holds(export, moving.fileid, target.fileid):
        raise NFSError(Status.INVAL, "a directory cannot move below itself")
    try:
        replaced: Attributes = await export.metadata.lookup(target.fileid, target_name)
    except NFSError as error:
        if error.status != Status.NOENT:
            raise
        return None
    if await _ancestry_holds(export, replaced.fileid, source.fileid):
        raise NFSError(Status.NOTEMPTY, "the target holds the source")
    return replaced


async def _ancestry_holds(export: Export, ancestor: int, directory: int) -> bool:
    """Whether *ancestor* is *directory* or one of the directories above it."""
    for _ in range(_MAX_DEPTH):
        if directory == ancestor:
            return True
        parent = await export.metadata.lookup(directory, b"..")
        if parent.fileid == directory:
            return False
        directory = parent.fileid
    raise NFSError(Status.SERVERFAULT, f"deeper than {_MAX_DEPTH} directories")


async def link(
    export: Export, node: Attributes, directory: Attributes, name: bytes, caller: Credentials
) -> Linked:
    """Add a hard link to a non-directory."""
    await require_new_entry(export, directory, name, caller)
    if node.type == FileType.DIR:
        # link(2)'s EPERM, after the kernel's EEXIST for a name already taken.
        await refuse_existing(export, directory, name)
        raise NFSError(Status.PERM, "hard links to directories are not allowed")
    linked: Linked = await export.metadata.link(node.fileid, directory.fileid, name)
    return linked


# -- attributes and content --------------------------------------------------------------------


async def setattr(
    export: Export,
    attributes: Attributes,
    requested: SetAttributes,
    *,
    client_times: bool,
    caller: Credentials,
    guard_ctime: int | None = None,
) -> WccAttributes:
    """Change attributes, optionally guarded by the ctime the client saw.

    The metadata change (and its guard) comes first; only then is the
    content cut, so a failed guard never loses data.
    """
    if requested.size is not None and attributes.type == FileType.DIR:
        raise NFSError(Status.ISDIR)
    check_size(requested)
    changes = check_setattr(attributes, requested, client_times, caller)
    if changes.size == attributes.size:
        # POSIX truncate: mtime and ctime move only "if the file size is changed".
        changes = attrs.evolve(changes, size=None)
    wcc: WccAttributes = await export.metadata.setattr(attributes.fileid, changes, guard_ctime)
    if changes.size is not None and changes.size < attributes.size:
        await export.content.truncate(attributes.fileid, changes.size)
    return wcc


async def read(
    export: Export, attributes: Attributes, offset: int, count: int, caller: Credentials
) -> tuple[bytes, bool]:
    """Bytes of a regular file and whether they reach its end (judged by its size).

    Content shorter than the size (a sparse extension) reads as zeros.
    """
    data, eof = await _read(export.content.read, attributes, offset, count, caller)
    assert not isinstance(data, FileRegion)
    return data, eof


async def read_lent(
    export: Export, attributes: Attributes, offset: int, count: int, caller: Credentials
) -> tuple[bytes | FileRegion, bool]:
    """As :func:`read`, but the bytes may be a region of a file where the content store
    lends one (:class:`~dittofs.interfaces.IFileRegions`): the caller sends and closes it."""
    content = export.content
    fetch = content.read_lent if IFileRegions.providedBy(content) else content.read
    return await _read(fetch, attributes, offset, count, caller)


async def _read(
    fetch: Callable[[int, int, int], Deferred[Any]],
    attributes: Attributes,
    offset: int,
    count: int,
    caller: Credentials,
) -> tuple[bytes | FileRegion, bool]:
    """READ's one rule for both: as many bytes as the size allows, zeros past the content
    (a region reads zeros past its file itself)."""
    require_readable(attributes, caller)
    wanted = max(0, min(count, attributes.size - offset))
    data: bytes | FileRegion = b""
    if wanted:
        data = await fetch(attributes.fileid, offset, wanted)
        if not isinstance(data, FileRegion) and len(data) < wanted:
            data = bytes(data) + bytes(wanted - len(data))
    return data, offset + wanted >= attributes.size


async def write(
    export: Export,
    attributes: Attributes,
    offset: int,
    data: bytes | memoryview,
    *,
    stable: bool,
    caller: Credentials,
) -> WccAttributes:
    """Write *data*, durably before returning when *stable*.

    A write by anyone but root clears setuid and setgid first, as Linux
    does (:func:`~dittofs.access.mode_after_write`).
    """
    require(attributes, caller, WRITE, owner_override=True)
    if offset + len(data) > MAX_FILE_SIZE:
        raise NFSError(Status.FBIG)
    if not data:
        # Writing nothing changes nothing, wherever the offset points (as pwrite).
        return WccAttributes(attributes, attributes)
    mode = mode_after_write(attributes, caller)
    if mode != attributes.mode:
        # Before the data lands, as Linux does: a write never leaves a
        # setuid program that someone else's bytes have changed.
        await export.metadata.setattr(attributes.fileid, SetAttributes(mode=mode), None)
    await export.content.write(attributes.fileid, offset, data, stable)
    try:
        wcc: WccAttributes = await export.metadata.record_write(
            attributes.fileid, offset + len(data)
        )
    except NFSError as error:
        if error.status == Status.STALE:
            # Removed (by another client or gateway) while this write ran: the
            # content just written may outlive the REMOVE's delete.  File ids are
            # never reused, so deleting it again is always safe.
            await _delete_content(export, attributes.fileid)
        raise
    return wcc


async def commit(export: Export, attributes: Attributes, caller: Credentials) -> None:
    """Make earlier unstable writes durable (the whole file, whatever range is named)."""
    require(attributes, caller, WRITE, owner_override=True)
    await export.content.commit(attributes.fileid)


async def _delete_content(export: Export, fileid: int) -> None:
    try:
        await export.content.delete(fileid)
    except Exception:
        log.failure("Could not delete the content of file {fileid}", fileid=fileid)


async def forget_content(export: Export, orphan: int | None) -> None:
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
