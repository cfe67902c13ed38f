"""The conformance suites every metadata and content store must pass.

They ship with DittoFS, so a store in a package of its own is tested exactly
as DittoFS's own stores are.  Each suite is a mixin of ``test_*`` methods
over one ``make_store()`` hook; a store's test module mixes it into
``SynchronousTestCase``::

    from twisted.trial.unittest import SynchronousTestCase
    from dittofs.testing import TickingClock
    from dittofs.testing.conformance import MetadataStoreConformance

    class MemoryMetadataStoreTests(MetadataStoreConformance, SynchronousTestCase):
        def make_store(self) -> IMetadataStore:
            return MemoryMetadataStore(clock=TickingClock())

The suites check the contracts written in :mod:`dittofs.interfaces`, and
nothing a particular backend happens to do, so a new backend (SQLite, Redis,
S3 ...) is done when its module passes them.  Two hooks may be overridden:

* :meth:`resolve` turns a store's Deferred into its result.  The default
  needs the Deferred to have fired already, which holds for the memory
  stores and for threaded stores run with ``dittofs.testing``'s synchronous
  thread pool.
* the store's clock: comparisons of mtime/ctime are strict, so
  ``make_store`` should give the store a clock that moves between calls
  (``dittofs.testing.TickingClock``) when it can take one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from dittofs.errors import NFSError
from dittofs.interfaces import IBlockMaps, IContentStore, IMetadataStore
from dittofs.model import (
    Attributes,
    BlockChange,
    BlockMap,
    Created,
    NewNode,
    SetAttributes,
    Slice,
)
from dittofs.vocabulary import CreateMode, FileType, Status

VERIFIER = b"\x01\x02\x03\x04\x05\x06\x07\x08"
OTHER_VERIFIER = b"\x08\x07\x06\x05\x04\x03\x02\x01"

if TYPE_CHECKING:
    from twisted.trial.unittest import SynchronousTestCase as _TestCase
else:
    _TestCase = object


class _StoreSuite(_TestCase):
    """Opening, closing and Deferred plumbing shared by both suites."""

    store: Any

    def make_store(self) -> Any:
        """Return a new, unopened store; each test gets its own."""
        raise NotImplementedError

    def setUp(self) -> None:
        super().setUp()
        self.store = self.make_store()
        self.resolve(self.store.open())
        self.addCleanup(lambda: self.resolve(self.store.close()))

    def resolve(self, deferred: Deferred[Any]) -> Any:
        """The result of a store call (it must have fired: see the module docstring)."""
        return self.successResultOf(deferred)

    def assertFailsWith(self, deferred: Deferred[Any], status: Status) -> NFSError:
        """Assert that a store call failed with ``NFSError(status)``; return the error."""
        failure = self.failureResultOf(deferred, NFSError)
        error: NFSError = failure.value
        self.assertEqual(error.status, status)
        return error


class MetadataStoreConformance(_StoreSuite):
    """What :class:`~dittofs.interfaces.IMetadataStore` promises, method by method."""

    store: IMetadataStore

    def setUp(self) -> None:
        super().setUp()
        self.root: Attributes = self.resolve(self.store.root())

    # -- helpers ------------------------------------------------------------------------

    def new(
        self,
        name: bytes,
        directory: int | None = None,
        type: FileType = FileType.REG,
        mode: int = 0o644,
        **fields: Any,
    ) -> Created:
        """Create *name* (in the root by default) and return the ``Created``."""
        node = NewNode(type=type, mode=mode, uid=1000, gid=100, **fields)
        parent = self.root.fileid if directory is None else directory
        created: Created = self.resolve(self.store.create(parent, name, node))
        return created

    def file(self, name: bytes, directory: int | None = None) -> Attributes:
        """Create a regular file and return its attributes."""
        return self.new(name, directory).node

    def dir(self, name: bytes, directory: int | None = None) -> Attributes:
        """Create a directory and return its attributes."""
        return self.new(name, directory, FileType.DIR, 0o755).node

    def getattr(self, fileid: int) -> Attributes:
        """Current attributes of *fileid*."""
        attributes: Attributes = self.resolve(self.store.getattr(fileid))
        return attributes

    def listing(self, directory: int, max_entries: int = 1000) -> list[tuple[int, bytes, int]]:
        """Every (cookie, name, fileid) of a directory, paging with *max_entries*."""
        entries: list[tuple[int, bytes, int]] = []
        cookie = 0
        for _ in range(100_000):
            page = self.resolve(self.store.readdir(directory, cookie, max_entries, False))
            entries.extend((e.cookie, e.name, e.fileid) for e in page.entries)
            if page.eof:
                return entries
            self.assertTrue(page.entries, "a page that is not the last one must not be empty")
            cookie = page.entries[-1].cookie
        raise AssertionError("readdir never reached eof")

    # -- identity and the root ----------------------------------------------------------

    def test_provides_interface(self) -> None:
        """The store really implements every method and attribute of the contract."""
        self.assertTrue(verifyObject(IMetadataStore, self.store))

    def test_root_is_directory(self) -> None:
        """The root is a directory with at least its own two links ('.' and its entry)."""
        self.assertEqual(self.root.type, FileType.DIR)
        self.assertGreaterEqual(self.root.nlink, 2)
        self.assertGreater(self.root.fileid, 0)
        self.assertEqual(self.getattr(self.root.fileid), self.root)

    def test_root_is_its_own_parent(self) -> None:
        """'..' of the root is the root, as LOOKUP and READDIR's '..' rely on."""
        parent = self.resolve(self.store.lookup(self.root.fileid, b".."))
        self.assertEqual(parent.fileid, self.root.fileid)

    # -- create -------------------------------------------------------------------------

    def test_create_lookup_getattr(self) -> None:
        """A created file has what was asked for, and lookup and getattr agree on it."""
        created = self.new(b"a", mode=0o640)
        node = created.node
        self.assertFalse(created.existed)
        self.assertEqual(
            (node.type, node.mode, node.uid, node.gid, node.size, node.nlink),
            (FileType.REG, 0o640, 1000, 100, 0, 1),
        )
        self.assertNotEqual(node.fileid, self.root.fileid)
        self.assertEqual(self.resolve(self.store.lookup(self.root.fileid, b"a")), node)
        self.assertEqual(self.getattr(node.fileid), node)

    def test_create_reports_directory_change(self) -> None:
        """The directory's wcc is its state before and after: mtime and ctime move on."""
        created = self.new(b"a")
        wcc = created.directory
        self.assertIsNotNone(wcc.before)
        assert wcc.before is not None
        self.assertEqual(wcc.before.fileid, self.root.fileid)
        self.assertEqual(wcc.before.mtime, self.root.mtime)
        self.assertGreater(wcc.after.mtime, wcc.before.mtime)
        self.assertGreater(wcc.after.ctime, wcc.before.ctime)
        self.assertEqual(wcc.after, self.getattr(self.root.fileid))

    def test_create_initial_attributes(self) -> None:
        """A size and times given with the create are applied to the new file."""
        initial = SetAttributes(size=1234, atime=10**18, mtime=2 * 10**18)
        node = self.new(b"a", attributes=initial).node
        self.assertEqual((node.size, node.atime, node.mtime), (1234, 10**18, 2 * 10**18))

    def test_create_symlink_and_device(self) -> None:
        """A symlink keeps its target and a device its major/minor numbers."""
        link = self.new(b"l", type=FileType.LNK, mode=0o777, symlink_target=b"../x/y").node
        self.assertEqual(link.type, FileType.LNK)
        self.assertEqual(self.resolve(self.store.readlink(link.fileid)), b"../x/y")
        device = self.new(b"d", type=FileType.CHR, rdev=(4, 64)).node
        self.assertEqual((device.type, device.rdev), (FileType.CHR, (4, 64)))

    def test_create_in_non_directory(self) -> None:
        """Creating inside a regular file is NOTDIR."""
        node = self.file(b"a")
        new = NewNode(type=FileType.REG, mode=0o644, uid=0, gid=0)
        self.assertFailsWith(self.store.create(node.fileid, b"b", new), Status.NOTDIR)

    def test_create_in_removed_directory(self) -> None:
        """Creating in a directory that no longer exists is STALE."""
        gone = self.dir(b"d")
        self.resolve(self.store.remove(self.root.fileid, b"d", True))
        new = NewNode(type=FileType.REG, mode=0o644, uid=0, gid=0)
        self.assertFailsWith(self.store.create(gone.fileid, b"b", new), Status.STALE)

    def test_guarded_create_of_existing_name(self) -> None:
        """GUARDED over any existing name is EXIST and changes nothing."""
        first = self.file(b"a")
        self.dir(b"d")
        for name in (b"a", b"d"):
            node = NewNode(type=FileType.REG, mode=0o600, uid=0, gid=0, how=CreateMode.GUARDED)
            self.assertFailsWith(self.store.create(self.root.fileid, name, node), Status.EXIST)
        self.assertEqual(self.getattr(first.fileid).mode, 0o644)

    def test_directory_over_existing_name(self) -> None:
        """MKDIR (and SYMLINK, MKNOD) over an existing name is EXIST whatever the mode."""
        self.file(b"a")
        for kind in (FileType.DIR, FileType.LNK, FileType.FIFO):
            node = NewNode(type=kind, mode=0o755, uid=0, gid=0, how=CreateMode.UNCHECKED)
            self.assertFailsWith(self.store.create(self.root.fileid, b"a", node), Status.EXIST)

    def test_unchecked_create_of_existing_file(self) -> None:
        """UNCHECKED over a regular file returns that file, flagged existed, not a new one."""
        first = self.file(b"a")
        node = NewNode(type=FileType.REG, mode=0o600, uid=0, gid=0, how=CreateMode.UNCHECKED)
        again: Created = self.resolve(self.store.create(self.root.fileid, b"a", node))
        self.assertTrue(again.existed)
        self.assertEqual(again.node.fileid, first.fileid)
        self.assertEqual(again.node.nlink, 1)
        self.assertEqual(self.listing(self.root.fileid)[0][1:], (b"a", first.fileid))
        self.assertEqual(len(self.listing(self.root.fileid)), 1)

    def test_unchecked_create_applies_size(self) -> None:
        """UNCHECKED with a size over an existing file sets that size (truncation by create)."""
        first = self.file(b"a")
        self.resolve(self.store.record_write(first.fileid, 100))
        node = NewNode(
            type=FileType.REG,
            mode=0o644,
            uid=0,
            gid=0,
            how=CreateMode.UNCHECKED,
            attributes=SetAttributes(size=0),
        )
        again: Created = self.resolve(self.store.create(self.root.fileid, b"a", node))
        self.assertEqual(again.node.size, 0)
        self.assertEqual(self.getattr(first.fileid).size, 0)

    def test_unchecked_create_over_directory(self) -> None:
        """UNCHECKED reuses regular files only: over a directory it is EXIST."""
        self.dir(b"d")
        node = NewNode(type=FileType.REG, mode=0o644, uid=0, gid=0, how=CreateMode.UNCHECKED)
        self.assertFailsWith(self.store.create(self.root.fileid, b"d", node), Status.EXIST)

    def test_exclusive_replay(self) -> None:
        """A retransmitted EXCLUSIVE create (same verifier) finds the file it made."""
        node = NewNode(
            type=FileType.REG,
            mode=0o644,
            uid=0,
            gid=0,
            how=CreateMode.EXCLUSIVE,
            verifier=VERIFIER,
        )
        first: Created = self.resolve(self.store.create(self.root.fileid, b"x", node))
        self.assertFalse(first.existed)
        again: Created = self.resolve(self.store.create(self.root.fileid, b"x", node))
        self.assertTrue(again.existed)
        self.assertEqual(again.node.fileid, first.node.fileid)

    def test_exclusive_other_verifier(self) -> None:
        """EXCLUSIVE with another verifier, or over a non-exclusive file, is EXIST."""
        node = NewNode(
            type=FileType.REG,
            mode=0o644,
            uid=0,
            gid=0,
            how=CreateMode.EXCLUSIVE,
            verifier=VERIFIER,
        )
        self.resolve(self.store.create(self.root.fileid, b"x", node))
        other = NewNode(
            type=FileType.REG,
            mode=0o644,
            uid=0,
            gid=0,
            how=CreateMode.EXCLUSIVE,
            verifier=OTHER_VERIFIER,
        )
        self.assertFailsWith(self.store.create(self.root.fileid, b"x", other), Status.EXIST)
        self.file(b"plain")
        self.assertFailsWith(self.store.create(self.root.fileid, b"plain", node), Status.EXIST)

    def test_mkdir_bumps_parent_nlink(self) -> None:
        """A new directory has nlink 2 and adds one link ('..') to its parent."""
        created = self.new(b"d", type=FileType.DIR, mode=0o755)
        self.assertEqual(created.node.nlink, 2)
        self.assertEqual(created.directory.after.nlink, self.root.nlink + 1)
        self.assertEqual(self.getattr(self.root.fileid).nlink, self.root.nlink + 1)
        inner = self.new(b"e", created.node.fileid, FileType.DIR, 0o755)
        self.assertEqual(self.getattr(created.node.fileid).nlink, 3)
        parent = self.resolve(self.store.lookup(inner.node.fileid, b".."))
        self.assertEqual(parent.fileid, created.node.fileid)

    def test_files_do_not_bump_parent_nlink(self) -> None:
        """Only subdirectories count towards a directory's nlink."""
        self.file(b"a")
        self.new(b"l", type=FileType.LNK, symlink_target=b"a")
        self.assertEqual(self.getattr(self.root.fileid).nlink, self.root.nlink)

    # -- setattr ------------------------------------------------------------------------

    def test_setattr_each_field(self) -> None:
        """Each settable field changes alone; ctime moves on every change."""
        node = self.file(b"a")
        cases = [
            (SetAttributes(mode=0o4751), "mode", 0o4751),
            (SetAttributes(uid=42), "uid", 42),
            (SetAttributes(gid=43), "gid", 43),
            (SetAttributes(atime=5 * 10**17), "atime", 5 * 10**17),
            (SetAttributes(mtime=6 * 10**17), "mtime", 6 * 10**17),
            (SetAttributes(size=77), "size", 77),
        ]
        for changes, field, value in cases:
            before = self.getattr(node.fileid)
            wcc = self.resolve(self.store.setattr(node.fileid, changes, None))
            after = self.getattr(node.fileid)
            self.assertEqual(getattr(after, field), value, field)
            self.assertEqual(wcc.after, after, field)
            self.assertEqual(wcc.before, before, field)
            self.assertGreater(after.ctime, before.ctime, field)
            for other in ("mode", "uid", "gid", "atime", "size", "type", "nlink"):
                if other != field:
                    self.assertEqual(getattr(after, other), getattr(before, other), other)

    def test_setattr_size_sets_mtime(self) -> None:
        """Changing the size (either way) is a modification: mtime moves on."""
        node = self.file(b"a")
        for size in (1000, 10, 10):
            before = self.getattr(node.fileid)
            self.resolve(self.store.setattr(node.fileid, SetAttributes(size=size), None))
            after = self.getattr(node.fileid)
            self.assertEqual(after.size, size)
            self.assertGreater(after.mtime, before.mtime)

    def test_setattr_guard_mismatch(self) -> None:
        """A ctime guard that does not match is NOT_SYNC and changes nothing."""
        node = self.file(b"a")
        changes = SetAttributes(mode=0o600, size=10)
        self.assertFailsWith(
            self.store.setattr(node.fileid, changes, node.ctime - 1), Status.NOT_SYNC
        )
        self.assertEqual(self.getattr(node.fileid), node)

    def test_setattr_guard_match(self) -> None:
        """A ctime guard equal to the current ctime lets the change through."""
        node = self.file(b"a")
        self.resolve(self.store.setattr(node.fileid, SetAttributes(mode=0o600), node.ctime))
        self.assertEqual(self.getattr(node.fileid).mode, 0o600)

    def test_setattr_size_on_non_regular(self) -> None:
        """Only regular files have a settable size: INVAL for a directory or symlink."""
        directory = self.dir(b"d")
        link = self.new(b"l", type=FileType.LNK, symlink_target=b"d").node
        for fileid in (directory.fileid, link.fileid):
            self.assertFailsWith(
                self.store.setattr(fileid, SetAttributes(size=0), None), Status.INVAL
            )

    def test_setattr_on_directory(self) -> None:
        """Mode and owner changes work on directories too."""
        directory = self.dir(b"d")
        changes = SetAttributes(mode=0o2775, gid=7)
        self.resolve(self.store.setattr(directory.fileid, changes, None))
        after = self.getattr(directory.fileid)
        self.assertEqual((after.mode, after.gid, after.type), (0o2775, 7, FileType.DIR))

    def test_setattr_removed(self) -> None:
        """SETATTR of a file that is gone is STALE."""
        node = self.file(b"a")
        self.resolve(self.store.remove(self.root.fileid, b"a", False))
        self.assertFailsWith(
            self.store.setattr(node.fileid, SetAttributes(mode=0), None), Status.STALE
        )

    # -- lookup -------------------------------------------------------------------------

    def test_lookup_missing(self) -> None:
        """An absent name is NOENT."""
        self.assertFailsWith(self.store.lookup(self.root.fileid, b"nope"), Status.NOENT)

    def test_lookup_in_file(self) -> None:
        """Looking up inside a regular file is NOTDIR."""
        node = self.file(b"a")
        self.assertFailsWith(self.store.lookup(node.fileid, b"x"), Status.NOTDIR)

    def test_lookup_in_removed_directory(self) -> None:
        """Looking up in a directory that is gone is STALE."""
        gone = self.dir(b"d")
        self.resolve(self.store.remove(self.root.fileid, b"d", True))
        self.assertFailsWith(self.store.lookup(gone.fileid, b"x"), Status.STALE)

    def test_lookup_is_exact(self) -> None:
        """Names are bytes compared exactly: case and non-UTF-8 bytes matter."""
        upper = self.file(b"A")
        latin = self.file(b"caf\xe9")
        self.assertFailsWith(self.store.lookup(self.root.fileid, b"a"), Status.NOENT)
        self.assertEqual(self.resolve(self.store.lookup(self.root.fileid, b"A")), upper)
        self.assertEqual(self.resolve(self.store.lookup(self.root.fileid, b"caf\xe9")), latin)

    # -- link ---------------------------------------------------------------------------

    def test_link(self) -> None:
        """A hard link is the same file under a second name; nlink and ctime follow."""
        node = self.file(b"a")
        other = self.dir(b"d")
        linked = self.resolve(self.store.link(node.fileid, other.fileid, b"b"))
        self.assertEqual(linked.node.fileid, node.fileid)
        self.assertEqual(linked.node.nlink, 2)
        self.assertGreater(linked.node.ctime, node.ctime)
        self.assertEqual(linked.directory.after.fileid, other.fileid)
        self.assertGreater(linked.directory.after.mtime, other.mtime)
        found = self.resolve(self.store.lookup(other.fileid, b"b"))
        self.assertEqual(found.fileid, node.fileid)
        self.assertEqual(self.getattr(node.fileid).nlink, 2)

    def test_link_directory(self) -> None:
        """Hard links to directories are refused with ISDIR."""
        directory = self.dir(b"d")
        self.assertFailsWith(
            self.store.link(directory.fileid, self.root.fileid, b"e"), Status.ISDIR
        )

    def test_link_existing_name(self) -> None:
        """A link over an existing name is EXIST."""
        node = self.file(b"a")
        self.file(b"b")
        self.assertFailsWith(self.store.link(node.fileid, self.root.fileid, b"b"), Status.EXIST)
        self.assertEqual(self.getattr(node.fileid).nlink, 1)

    # -- remove and rmdir ---------------------------------------------------------------

    def test_remove_last_link(self) -> None:
        """Removing the only link reports the file as orphaned and it becomes STALE."""
        node = self.file(b"a")
        removed = self.resolve(self.store.remove(self.root.fileid, b"a", False))
        self.assertEqual(removed.orphan, node.fileid)
        self.assertGreater(removed.directory.after.mtime, removed.directory.before.mtime)
        self.assertFailsWith(self.store.getattr(node.fileid), Status.STALE)
        self.assertFailsWith(self.store.lookup(self.root.fileid, b"a"), Status.NOENT)

    def test_remove_one_of_two_links(self) -> None:
        """While another link remains, nothing is orphaned; the last removal orphans."""
        node = self.file(b"a")
        self.resolve(self.store.link(node.fileid, self.root.fileid, b"b"))
        first = self.resolve(self.store.remove(self.root.fileid, b"a", False))
        self.assertIsNone(first.orphan)
        remaining = self.getattr(node.fileid)
        self.assertEqual(remaining.nlink, 1)
        self.assertGreater(remaining.ctime, node.ctime)
        last = self.resolve(self.store.remove(self.root.fileid, b"b", False))
        self.assertEqual(last.orphan, node.fileid)

    def test_remove_directory(self) -> None:
        """REMOVE of a directory is ISDIR and leaves it in place."""
        self.dir(b"d")
        self.assertFailsWith(self.store.remove(self.root.fileid, b"d", False), Status.ISDIR)
        self.resolve(self.store.lookup(self.root.fileid, b"d"))

    def test_remove_missing(self) -> None:
        """REMOVE and RMDIR of an absent name are NOENT."""
        for is_directory in (False, True):
            self.assertFailsWith(
                self.store.remove(self.root.fileid, b"nope", is_directory), Status.NOENT
            )

    def test_rmdir(self) -> None:
        """RMDIR removes an empty directory, orphans it and gives its parent a link back."""
        directory = self.dir(b"d")
        removed = self.resolve(self.store.remove(self.root.fileid, b"d", True))
        self.assertEqual(removed.orphan, directory.fileid)
        self.assertEqual(removed.directory.after.nlink, self.root.nlink)
        self.assertFailsWith(self.store.getattr(directory.fileid), Status.STALE)

    def test_rmdir_non_directory(self) -> None:
        """RMDIR of a file is NOTDIR."""
        self.file(b"a")
        self.assertFailsWith(self.store.remove(self.root.fileid, b"a", True), Status.NOTDIR)

    def test_rmdir_not_empty(self) -> None:
        """RMDIR of a directory with an entry is NOTEMPTY, whatever the entry is."""
        directory = self.dir(b"d")
        self.file(b"a", directory.fileid)
        self.assertFailsWith(self.store.remove(self.root.fileid, b"d", True), Status.NOTEMPTY)
        self.resolve(self.store.remove(directory.fileid, b"a", False))
        self.dir(b"e", directory.fileid)
        self.assertFailsWith(self.store.remove(self.root.fileid, b"d", True), Status.NOTEMPTY)

    # -- rename -------------------------------------------------------------------------

    def test_rename_within_directory(self) -> None:
        """A rename moves the name: the old one is gone, the new one is the same file."""
        node = self.file(b"a")
        renamed = self.resolve(self.store.rename(self.root.fileid, b"a", self.root.fileid, b"b"))
        self.assertIsNone(renamed.orphan)
        self.assertFailsWith(self.store.lookup(self.root.fileid, b"a"), Status.NOENT)
        self.assertEqual(
            self.resolve(self.store.lookup(self.root.fileid, b"b")).fileid, node.fileid
        )
        self.assertGreater(renamed.source.after.mtime, renamed.source.before.mtime)

    def test_rename_over_file(self) -> None:
        """Replacing a file orphans it (its last link went) and keeps the source's id."""
        source = self.file(b"a")
        target = self.file(b"b")
        renamed = self.resolve(self.store.rename(self.root.fileid, b"a", self.root.fileid, b"b"))
        self.assertEqual(renamed.orphan, target.fileid)
        self.assertEqual(
            self.resolve(self.store.lookup(self.root.fileid, b"b")).fileid, source.fileid
        )
        self.assertFailsWith(self.store.getattr(target.fileid), Status.STALE)
        self.assertEqual([e[1] for e in self.listing(self.root.fileid)], [b"b"])

    def test_rename_over_linked_file(self) -> None:
        """Replacing a file that has another link orphans nothing and drops one link."""
        self.file(b"a")
        target = self.file(b"b")
        self.resolve(self.store.link(target.fileid, self.root.fileid, b"c"))
        renamed = self.resolve(self.store.rename(self.root.fileid, b"a", self.root.fileid, b"b"))
        self.assertIsNone(renamed.orphan)
        self.assertEqual(self.getattr(target.fileid).nlink, 1)

    def test_rename_directory_across_directories(self) -> None:
        """Moving a directory moves a link from the old parent to the new, and its '..'."""
        first = self.dir(b"p")
        second = self.dir(b"q")
        moving = self.dir(b"d", first.fileid)
        renamed = self.resolve(self.store.rename(first.fileid, b"d", second.fileid, b"e"))
        self.assertEqual(renamed.source.after.nlink, 2)
        self.assertEqual(renamed.target.after.nlink, 3)
        self.assertEqual(self.getattr(first.fileid).nlink, 2)
        self.assertEqual(self.getattr(second.fileid).nlink, 3)
        parent = self.resolve(self.store.lookup(moving.fileid, b".."))
        self.assertEqual(parent.fileid, second.fileid)
        self.assertEqual(renamed.source.before.fileid, first.fileid)
        self.assertEqual(renamed.target.before.fileid, second.fileid)

    def test_rename_file_across_directories(self) -> None:
        """Moving a file leaves every nlink alone."""
        other = self.dir(b"d")
        node = self.file(b"a")
        self.resolve(self.store.rename(self.root.fileid, b"a", other.fileid, b"a"))
        self.assertEqual(self.getattr(node.fileid).nlink, 1)
        self.assertEqual(self.getattr(other.fileid).nlink, 2)
        self.assertEqual(self.resolve(self.store.lookup(other.fileid, b"a")).fileid, node.fileid)

    def test_rename_into_own_subtree(self) -> None:
        """A directory cannot move into itself or below itself: INVAL, nothing changes."""
        top = self.dir(b"d")
        middle = self.dir(b"e", top.fileid)
        for target in (top.fileid, middle.fileid):
            self.assertFailsWith(
                self.store.rename(self.root.fileid, b"d", target, b"x"), Status.INVAL
            )
        self.assertEqual(self.resolve(self.store.lookup(self.root.fileid, b"d")).fileid, top.fileid)

    def test_rename_file_over_directory(self) -> None:
        """A non-directory cannot replace a directory: ISDIR."""
        self.file(b"a")
        self.dir(b"d")
        self.assertFailsWith(
            self.store.rename(self.root.fileid, b"a", self.root.fileid, b"d"), Status.ISDIR
        )

    def test_rename_directory_over_file(self) -> None:
        """A directory cannot replace a non-directory: NOTDIR."""
        self.dir(b"d")
        self.file(b"a")
        self.assertFailsWith(
            self.store.rename(self.root.fileid, b"d", self.root.fileid, b"a"), Status.NOTDIR
        )

    def test_rename_directory_over_non_empty_directory(self) -> None:
        """A directory may only replace an empty one: NOTEMPTY."""
        self.dir(b"d")
        full = self.dir(b"e")
        self.file(b"a", full.fileid)
        self.assertFailsWith(
            self.store.rename(self.root.fileid, b"d", self.root.fileid, b"e"), Status.NOTEMPTY
        )

    def test_rename_directory_over_empty_directory(self) -> None:
        """Replacing an empty directory orphans it and leaves the parent's nlink right."""
        moving = self.dir(b"d")
        replaced = self.dir(b"e")
        renamed = self.resolve(self.store.rename(self.root.fileid, b"d", self.root.fileid, b"e"))
        self.assertEqual(renamed.orphan, replaced.fileid)
        self.assertEqual(self.getattr(self.root.fileid).nlink, self.root.nlink + 1)
        self.assertEqual(
            self.resolve(self.store.lookup(self.root.fileid, b"e")).fileid, moving.fileid
        )
        self.assertFailsWith(self.store.getattr(replaced.fileid), Status.STALE)

    def test_rename_onto_another_link_of_same_file(self) -> None:
        """Renaming a name onto another link of the same file does nothing (POSIX)."""
        node = self.file(b"a")
        self.resolve(self.store.link(node.fileid, self.root.fileid, b"b"))
        renamed = self.resolve(self.store.rename(self.root.fileid, b"a", self.root.fileid, b"b"))
        self.assertIsNone(renamed.orphan)
        self.assertEqual(self.getattr(node.fileid).nlink, 2)
        for name in (b"a", b"b"):
            self.assertEqual(
                self.resolve(self.store.lookup(self.root.fileid, name)).fileid, node.fileid
            )

    def test_rename_onto_itself(self) -> None:
        """Renaming a name to itself succeeds and changes nothing."""
        node = self.dir(b"d")
        renamed = self.resolve(self.store.rename(self.root.fileid, b"d", self.root.fileid, b"d"))
        self.assertIsNone(renamed.orphan)
        self.assertEqual(self.getattr(node.fileid).nlink, 2)
        self.assertEqual(self.getattr(self.root.fileid).nlink, self.root.nlink + 1)

    def test_rename_missing_source(self) -> None:
        """A missing source name is NOENT, even when the target exists."""
        self.file(b"b")
        self.assertFailsWith(
            self.store.rename(self.root.fileid, b"a", self.root.fileid, b"b"), Status.NOENT
        )
        self.resolve(self.store.lookup(self.root.fileid, b"b"))

    # -- readdir ------------------------------------------------------------------------

    def test_readdir_empty(self) -> None:
        """An empty directory lists nothing (no '.' or '..': the NFS layer adds those)."""
        page = self.resolve(self.store.readdir(self.root.fileid, 0, 10, False))
        self.assertEqual(page.entries, [])
        self.assertTrue(page.eof)

    def test_readdir_paging(self) -> None:
        """Small pages return every entry exactly once, in strictly increasing cookie order."""
        made = {self.file(b"f%02d" % i).fileid: b"f%02d" % i for i in range(25)}
        entries = self.listing(self.root.fileid, max_entries=3)
        self.assertEqual({fileid: name for _, name, fileid in entries}, made)
        self.assertEqual(len(entries), 25)
        cookies = [cookie for cookie, _, _ in entries]
        self.assertTrue(all(c > 0 for c in cookies))
        self.assertEqual(cookies, sorted(set(cookies)))
        self.assertNotIn(b".", [name for _, name, _ in entries])
        self.assertNotIn(b"..", [name for _, name, _ in entries])

    def test_readdir_pages_respect_max_entries(self) -> None:
        """No page holds more than max_entries entries."""
        for i in range(10):
            self.file(b"f%d" % i)
        page = self.resolve(self.store.readdir(self.root.fileid, 0, 4, False))
        self.assertLessEqual(len(page.entries), 4)
        self.assertGreater(len(page.entries), 0)
        self.assertFalse(page.eof)

    def test_readdir_with_attributes(self) -> None:
        """Asked with attributes, each entry carries the same attributes getattr gives."""
        self.file(b"a")
        self.dir(b"d")
        page = self.resolve(self.store.readdir(self.root.fileid, 0, 10, True))
        self.assertEqual(len(page.entries), 2)
        for entry in page.entries:
            self.assertEqual(entry.attributes, self.getattr(entry.fileid))

    def test_readdir_cookies_survive_changes(self) -> None:
        """Cookies stay valid while other entries come and go, even a removed entry's cookie."""
        names = [b"f%02d" % i for i in range(20)]
        for name in names:
            self.file(name)
        first = self.resolve(self.store.readdir(self.root.fileid, 0, 5, False))
        seen = [e.name for e in first.entries]
        resume = first.entries[-1]
        # The entry whose cookie we hold goes, and so do some not yet listed; others arrive.
        removed = {resume.name, *[n for n in names if n not in seen][::3]}
        for name in removed:
            self.resolve(self.store.remove(self.root.fileid, name, False))
        for i in range(5):
            self.file(b"new%d" % i)
        cookie = resume.cookie
        rest: list[bytes] = []
        while True:
            page = self.resolve(self.store.readdir(self.root.fileid, cookie, 3, False))
            rest.extend(e.name for e in page.entries)
            if page.eof:
                break
            cookie = page.entries[-1].cookie
        expected = {n for n in names if n not in seen and n not in removed}
        self.assertTrue(expected <= set(rest), expected - set(rest))
        self.assertFalse(set(rest) & set(seen), "an entry was listed twice")
        self.assertFalse(set(rest) & removed, "a removed entry was listed")
        self.assertEqual(len(rest), len(set(rest)))

    def test_readdir_large_directory(self) -> None:
        """2,000 entries page out completely and in order."""
        for i in range(2000):
            self.file(b"file-%04d" % i)
        entries = self.listing(self.root.fileid, max_entries=97)
        self.assertEqual(len(entries), 2000)
        self.assertEqual({name for _, name, _ in entries}, {b"file-%04d" % i for i in range(2000)})
        cookies = [cookie for cookie, _, _ in entries]
        self.assertEqual(cookies, sorted(set(cookies)))

    def test_readdir_past_the_end(self) -> None:
        """Continuing from the last cookie gives an empty, final page."""
        self.file(b"a")
        page = self.resolve(self.store.readdir(self.root.fileid, 0, 10, False))
        after = self.resolve(
            self.store.readdir(self.root.fileid, page.entries[-1].cookie, 10, False)
        )
        self.assertEqual(after.entries, [])
        self.assertTrue(after.eof)

    def test_readdir_of_file(self) -> None:
        """Listing a regular file is NOTDIR."""
        node = self.file(b"a")
        self.assertFailsWith(self.store.readdir(node.fileid, 0, 10, False), Status.NOTDIR)

    # -- orphans ------------------------------------------------------------------------

    def test_last_unlink_leaves_a_pending_orphan(self) -> None:
        """Removing the last name records the orphan until released; other links do not."""
        node = self.file(b"a")
        self.resolve(self.store.link(node.fileid, self.root.fileid, b"b"))
        self.resolve(self.store.remove(self.root.fileid, b"a", False))
        self.assertEqual(self.resolve(self.store.pending_orphans()), [])
        removed = self.resolve(self.store.remove(self.root.fileid, b"b", False))
        self.assertEqual(self.resolve(self.store.pending_orphans()), [removed.orphan])
        self.resolve(self.store.release_orphan(node.fileid))
        self.assertEqual(self.resolve(self.store.pending_orphans()), [])
        self.resolve(self.store.release_orphan(node.fileid))  # releasing twice is harmless

    def test_rename_over_a_file_leaves_a_pending_orphan(self) -> None:
        """A file replaced by RENAME is an orphan just like a removed one."""
        self.file(b"a")
        target = self.file(b"b")
        renamed = self.resolve(self.store.rename(self.root.fileid, b"a", self.root.fileid, b"b"))
        self.assertEqual(renamed.orphan, target.fileid)
        self.assertEqual(self.resolve(self.store.pending_orphans()), [target.fileid])

    # -- readlink -----------------------------------------------------------------------

    def test_readlink_of_non_symlink(self) -> None:
        """READLINK of a file or directory is INVAL."""
        node = self.file(b"a")
        directory = self.dir(b"d")
        for fileid in (node.fileid, directory.fileid):
            self.assertFailsWith(self.store.readlink(fileid), Status.INVAL)

    def test_readlink_keeps_bytes(self) -> None:
        """A target is stored byte for byte, including bytes that are not UTF-8."""
        target = b"/odd/\xff\xfe/" + b"x" * 1000
        link = self.new(b"l", type=FileType.LNK, symlink_target=target).node
        self.assertEqual(self.resolve(self.store.readlink(link.fileid)), target)

    def test_symlink_size_is_target_length(self) -> None:
        """A symlink's size is its target's length, as POSIX stat reports it."""
        link = self.new(b"l", type=FileType.LNK, symlink_target=b"../somewhere").node
        self.assertEqual(link.size, len(b"../somewhere"))
        self.assertEqual(self.resolve(self.store.getattr(link.fileid)).size, len(b"../somewhere"))

    # -- record_write -------------------------------------------------------------------

    def test_record_write_grows(self) -> None:
        """A write past the end grows the size and moves mtime and ctime."""
        node = self.file(b"a")
        wcc = self.resolve(self.store.record_write(node.fileid, 4096))
        self.assertEqual(wcc.before, node)
        self.assertEqual(wcc.after.size, 4096)
        self.assertGreater(wcc.after.mtime, node.mtime)
        self.assertGreater(wcc.after.ctime, node.ctime)
        self.assertEqual(self.getattr(node.fileid), wcc.after)

    def test_record_write_never_shrinks(self) -> None:
        """A write inside the file keeps the size but is still a modification."""
        node = self.file(b"a")
        self.resolve(self.store.record_write(node.fileid, 100))
        before = self.getattr(node.fileid)
        wcc = self.resolve(self.store.record_write(node.fileid, 10))
        self.assertEqual(wcc.after.size, 100)
        self.assertGreater(wcc.after.mtime, before.mtime)

    def test_record_write_removed(self) -> None:
        """Recording a write to a file that is gone is STALE."""
        node = self.file(b"a")
        self.resolve(self.store.remove(self.root.fileid, b"a", False))
        self.assertFailsWith(self.store.record_write(node.fileid, 1), Status.STALE)

    # -- file ids and counts ------------------------------------------------------------

    def test_getattr_of_unknown_id(self) -> None:
        """An id the store never gave out is STALE, not some other file."""
        self.assertFailsWith(self.store.getattr(2**62), Status.STALE)

    def test_file_ids_never_reused(self) -> None:
        """Removed files' ids are not handed out again, so old handles stay STALE."""
        seen: set[int] = {self.root.fileid}
        for round in range(20):
            node = self.file(b"f")
            self.assertNotIn(node.fileid, seen, f"round {round}")
            seen.add(node.fileid)
            self.resolve(self.store.remove(self.root.fileid, b"f", False))
            directory = self.dir(b"d")
            self.assertNotIn(directory.fileid, seen)
            seen.add(directory.fileid)
            self.resolve(self.store.remove(self.root.fileid, b"d", True))
        self.assertTrue(all(fileid > 0 for fileid in seen))

    def test_file_counts(self) -> None:
        """FSSTAT's file counts follow creates and removes."""
        counts = self.resolve(self.store.file_counts())
        self.assertGreaterEqual(counts.files, 1)  # the root
        self.assertGreaterEqual(counts.free_files, 0)
        self.file(b"a")
        self.dir(b"d")
        grown = self.resolve(self.store.file_counts())
        self.assertEqual(grown.files, counts.files + 2)
        self.assertLessEqual(grown.free_files, counts.free_files)
        self.resolve(self.store.remove(self.root.fileid, b"a", False))
        self.resolve(self.store.remove(self.root.fileid, b"d", True))
        self.assertEqual(self.resolve(self.store.file_counts()).files, counts.files)


class BlockMapConformance(_StoreSuite):
    """What :class:`~dittofs.interfaces.IBlockMaps` promises, for a metadata store that has it.

    File ids here are any numbers: a block map outlives the inode (content
    is deleted after the last link goes), so it never asks the namespace.
    """

    def map(self, fileid: int, first: int = 0, last: int = 2**40) -> BlockMap:
        """The length and the slices of blocks *first* to *last* of *fileid*."""
        found: BlockMap = self.resolve(self.store.block_slices(fileid, first, last))
        return found

    def slices(self, fileid: int, first: int = 0, last: int = 2**40) -> list[Slice]:
        """The slices of blocks *first* to *last* of *fileid*."""
        return list(self.map(fileid, first, last).slices)

    def change(
        self, fileid: int, add: list[Slice], drop_from: int | None = None, length: int = 0
    ) -> BlockChange:
        """Change a map and return the ``BlockChange``."""
        deferred = self.store.change_blocks(fileid, add, drop_from, length)
        changed: BlockChange = self.resolve(deferred)
        return changed

    def keys(self, after: str = "", limit: int = 1000) -> list[str]:
        """One page of :meth:`IBlockMaps.object_keys`."""
        keys: list[str] = self.resolve(self.store.object_keys(after, limit))
        return keys

    def test_provides_interface(self) -> None:
        """The store really implements every method of the block map contract."""
        self.assertTrue(verifyObject(IBlockMaps, self.store))

    def test_unknown_file_has_an_empty_map(self) -> None:
        """A file never mapped has length 0 and no slices; dropping its blocks orphans nothing."""
        self.assertEqual(self.map(7), BlockMap(0, ()))
        self.assertEqual(self.change(7, [], drop_from=0), BlockChange((), ()))
        self.assertEqual(self.map(7), BlockMap(0, ()))

    def test_slices_read_back_by_block_then_age(self) -> None:
        """Every field comes back; blocks in order, each block's slices oldest first."""
        first = [Slice(3, 0, 4096, "k3a"), Slice(1, 100, 50, "k1a", start=100)]
        second = [Slice(3, 10, 20, "k3b", start=10), Slice(1, 0, 10, "")]
        seqs = self.change(9, first).seqs + self.change(9, second).seqs
        self.assertEqual(len(set(seqs)), 4)
        self.assertEqual(list(seqs), sorted(seqs), "a later slice has a higher seq")
        expected = [
            attrs.evolve(first[1], seq=seqs[1]),
            attrs.evolve(second[1], seq=seqs[3]),
            attrs.evolve(first[0], seq=seqs[0]),
            attrs.evolve(second[0], seq=seqs[2]),
        ]
        self.assertEqual(self.slices(9), expected)

    def test_a_range_reads_only_its_blocks(self) -> None:
        """Blocks outside *first*..*last* are not returned; both ends are included."""
        self.change(9, [Slice(block, 0, 1, f"k{block}") for block in range(6)])
        self.assertEqual([piece.block for piece in self.slices(9, 2, 4)], [2, 3, 4])
        self.assertEqual([piece.block for piece in self.slices(9, 5, 5)], [5])
        self.assertEqual(self.slices(9, 6, 100), [])

    def test_block_indices_beyond_32_bits(self) -> None:
        """A block far into a huge sparse file is mapped and read alone."""
        far = 2**40
        seq = self.change(9, [Slice(far, 5, 7, "far", start=5)], length=2**52).seqs[0]
        self.assertEqual(self.map(9, far, far), BlockMap(2**52, (Slice(far, 5, 7, "far", 5, seq),)))
        self.assertEqual(self.slices(9, 0, far - 1), [])

    def test_files_have_separate_maps(self) -> None:
        """A change of one file's map leaves every other file's alone."""
        self.change(1, [Slice(0, 0, 10, "one")], length=10)
        self.change(2, [Slice(0, 0, 10, "two")], length=20)
        self.assertEqual(self.change(1, [], drop_from=0).orphaned, ("one",))
        self.assertEqual(self.map(2), BlockMap(20, tuple(self.slices(2))))
        self.assertEqual([piece.key for piece in self.slices(2)], ["two"])

    def test_a_write_never_shortens(self) -> None:
        """Without *drop_from* the length only grows: an earlier write may land last."""
        self.change(9, [Slice(2, 0, 10, "late")], length=2 * 4096 + 10)
        self.change(9, [Slice(0, 0, 10, "early")], length=10)
        self.assertEqual(self.map(9).length, 2 * 4096 + 10)
        self.change(9, [], length=10**12)
        self.assertEqual(self.map(9).length, 10**12, "a truncate that extends")

    def test_drop_from_a_block(self) -> None:
        """Blocks from *drop_from* go; their keys are orphaned, sorted, the empty key never."""
        self.change(9, [Slice(0, 0, 8, "a"), Slice(1, 0, 8, "c"), Slice(2, 0, 8, "")], length=99)
        self.change(9, [Slice(1, 4, 4, "b"), Slice(3, 0, 8, "c3")])
        change = self.change(9, [], drop_from=1, length=8)
        self.assertEqual(change, BlockChange((), ("b", "c", "c3")))
        self.assertEqual([piece.key for piece in self.slices(9)], ["a"])
        self.assertEqual(self.map(9).length, 8, "a truncate sets the length")

    def test_drop_comes_before_add(self) -> None:
        """A truncate and a new slice in one change: the new slice stays, re-added keys live."""
        self.change(9, [Slice(0, 0, 8, "old"), Slice(1, 0, 8, "again")], length=4104)
        change = self.change(
            9, [Slice(0, 4, 4, ""), Slice(1, 0, 2, "again")], drop_from=0, length=4
        )
        self.assertEqual(change.orphaned, ("old",))
        found = [(piece.block, piece.offset, piece.key) for piece in self.slices(9)]
        self.assertEqual(found, [(0, 4, ""), (1, 0, "again")])
        self.assertEqual(self.keys(), ["again"])
        self.assertEqual(self.map(9).length, 4)

    def test_a_delete_forgets_the_file(self) -> None:
        """Dropping every block to length 0 leaves the map of a file never written."""
        self.change(9, [Slice(0, 0, 8, "a")], length=8)
        self.change(9, [], drop_from=0, length=0)
        self.assertEqual(self.map(9), BlockMap(0, ()))

    def test_seq_keeps_growing_after_everything_is_dropped(self) -> None:
        """After a truncate to zero, new slices are still newer than any before it.

        A gateway that cached a block by its newest ``seq`` must never see that
        number again for different bytes.
        """
        before = self.change(9, [Slice(0, 0, 8, "a")], length=8).seqs[0]
        self.change(9, [], drop_from=0)
        after = self.change(9, [Slice(0, 0, 8, "b")], length=8).seqs[0]
        self.assertGreater(after, before)

    def test_a_bad_change_changes_nothing(self) -> None:
        """INVAL for a slice with no length or a negative field, and the map is as it was."""
        self.change(9, [Slice(0, 0, 8, "a")], length=8)
        kept = self.map(9)
        bad_slices = (Slice(0, 0, 0, "x"), Slice(0, -1, 8, "x"), Slice(-1, 0, 8, "x"))
        for bad in bad_slices:
            failed = self.store.change_blocks(9, [Slice(1, 0, 8, "y"), bad], 0, 0)
            self.assertFailsWith(failed, Status.INVAL)
        self.assertFailsWith(self.store.change_blocks(9, [], 0, -1), Status.INVAL)
        self.assertEqual(self.map(9), kept)
        self.assertEqual(self.keys(), ["a"])

    def test_keys_with_any_characters(self) -> None:
        """Keys are kept byte for byte, separators and all."""
        key = "blocks/00ff:x y:é/€-1"
        self.change(9, [Slice(0, 0, 8, key, start=3)])
        self.assertEqual(self.slices(9)[0].key, key)
        self.assertEqual(self.keys(), [key])

    def test_object_keys_in_byte_order_each_once(self) -> None:
        """Every named key once, in UTF-8 byte order (upper case before lower, é after z)."""
        names = ["b", "a", "B", "é", "z", "A1", "a"]
        self.change(1, [Slice(0, i, 1, name) for i, name in enumerate(names)])
        self.change(2, [Slice(5, 0, 1, "m"), Slice(6, 0, 1, "")])
        expected = sorted({*names, "m"}, key=lambda key: key.encode())
        self.assertEqual(self.keys(), expected)

    def test_object_keys_page(self) -> None:
        """Pages resume after the last key and stop at *limit*."""
        every = [f"k{i:03d}" for i in range(25)]
        self.change(1, [Slice(i, 0, 1, key) for i, key in enumerate(every)])
        pages: list[str] = []
        after = ""
        for _ in range(10):
            page = self.keys(after, 10)
            self.assertLessEqual(len(page), 10)
            if not page:
                break
            pages.extend(page)
            after = page[-1]
        self.assertEqual(pages, every)

    def test_orphaned_keys_leave_the_listing(self) -> None:
        """Once no slice names a key it is not listed, so a collector may delete its object."""
        self.change(1, [Slice(0, 0, 1, "gone"), Slice(1, 0, 1, "kept")])
        self.change(1, [], drop_from=0)
        self.change(1, [Slice(1, 0, 1, "kept")])
        self.assertEqual(self.keys(), ["kept"])


class ContentStoreConformance(_StoreSuite):
    """What :class:`~dittofs.interfaces.IContentStore` promises, method by method."""

    store: IContentStore

    def read(self, fileid: int, offset: int, count: int) -> bytes:
        """Read through the store, as bytes."""
        return bytes(self.resolve(self.store.read(fileid, offset, count)))

    def write(self, fileid: int, offset: int, data: bytes, stable: bool = True) -> None:
        """Write through the store and check it fires with None."""
        self.assertIsNone(self.resolve(self.store.write(fileid, offset, data, stable)))

    def test_provides_interface(self) -> None:
        """The store really implements every method and attribute of the contract."""
        self.assertTrue(verifyObject(IContentStore, self.store))

    def test_never_written_reads_empty(self) -> None:
        """A file never written reads as empty, at any offset."""
        self.assertEqual(self.read(1, 0, 100), b"")
        self.assertEqual(self.read(1, 10**9, 100), b"")

    def test_write_and_read_ranges(self) -> None:
        """Any range reads back exactly what was written there."""
        self.write(1, 0, b"hello world")
        self.assertEqual(self.read(1, 0, 11), b"hello world")
        self.assertEqual(self.read(1, 0, 5), b"hello")
        self.assertEqual(self.read(1, 6, 5), b"world")
        self.assertEqual(self.read(1, 3, 4), b"lo w")
        self.assertEqual(self.read(1, 0, 0), b"")

    def test_overwrite_in_place(self) -> None:
        """Writing inside existing content replaces just those bytes."""
        self.write(1, 0, b"abcdefgh")
        self.write(1, 2, b"XY")
        self.assertEqual(self.read(1, 0, 100), b"abXYefgh")
        self.write(1, 6, b"1234")
        self.assertEqual(self.read(1, 0, 100), b"abXYef1234")

    def test_read_past_end_is_short(self) -> None:
        """Reads are short only at the end of the stored content, and empty beyond it."""
        self.write(1, 0, b"0123456789")
        self.assertEqual(self.read(1, 5, 100), b"56789")
        self.assertEqual(self.read(1, 10, 100), b"")
        self.assertEqual(self.read(1, 1000, 100), b"")

    def test_holes_read_as_zeros(self) -> None:
        """Writing beyond the end leaves a hole that reads as zeros."""
        self.write(1, 0, b"ab")
        self.write(1, 100_000, b"z")
        data = self.read(1, 0, 200_000)
        self.assertEqual(data, b"ab" + bytes(99_998) + b"z")
        self.write(2, 4096, b"x")
        self.assertEqual(self.read(2, 0, 8192), bytes(4096) + b"x")

    def test_files_are_independent(self) -> None:
        """Each file id has its own content, even ids far apart."""
        self.write(1, 0, b"one")
        self.write(2, 0, b"two")
        self.write(2**40 + 1, 0, b"big")
        self.assertEqual(self.read(1, 0, 10), b"one")
        self.assertEqual(self.read(2, 0, 10), b"two")
        self.assertEqual(self.read(2**40 + 1, 0, 10), b"big")
        self.assertEqual(self.read(3, 0, 10), b"")

    def test_memoryview_data(self) -> None:
        """WRITE hands over zero-copy memoryview slices; they are stored like bytes."""
        record = memoryview(b"headerPAYLOADtrailer")
        self.assertIsNone(self.resolve(self.store.write(1, 0, record[6:13], True)))
        self.assertEqual(self.read(1, 0, 100), b"PAYLOAD")

    def test_truncate_shrinks(self) -> None:
        """Truncating discards the content beyond the new size."""
        self.write(1, 0, b"0123456789")
        self.assertIsNone(self.resolve(self.store.truncate(1, 4)))
        self.assertEqual(self.read(1, 0, 100), b"0123")
        self.resolve(self.store.truncate(1, 0))
        self.assertEqual(self.read(1, 0, 100), b"")

    def test_truncate_extends_without_content(self) -> None:
        """Extending keeps the stored bytes; anything past them reads as zeros (or not at all).

        The contract lets a store record the new length (a sparse file) or
        not: a read returns the old content followed by at most the zeros of
        the extension, and the NFS layer pads the rest from the size.
        """
        self.write(1, 0, b"abcd")
        self.resolve(self.store.truncate(1, 10))
        data = self.read(1, 0, 100)
        self.assertEqual(data[:4], b"abcd")
        self.assertEqual(data[4:], bytes(len(data) - 4))
        self.assertLessEqual(len(data), 10)

    def test_truncate_then_extend_forgets_old_bytes(self) -> None:
        """Bytes cut by a truncate never come back when the file grows again."""
        self.write(1, 0, b"0123456789")
        self.resolve(self.store.truncate(1, 2))
        self.resolve(self.store.truncate(1, 10))
        data = self.read(1, 0, 100)
        self.assertEqual(data[:2], b"01")
        self.assertEqual(data[2:], bytes(len(data) - 2))
        self.write(1, 8, b"XY")
        self.assertEqual(self.read(1, 0, 100), b"01" + bytes(6) + b"XY")

    def test_truncate_absent(self) -> None:
        """Truncating content that was never written is not an error and creates nothing."""
        self.assertIsNone(self.resolve(self.store.truncate(7, 0)))
        self.resolve(self.store.truncate(7, 100))
        data = self.read(7, 0, 1000)
        self.assertEqual(data, bytes(len(data)))

    def test_delete(self) -> None:
        """Deleted content reads as empty; a new write starts from nothing."""
        self.write(1, 0, b"secret")
        self.assertIsNone(self.resolve(self.store.delete(1)))
        self.assertEqual(self.read(1, 0, 100), b"")
        self.write(1, 2, b"x")
        self.assertEqual(self.read(1, 0, 100), b"\0\0x")

    def test_delete_absent(self) -> None:
        """Deleting content that does not exist (or twice) is not an error."""
        self.assertIsNone(self.resolve(self.store.delete(99)))
        self.write(1, 0, b"a")
        self.resolve(self.store.delete(1))
        self.assertIsNone(self.resolve(self.store.delete(1)))

    def test_commit(self) -> None:
        """COMMIT after unstable writes succeeds and the data is still there."""
        self.write(1, 0, b"unstable", stable=False)
        self.assertIsNone(self.resolve(self.store.commit(1)))
        self.assertEqual(self.read(1, 0, 100), b"unstable")

    def test_commit_absent(self) -> None:
        """COMMIT of a file never written has nothing to do and succeeds."""
        self.assertIsNone(self.resolve(self.store.commit(12345)))

    def test_stable_and_unstable_writes(self) -> None:
        """Stable and unstable writes are both readable at once, before any COMMIT."""
        self.write(1, 0, b"stable-", stable=True)
        self.write(1, 7, b"unstable", stable=False)
        self.assertEqual(self.read(1, 0, 100), b"stable-unstable")

    def test_space(self) -> None:
        """FSSTAT's byte counts are sane: positive total, free between 0 and total."""
        space = self.resolve(self.store.space())
        self.assertGreater(space.total_bytes, 0)
        self.assertGreaterEqual(space.free_bytes, 0)
        self.assertLessEqual(space.free_bytes, space.total_bytes)

    def test_large_write(self) -> None:
        """A 4 MiB write round-trips byte for byte, whole and in pieces."""
        data = os.urandom(4 * 1024 * 1024)
        self.write(1, 0, data)
        self.assertEqual(self.read(1, 0, len(data)), data)
        piece = 1024 * 1024
        pieces = b"".join(self.read(1, at, piece) for at in range(0, len(data), piece))
        self.assertEqual(pieces, data)
        self.write(2, 3, data, stable=False)
        self.assertEqual(self.read(2, 0, len(data) + 3), bytes(3) + data)
