"""Tests for ``dittofs fsck``: the pure check, and check-then-repair on a real store."""

from __future__ import annotations

import io

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dittofs import fsck
from dittofs.interfaces import IContentCheck
from dittofs.model import ContentCheck, InodeRecord, Inventory, NewNode
from dittofs.progress import Phases
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.vocabulary import FileType

DIR, REG = FileType.DIR, FileType.REG


def _healthy() -> Inventory:
    """root(1) holds dir d(2) and file f(3); d holds a second link to f."""
    inodes = {
        1: InodeRecord(1, DIR, 3, 1),
        2: InodeRecord(2, DIR, 2, 1),
        3: InodeRecord(3, REG, 2, 0),
    }
    entries = [(1, b"d", 2), (1, b"f", 3), (2, b"g", 3)]
    return Inventory(1, inodes, entries)


class CheckTests(SynchronousTestCase):
    """The pure check finds each kind of damage and proposes the matching repair."""

    def test_healthy_tree_is_clean(self) -> None:
        """A consistent tree with hard links and content for its file reports nothing."""
        report = fsck.check(_healthy(), [3])
        self.assertTrue(report.clean)
        self.assertEqual(report.repairs, [])

    def test_dangling_entry(self) -> None:
        """An entry naming a missing inode is found and dropped."""
        inventory = _healthy()
        inventory.entries.append((1, b"ghost", 99))
        report = fsck.check(inventory, [])
        self.assertEqual(
            [(r.action, r.fileid, r.name) for r in report.repairs], [("drop-entry", 1, b"ghost")]
        )

    def test_orphan_inode_and_its_content(self) -> None:
        """An unreachable inode is dropped, and content no reachable file owns is reported."""
        inventory = _healthy()
        inventory.inodes[7] = InodeRecord(7, REG, 1, 0)
        report = fsck.check(inventory, [3, 7, 8])
        self.assertIn(("drop-inode", 7), [(r.action, r.fileid) for r in report.repairs])
        self.assertEqual(report.ownerless_content, [7, 8])

    def test_wrong_link_counts(self) -> None:
        """Files count their names; directories count 2 plus their subdirectories."""
        inventory = _healthy()
        inventory.inodes[3] = InodeRecord(3, REG, 1, 0)
        inventory.inodes[1] = InodeRecord(1, DIR, 2, 1)
        report = fsck.check(inventory, [])
        nlinks = {r.fileid: r.value for r in report.repairs if r.action == "nlink"}
        self.assertEqual(nlinks, {1: 3, 3: 2})

    def test_wrong_parent(self) -> None:
        """A directory whose '..' is not the directory naming it gets its parent fixed."""
        inventory = _healthy()
        inventory.inodes[2] = InodeRecord(2, DIR, 2, 2)
        report = fsck.check(inventory, [])
        self.assertEqual(
            [(r.action, r.fileid, r.value) for r in report.repairs], [("parent", 2, 1)]
        )

    def test_progress_counts_every_item(self) -> None:
        """The progress callback sees every inode and entry once."""
        seen: list[int] = []
        fsck.check(_healthy(), [], seen.append)
        self.assertEqual(sum(seen), 6)


def run_fsck(
    case: SynchronousTestCase,
    metadata: MemoryMetadataStore,
    content: MemoryContentStore,
    repair: bool,
) -> tuple[int, str]:
    """Run fsck over the stores; return its exit status and what it printed."""
    out = io.StringIO()
    status = case.successResultOf(
        Deferred.fromCoroutine(fsck.run(metadata, content, repair, out, show_progress=False))
    )
    return status, out.getvalue()


class RunTests(SynchronousTestCase):
    """fsck.run over real (in-memory) stores: report, repair, then clean."""

    def test_repair_then_clean(self) -> None:
        """Damage is reported with status 4, repaired with status 1, and then checks clean (0)."""
        metadata, content = MemoryMetadataStore(), MemoryContentStore()
        root = self.successResultOf(metadata.root())
        made = self.successResultOf(
            metadata.create(root.fileid, b"f", NewNode(type=REG, mode=0o644, uid=0, gid=0))
        )
        self.successResultOf(content.write(made.node.fileid, 0, b"data", True))
        self.successResultOf(content.write(4242, 0, b"lost", True))
        status, output = run_fsck(self, metadata, content, repair=False)
        self.assertEqual(status, fsck.UNCORRECTED)
        self.assertIn("content of file id 4242 belongs to no file", output)
        status, _ = run_fsck(self, metadata, content, repair=True)
        self.assertEqual(status, fsck.CORRECTED)
        self.assertEqual(self.successResultOf(content.content_ids()), [made.node.fileid])
        status, output = run_fsck(self, metadata, content, repair=False)
        self.assertEqual(status, fsck.CLEAN, output)


@implementer(IContentCheck)
class _CheckedContent(MemoryContentStore):
    """Content whose own check finds what it is told to."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__()
        self.problems = problems
        self.phases: list[str] = []

    def check_content(self, progress: Phases) -> Deferred[ContentCheck]:
        with progress("looking", 1, "thing") as advance:
            self.phases.append("looking")
            advance(1)
        return succeed(ContentCheck(list(self.problems), "3 things looked at"))


class ContentCheckTests(SynchronousTestCase):
    """A content store's own check is reported; what it finds, --repair cannot mend."""

    def test_clean_content_check(self) -> None:
        """Its summary is printed and a clean check leaves the filesystem clean."""
        content = _CheckedContent([])
        status, output = run_fsck(self, MemoryMetadataStore(), content, repair=False)
        self.assertEqual(status, fsck.CLEAN, output)
        self.assertIn("fsck: memory content: 3 things looked at\n", output)
        self.assertEqual(content.phases, ["looking"])

    def test_content_problems_are_never_corrected(self) -> None:
        """A content problem keeps status 4, with --repair too, and is listed."""
        content = _CheckedContent(["block 3 of file id 9 is missing"])
        for repair in (False, True):
            status, output = run_fsck(self, MemoryMetadataStore(), content, repair=repair)
            self.assertEqual(status, fsck.UNCORRECTED, output)
            self.assertIn("block 3 of file id 9 is missing\n", output)
            self.assertIn("fsck: 1 content problems that --repair cannot mend", output)


class _FailingDelete(MemoryContentStore):
    """Content whose delete fails, as if the server died between the two steps of REMOVE."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    def delete(self, fileid: int) -> Deferred[None]:
        if self.broken:
            raise OSError("the server stopped here")
        return super().delete(fileid)


class OrphanTests(SynchronousTestCase):
    """Content of a removed file is never left without an owner, even across a crash."""

    def test_interrupted_remove_is_finished_when_the_stores_open(self) -> None:
        """REMOVE answered, content delete lost: fsck does not call it damage, and the
        next open of the stores deletes the content."""
        from dittofs.exports import Export, ExportTable
        from dittofs.testing import serve_exports

        metadata, content = MemoryMetadataStore(), _FailingDelete()
        server = serve_exports([Export(1, b"/export", metadata, content)])
        client = server.client(0, 0)
        root = client.mnt(b"/export")
        client.write_file(root, b"victim", b"precious")
        client.remove(root, b"victim").expect_ok()
        self.flushLoggedErrors(OSError)
        (orphan,) = self.successResultOf(metadata.pending_orphans())
        self.assertEqual(self.successResultOf(content.content_ids()), [orphan])
        status, output = run_fsck(self, metadata, content, repair=False)
        self.assertEqual(status, fsck.CLEAN, output)
        content.broken = False
        self.successResultOf(ExportTable([Export(1, b"/export", metadata, content)]).open())
        self.assertEqual(self.successResultOf(content.content_ids()), [])
        self.assertEqual(self.successResultOf(metadata.pending_orphans()), [])
