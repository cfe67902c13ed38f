"""Caches over PostgreSQL and Redis: strict on one host, and within a notice's time across hosts.

Against the local PostgreSQL and Redis, never fakes.  A store other hosts
change (:class:`~dittofs.interfaces.IChangeFeed`) commits a notice with
every change, and each cache follows the store's channel:

* The conformance suite runs through one cache over each store, once the
  cache follows its feed (so it serves from memory).
* It runs again through :class:`Alternating` over two stores on one schema
  or prefix whose caches share one change table: two gateways of one host,
  strictly coherent.
* Two caches with tables of their own stand for two hosts: a change through
  one must reach the other through the feed alone, within
  :data:`HEARD_WITHIN` seconds, and a feed cut off (its connection killed)
  must stop the cache serving what it kept until it listens again.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import redis
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from dittofs.interfaces import IMetadataStore
from dittofs.model import Attributes, NewNode, SetAttributes
from dittofs.stores.metadata import feed
from dittofs.stores.metadata.cache import CachedMetadataStore
from dittofs.stores.metadata.generations import entry_key
from dittofs.stores.metadata.postgres import PostgresMetadataStore
from dittofs.stores.metadata.redis import RedisMetadataStore
from dittofs.testing import TickingClock
from dittofs.testing.conformance import MetadataStoreConformance
from dittofs.vocabulary import FileType, Status
from tests.unit import backends
from tests.unit.test_metadata_cache import Alternating

#: How long a change through one host may take to reach another's cache
#: (loopback: a few milliseconds; the margin is for a loaded CI machine).
HEARD_WITHIN = 5.0
#: Rounds of change-here, read-there in the two-host tests.
ROUNDS = 40


def _scratch(case: SynchronousTestCase) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="dittofs-feed-"))
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


def _until(check: Callable[[], bool], within: float, what: str) -> float:
    """Wait until *check* holds, at most *within* seconds; return how long it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.002)
    return time.monotonic() - started


def _opened(case: SynchronousTestCase, cache: CachedMetadataStore) -> CachedMetadataStore:
    """Open *cache*, close it at clean-up, and wait until it follows its store's feed."""
    case.successResultOf(cache.open())
    case.addCleanup(lambda: case.successResultOf(cache.close()))
    _until(lambda: cache.generations.live, HEARD_WITHIN, "the cache follows the feed")
    return cache


class _Following(MetadataStoreConformance):
    """The suite through a cache that follows its feed before the first check."""

    def setUp(self) -> None:
        """Open as the suite does, then wait for the feed."""
        super().setUp()
        caches = getattr(self.store, "views", [self.store])
        for cache in caches:
            _until(lambda cache=cache: cache.generations.live, HEARD_WITHIN, "following")


class CachedPostgresStoreTests(_Following, SynchronousTestCase):
    """The cache in front of PostgreSQL, following its notices, keeps the whole contract."""

    def make_store(self) -> IMetadataStore:
        """A cache over a store in a fresh schema."""
        return CachedMetadataStore(backends.postgres_store(self))


class CachedRedisStoreTests(_Following, SynchronousTestCase):
    """The cache in front of Redis, following its channel, keeps the whole contract."""

    def make_store(self) -> IMetadataStore:
        """A cache over a store under a fresh prefix."""
        return CachedMetadataStore(backends.redis_store(self))


def _postgres_pair(case: SynchronousTestCase, count: int = 2) -> list[Any]:
    """*count* PostgreSQL stores on one fresh schema (one clock), as gateways have them."""
    schema = backends.entered(backends.postgres_schema(), case.addCleanup)
    conninfo = f"{backends.POSTGRES} options='-c search_path={schema}'"
    reactor = backends.synchronous_threads(case)
    clock = TickingClock()
    return [PostgresMetadataStore(conninfo, reactor, clock=clock) for _ in range(count)]


def _redis_pair(case: SynchronousTestCase, count: int = 2) -> list[Any]:
    """*count* Redis stores under one fresh prefix (one clock), as gateways have them."""
    prefix = backends.entered(backends.redis_prefix(), case.addCleanup)
    reactor = backends.synchronous_threads(case)
    clock = TickingClock()
    url = f"{backends.REDIS}?prefix={prefix}"
    return [RedisMetadataStore(url, reactor, clock=clock) for _ in range(count)]


class OneHostPostgresTests(_Following, SynchronousTestCase):
    """Two gateways of one host over PostgreSQL share a table: the contract holds across them."""

    def make_store(self) -> IMetadataStore:
        """Two caches, one table (where the store says), calls taking turns."""
        return Alternating([CachedMetadataStore(store) for store in _postgres_pair(self)])  # type: ignore[return-value]


class OneHostRedisTests(_Following, SynchronousTestCase):
    """Two gateways of one host over Redis share a table: the contract holds across them."""

    def make_store(self) -> IMetadataStore:
        """Two caches, one table (where the store says), calls taking turns."""
        return Alternating([CachedMetadataStore(store) for store in _redis_pair(self)])  # type: ignore[return-value]


class _TwoHosts:
    """Two caches with tables of their own over one store: what two hosts have."""

    pair: Callable[[SynchronousTestCase], list[Any]]

    def setUp(self) -> None:
        """Open both, each following the feed, and make a directory to work in."""
        case: Any = self
        directory = _scratch(case)
        stores = type(self).pair(case)
        self.here, self.there = (
            _opened(case, CachedMetadataStore(store, directory / f"host{n}.changes"))
            for n, store in enumerate(stores)
        )
        root = self.resolve(self.here.root())
        self.directory = self.resolve(
            self.here.create(root.fileid, b"work", NewNode(FileType.DIR, 0o755, 0, 0))
        ).node.fileid

    def resolve(self, deferred: Deferred[Any]) -> Any:
        """The result of a store call (synchronous thread pools: it has fired)."""
        case: Any = self
        return case.successResultOf(deferred)

    def mode_there(self, fileid: int) -> int:
        """The file's permission bits, as the cache there answers."""
        attributes: Attributes = self.resolve(self.there.getattr(fileid))
        return attributes.mode & 0o7777

    def found_there(self, name: bytes) -> bool:
        """True if the cache there finds *name* in the work directory."""
        outcome: list[bool] = []
        self.there.lookup(self.directory, name).addCallbacks(
            lambda _: outcome.append(True), lambda _: outcome.append(False)
        )
        return outcome == [True]

    def test_a_change_here_reaches_the_cache_there(self) -> None:
        """Attributes and names kept there go stale once the notice of a change here arrives.

        Each round, *there* keeps the file's attributes and a name's absence
        (served from memory: the store is not asked again), then *here*
        changes both; *there* must show the change within
        :data:`HEARD_WITHIN` seconds.
        """
        case: Any = self
        created = self.resolve(
            self.here.create(self.directory, b"f", NewNode(FileType.REG, 0o600, 0, 0))
        )
        fileid = created.node.fileid
        waits = []
        for round_ in range(ROUNDS):
            mode = 0o600 | round_
            name = f"n{round_}".encode()
            self.mode_there(fileid)
            case.failureResultOf(self.there.lookup(self.directory, name))
            asked: list[int] = []
            real = self.there.store.getattr
            self.there.store.getattr = lambda f, real=real, asked=asked: asked.append(f) or real(f)
            self.mode_there(fileid)
            self.there.store.getattr = real
            case.assertEqual(asked, [], "kept attributes were not served from memory")
            self.resolve(self.here.setattr(fileid, SetAttributes(mode=mode), None))
            self.resolve(self.here.create(self.directory, name, NewNode(FileType.REG, 0o644, 0, 0)))
            seen = lambda mode=mode: self.mode_there(fileid) == mode  # noqa: E731
            waits.append(_until(seen, HEARD_WITHIN, f"mode {mode:o}"))
            _until(lambda name=name: self.found_there(name), HEARD_WITHIN, f"name {name!r}")
        case.assertLess(max(waits), HEARD_WITHIN)

    def test_a_change_with_no_notice_is_served_until_the_feed_breaks(self) -> None:
        """What a cache kept is trusted only while its feed is heard; after a break, nothing is.

        The file's mode is changed behind the stores' back (no notice): the
        cache there still serves the old mode, which shows it serves from
        memory.  Then the channel's connections are killed: once the cache
        listens again, it must have dropped everything it kept, and show
        the new mode.
        """
        case: Any = self
        created = self.resolve(
            self.here.create(self.directory, b"g", NewNode(FileType.REG, 0o600, 0, 0))
        )
        fileid = created.node.fileid
        self.mode_there(fileid)
        self.change_mode_silently(fileid, 0o640)
        case.assertEqual(self.mode_there(fileid), 0o600)
        broken: list[bool] = []
        self.patch_following(broken.append)
        self.kill_listeners()
        _until(lambda: False in broken and self.there.generations.live, HEARD_WITHIN, "again")
        case.assertEqual(self.mode_there(fileid), 0o640)

    def patch_following(self, record: Callable[[bool], None]) -> None:
        """Record what *there*'s feed says, as well as telling the cache."""
        cache = self.there
        real = cache._following

        def following(state: bool) -> None:
            real(state)
            record(state)

        follower = cache.store._follower
        assert follower is not None
        follower._following = following

    def change_mode_silently(self, fileid: int, mode: int) -> None:
        raise NotImplementedError

    def kill_listeners(self) -> None:
        raise NotImplementedError


class TwoHostsPostgresTests(_TwoHosts, SynchronousTestCase):
    """Two hosts over one PostgreSQL schema: ``NOTIFY`` carries each change."""

    pair = staticmethod(_postgres_pair)

    def change_mode_silently(self, fileid: int, mode: int) -> None:
        """An UPDATE of the inode with no notice, as a tool bypassing DittoFS would make."""
        with psycopg.connect(self.here.store._conninfo, autocommit=True) as connection:
            connection.execute(
                "UPDATE dittofs_inodes SET mode = %s WHERE fileid = %s", (mode, fileid)
            )

    def kill_listeners(self) -> None:
        """Terminate the backends listening on this filesystem's channel."""
        channel = self.here.store._channel
        with psycopg.connect(backends.POSTGRES, autocommit=True) as connection:
            killed = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
                (f"LISTEN {channel}",),
            ).fetchall()
        assert len(killed) == 2, killed


class TwoHostsRedisTests(_TwoHosts, SynchronousTestCase):
    """Two hosts under one Redis prefix: ``PUBLISH`` carries each change."""

    pair = staticmethod(_redis_pair)

    def change_mode_silently(self, fileid: int, mode: int) -> None:
        """An HSET of the inode with no notice, as a tool bypassing DittoFS would make."""
        client = redis.Redis.from_url(backends.REDIS)
        try:
            client.hset(self.here.store._prefix + f"i:{fileid}".encode(), "mode", mode)
        finally:
            client.close()

    def kill_listeners(self) -> None:
        """Kill the subscribed connections (only this test's subscribe here)."""
        client = redis.Redis.from_url(backends.REDIS)
        try:
            killed = client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        finally:
            client.close()
        assert killed >= 2, killed


class _OneTableOneOrigin:
    """Processes sharing a change table do not hear each other's notices: they need not."""

    pair: Callable[..., list[Any]]

    def test_a_process_does_not_hear_the_notices_of_its_own_table(self) -> None:
        """A change kept by one worker is not dropped when its sibling hears the notice.

        Workers *one* and *two* share a table; *elsewhere* has its own.  Once
        *elsewhere* has heard a change made through *one*, the table's slot
        still holds *one*'s value (*two* skipped the notice) and *one*
        serves the file from memory.
        """
        case: Any = self
        directory = _scratch(case)
        one, two, elsewhere = (
            _opened(case, CachedMetadataStore(store, directory / table))
            for store, table in zip(type(self).pair(case, 3), ("t", "t", "u"), strict=True)
        )
        root = case.successResultOf(one.root()).fileid
        node = NewNode(FileType.REG, 0o600, 0, 0)
        fileid = case.successResultOf(one.create(root, b"f", node)).node.fileid
        heard = elsewhere.generations.slot(fileid)
        case.successResultOf(one.setattr(fileid, SetAttributes(mode=0o640), None))
        published = one.generations.slot(fileid)
        _until(lambda: elsewhere.generations.slot(fileid) != heard, HEARD_WITHIN, "heard")
        time.sleep(0.2)  # two hears the notice about when elsewhere does
        case.assertEqual(two.generations.slot(fileid), published)
        case.patch(one.store, "getattr", lambda fileid: case.fail("the store was asked"))
        case.assertEqual(case.successResultOf(one.getattr(fileid)).mode & 0o7777, 0o640)


class OneTablePostgresTests(_OneTableOneOrigin, SynchronousTestCase):
    """Over PostgreSQL."""

    pair = staticmethod(_postgres_pair)


class OneTableRedisTests(_OneTableOneOrigin, SynchronousTestCase):
    """Over Redis."""

    pair = staticmethod(_redis_pair)


class NoticeTests(SynchronousTestCase):
    """What a transaction notes, and the notice's text."""

    def test_a_transaction_notes_every_inode_and_entry_it_writes(self) -> None:
        """Written and deleted inodes by id, added and dropped entries by entry key."""

        class Quiet:
            def __getattr__(self, name: str) -> Callable[..., None]:
                return lambda *args, **fields: None

        noting = feed.Noting(Quiet())  # type: ignore[arg-type]
        noting.write(7, mode=1)
        noting.delete(8)
        noting.add_entry(1, b"a", 9)
        noting.drop_entry(1, b"b")
        noting.read(10)
        self.assertEqual(noting.keys, {7, 8, entry_key(1, b"a"), entry_key(1, b"b")})

    def test_a_notice_round_trips_and_its_sender_ignores_it(self) -> None:
        """Other processes read the keys back; the sender reads none."""
        text = feed.notice("abc", {1, 2, 3})
        self.assertEqual(sorted(feed.keys_of(text, "other") or []), [1, 2, 3])
        self.assertEqual(feed.keys_of(text, "abc"), [])

    def test_a_notice_too_long_for_postgresql_names_every_key(self) -> None:
        """Past :data:`feed.MAX_NOTICE`, the notice says "everything" (None to readers)."""
        text = feed.notice("abc", set(range(10**12, 10**12 + 2000)))
        self.assertLessEqual(len(text), feed.MAX_NOTICE)
        self.assertIsNone(feed.keys_of(text, "other"))

    def test_a_change_notifies_once_and_a_refused_one_not_at_all(self) -> None:
        """A committed change sends one notice; one the namespace refuses commits nothing."""
        store = backends.postgres_store(self)
        cache = _opened(self, CachedMetadataStore(store, _scratch(self) / "t"))
        root = self.successResultOf(cache.root())
        sent: list[set[int]] = []
        real = feed.notice
        self.patch(feed, "notice", lambda origin, keys: sent.append(keys) or real(origin, keys))
        failure = self.failureResultOf(cache.remove(root.fileid, b"missing", False))
        self.assertEqual(failure.value.status, Status.NOENT)
        self.assertEqual(sent, [])
        self.successResultOf(cache.create(root.fileid, b"x", NewNode(FileType.REG, 0o600, 0, 0)))
        self.assertEqual(sent, [{root.fileid, entry_key(root.fileid, b"x")}])
