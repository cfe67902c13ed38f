"""Plain values exchanged between the NFS service and the stores.

They are deliberately independent of XDR and of any backend: a SQL row, a
Redis hash and an in-memory node all become the same :class:`Attributes`.
Times are integers of nanoseconds since the Unix epoch, so no precision is
lost between ``nfstime3`` and a store.
"""

from __future__ import annotations

import os

import attrs

from dittofs.vocabulary import CreateMode, FileType

#: Permission bits a mode may carry (including setuid, setgid and sticky).
MODE_MASK = 0o7777


@attrs.frozen
class Attributes:
    """Everything ``fattr3`` needs about one file, except the export's ``fsid``."""

    fileid: int
    generation: int
    type: FileType
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    atime: int
    mtime: int
    ctime: int


@attrs.frozen
class WccAttributes:
    """Attributes before and after a change (``wcc_data``); ``before`` may be unknown."""

    before: Attributes | None
    after: Attributes


@attrs.frozen
class SetAttributes:
    """Requested attribute changes; ``None`` leaves a field alone.

    Times are already resolved: "set to server time" arrives here as the
    server's current time.
    """

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: int | None = None
    mtime: int | None = None

    def is_empty(self) -> bool:
        """True when nothing would change."""
        return self == _NO_CHANGES


_NO_CHANGES = SetAttributes()


@attrs.frozen
class NewNode:
    """What a CREATE, MKDIR, SYMLINK or MKNOD asks the metadata store to make."""

    type: FileType
    mode: int
    uid: int
    gid: int
    attributes: SetAttributes = _NO_CHANGES
    symlink_target: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    how: CreateMode = CreateMode.GUARDED
    verifier: bytes = b""


@attrs.frozen
class Created:
    """The outcome of a create: the node (new, or existing for UNCHECKED/EXCLUSIVE replays)."""

    node: Attributes
    directory: WccAttributes
    existed: bool = False


@attrs.frozen
class Linked:
    """The outcome of LINK: the file with its new link count and the directory's change."""

    node: Attributes
    directory: WccAttributes


@attrs.frozen
class Removed:
    """The outcome of REMOVE/RMDIR.

    ``orphan`` is the file id whose last link went away (its content can be
    deleted), or ``None`` while other links remain.
    """

    directory: WccAttributes
    orphan: int | None
    #: The file whose name went (it is gone when it is also ``orphan``).
    fileid: int


@attrs.frozen
class Renamed:
    """The outcome of RENAME; ``orphan`` as in :class:`Removed` for a replaced target."""

    source: WccAttributes
    target: WccAttributes
    orphan: int | None
    #: The file that moved, and the one whose target name it took (None when it was free).
    moved: int
    replaced: int | None


@attrs.frozen
class DirEntry:
    """One directory entry; ``cookie`` positions a listing just after this entry.

    ``attributes`` is filled when the listing was asked for with attributes
    (READDIRPLUS).
    """

    cookie: int
    name: bytes
    fileid: int
    attributes: Attributes | None = None


@attrs.frozen
class DirPage:
    """A slice of a directory listing, in cookie order."""

    entries: list[DirEntry]
    eof: bool


@attrs.frozen
class FileCounts:
    """Inode accounting reported by FSSTAT."""

    files: int
    free_files: int


@attrs.frozen
class SpaceUsage:
    """Byte accounting reported by FSSTAT."""

    total_bytes: int
    free_bytes: int


@attrs.frozen
class CacheStatistics:
    """A content store's local cache, as the metrics endpoint shows it."""

    used_bytes: int
    capacity_bytes: int
    #: Bytes written but not yet uploaded, and the files they belong to.
    pending_upload_bytes: int
    pending_upload_files: int
    #: Blocks read from the cache, and blocks that had to be fetched.
    hits: int
    misses: int


@attrs.frozen
class MetadataCacheStatistics:
    """A metadata cache, as the metrics endpoint shows it."""

    #: Entries kept now, by map: ``attributes``, ``names``, ``targets``.
    entries: dict[str, int]
    #: GETATTR, LOOKUP and READLINK answered from memory, and those that asked the store.
    hits: int
    misses: int
    #: False while changes made elsewhere may go unheard (nothing is served then).
    following: bool


@attrs.frozen
class ContentCheck:
    """What a content store's own check found (:class:`~dittofs.interfaces.IContentCheck`)."""

    #: One line per problem: content the store's records name and it cannot find.
    problems: list[str]
    #: One line of figures for the report (what was looked at, what could be collected).
    summary: str


@attrs.frozen
class InodeRecord:
    """What ``fsck`` needs to know about one inode."""

    fileid: int
    type: FileType
    nlink: int
    parent: int


@attrs.frozen
class Inventory:
    """Every inode and every directory entry of a metadata store, for ``fsck``."""

    root: int
    inodes: dict[int, InodeRecord]
    entries: list[tuple[int, bytes, int]]


@attrs.frozen
class Repair:
    """One change ``fsck --repair`` asks a metadata store to make.

    ``action`` is ``"nlink"`` (set ``fileid``'s link count to ``value``),
    ``"parent"`` (set directory ``fileid``'s parent to ``value``),
    ``"drop-entry"`` (remove entry ``name`` of directory ``fileid``) or
    ``"drop-inode"`` (delete inode ``fileid`` and any entries of it).
    """

    action: str
    fileid: int
    value: int = 0
    name: bytes = b""


@attrs.frozen
class Slice:
    """Bytes of one block of a file, as a block map records them.

    The ``length`` bytes at ``offset`` within block ``block`` are the bytes
    from ``start`` of the object named ``key`` (zeros when ``key`` is empty:
    what a truncate leaves).  Where slices of a block overlap, the one with
    the higher ``seq`` is newer and wins; a store gives ``seq`` when the slice
    is added (it is 0 before).
    """

    block: int
    offset: int
    length: int
    key: str = ""
    start: int = 0
    seq: int = 0


@attrs.frozen
class BlockMap:
    """Part of a file's block map: its content length and the slices of some blocks."""

    #: Where the file's content ends: reads stop here (holes up to it are zeros).
    length: int
    slices: tuple[Slice, ...]


@attrs.frozen
class BlockChange:
    """What one change of a block map did."""

    #: The ``seq`` given to each added slice, in the order they were given.
    seqs: tuple[int, ...]
    #: Object keys no slice names any more: their objects may be deleted.
    orphaned: tuple[str, ...]


@attrs.define
class FileRegion:
    """Bytes of a file to be sent as they are: *length* bytes from *offset* of descriptor *fd*.

    A content store whose bytes are in local files hands these out
    (:class:`~dittofs.interfaces.IFileRegions`) so that a READ's data can go
    from the file to the socket with ``sendfile``, never copied into Python.
    The region owns *fd* (a descriptor of its own) until :meth:`close`.  The
    file may end before ``offset + length`` (cut meanwhile, or content shorter
    than the file's size): the missing bytes are zeros, as READ reads them.
    """

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    def fileno(self) -> int:
        """The descriptor to send from."""
        return self.fd

    def read(self) -> bytes:
        """The bytes themselves (blocking: for a thread, or tests), zeros past the file's end."""
        data = os.pread(self.fd, self.length, self.offset)
        return data + bytes(self.length - len(data))

    def close(self) -> None:
        """Give the descriptor back; the region is spent."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
