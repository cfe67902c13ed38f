"""The metadata cache: the whole metadata contract through it, and its coherence across processes.

:class:`CachedMetadataStore` is an ``IMetadataStore``, so it passes the
shared conformance suite in front of the memory store and the SQLite store.
The suite is then run again through :class:`Alternating`: two caches, each
with its own mapping of one change table, in front of two SQLite stores on
one file (what two processes on one host have), every call going to the
other cache than the last.  Each check of the suite after a change is then
a read through a cache that did not make the change.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dittofs.errors import NFSError
from dittofs.interfaces import IChangeFeed, IMetadataCache, IMetadataStore, IReadinessProbe
from dittofs.metrics import Metrics
from dittofs.model import NewNode, SetAttributes
from dittofs.stores import with_cache
from dittofs.stores.content.fs import FilesystemContentStore
from dittofs.stores.metadata.cache import CachedMetadataStore
from dittofs.stores.metadata.generations import SLOTS, Generations
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.stores.metadata.sqlite import SqliteMetadataStore
from dittofs.stores.s3.content import S3ContentStore
from dittofs.stores.s3.settings import parse_s3_spec
from dittofs.testing import TickingClock
from dittofs.testing.conformance import MetadataStoreConformance
from dittofs.vocabulary import FileType, Status
from tests.unit import backends


def _scratch(case: SynchronousTestCase) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="dittofs-cache-"))
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


class CachedMemoryStoreTests(MetadataStoreConformance, SynchronousTestCase):
    """The cache in front of the memory store keeps the whole metadata contract."""

    def make_store(self) -> IMetadataStore:
        """A cache with a private change table over a fresh memory store."""
        return CachedMetadataStore(MemoryMetadataStore(clock=TickingClock()))

    def test_provides_the_interface(self) -> None:
        """verifyObject holds for the cache."""
        self.assertTrue(verifyObject(IMetadataStore, self.store))


class CachedSqliteStoreTests(MetadataStoreConformance, SynchronousTestCase):
    """The cache in front of the SQLite store, its table in a file, keeps the contract."""

    def make_store(self) -> IMetadataStore:
        """A cache over a fresh SQLite file, its change table beside it."""
        store = backends.sqlite_store(self)
        return CachedMetadataStore(store, store.change_table())


@implementer(IMetadataStore)
class Alternating:
    """One store made of several views: each call goes to the next view in turn."""

    name = "alternating"

    def __init__(self, views: list[Any]) -> None:
        self.views = views
        self._turn = 0

    def open(self) -> Deferred[None]:
        """Open every view, one after the other."""
        for view in self.views:
            view.open()
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Close every view."""
        closed = DeferredList([view.close() for view in self.views], fireOnOneErrback=True)
        return closed.addCallback(lambda _: None)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            view = self.views[self._turn % len(self.views)]
            self._turn += 1
            return getattr(view, name)(*args)

        return call


class TwoProcessesTests(MetadataStoreConformance, SynchronousTestCase):
    """Two caches over one SQLite file, as two processes have them: the contract holds across."""

    def make_store(self) -> IMetadataStore:
        """Two SQLite stores on one file (one clock), each behind a cache mapping one table."""
        directory = _scratch(self)
        reactor = backends.synchronous_threads(self)
        clock = TickingClock()
        views = [
            CachedMetadataStore(
                SqliteMetadataStore(directory / "metadata.db", reactor, clock),
                directory / "metadata.db-changes",
            )
            for _ in range(2)
        ]
        return Alternating(views)  # type: ignore[return-value]

    def test_a_cache_answers_without_the_store(self) -> None:
        """Attributes a view has seen are served again without a store call."""
        assert isinstance(self.store, Alternating)
        first, _second = self.store.views
        fileid = self.new(b"kept").node.fileid
        self.resolve(first.getattr(fileid))
        self.patch(first.store, "getattr", lambda fileid: self.fail("the store was asked"))
        self.assertEqual(self.resolve(first.getattr(fileid)).fileid, fileid)

    def test_a_change_through_one_is_seen_through_the_other(self) -> None:
        """A view that kept a file's attributes sees another view's change at once."""
        assert isinstance(self.store, Alternating)
        first, second = self.store.views
        fileid = self.new(b"watched").node.fileid
        self.assertEqual(self.resolve(first.getattr(fileid)).mode, 0o644)
        self.resolve(second.setattr(fileid, SetAttributes(mode=0o600), None))
        self.assertEqual(self.resolve(first.getattr(fileid)).mode, 0o600)
        self.assertEqual(self.resolve(first.lookup(self.root.fileid, b"watched")).mode, 0o600)
        self.resolve(second.remove(self.root.fileid, b"watched", False))
        self.assertFailsWith(first.lookup(self.root.fileid, b"watched"), Status.NOENT)
        self.assertFailsWith(first.getattr(fileid), Status.STALE)


class DelayedStore:
    """A memory store whose getattr answers only when the test says so, with what it read then."""

    def __init__(self, store: MemoryMetadataStore) -> None:
        self.store = store
        self.name = store.name
        self.held: list[tuple[Deferred[Any], Any]] = []
        #: Run after each getattr has read, before it returns (another process, meanwhile).
        self.meanwhile: Callable[[], object] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def getattr(self, fileid: int) -> Deferred[Any]:
        """Read now, answer later (as a reply still in flight while another process changes)."""
        answer: Deferred[Any] = Deferred()
        self.held.append((answer, self.resolve(self.store.getattr(fileid))))
        if self.meanwhile is not None:
            self.meanwhile()
        return answer

    @staticmethod
    def resolve(deferred: Deferred[Any]) -> Any:
        results: list[Any] = []
        deferred.addCallback(results.append)
        return results[0]

    def release(self) -> None:
        for answer, value in self.held:
            answer.callback(value)
        self.held.clear()


class RaceTests(SynchronousTestCase):
    """What a store answered before a change was published is never kept past it."""

    def setUp(self) -> None:
        self.memory = MemoryMetadataStore(clock=TickingClock())
        table = _scratch(self) / "table"
        self.delayed = DelayedStore(self.memory)
        self.reader = CachedMetadataStore(self.delayed, table)
        self.writer = CachedMetadataStore(self.memory, table)
        self.successResultOf(self.reader.open())
        self.successResultOf(self.writer.open())
        root = self.successResultOf(self.memory.root()).fileid
        node = NewNode(FileType.REG, 0o644, 0, 0)
        self.fileid = self.successResultOf(self.memory.create(root, b"f", node)).node.fileid

    def test_an_answer_older_than_a_published_change_is_not_kept(self) -> None:
        """The reader asked, the writer changed and published, then the old answer arrived."""
        pending = self.reader.getattr(self.fileid)
        self.successResultOf(self.writer.setattr(self.fileid, SetAttributes(mode=0o600), None))
        self.delayed.release()
        self.assertEqual(self.successResultOf(pending).mode, 0o644)  # what the store said
        again = self.reader.getattr(self.fileid)
        self.assertNoResult(again)  # not served from the cache: the store is asked
        self.delayed.release()
        self.assertEqual(self.successResultOf(again).mode, 0o600)

    def test_a_change_published_while_the_store_is_asked_is_not_missed(self) -> None:
        """The store read, then the writer changed and published, then the call returned."""
        change = SetAttributes(mode=0o600)
        self.delayed.meanwhile = lambda: self.writer.setattr(self.fileid, change, None)
        pending = self.reader.getattr(self.fileid)
        self.delayed.meanwhile = None
        self.delayed.release()
        self.assertEqual(self.successResultOf(pending).mode, 0o644)  # what the store read
        again = self.reader.getattr(self.fileid)
        self.assertNoResult(again)  # the old answer was not kept
        self.delayed.release()
        self.assertEqual(self.successResultOf(again).mode, 0o600)

    def test_a_change_published_while_a_change_is_made_is_not_missed(self) -> None:
        """A change committed, another process changed the file and published, then the first
        change's answer arrived: its (older) attributes are not kept."""
        memory, case = self.memory, self

        class Meanwhile:
            name = memory.name

            def __getattr__(self, attribute: str) -> Any:
                return getattr(memory, attribute)

            def setattr(self, *args: Any) -> Deferred[Any]:
                answer = memory.setattr(*args)
                change = SetAttributes(mode=0o640)
                case.successResultOf(case.reader.setattr(case.fileid, change, None))
                return answer

        first = CachedMetadataStore(Meanwhile(), self.writer.table)
        self.successResultOf(first.open())
        self.addCleanup(first.close)
        self.successResultOf(first.setattr(self.fileid, SetAttributes(mode=0o600), None))
        self.assertEqual(self.successResultOf(first.getattr(self.fileid)).mode, 0o640)

    def test_an_answer_with_no_change_since_is_kept(self) -> None:
        """The same sequence without the change: the second read never reaches the store."""
        pending = self.reader.getattr(self.fileid)
        self.delayed.release()
        self.successResultOf(pending)
        self.assertEqual(self.successResultOf(self.reader.getattr(self.fileid)).mode, 0o644)

    def test_a_failure_that_may_have_committed_moves_every_slot(self) -> None:
        """An I/O failure of a change leaves nothing kept anywhere current."""
        table = self.writer.generations
        before = [table.slot(fileid) for fileid in (self.fileid, self.fileid + 7, SLOTS - 1)]
        self.memory.setattr = lambda *args: _failing(Status.IO)  # type: ignore[method-assign]
        self.failureResultOf(self.writer.setattr(self.fileid, SetAttributes(mode=0), None))
        after = [table.slot(fileid) for fileid in (self.fileid, self.fileid + 7, SLOTS - 1)]
        self.assertTrue(all(new > old for old, new in zip(before, after, strict=True)))


def _failing(status: Status) -> Deferred[Any]:
    return fail(NFSError(status, "the test's store failed"))


class GenerationsTests(SynchronousTestCase):
    """The change table shared through a file."""

    def test_two_mappings_of_one_file_see_each_others_changes(self) -> None:
        """A change published through one mapping shows in the other's counter and slot."""
        path = _scratch(self) / "table"
        one, two = Generations(path), Generations(path)
        self.addCleanup(one.close)
        self.addCleanup(two.close)
        start = two.counter()
        value, raced = one.publish([5, 6], start)
        self.assertEqual(raced, frozenset())
        self.assertEqual((two.counter(), two.slot(5), two.slot(6)), (value, value, value))
        self.assertEqual(two.slot(7), 0)
        _, raced = two.publish([5, 9], start)
        self.assertEqual(raced, frozenset({5}))  # published after two's start, by one

    def test_publishing_all_moves_every_slot(self) -> None:
        """publish_all leaves no slot at an old value."""
        table = Generations()
        table.publish([1], 0)
        table.publish_all()
        self.assertEqual({table.slot(fileid) for fileid in range(SLOTS)}, {2})


class WhichStoresTests(SynchronousTestCase):
    """Which stores get a cache: those whose changes elsewhere it can hear, when asked for."""

    def setUp(self) -> None:
        """Content stores to pair with: one directory (fs), one S3 bucket (its maps in metadata)."""
        directory = _scratch(self)
        reactor = backends.synchronous_threads(self)
        self.fs = FilesystemContentStore(directory / "content", reactor)
        self.s3 = S3ContentStore(parse_s3_spec("s3://bucket/fs", directory), reactor)

    def test_sqlite_gets_one_sharing_a_table_beside_its_file(self) -> None:
        """The SQLite store is cached, its change table ``metadata.db-changes`` beside it."""
        store = backends.sqlite_store(self)
        for content in (self.fs, self.s3):
            cached = with_cache(store, content, 10)
            assert isinstance(cached, CachedMetadataStore)
            self.assertIs(cached.store, store)
            self.resolve(cached.open())
            self.addCleanup(lambda cached=cached: self.resolve(cached.close()))
            self.assertEqual(cached.table, store.path.parent / "metadata.db-changes")

    def test_none_when_turned_off(self) -> None:
        """``--metadata-cache 0`` leaves the store as it is."""
        store = backends.sqlite_store(self)
        self.assertIs(with_cache(store, self.fs, 0), store)

    def test_stores_other_hosts_change_get_one_following_their_feed(self) -> None:
        """PostgreSQL and Redis tell of other hosts' changes: cached, over fs content."""
        for store in (backends.postgres_store(self), backends.redis_store(self)):
            self.assertTrue(verifyObject(IChangeFeed, store))
            cached = with_cache(store, self.fs, 10)
            assert isinstance(cached, CachedMetadataStore)
            self.assertIs(cached.store, store)

    def test_none_for_shared_stores_keeping_s3_maps(self) -> None:
        """Over S3 content, PostgreSQL and Redis stay uncached: close-to-open across hosts."""
        for store in (backends.postgres_store(self), backends.redis_store(self)):
            self.assertIs(with_cache(store, self.s3, 10), store)

    def test_none_for_the_memory_store(self) -> None:
        """The memory store is memory already."""
        store = MemoryMetadataStore()
        self.assertIs(with_cache(store, self.fs, 10), store)

    def resolve(self, deferred: Deferred[Any]) -> Any:
        """The result of a store call, which has fired (synchronous thread pools)."""
        return self.successResultOf(deferred)


class ProbeTests(SynchronousTestCase):
    """/ready asks the store behind the cache, never the cache's memory."""

    def test_the_probe_fails_while_the_store_fails_though_the_root_is_kept(self) -> None:
        """The root's attributes are kept, yet the probe asks the store, and fails with it."""
        memory = MemoryMetadataStore(clock=TickingClock())
        gone = DelayedStore(memory)
        cache = CachedMetadataStore(gone)
        self.assertTrue(verifyObject(IReadinessProbe, cache))
        self.successResultOf(cache.open())
        self.successResultOf(cache.root())
        self.successResultOf(cache.probe())
        gone.root = lambda: fail(ConnectionError("the database is gone"))  # type: ignore[method-assign]
        self.successResultOf(cache.root())  # served from memory
        self.failureResultOf(cache.probe(), ConnectionError)


class StatisticsTests(SynchronousTestCase):
    """What the cache tells the metrics endpoint: its entries, hits, misses, and if it follows."""

    def test_a_removed_file_is_not_kept(self) -> None:
        """A REMOVE leaves nothing of the file it removed: only its directory's attributes
        are kept, not the file's nor its name (a soak of creates and removes fills no map)."""
        cache = CachedMetadataStore(MemoryMetadataStore(clock=TickingClock()), entries=10)
        self.successResultOf(cache.open())
        root = self.successResultOf(cache.root()).fileid
        node = NewNode(FileType.REG, 0o600, 0, 0)
        fileid = self.successResultOf(cache.create(root, b"f", node)).node.fileid
        self.assertEqual(cache.statistics().entries["attributes"], 2)  # the root and f
        self.successResultOf(cache.remove(root, b"f", False))
        self.assertEqual(cache.statistics().entries["attributes"], 1)  # the root
        self.assertEqual(cache.statistics().entries["names"], 0)
        self.failureResultOf(cache.getattr(fileid), NFSError)  # asked of the store: gone
        misses = cache.statistics().misses
        self.failureResultOf(cache.lookup(root, b"f"), NFSError)  # asked of the store
        self.failureResultOf(cache.lookup(root, b"f"), NFSError)  # now kept absent
        self.assertEqual(cache.statistics().misses, misses + 1)
        self.assertEqual(cache.statistics().entries["names"], 1)

    def test_hits_and_misses_are_counted_and_scraped(self) -> None:
        """A kept answer is a hit, a store call a miss; /metrics shows them per export."""
        cache = CachedMetadataStore(MemoryMetadataStore(clock=TickingClock()), entries=10)
        self.assertTrue(verifyObject(IMetadataCache, cache))
        self.successResultOf(cache.open())
        root = self.successResultOf(cache.root()).fileid
        node = NewNode(FileType.REG, 0o600, 0, 0)
        fileid = self.successResultOf(cache.create(root, b"f", node)).node.fileid
        before = cache.statistics()
        self.successResultOf(cache.getattr(fileid))  # kept by the create: a hit
        self.failureResultOf(cache.lookup(root, b"nothing"), NFSError)  # a miss
        self.failureResultOf(cache.lookup(root, b"nothing"), NFSError)  # kept absent: a hit
        after = cache.statistics()
        self.assertEqual((after.hits - before.hits, after.misses - before.misses), (2, 1))
        self.assertEqual(after.entries["names"], 2)  # f, and the absent name
        self.assertTrue(after.following)

        class Export:
            path = b"/x"
            metadata = cache
            content = None

        metrics = Metrics()
        metrics.watch_caches([Export()])
        text = generate_latest(metrics.registry).decode()
        self.assertIn(f'dittofs_metadata_cache_hits_total{{export="/x"}} {after.hits}.0', text)
        self.assertIn(f'dittofs_metadata_cache_misses_total{{export="/x"}} {after.misses}.0', text)
        self.assertIn('dittofs_metadata_cache_entries{export="/x",map="names"} 2.0', text)
        self.assertIn('dittofs_metadata_cache_following{export="/x"} 1.0', text)
