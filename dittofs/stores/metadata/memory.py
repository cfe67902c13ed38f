"""An in-memory :class:`~dittofs.interfaces.IMetadataStore`.

Everything runs synchronously on the reactor thread, so each operation is
atomic for free and every Deferred it returns has already fired.  Each
directory keeps its entries twice: by name for lookups and by cookie (a
``SortedDict``) for listings, so a READDIR page is found by bisection rather
than by rescanning a 100,000-entry directory from the start.

File handles of this store must not outlive it: the generation number is
random per store instance, so a client holding a handle from before a restart
gets ``NFS3ERR_STALE`` instead of another file that reused the id.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import attrs
from sortedcontainers import SortedDict
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from dittofs.errors import NFSError
from dittofs.interfaces import IMetadataInventory, IMetadataStore
from dittofs.model import (
    MODE_MASK,
    Attributes,
    Created,
    DirEntry,
    DirPage,
    FileCounts,
    InodeRecord,
    Inventory,
    Linked,
    NewNode,
    Removed,
    Renamed,
    Repair,
    SetAttributes,
    WccAttributes,
)
from dittofs.stores.metadata import rules
from dittofs.vocabulary import CreateMode, FileType, Status

P = ParamSpec("P")
T = TypeVar("T")

#: A nominal limit reported by FSSTAT: memory, not a table, bounds this store.
MAX_FILES = 2**32


@attrs.define
class _Node:
    fileid: int
    type: FileType
    mode: int
    uid: int
    gid: int
    atime: int
    mtime: int
    ctime: int
    nlink: int = 1
    size: int = 0
    rdev: tuple[int, int] = (0, 0)
    parent: int = 0
    target: bytes = b""
    verifier: bytes = b""
    # Directories only: name -> (cookie, fileid) and cookie -> name (made with the
    # first entry: building a SortedDict for every file was 5% of CREATE's time).
    names: dict[bytes, tuple[int, int]] = attrs.field(factory=dict)
    cookies: SortedDict | None = None
    next_cookie: int = 1


def _guarded(operation: Callable[P, T]) -> Callable[P, Deferred[T]]:
    """Run a synchronous operation and deliver its result or NFSError as a Deferred."""

    @functools.wraps(operation)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        try:
            return succeed(operation(*args, **kwargs))
        except NFSError:
            return fail()

    return wrapper


@implementer(IMetadataStore, IMetadataInventory)
class MemoryMetadataStore:
    """Metadata kept in Python objects; lost when the process exits."""

    name = "memory"

    def __init__(self, clock: Callable[[], int] = time.time_ns, root_uid: int = 0) -> None:
        self._clock = clock
        self._generation = secrets.randbits(31) + 1
        self._nodes: dict[int, _Node] = {}
        self._orphans: set[int] = set()
        self._next_fileid = 1
        self._root = self._new_node(FileType.DIR, rules.ROOT_MODE, root_uid, root_uid)
        self._root.nlink = 2
        self._root.parent = self._root.fileid

    # -- helpers ---------------------------------------------------------------

    def _new_node(self, type: FileType, mode: int, uid: int, gid: int) -> _Node:
        now = self._clock()
        node = _Node(self._next_fileid, type, mode & MODE_MASK, uid, gid, now, now, now)
        self._next_fileid += 1
        self._nodes[node.fileid] = node
        return node

    def _attributes(self, node: _Node) -> Attributes:
        return rules.attributes(
            fileid=node.fileid,
            generation=self._generation,
            type=node.type,
            mode=node.mode,
            nlink=node.nlink,
            uid=node.uid,
            gid=node.gid,
            size=node.size,
            rdev=node.rdev,
            atime=node.atime,
            mtime=node.mtime,
            ctime=node.ctime,
        )

    def _node(self, fileid: int) -> _Node:
        node = self._nodes.get(fileid)
        if node is None:
            raise NFSError(Status.STALE, f"file id {fileid} does not exist")
        return node

    def _directory(self, fileid: int) -> _Node:
        node = self._node(fileid)
        if node.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        return node

    def _child(self, directory: _Node, name: bytes) -> _Node | None:
        entry = directory.names.get(name)
        return None if entry is None else self._nodes[entry[1]]

    def _add_entry(self, directory: _Node, name: bytes, child: _Node) -> None:
        cookie = directory.next_cookie
        directory.next_cookie += 1
        directory.names[name] = (cookie, child.fileid)
        if directory.cookies is None:
            directory.cookies = SortedDict()
        directory.cookies[cookie] = name
        if child.type == FileType.DIR:
            child.parent = directory.fileid
            directory.nlink += 1

    @staticmethod
    def _pop_name(directory: _Node, name: bytes) -> int:
        cookie, fileid = directory.names.pop(name)
        assert directory.cookies is not None  # made with the first name
        del directory.cookies[cookie]
        return fileid

    def _drop_entry(self, directory: _Node, name: bytes) -> _Node:
        child = self._nodes[self._pop_name(directory, name)]
        if child.type == FileType.DIR:
            directory.nlink -= 1
        return child

    def _unlink(self, child: _Node) -> int | None:
        """Drop one link of *child*; return its id when that was the last link."""
        child.nlink -= rules.links_lost(child.type)
        child.ctime = self._clock()
        if child.nlink <= 0:
            del self._nodes[child.fileid]
            self._orphans.add(child.fileid)
            return child.fileid
        return None

    def _touch(self, node: _Node) -> None:
        node.mtime = node.ctime = self._clock()

    # -- IMetadataStore ----------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Nothing to prepare: the root exists from construction."""
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Nothing to flush."""
        return succeed(None)

    @_guarded
    def root(self) -> Attributes:
        """See :meth:`IMetadataStore.root`."""
        return self._attributes(self._root)

    @_guarded
    def getattr(self, fileid: int) -> Attributes:
        """See :meth:`IMetadataStore.getattr`."""
        return self._attributes(self._node(fileid))

    @_guarded
    def setattr(
        self, fileid: int, changes: SetAttributes, guard_ctime: int | None
    ) -> WccAttributes:
        """See :meth:`IMetadataStore.setattr`."""
        node = self._node(fileid)
        before = self._attributes(node)
        if guard_ctime is not None and guard_ctime != node.ctime:
            raise NFSError(Status.NOT_SYNC)
        if changes.size is not None and node.type != FileType.REG:
            raise NFSError(Status.INVAL, "size can only be set on regular files")
        now = self._clock()
        if changes.mode is not None:
            node.mode = changes.mode & MODE_MASK
        if changes.uid is not None:
            node.uid = changes.uid
        if changes.gid is not None:
            node.gid = changes.gid
        if changes.size is not None:
            node.size = changes.size
            node.mtime = now
        if changes.atime is not None:
            node.atime = changes.atime
        if changes.mtime is not None:
            node.mtime = changes.mtime
        node.ctime = now
        return WccAttributes(before, self._attributes(node))

    @_guarded
    def lookup(self, directory: int, name: bytes) -> Attributes:
        """See :meth:`IMetadataStore.lookup`."""
        parent = self._directory(directory)
        if name == b"..":
            return self._attributes(self._node(parent.parent))
        child = self._child(parent, name)
        if child is None:
            raise NFSError(Status.NOENT)
        return self._attributes(child)

    @_guarded
    def create(self, directory: int, name: bytes, node: NewNode) -> Created:
        """See :meth:`IMetadataStore.create`."""
        parent = self._directory(directory)
        before = self._attributes(parent)
        existing = self._child(parent, name)
        if existing is not None:
            return self._create_existing(parent, before, existing, node)
        child = self._new_node(node.type, node.mode, node.uid, node.gid)
        child.target = node.symlink_target
        child.rdev = node.rdev
        if node.how == CreateMode.EXCLUSIVE:
            child.verifier = node.verifier
        if node.type == FileType.DIR:
            child.nlink = 2
        self._apply_initial(child, node.attributes)
        child.size = rules.initial_size(node)
        self._add_entry(parent, name, child)
        self._touch(parent)
        return Created(self._attributes(child), WccAttributes(before, self._attributes(parent)))

    def _create_existing(
        self, parent: _Node, before: Attributes, existing: _Node, node: NewNode
    ) -> Created:
        rules.check_create_replay(node, existing.type, existing.verifier)
        if node.how == CreateMode.UNCHECKED and node.attributes.size is not None:
            existing.size = node.attributes.size
            self._touch(existing)
        unchanged = WccAttributes(before, self._attributes(parent))
        return Created(self._attributes(existing), unchanged, existed=True)

    def _apply_initial(self, child: _Node, initial: SetAttributes) -> None:
        if initial.atime is not None:
            child.atime = initial.atime
        if initial.mtime is not None:
            child.mtime = initial.mtime

    @_guarded
    def link(self, fileid: int, directory: int, name: bytes) -> Linked:
        """See :meth:`IMetadataStore.link`."""
        node = self._node(fileid)
        parent = self._directory(directory)
        if node.type == FileType.DIR:
            raise NFSError(Status.ISDIR, "hard links to directories are not allowed")
        if name in parent.names:
            raise NFSError(Status.EXIST)
        before = self._attributes(parent)
        self._add_entry(parent, name, node)
        node.nlink += 1
        node.ctime = self._clock()
        self._touch(parent)
        return Linked(self._attributes(node), WccAttributes(before, self._attributes(parent)))

    @_guarded
    def remove(self, directory: int, name: bytes, is_directory: bool) -> Removed:
        """See :meth:`IMetadataStore.remove`."""
        parent = self._directory(directory)
        child = self._child(parent, name)
        if child is None:
            raise NFSError(Status.NOENT)
        rules.check_remove(child.type, is_directory, bool(child.names))
        before = self._attributes(parent)
        self._drop_entry(parent, name)
        orphan = self._unlink(child)
        self._touch(parent)
        return Removed(WccAttributes(before, self._attributes(parent)), orphan)

    @_guarded
    def rename(self, source: int, source_name: bytes, target: int, target_name: bytes) -> Renamed:
        """See :meth:`IMetadataStore.rename`."""
        from_dir = self._directory(source)
        to_dir = self._directory(target)
        from_before = self._attributes(from_dir)
        to_before = self._attributes(to_dir)
        moving = self._child(from_dir, source_name)
        if moving is None:
            raise NFSError(Status.NOENT)
        replaced = self._child(to_dir, target_name)
        if replaced is moving:
            return Renamed(
                WccAttributes(from_before, from_before), WccAttributes(to_before, to_before), None
            )
        if moving.type == FileType.DIR and self._is_ancestor(moving.fileid, to_dir):
            raise NFSError(Status.INVAL, "cannot move a directory into its own subtree")
        orphan = None
        if replaced is not None:
            rules.check_rename_target(moving.type, replaced.type, bool(replaced.names))
            self._drop_entry(to_dir, target_name)
            orphan = self._unlink(replaced)
        self._drop_entry(from_dir, source_name)
        self._add_entry(to_dir, target_name, moving)
        moving.ctime = self._clock()
        self._touch(from_dir)
        self._touch(to_dir)
        return Renamed(
            WccAttributes(from_before, self._attributes(from_dir)),
            WccAttributes(to_before, self._attributes(to_dir)),
            orphan,
        )

    def _is_ancestor(self, fileid: int, directory: _Node) -> bool:
        node = directory
        while True:
            if node.fileid == fileid:
                return True
            if node.parent == node.fileid:
                return False
            node = self._nodes[node.parent]

    @_guarded
    def readdir(
        self, directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> DirPage:
        """See :meth:`IMetadataStore.readdir`."""
        parent = self._directory(directory)
        entries: list[DirEntry] = []
        cookies = parent.cookies
        if cookies is None:
            return DirPage([], eof=True)
        position = cookies.bisect_right(cookie)
        end = min(position + max_entries, len(cookies))
        for entry_cookie in cookies.islice(position, end):
            name = cookies[entry_cookie]
            fileid = parent.names[name][1]
            attributes = self._attributes(self._nodes[fileid]) if with_attributes else None
            entries.append(DirEntry(entry_cookie, name, fileid, attributes))
        return DirPage(entries, eof=end == len(cookies))

    @_guarded
    def readlink(self, fileid: int) -> bytes:
        """See :meth:`IMetadataStore.readlink`."""
        node = self._node(fileid)
        if node.type != FileType.LNK:
            raise NFSError(Status.INVAL, "not a symbolic link")
        return node.target

    @_guarded
    def record_write(self, fileid: int, end: int) -> WccAttributes:
        """See :meth:`IMetadataStore.record_write`."""
        node = self._node(fileid)
        before = self._attributes(node)
        node.size = max(node.size, end)
        self._touch(node)
        return WccAttributes(before, self._attributes(node))

    @_guarded
    def pending_orphans(self) -> list[int]:
        """See :meth:`IMetadataStore.pending_orphans`."""
        return sorted(self._orphans)

    @_guarded
    def release_orphan(self, fileid: int) -> None:
        """See :meth:`IMetadataStore.release_orphan`."""
        self._orphans.discard(fileid)

    @_guarded
    def file_counts(self) -> FileCounts:
        """See :meth:`IMetadataStore.file_counts`."""
        return FileCounts(len(self._nodes), MAX_FILES - len(self._nodes))

    # -- IMetadataInventory --------------------------------------------------------------

    @_guarded
    def inventory(self) -> Inventory:
        """See :meth:`IMetadataInventory.inventory`."""
        inodes = {
            fileid: InodeRecord(fileid, node.type, node.nlink, node.parent)
            for fileid, node in self._nodes.items()
        }
        entries = [
            (fileid, name, child)
            for fileid, node in self._nodes.items()
            for name, (_, child) in node.names.items()
        ]
        return Inventory(self._root.fileid, inodes, entries)

    @_guarded
    def repair(self, repairs: list[Repair]) -> None:
        """See :meth:`IMetadataInventory.repair`."""
        for repair in repairs:
            node = self._nodes.get(repair.fileid)
            if repair.action == "drop-inode":
                self._nodes.pop(repair.fileid, None)
            elif node is None:
                continue
            elif repair.action == "nlink":
                node.nlink = repair.value
            elif repair.action == "parent":
                node.parent = repair.value
            elif repair.action == "drop-entry" and repair.name in node.names:
                self._pop_name(node, repair.name)
