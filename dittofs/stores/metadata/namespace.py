"""The POSIX namespace, decided once for every metadata store.

Each :class:`~dittofs.interfaces.IMetadataStore` operation that reads or
changes inodes and entries is written here, once, over a small
:class:`Transaction` of storage primitives (read an inode, find, add and
drop an entry, write fields, insert and delete an inode, journal an orphan,
lock).  A backend supplies only those, inside its own transaction: the memory
store on its objects, the SQL stores in one database transaction, Redis in
one optimistic ``WATCH``/``MULTI``/``EXEC``.  Every rule (``EXIST``,
``NOTEMPTY``, ``ISDIR``/``NOTDIR``, a rename onto another link of the same
file, a directory into its own subtree, the link counts of parents, the
times of both directories, journaling the orphan whose content must go) is
therefore decided in one place, and wcc after-attributes are read back
through the transaction, never computed.

Two disciplines make one algorithm fit all three backends:

* Every operation makes all of its checks before its first write, so a
  refusal leaves nothing half done, whether or not the backend can roll back.
* After its first write, an operation reads only inodes it has already read
  (Redis queues writes after ``MULTI`` and can read nothing new until
  ``EXEC``; its transaction answers those reads from what it has written).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs
from twisted.internet.defer import Deferred

from dittofs.errors import NFSError
from dittofs.model import (
    MODE_MASK,
    Attributes,
    Created,
    Linked,
    NewNode,
    Removed,
    Renamed,
    SetAttributes,
    WccAttributes,
)
from dittofs.vocabulary import CreateMode, FileType, Status

#: Mode of a new filesystem's root directory.  World-writable, as JuiceFS and
#: rclone create theirs: root is squashed by default, so a root-owned 0755
#: root would be writable by no client at all.  An unsquashed root client
#: may chmod it to something stricter.
ROOT_MODE = 0o777

#: Bytes a directory reports as its size and space used.
DIRECTORY_SIZE = 4096
_BLOCK = 4096

#: Directories deeper than this are refused a move rather than walked further.
MAX_DEPTH = 4096

T = TypeVar("T")


@attrs.frozen
class Inode:
    """One inode as stored: what the namespace reads and writes through a transaction.

    ``parent`` is the directory that holds a directory (the root's is
    itself); it is not kept up to date for other files, which may have
    several.
    """

    fileid: int
    type: FileType
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    rdev: tuple[int, int]
    atime: int
    mtime: int
    ctime: int
    parent: int = 0


class Transaction(Protocol):
    """The storage primitives one namespace operation runs on, inside one backend transaction.

    Reads return what the transaction's own earlier writes left.  ``write``
    takes any of the fields of :class:`Inode` but ``fileid`` and ``type``.
    """

    def lock(self, *fileids: int) -> None:
        """Keep other transactions off these inodes until this one ends (before reading them)."""

    def lock_namespace(self) -> None:
        """Serialise directory moves, so that two can never build a cycle together."""

    def read(self, fileid: int) -> Inode | None:
        """The inode, or None if there is none."""

    def find(self, directory: int, name: bytes) -> Inode | None:
        """The inode *name* names in *directory*, or None, read together (one snapshot)."""

    def is_empty(self, directory: int) -> bool:
        """True if *directory* has no entries."""

    def verifier(self, fileid: int) -> bytes:
        """The EXCLUSIVE create verifier kept with a regular file (empty if none)."""

    def target(self, fileid: int) -> bytes:
        """A symbolic link's target."""

    def insert(self, inode: Inode, target: bytes, verifier: bytes) -> int:
        """Store a new inode (its ``fileid`` ignored); return the id the store gave it."""

    def write(self, fileid: int, **fields: int) -> None:
        """Set these fields of an inode."""

    def add_entry(self, directory: int, name: bytes, fileid: int) -> None:
        """Add the entry, at a cookie after every cookie the directory has given."""

    def drop_entry(self, directory: int, name: bytes) -> None:
        """Remove the entry."""

    def delete(self, fileid: int) -> None:
        """Remove the inode (and, for a directory, its now empty entry list)."""

    def journal_orphan(self, fileid: int) -> None:
        """Remember that the file's content must be deleted (until ``release_orphan``)."""


def attributes(inode: Inode, generation: int) -> Attributes:
    """An inode as the protocols see it: directories report a fixed size.

    ``used`` is the size rounded up to whole blocks (an estimate: sparse
    content may use less).
    """
    if inode.type == FileType.DIR:
        size = used = DIRECTORY_SIZE
    else:
        size = inode.size
        used = (size + _BLOCK - 1) // _BLOCK * _BLOCK
    return Attributes(
        fileid=inode.fileid,
        generation=generation,
        type=inode.type,
        mode=inode.mode,
        nlink=inode.nlink,
        uid=inode.uid,
        gid=inode.gid,
        size=size,
        used=used,
        rdev=inode.rdev,
        atime=inode.atime,
        mtime=inode.mtime,
        ctime=inode.ctime,
    )


@attrs.define
class Namespace:
    """The namespace operations of a store whose file handles carry *generation*."""

    generation: int
    clock: Callable[[], int]

    # -- reading ---------------------------------------------------------------------

    def _inode(self, tx: Transaction, fileid: int) -> Inode:
        inode = tx.read(fileid)
        if inode is None:
            raise NFSError(Status.STALE, f"file id {fileid} does not exist")
        return inode

    def _directory(self, tx: Transaction, fileid: int) -> Inode:
        inode = self._inode(tx, fileid)
        if inode.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        return inode

    def _attributes(self, tx: Transaction, fileid: int) -> Attributes:
        return attributes(self._inode(tx, fileid), self.generation)

    def getattr(self, tx: Transaction, fileid: int) -> Attributes:
        """See :meth:`IMetadataStore.getattr`."""
        return self._attributes(tx, fileid)

    def lookup(self, tx: Transaction, directory: int, name: bytes) -> Attributes:
        """See :meth:`IMetadataStore.lookup`; ``..`` is the parent (the root's is itself)."""
        parent = self._directory(tx, directory)
        if name == b"..":
            return self._attributes(tx, parent.parent)
        found = tx.find(directory, name)
        if found is None:
            raise NFSError(Status.NOENT)
        return attributes(found, self.generation)

    def listable(self, tx: Transaction, fileid: int) -> None:
        """Check that READDIR may list *fileid*: it exists (else STALE) and is a directory."""
        self._directory(tx, fileid)

    def readlink(self, tx: Transaction, fileid: int) -> bytes:
        """See :meth:`IMetadataStore.readlink`."""
        if self._inode(tx, fileid).type != FileType.LNK:
            raise NFSError(Status.INVAL, "not a symbolic link")
        return tx.target(fileid)

    # -- changing one inode ---------------------------------------------------------------

    def setattr(
        self, tx: Transaction, fileid: int, changes: SetAttributes, guard_ctime: int | None
    ) -> WccAttributes:
        """See :meth:`IMetadataStore.setattr`: a new size also moves mtime, unless one is given."""
        tx.lock(fileid)
        before = self._inode(tx, fileid)
        if guard_ctime is not None and guard_ctime != before.ctime:
            raise NFSError(Status.NOT_SYNC)
        if changes.size is not None and before.type != FileType.REG:
            raise NFSError(Status.INVAL, "size can only be set on regular files")
        now = self.clock()
        fields = {"ctime": now}
        if changes.mode is not None:
            fields["mode"] = changes.mode & MODE_MASK
        for name in ("uid", "gid", "size", "atime", "mtime"):
            value = getattr(changes, name)
            if value is not None:
                fields[name] = value
        if changes.size is not None and changes.mtime is None:
            fields["mtime"] = now
        tx.write(fileid, **fields)
        return WccAttributes(attributes(before, self.generation), self._attributes(tx, fileid))

    def record_write(self, tx: Transaction, fileid: int, end: int) -> WccAttributes:
        """See :meth:`IMetadataStore.record_write`."""
        tx.lock(fileid)
        before = self._inode(tx, fileid)
        now = self.clock()
        tx.write(fileid, size=max(before.size, end), mtime=now, ctime=now)
        return WccAttributes(attributes(before, self.generation), self._attributes(tx, fileid))

    # -- the namespace ----------------------------------------------------------------------

    def make_root(self, tx: Transaction, uid: int = 0) -> int:
        """Create a new filesystem's root directory, its own parent; return its id."""
        now = self.clock()
        root = tx.insert(
            Inode(0, FileType.DIR, ROOT_MODE, 2, uid, uid, 0, (0, 0), now, now, now), b"", b""
        )
        tx.write(root, parent=root)
        return root

    def create(self, tx: Transaction, directory: int, name: bytes, node: NewNode) -> Created:
        """See :meth:`IMetadataStore.create` (RFC 1813 sections 3.3.8-3.3.11)."""
        tx.lock(directory)
        parent = self._directory(tx, directory)
        before = attributes(parent, self.generation)
        now = self.clock()
        existing = tx.find(directory, name)
        if existing is not None:
            return self._create_again(tx, existing.fileid, node, before, now)
        initial = node.attributes
        nlink = 2 if node.type == FileType.DIR else 1
        inode = Inode(
            fileid=0,
            type=node.type,
            mode=node.mode & MODE_MASK,
            nlink=nlink,
            uid=node.uid,
            gid=node.gid,
            size=_initial_size(node),
            rdev=node.rdev,
            atime=now if initial.atime is None else initial.atime,
            mtime=now if initial.mtime is None else initial.mtime,
            ctime=now,
        )
        verifier = node.verifier if node.how == CreateMode.EXCLUSIVE else b""
        fileid = tx.insert(inode, node.symlink_target, verifier)
        tx.add_entry(directory, name, fileid)
        if node.type == FileType.DIR:
            tx.write(fileid, parent=directory)
            tx.write(directory, nlink=parent.nlink + 1, mtime=now, ctime=now)
        else:
            tx.write(directory, mtime=now, ctime=now)
        return Created(
            self._attributes(tx, fileid), WccAttributes(before, self._attributes(tx, directory))
        )

    def _create_again(
        self, tx: Transaction, fileid: int, node: NewNode, before: Attributes, now: int
    ) -> Created:
        """A create of a name that exists: allowed only where RFC 1813 section 3.3.8 allows it.

        UNCHECKED reuses an existing regular file (truncating it if asked);
        EXCLUSIVE succeeds again for the same verifier (a retransmission).
        Everything else is ``EXIST``.  The directory does not change.
        """
        existing = self._inode(tx, fileid)
        if node.type != FileType.REG or existing.type != FileType.REG:
            raise NFSError(Status.EXIST)
        if node.how == CreateMode.EXCLUSIVE:
            if tx.verifier(fileid) != node.verifier:
                raise NFSError(Status.EXIST)
        elif node.how != CreateMode.UNCHECKED:
            raise NFSError(Status.EXIST)
        elif node.attributes.size is not None:
            tx.write(fileid, size=node.attributes.size, mtime=now, ctime=now)
        unchanged = WccAttributes(before, before)
        return Created(self._attributes(tx, fileid), unchanged, existed=True)

    def link(self, tx: Transaction, fileid: int, directory: int, name: bytes) -> Linked:
        """See :meth:`IMetadataStore.link` (RFC 1813 section 3.3.15)."""
        tx.lock(fileid, directory)
        node = self._inode(tx, fileid)
        parent = self._directory(tx, directory)
        if node.type == FileType.DIR:
            raise NFSError(Status.ISDIR, "hard links to directories are not allowed")
        if tx.find(directory, name) is not None:
            raise NFSError(Status.EXIST)
        before = attributes(parent, self.generation)
        now = self.clock()
        tx.add_entry(directory, name, fileid)
        tx.write(fileid, nlink=node.nlink + 1, ctime=now)
        tx.write(directory, mtime=now, ctime=now)
        return Linked(
            self._attributes(tx, fileid), WccAttributes(before, self._attributes(tx, directory))
        )

    def remove(self, tx: Transaction, directory: int, name: bytes, is_directory: bool) -> Removed:
        """See :meth:`IMetadataStore.remove`: REMOVE takes files, RMDIR empty directories."""
        tx.lock(directory)
        parent = self._directory(tx, directory)
        entry = tx.find(directory, name)
        if entry is None:
            raise NFSError(Status.NOENT)
        tx.lock(entry.fileid)
        child = self._inode(tx, entry.fileid)
        self._check_may_go(tx, child, is_directory)
        before = attributes(parent, self.generation)
        now = self.clock()
        tx.drop_entry(directory, name)
        orphan = self._unlink(tx, child, now)
        self._changed_directory(tx, directory, -(child.type == FileType.DIR), now)
        return Removed(WccAttributes(before, self._attributes(tx, directory)), orphan, child.fileid)

    def rename(
        self, tx: Transaction, source: int, source_name: bytes, target: int, target_name: bytes
    ) -> Renamed:
        """See :meth:`IMetadataStore.rename` (RFC 1813 section 3.3.14)."""
        tx.lock(source, target)
        from_before = attributes(self._directory(tx, source), self.generation)
        to_before = attributes(self._directory(tx, target), self.generation)
        entry = tx.find(source, source_name)
        if entry is None:
            raise NFSError(Status.NOENT)
        found = entry.fileid
        replacing_entry = tx.find(target, target_name)
        replacing = None if replacing_entry is None else replacing_entry.fileid
        if replacing == found:
            # Onto another link of the same file (or itself): nothing happens.
            unchanged = WccAttributes(from_before, from_before), WccAttributes(to_before, to_before)
            return Renamed(*unchanged, None, found, replacing)
        moving = self._inode(tx, found)
        moves_directory = moving.type == FileType.DIR
        if moves_directory and source != target:
            tx.lock_namespace()
            if self._is_ancestor(tx, found, target):
                raise NFSError(Status.INVAL, "cannot move a directory into its own subtree")
        replaced = None
        if replacing is not None:
            tx.lock(replacing)
            replaced = self._inode(tx, replacing)
            self._check_may_go(tx, replaced, moves_directory)
        now = self.clock()
        orphan = None
        if replaced is not None:
            tx.drop_entry(target, target_name)
            orphan = self._unlink(tx, replaced, now)
        tx.drop_entry(source, source_name)
        tx.add_entry(target, target_name, found)
        if moves_directory:
            tx.write(found, parent=target, ctime=now)
        else:
            tx.write(found, ctime=now)
        replaced_directory = replaced is not None and replaced.type == FileType.DIR
        self._changed_directory(tx, source, -moves_directory, now)
        self._changed_directory(tx, target, moves_directory - replaced_directory, now)
        return Renamed(
            WccAttributes(from_before, self._attributes(tx, source)),
            WccAttributes(to_before, self._attributes(tx, target)),
            orphan,
            found,
            replacing,
        )

    # -- the steps they share ---------------------------------------------------------------

    @staticmethod
    def _check_may_go(tx: Transaction, victim: Inode, as_directory: bool) -> None:
        """May *victim*'s name go, by RMDIR (*as_directory*) or REMOVE, or under a rename?

        A directory's name goes only as a directory (RMDIR, or replaced by a
        directory) and only when it is empty; any other file's only as a file.
        """
        if as_directory and victim.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        if not as_directory and victim.type == FileType.DIR:
            raise NFSError(Status.ISDIR)
        if victim.type == FileType.DIR and not tx.is_empty(victim.fileid):
            raise NFSError(Status.NOTEMPTY)

    def _changed_directory(
        self, tx: Transaction, directory: int, subdirectories: int, now: int
    ) -> None:
        """A directory's entries changed: new times, and one link more or less per subdirectory."""
        if subdirectories:
            nlink = self._inode(tx, directory).nlink + subdirectories
            tx.write(directory, nlink=nlink, mtime=now, ctime=now)
        else:
            tx.write(directory, mtime=now, ctime=now)

    def _unlink(self, tx: Transaction, child: Inode, now: int) -> int | None:
        """A name of *child* went: one link less (two for a directory: its '.' too).

        When that was the last, the inode goes and its id is journaled as an
        orphan in the same transaction, so its content is deleted even if
        the server stops before it gets to it; the id is returned.
        """
        remaining = child.nlink - (2 if child.type == FileType.DIR else 1)
        if remaining > 0:
            tx.write(child.fileid, nlink=remaining, ctime=now)
            return None
        tx.delete(child.fileid)
        tx.journal_orphan(child.fileid)
        return child.fileid

    def _is_ancestor(self, tx: Transaction, fileid: int, directory: int) -> bool:
        """True if *fileid* is *directory* or one of its ancestors (a walk of at most MAX_DEPTH)."""
        node = directory
        for _ in range(MAX_DEPTH):
            if node == fileid:
                return True
            inode = tx.read(node)
            if inode is None or inode.parent == node:
                return False
            node = inode.parent
        raise NFSError(Status.IO, f"directory tree deeper than {MAX_DEPTH} or cyclic")


class NamespaceStore:
    """The :class:`~dittofs.interfaces.IMetadataStore` methods the namespace answers.

    A store inherits them and says, in :meth:`_in_transaction`, how one
    namespace operation runs inside one of its transactions; it keeps its
    :class:`Namespace` in ``_namespace`` and its root's id in ``_root``.
    """

    _namespace: Namespace
    _root: int

    def _in_transaction(self, operation: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run ``operation(transaction, *args)`` in one transaction of this store."""
        raise NotImplementedError

    def root(self) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.root`."""
        return self._in_transaction(self._namespace.getattr, self._root)

    def getattr(self, fileid: int) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.getattr`."""
        return self._in_transaction(self._namespace.getattr, fileid)

    def setattr(
        self, fileid: int, changes: SetAttributes, guard_ctime: int | None
    ) -> Deferred[WccAttributes]:
        """See :meth:`IMetadataStore.setattr`."""
        return self._in_transaction(self._namespace.setattr, fileid, changes, guard_ctime)

    def lookup(self, directory: int, name: bytes) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.lookup`."""
        return self._in_transaction(self._namespace.lookup, directory, name)

    def create(self, directory: int, name: bytes, node: NewNode) -> Deferred[Created]:
        """See :meth:`IMetadataStore.create`."""
        return self._in_transaction(self._namespace.create, directory, name, node)

    def link(self, fileid: int, directory: int, name: bytes) -> Deferred[Linked]:
        """See :meth:`IMetadataStore.link`."""
        return self._in_transaction(self._namespace.link, fileid, directory, name)

    def remove(self, directory: int, name: bytes, is_directory: bool) -> Deferred[Removed]:
        """See :meth:`IMetadataStore.remove`."""
        return self._in_transaction(self._namespace.remove, directory, name, is_directory)

    def rename(
        self, source: int, source_name: bytes, target: int, target_name: bytes
    ) -> Deferred[Renamed]:
        """See :meth:`IMetadataStore.rename`."""
        rename = self._namespace.rename
        return self._in_transaction(rename, source, source_name, target, target_name)

    def readlink(self, fileid: int) -> Deferred[bytes]:
        """See :meth:`IMetadataStore.readlink`."""
        return self._in_transaction(self._namespace.readlink, fileid)

    def record_write(self, fileid: int, end: int) -> Deferred[WccAttributes]:
        """See :meth:`IMetadataStore.record_write`."""
        return self._in_transaction(self._namespace.record_write, fileid, end)


def _initial_size(node: NewNode) -> int:
    """The size a new node starts with: as asked for a file, the target's length for a symlink."""
    if node.type == FileType.LNK:
        return len(node.symlink_target)
    if node.type == FileType.REG and node.attributes.size is not None:
        return node.attributes.size
    return 0
