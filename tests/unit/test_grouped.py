"""SQLite's group commits: interactions queued together commit together, and fail alone."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python import threadpool
from twisted.trial.unittest import SynchronousTestCase

from dittofs.errors import NFSError
from dittofs.model import NewNode
from dittofs.stores.metadata.grouped import MAX_GROUP, GroupCommits
from dittofs.stores.metadata.sqlite import SqliteMetadataStore
from dittofs.testing import TickingClock
from dittofs.vocabulary import FileType, Status
from tests.unit.backends import SynchronousReactor


class HeldThreadPool:
    """A thread pool whose work waits until the test runs it, as if the thread were busy."""

    instances: list[HeldThreadPool] = []

    def __init__(self, minthreads: int = 0, maxthreads: int = 1, name: str | None = None) -> None:
        self.work: list[Callable[[], object]] = []
        HeldThreadPool.instances.append(self)

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Run what is left, as ``ThreadPool.stop`` lets queued work finish."""
        self.run()

    def callInThread(self, func: Callable[..., object], *args: Any) -> None:
        """Hold *func* until :meth:`run`."""
        self.work.append(lambda: func(*args))

    def run(self) -> None:
        """Run the work held so far, in order."""
        work, self.work = self.work, []
        for each in work:
            each()


class GroupCommitTests(SynchronousTestCase):
    """Interactions queued while the thread is busy share one transaction, each in a savepoint."""

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="dittofs-grouped-"))
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = directory / "test.db"
        setup = sqlite3.connect(self.path)
        setup.executescript(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER"
            " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
            "CREATE TABLE t (v INTEGER UNIQUE);"
        )
        setup.close()
        HeldThreadPool.instances = []
        self.patch(threadpool, "ThreadPool", HeldThreadPool)
        self.pool = GroupCommits(self.connect, SynchronousReactor())
        self.addCleanup(self.pool.close)
        self.thread = HeldThreadPool.instances[-1]

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False)
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    def insert(self, value: int) -> Deferred[Any]:
        def interaction(cursor: sqlite3.Cursor) -> int:
            if not cursor.connection.in_transaction:  # as the stores' changes begin
                cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("INSERT INTO t (v) VALUES (?)", (value,))
            return value

        return self.pool.runInteraction(interaction)

    def values(self) -> list[int]:
        with sqlite3.connect(self.path) as reader:
            return [row[0] for row in reader.execute("SELECT v FROM t ORDER BY v")]

    def test_queued_changes_commit_together_and_are_answered_after(self) -> None:
        """Three changes queued while the thread was busy: one commit, then three answers."""
        answers = [self.insert(value) for value in (1, 2, 3)]
        self.assertNoResult(answers[0])
        self.thread.run()
        self.assertEqual([self.successResultOf(answer) for answer in answers], [1, 2, 3])
        self.assertEqual((self.pool.commits, self.pool.committed), (1, 3))
        self.assertEqual(self.values(), [1, 2, 3])

    def test_a_failing_interaction_fails_alone(self) -> None:
        """The second change breaks a constraint after writing: it alone is undone."""

        def half_then_fail(cursor: sqlite3.Cursor) -> None:
            cursor.execute("INSERT INTO t (v) VALUES (20)")
            cursor.execute("INSERT INTO t (v) VALUES (1)")  # 1 exists: IntegrityError

        first = self.insert(1)
        broken = self.pool.runInteraction(half_then_fail)
        last = self.insert(3)
        self.thread.run()
        self.assertEqual(self.successResultOf(first), 1)
        self.failureResultOf(broken, sqlite3.IntegrityError)
        self.assertEqual(self.successResultOf(last), 3)
        self.assertEqual(self.values(), [1, 3])  # not 20
        self.assertEqual(self.pool.commits, 1)

    def test_a_read_before_any_change_runs_outside_the_transaction(self) -> None:
        """A read first in its group begins no transaction; the change after it commits."""
        inserted = self.insert(7)
        self.thread.run()
        self.successResultOf(inserted)

        def read(cursor: sqlite3.Cursor) -> tuple[list[int], bool]:
            rows = [row[0] for row in cursor.execute("SELECT v FROM t")]
            return rows, cursor.connection.in_transaction

        looked = self.pool.runInteraction(read)
        changed = self.insert(8)
        self.thread.run()
        self.assertEqual(self.successResultOf(looked), ([7], False))
        self.assertEqual(self.successResultOf(changed), 8)
        self.assertEqual(self.values(), [7, 8])

    def test_a_failed_commit_fails_every_interaction_of_its_transaction(self) -> None:
        """A deferred foreign key fails at the commit: all of the transaction fails, nothing
        is written, and a read answered before the transaction began still succeeds."""

        def orphan_child(cursor: sqlite3.Cursor) -> str:
            cursor.execute("INSERT INTO child (id, parent) VALUES (1, 99)")  # checked at commit
            return "written"

        read = self.pool.runInteraction(lambda cursor: cursor.execute("SELECT 1").fetchone()[0])
        first = self.insert(1)
        child = self.pool.runInteraction(orphan_child)
        self.thread.run()
        self.assertEqual(self.successResultOf(read), 1)
        self.failureResultOf(first, sqlite3.IntegrityError)
        self.failureResultOf(child, sqlite3.IntegrityError)
        self.assertEqual(self.values(), [])
        self.assertEqual(self.pool.commits, 0)

    def test_a_transaction_lost_mid_way_fails_all_of_it(self) -> None:
        """An interaction after which SQLite rolled the whole transaction back (as it does
        for a full disk): the changes before it in the group fail too, and the next group
        starts afresh."""

        def lose_everything(cursor: sqlite3.Cursor) -> None:
            cursor.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")

        first = self.insert(1)
        lost = self.pool.runInteraction(lose_everything)
        self.thread.run()
        reason = self.failureResultOf(first, sqlite3.OperationalError).value
        self.assertEqual(str(reason), "database or disk is full")  # why it was lost
        self.failureResultOf(lost, sqlite3.OperationalError)
        after = self.insert(2)
        self.thread.run()
        self.assertEqual(self.successResultOf(after), 2)
        self.assertEqual(self.values(), [2])

    def test_a_database_that_cannot_open_fails_the_group(self) -> None:
        """The connection cannot be made: every interaction queued fails with the reason,
        none is left waiting, and the next group tries to open it again."""
        attempts: list[int] = []

        def refuse() -> sqlite3.Connection:
            attempts.append(1)
            raise sqlite3.OperationalError("unable to open database file")

        self.patch(self.pool, "_connect", refuse)
        answers = [self.insert(1), self.insert(2)]
        self.thread.run()
        for answer in answers:
            self.failureResultOf(answer, sqlite3.OperationalError)
        self.patch(self.pool, "_connect", self.connect)
        again = self.insert(3)
        self.thread.run()
        self.assertEqual(self.successResultOf(again), 3)
        self.assertEqual(len(attempts), 1)

    def test_a_group_is_bounded(self) -> None:
        """Past MAX_GROUP, the interactions left wait for the next transaction."""
        answers = [self.insert(value) for value in range(MAX_GROUP + 1)]
        self.thread.run()
        self.assertEqual(len([self.successResultOf(answer) for answer in answers]), MAX_GROUP + 1)
        self.assertEqual((self.pool.commits, self.pool.committed), (2, MAX_GROUP + 1))


class GroupedStoreTests(SynchronousTestCase):
    """The SQLite store's changes queued together share one commit and stay correct."""

    def test_creates_in_one_directory_commit_together(self) -> None:
        """Sixteen creates in flight at once: one commit; each answered, listed, and a
        duplicate name among them fails alone with EXIST."""
        directory = Path(tempfile.mkdtemp(prefix="dittofs-grouped-"))
        self.addCleanup(shutil.rmtree, directory, True)
        HeldThreadPool.instances = []
        self.patch(threadpool, "ThreadPool", HeldThreadPool)
        reactor = SynchronousReactor()
        store = SqliteMetadataStore(directory / "metadata.db", reactor, TickingClock())
        thread = HeldThreadPool.instances[-1]
        opened = store.open()
        thread.run()
        self.successResultOf(opened)
        root = store.root()
        thread.run()
        parent = self.successResultOf(root).fileid
        node = NewNode(FileType.REG, 0o644, 0, 0)
        names = [f"f{number}".encode() for number in range(16)] + [b"f3"]
        created = [store.create(parent, name, node) for name in names]
        commits = store._pool.commits  # type: ignore[attr-defined]
        thread.run()
        self.assertEqual(store._pool.commits, commits + 1)  # type: ignore[attr-defined]
        fileids = {self.successResultOf(each).node.fileid for each in created[:16]}
        self.assertEqual(len(fileids), 16)
        error = self.failureResultOf(created[16], NFSError).value
        self.assertEqual(error.status, Status.EXIST)
        page = store.readdir(parent, 0, 100, False)
        thread.run()
        self.assertEqual(
            sorted(entry.name for entry in self.successResultOf(page).entries), sorted(names[:16])
        )
        closed = store.close()
        self.successResultOf(closed)
