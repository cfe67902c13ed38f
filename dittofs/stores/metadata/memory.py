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
import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import attrs
from sortedcontainers import SortedDict, SortedSet
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from dittofs.errors import NFSError
from dittofs.interfaces import IBlockMaps, IMetadataInventory, IMetadataStore
from dittofs.model import (
    BlockChange,
    BlockMap,
    DirEntry,
    DirPage,
    FileCounts,
    InodeRecord,
    Inventory,
    Repair,
    Slice,
)
from dittofs.stores.metadata import blockmap, namespace
from dittofs.stores.metadata.namespace import Inode, Namespace, NamespaceStore

P = ParamSpec("P")
T = TypeVar("T")

#: The blocks of a file that has no map.
_NO_BLOCKS = SortedDict()

#: A nominal limit reported by FSSTAT: memory, not a table, bounds this store.
MAX_FILES = 2**32


@attrs.define
class _Node:
    #: Its fields as the namespace sees them; immutable, so a read hands it out as it is.
    inode: Inode
    target: bytes
    verifier: bytes
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


class _Transaction:
    """The namespace's primitives on the store's objects (see :class:`namespace.Transaction`).

    Nothing else runs while an operation does, so nothing needs locking; and
    the namespace checks everything before its first write, so a refusal
    changes nothing.
    """

    def __init__(self, store: MemoryMetadataStore) -> None:
        self._nodes = store._nodes
        self._store = store

    def lock(self, *fileids: int) -> None:
        pass

    def lock_namespace(self) -> None:
        pass

    def read(self, fileid: int) -> Inode | None:
        node = self._nodes.get(fileid)
        return None if node is None else node.inode

    def find(self, directory: int, name: bytes) -> Inode | None:
        entry = self._nodes[directory].names.get(name)
        return None if entry is None else self._nodes[entry[1]].inode

    def is_empty(self, directory: int) -> bool:
        return not self._nodes[directory].names

    def verifier(self, fileid: int) -> bytes:
        return self._nodes[fileid].verifier

    def target(self, fileid: int) -> bytes:
        return self._nodes[fileid].target

    def insert(self, inode: Inode, target: bytes, verifier: bytes) -> int:
        fileid = self._store._next_fileid
        self._store._next_fileid += 1
        self._nodes[fileid] = _Node(attrs.evolve(inode, fileid=fileid), target, verifier)
        return fileid

    def write(self, fileid: int, **fields: int) -> None:
        node = self._nodes[fileid]
        changes: dict[str, Any] = fields  # the namespace writes only what Inode has
        node.inode = attrs.evolve(node.inode, **changes)

    def add_entry(self, directory: int, name: bytes, fileid: int) -> None:
        node = self._nodes[directory]
        cookie = node.next_cookie
        node.next_cookie += 1
        node.names[name] = (cookie, fileid)
        if node.cookies is None:
            node.cookies = SortedDict()
        node.cookies[cookie] = name

    def drop_entry(self, directory: int, name: bytes) -> None:
        _pop_name(self._nodes[directory], name)

    def delete(self, fileid: int) -> None:
        del self._nodes[fileid]

    def journal_orphan(self, fileid: int) -> None:
        self._store._orphans.add(fileid)


def _pop_name(directory: _Node, name: bytes) -> int:
    cookie, fileid = directory.names.pop(name)
    assert directory.cookies is not None  # made with the first name
    del directory.cookies[cookie]
    return fileid


@implementer(IMetadataStore, IMetadataInventory, IBlockMaps)
class MemoryMetadataStore(NamespaceStore):
    """Metadata kept in Python objects; lost when the process exits."""

    name = "memory"

    def __init__(self, clock: Callable[[], int] = time.time_ns, root_uid: int = 0) -> None:
        self._nodes: dict[int, _Node] = {}
        self._orphans: set[int] = set()
        self._next_fileid = 1
        #: Block maps: file id -> block -> its slices, oldest first; each mapped file's
        #: length; and every key a slice names.
        self._maps: dict[int, SortedDict] = {}
        self._lengths: dict[int, int] = {}
        self._keys: SortedSet = SortedSet()
        self._seqs = itertools.count(1)
        self._namespace = Namespace(secrets.randbits(31) + 1, clock)
        self._tx = _Transaction(self)
        self._root = self._namespace.make_root(self._tx, root_uid)

    # -- IMetadataStore ----------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Nothing to prepare: the root exists from construction."""
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Nothing to flush."""
        return succeed(None)

    def _in_transaction(self, operation: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run a namespace operation now: nothing else runs meanwhile."""
        try:
            return succeed(operation(self._tx, *args))
        except NFSError:
            return fail()

    @_guarded
    def readdir(
        self, directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> DirPage:
        """See :meth:`IMetadataStore.readdir`."""
        self._namespace.listable(self._tx, directory)
        parent = self._nodes[directory]
        entries: list[DirEntry] = []
        cookies = parent.cookies
        if cookies is None:
            return DirPage([], eof=True)
        generation = self._namespace.generation
        position = cookies.bisect_right(cookie)
        end = min(position + max_entries, len(cookies))
        for entry_cookie in cookies.islice(position, end):
            name = cookies[entry_cookie]
            fileid = parent.names[name][1]
            attributes = None
            if with_attributes:
                attributes = namespace.attributes(self._nodes[fileid].inode, generation)
            entries.append(DirEntry(entry_cookie, name, fileid, attributes))
        return DirPage(entries, eof=end == len(cookies))

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

    # -- IBlockMaps ---------------------------------------------------------------------

    @_guarded
    def block_slices(self, fileid: int, first: int, last: int) -> BlockMap:
        """See :meth:`IBlockMaps.block_slices`."""
        blocks = self._maps.get(fileid, _NO_BLOCKS)
        found = (piece for block in blocks.irange(first, last) for piece in blocks[block])
        return BlockMap(self._lengths.get(fileid, 0), tuple(found))

    @_guarded
    def change_blocks(
        self, fileid: int, add: Sequence[Slice], drop_from: int | None, length: int
    ) -> BlockChange:
        """See :meth:`IBlockMaps.change_blocks`."""
        blockmap.check_change(add, length)
        blocks = self._maps.setdefault(fileid, SortedDict())
        dropped: list[str] = []
        if drop_from is not None:
            for block in list(blocks.irange(drop_from)):
                dropped.extend(piece.key for piece in blocks.pop(block))
        seqs = []
        for piece in add:
            seqs.append(next(self._seqs))
            blocks.setdefault(piece.block, []).append(attrs.evolve(piece, seq=seqs[-1]))
            if piece.key:
                self._keys.add(piece.key)
        self._lengths[fileid] = blockmap.new_length(self._lengths.get(fileid, 0), drop_from, length)
        if blockmap.forgets(add, drop_from, length):
            del self._maps[fileid], self._lengths[fileid]
        gone = blockmap.orphaned(dropped, add)
        self._keys.difference_update(gone)
        return BlockChange(tuple(seqs), gone)

    @_guarded
    def object_keys(self, after: str, limit: int) -> list[str]:
        """See :meth:`IBlockMaps.object_keys`."""
        return list(itertools.islice(self._keys.irange(after, inclusive=(False, False)), limit))

    # -- IMetadataInventory --------------------------------------------------------------

    @_guarded
    def inventory(self) -> Inventory:
        """See :meth:`IMetadataInventory.inventory`."""
        inodes = {
            fileid: InodeRecord(fileid, node.inode.type, node.inode.nlink, node.inode.parent)
            for fileid, node in self._nodes.items()
        }
        entries = [
            (fileid, name, child)
            for fileid, node in self._nodes.items()
            for name, (_, child) in node.names.items()
        ]
        return Inventory(self._root, inodes, entries)

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
                node.inode = attrs.evolve(node.inode, nlink=repair.value)
            elif repair.action == "parent":
                node.inode = attrs.evolve(node.inode, parent=repair.value)
            elif repair.action == "drop-entry" and repair.name in node.names:
                _pop_name(node, repair.name)
