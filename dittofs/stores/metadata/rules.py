"""Namespace rules every metadata store applies the same way.

POSIX decides whether a remove, rename or repeated create is allowed from a
few facts about the entries involved.  Keeping those decisions here, as pure
functions, means the in-memory, SQL and Redis stores differ only in how they
fetch the facts and apply the change, never in the answer.
"""

from __future__ import annotations

from dittofs.errors import NFSError
from dittofs.model import Attributes, NewNode
from dittofs.vocabulary import CreateMode, FileType, Status

#: Mode of a new filesystem's root directory.  World-writable, as JuiceFS and
#: rclone create theirs: root is squashed by default, so a root-owned 0755
#: root would be writable by no client at all.  An unsquashed root client
#: may chmod it to something stricter.
ROOT_MODE = 0o777

#: Bytes a directory reports as its size and space used.
DIRECTORY_SIZE = 4096
_BLOCK = 4096


def attributes(
    *,
    fileid: int,
    generation: int,
    type: FileType | int,
    mode: int,
    nlink: int,
    uid: int,
    gid: int,
    size: int,
    rdev: tuple[int, int],
    atime: int,
    mtime: int,
    ctime: int,
) -> Attributes:
    """Build :class:`Attributes` from stored fields, deriving what is never stored.

    Directories report a fixed size; ``used`` is the size rounded up to whole
    blocks for files (an estimate: sparse content may use less).
    """
    file_type = FileType(type)
    if file_type == FileType.DIR:
        size = used = DIRECTORY_SIZE
    else:
        used = (size + _BLOCK - 1) // _BLOCK * _BLOCK
    return Attributes(
        fileid=fileid,
        generation=generation,
        type=file_type,
        mode=mode,
        nlink=nlink,
        uid=uid,
        gid=gid,
        size=size,
        used=used,
        rdev=rdev,
        atime=atime,
        mtime=mtime,
        ctime=ctime,
    )


def initial_size(node: NewNode) -> int:
    """The size a new node starts with: as asked for a file, the target's length for a symlink."""
    if node.type == FileType.LNK:
        return len(node.symlink_target)
    if node.type == FileType.REG and node.attributes.size is not None:
        return node.attributes.size
    return 0


def check_create_replay(node: NewNode, existing_type: FileType, existing_verifier: bytes) -> None:
    """Allow a create of an existing name only where RFC 1813 section 3.3.8 does.

    UNCHECKED reuses an existing regular file; EXCLUSIVE succeeds again for
    the same verifier (a retransmission).  Everything else is ``EXIST``.
    """
    if node.type != FileType.REG or existing_type != FileType.REG:
        raise NFSError(Status.EXIST)
    if node.how == CreateMode.UNCHECKED:
        return
    if node.how == CreateMode.EXCLUSIVE and existing_verifier == node.verifier:
        return
    raise NFSError(Status.EXIST)


def check_remove(child_type: FileType, is_directory: bool, child_has_entries: bool) -> None:
    """REMOVE takes non-directories, RMDIR takes empty directories."""
    if is_directory and child_type != FileType.DIR:
        raise NFSError(Status.NOTDIR)
    if not is_directory and child_type == FileType.DIR:
        raise NFSError(Status.ISDIR)
    if child_has_entries:
        raise NFSError(Status.NOTEMPTY)


def check_rename_target(
    moving_type: FileType, replaced_type: FileType, replaced_has_entries: bool
) -> None:
    """A rename may replace a file by a non-directory, or an empty directory by a directory."""
    if moving_type == FileType.DIR and replaced_type != FileType.DIR:
        raise NFSError(Status.NOTDIR)
    if moving_type != FileType.DIR and replaced_type == FileType.DIR:
        raise NFSError(Status.ISDIR)
    if replaced_has_entries:
        raise NFSError(Status.NOTEMPTY)


def links_lost(file_type: FileType) -> int:
    """How much nlink drops when a name goes: 2 for a directory (its name and its '.')."""
    return 2 if file_type == FileType.DIR else 1
