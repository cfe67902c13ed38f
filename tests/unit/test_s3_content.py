"""The S3 content store against a real SeaweedFS: the shared contract, then what is S3's own.

The store's blocking work runs in its real thread pools and talks SigV4 to a
real S3 server (``tests/e2e/seaweedfs.py``, started once per test process);
nothing is faked.  The tests stay ``SynchronousTestCase`` (no global reactor,
same under trial and pytest): the store is given :class:`ThreadCallsReactor`,
whose ``callFromThread`` queues calls that :meth:`resolve` runs on the test's
thread until the Deferred at hand fires.  Each test uses its own bucket
prefix and cache directory.

Crashes are played by closing a store with S3 unreachable (so nothing has
been uploaded and only the cache's journal holds the data) and opening a new
store on the same cache directory: the same code path a restart after
``kill -9`` takes, which the end-to-end tests check with a real kill.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from dittofs.interfaces import (
    ICacheStatistics,
    IContentCheck,
    IContentInventory,
    IContentStore,
    IFileRegions,
    IReadinessProbe,
)
from dittofs.model import BlockChange, BlockMap, FileRegion, Slice
from dittofs.progress import Advance
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.stores.s3.claims import Claim, PrefixInUse, live_others
from dittofs.stores.s3.content import S3ContentStore
from dittofs.stores.s3.gc import collect_garbage
from dittofs.stores.s3.migrate import migrate
from dittofs.stores.s3.objects import ListedObject, Manifest, ObjectStore, S3Unavailable
from dittofs.stores.s3.settings import parse_s3_spec
from dittofs.stores.s3.state import StoredBytes
from dittofs.testing.conformance import ContentStoreConformance
from dittofs.vocabulary import Status
from tests.e2e.seaweedfs import credentials_env, shared_seaweedfs
from tests.e2e.server import free_port
from tests.proxy import CuttableProxy

BUCKET = "dittofs-unit"
BLOCK = 256 * 1024
RESOLVE_SECONDS = 60.0


@implementer(IReactorFromThreads)
class ThreadCallsReactor:
    """``callFromThread`` into a queue that the test thread drains while it waits."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Any]] = (
            queue.SimpleQueue()
        )

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue *callable* for the test thread."""
        self._calls.put((callable, args, kwargs))

    def run_until(self, deferred: Deferred[Any], timeout: float = RESOLVE_SECONDS) -> None:
        """Run queued calls until *deferred* has fired (or fail after *timeout* seconds)."""
        fired: list[bool] = []

        def note(result: object) -> object:
            fired.append(True)
            return result

        deferred.addBoth(note)
        deadline = time.monotonic() + timeout
        while not fired:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{deferred!r} did not fire within {timeout}s")
            try:
                callable, args, kwargs = self._calls.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            callable(*args, **kwargs)


def dead_endpoint() -> str:
    """An http endpoint on loopback where nothing listens: S3 "unreachable", refused at once."""
    return f"http://127.0.0.1:{free_port()}"


class S3Harness:
    """Builds stores on the shared SeaweedFS for one test: a prefix, cache dirs, credentials."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.case = case
        self.server = shared_seaweedfs()
        self.server.create_bucket(BUCKET)
        patcher = mock.patch.dict(os.environ, credentials_env())
        patcher.start()
        case.addCleanup(patcher.stop)
        self.prefix = f"unit-{secrets.token_hex(6)}"
        self.reactor = ThreadCallsReactor()
        self.scratch = Path(tempfile.mkdtemp(prefix="dittofs-s3-unit-"))
        #: The block maps every store of the test shares, as gateways share a metadata store.
        self.maps = MemoryMetadataStore()
        case.addCleanup(shutil.rmtree, self.scratch, True)
        self.client = self.server.client()

    def proxy(self) -> CuttableProxy:
        """A relay to the server that the test can cut (closed when the test ends)."""
        relay = CuttableProxy(self.server.ports["s3"])
        self.case.addCleanup(relay.cut)
        return relay

    def spec(self, cache: str = "cache", endpoint: str | None = None, **options: object) -> str:
        """A spec for this test's prefix with test-sized defaults (small blocks, quick flushes)."""
        values: dict[str, object] = {
            "cache_dir": self.scratch / cache,
            "cache_size": "64MiB",
            "block_size": "256KiB",
            "flush_delay": "0.05s",
            "timeout": "5s",
            "attempts": 1,
            "close_timeout": "20s",
            **options,
        }
        spec = self.server.spec(BUCKET, self.prefix, **values)
        if endpoint is not None:
            spec = spec.replace(self.server.endpoint, endpoint)
        return spec

    def store(
        self, cache: str = "cache", endpoint: str | None = None, **options: object
    ) -> S3ContentStore:
        """A new, unopened store."""
        settings = parse_s3_spec(self.spec(cache, endpoint, **options))
        store = S3ContentStore(settings, self.reactor)
        store.use_block_maps(self.maps)
        return store

    def resolve(self, deferred: Deferred[Any]) -> Any:
        """Wait for *deferred* (running the store's reactor calls) and return its result."""
        self.reactor.run_until(deferred)
        return self.case.successResultOf(deferred)

    def failure(self, deferred: Deferred[Any]) -> Failure:
        """Wait for *deferred* and return its failure."""
        self.reactor.run_until(deferred)
        return self.case.failureResultOf(deferred)

    def opened(
        self, cache: str = "cache", endpoint: str | None = None, **options: object
    ) -> S3ContentStore:
        """A store, opened, closed again when the test ends (unless the test closed it)."""
        store = self.store(cache, endpoint, **options)
        self.resolve(store.open())
        closed: list[bool] = []
        self.case.addCleanup(lambda: closed or self.resolve(store.close()))
        store.close = _closing(store.close, closed)  # type: ignore[method-assign]
        return store

    def keys(self, folder: str) -> list[str]:
        """Object keys below ``prefix/folder``."""
        response = self.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{self.prefix}/{folder}")
        return sorted(item["Key"] for item in response.get("Contents", []))

    def map(self, fileid: int) -> BlockMap:
        """A file's whole block map."""
        mapped: BlockMap = self.resolve(self.maps.block_slices(fileid, 0, 2**40))
        return mapped


def _closing(
    close: Callable[[], Deferred[None]], closed: list[bool]
) -> Callable[[], Deferred[None]]:
    def wrapper() -> Deferred[None]:
        closed.append(True)
        return close()

    return wrapper


class S3ContentStoreTests(ContentStoreConformance, SynchronousTestCase):
    """The S3 store keeps the whole content contract (local durability, 256 KiB blocks)."""

    def make_store(self) -> IContentStore:
        """A store on a fresh prefix of the shared SeaweedFS."""
        self.harness = S3Harness(self)
        return self.harness.store()

    def resolve(self, deferred: Deferred[Any]) -> Any:
        """Wait for the store's threads, running its reactor calls here."""
        return self.harness.resolve(deferred)


class S3RemoteDurabilityTests(ContentStoreConformance, SynchronousTestCase):
    """The contract holds with ``durability=remote`` too (every stable write waits for S3)."""

    def make_store(self) -> IContentStore:
        """A store that acknowledges stable writes only once S3 has them."""
        self.harness = S3Harness(self)
        return self.harness.store(durability="remote", cache_size="16MiB")

    def resolve(self, deferred: Deferred[Any]) -> Any:
        """Wait for the store's threads, running its reactor calls here."""
        return self.harness.resolve(deferred)


class S3StoreBehaviourTests(SynchronousTestCase):
    """What the S3 store promises beyond the shared contract."""

    def setUp(self) -> None:
        super().setUp()
        self.h = S3Harness(self)

    def write(
        self, store: S3ContentStore, fileid: int, offset: int, data: bytes, stable: bool = True
    ) -> None:
        """Write and wait."""
        self.h.resolve(store.write(fileid, offset, data, stable))

    def read(
        self, store: S3ContentStore, fileid: int, offset: int = 0, count: int = 1 << 30
    ) -> bytes:
        """Read and wait."""
        return bytes(self.h.resolve(store.read(fileid, offset, count)))

    def test_interfaces(self) -> None:
        """The store provides the content contract and the inventory fsck uses."""
        store = self.h.opened()
        self.assertTrue(verifyObject(IContentStore, store))
        self.assertTrue(verifyObject(IContentInventory, store))
        self.assertTrue(verifyObject(IContentCheck, store))
        self.assertTrue(verifyObject(IReadinessProbe, store))
        self.assertTrue(verifyObject(ICacheStatistics, store))
        self.assertTrue(verifyObject(IFileRegions, store))

    def test_layout_objects_and_the_map(self) -> None:
        """Content becomes immutable objects, which the metadata store's block map names."""
        store = self.h.opened(durability="remote")
        data = os.urandom(3 * BLOCK + 100)
        self.write(store, 7, 0, data)
        mapped = self.h.map(7)
        self.assertEqual(mapped.length, len(data))
        wholes = [(p.block, p.offset, p.length, p.start) for p in mapped.slices]
        self.assertEqual(
            wholes, [(0, 0, BLOCK, 0), (1, 0, BLOCK, 0), (2, 0, BLOCK, 0), (3, 0, 100, 0)]
        )
        keys = self.h.keys("blocks/")
        self.assertEqual(sorted(p.key for p in mapped.slices), keys)
        for key in keys:
            self.assertTrue(key.startswith(f"{self.h.prefix}/blocks/{7:016x}/"))
        self.assertEqual(self.h.keys("manifests/"), [])
        recorded = self.h.client.get_object(Bucket=BUCKET, Key=f"{self.h.prefix}/dittofs-s3.json")
        self.assertEqual(json.loads(recorded["Body"].read()), {"version": 2, "block_size": BLOCK})

    def test_data_is_in_s3_not_just_the_cache(self) -> None:
        """After a remote COMMIT a store with an empty cache reads every byte back from S3."""
        store = self.h.opened(durability="remote")
        data = os.urandom(5 * BLOCK + 12345)
        self.write(store, 1, 0, data, stable=False)
        self.h.resolve(store.commit(1))
        self.h.resolve(store.close())  # closing uploads nothing more: S3 had it all
        other = self.h.opened(cache="other-cache", readahead=2)
        self.assertEqual(self.read(other, 1), data)
        self.assertEqual(self.read(other, 1, BLOCK - 10, 20), data[BLOCK - 10 : BLOCK + 10])

    def test_reads_lent_from_the_cached_copy_the_map_names(self) -> None:
        """A READ inside one cached block is a region of its copy, until another gateway
        changes the block: then the map names a newer slice and the bytes are fetched."""
        writer = self.h.opened(durability="remote")
        data = bytearray(os.urandom(3 * BLOCK))
        self.write(writer, 5, 0, bytes(data))
        reader = self.h.opened(cache="reader", durability="remote", readahead=0)

        def lent(offset: int, count: int) -> bytes | FileRegion:
            answer: bytes | FileRegion = self.h.resolve(reader.read_lent(5, offset, count))
            return answer

        self.assertIsInstance(lent(BLOCK + 10, 1000), bytes)  # not cached yet: read
        self.assertEqual(self.read(reader, 5), bytes(data))  # sequential: blocks kept
        region = lent(BLOCK + 10, 1000)
        assert isinstance(region, FileRegion)
        self.addCleanup(region.close)
        self.assertEqual(region.read(), data[BLOCK + 10 : BLOCK + 1010])
        self.assertEqual(lent(BLOCK - 5, 10), data[BLOCK - 5 : BLOCK + 5])  # two blocks
        self.write(writer, 5, BLOCK + 500, b"changed elsewhere")
        data[BLOCK + 500 : BLOCK + 517] = b"changed elsewhere"
        again = lent(BLOCK + 10, 1000)
        if isinstance(again, FileRegion):
            self.addCleanup(again.close)
            again = again.read()
        self.assertEqual(again, data[BLOCK + 10 : BLOCK + 1010])

    def test_random_write_uploads_only_what_it_wrote(self) -> None:
        """A 4 KiB overwrite inside a big file uploads 4 KiB: one slice over the old block."""
        store = self.h.opened(durability="remote")
        data = bytearray(os.urandom(8 * BLOCK))
        self.write(store, 3, 0, bytes(data))
        patch = os.urandom(4096)
        self.write(store, 3, 5 * BLOCK + 1000, patch)
        data[5 * BLOCK + 1000 : 5 * BLOCK + 1000 + 4096] = patch
        block = [(p.offset, p.length) for p in self.h.map(3).slices if p.block == 5]
        self.assertEqual(block, [(0, BLOCK), (1000, 4096)])
        listed = self.h.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{self.h.prefix}/blocks/")
        sizes = sorted(item["Size"] for item in listed["Contents"])
        self.assertEqual(sizes, [4096] + [BLOCK] * 8)
        self.h.resolve(store.close())
        other = self.h.opened(cache="fresh")
        self.assertEqual(self.read(other, 3), bytes(data))

    def test_random_write_into_an_evicted_block(self) -> None:
        """Overwriting part of a block that is only in S3 fetches it first: nothing else changes."""
        store = self.h.opened(durability="remote")
        data = bytearray(os.urandom(4 * BLOCK))
        self.write(store, 4, 0, bytes(data))
        self.h.resolve(store.close())
        again = self.h.opened(cache="second", durability="remote")
        self.write(again, 4, BLOCK + 17, b"XYZ")
        data[BLOCK + 17 : BLOCK + 20] = b"XYZ"
        self.h.resolve(again.close())
        third = self.h.opened(cache="third")
        self.assertEqual(self.read(third, 4), bytes(data))

    def test_crash_recovery_uploads_the_journal(self) -> None:
        """Stable data that reached only the cache is uploaded by the next store on that cache."""
        relay = self.h.proxy()
        down = self.h.opened(endpoint=relay.endpoint, close_timeout="0s")
        self.assertEqual(self.read(down, 11), b"")  # known while S3 answers...
        self.assertEqual(self.read(down, 12), b"")
        relay.cut()  # ...then S3 goes away
        data = os.urandom(2 * BLOCK + 5)
        self.write(down, 11, 0, data)  # durability=local: fsynced in the cache only
        self.write(down, 12, 0, b"unstable then committed", stable=False)
        self.h.resolve(down.commit(12))
        self.h.resolve(down.close())
        self.assertEqual(self.h.keys("manifests/"), [])
        recovered = self.h.opened()
        self.assertEqual(self.read(recovered, 11), data)
        self.h.resolve(recovered.close())  # drains the journal to S3
        fresh = self.h.opened(cache="fresh")
        self.assertEqual(self.read(fresh, 11), data)
        self.assertEqual(self.read(fresh, 12), b"unstable then committed")

    def test_a_remote_run_leaves_nothing_to_replay_over_newer_writes(self) -> None:
        """Bytes a durability=remote run never acknowledged as stable do not come back later.

        Uploading them on the next start would lay them over what another
        gateway has written since; the client resends them instead.
        """
        relay = self.h.proxy()
        down = self.h.opened(
            cache="a", endpoint=relay.endpoint, durability="remote", close_timeout="0s"
        )
        self.assertEqual(self.read(down, 21), b"")
        relay.cut()
        self.write(down, 21, 0, b"old bytes, never committed", stable=False)
        self.h.resolve(down.close())  # S3 is away: they stay in the journal
        other = self.h.opened(cache="b", durability="remote")
        newer = b"newer bytes, written stable through another gateway"
        self.write(other, 21, 0, newer)
        self.h.resolve(other.close())
        again = self.h.opened(cache="a", durability="remote")
        self.assertEqual(self.read(again, 21), newer)
        self.h.resolve(again.close())  # a journal replayed would be uploaded now
        self.assertEqual(self.read(self.h.opened(cache="c", durability="remote"), 21), newer)

    def test_a_local_journal_is_uploaded_by_a_remote_run(self) -> None:
        """Switching a cache to durability=remote keeps what the local run acknowledged."""
        relay = self.h.proxy()
        down = self.h.opened(cache="a", endpoint=relay.endpoint, close_timeout="0s")
        self.assertEqual(self.read(down, 22), b"")
        relay.cut()
        data = os.urandom(BLOCK + 9)
        self.write(down, 22, 0, data)  # durability=local: acknowledged from the cache
        self.h.resolve(down.close())
        cut_short = self.h.opened(
            cache="a", endpoint=dead_endpoint(), durability="remote", close_timeout="0s"
        )
        self.h.resolve(cut_short.close())  # started remote, uploaded nothing
        again = self.h.opened(cache="a", durability="remote")
        self.h.resolve(again.close())
        self.assertEqual(self.read(self.h.opened(cache="c", durability="remote"), 22), data)

    def test_cuts_and_deletes_during_an_outage_need_only_the_map(self) -> None:
        """Truncates and deletes change the map alone, so they work while S3 is down."""
        store = self.h.opened(durability="remote")
        data = os.urandom(3 * BLOCK)
        self.write(store, 5, 0, data)
        self.write(store, 8, 0, data)
        self.h.resolve(store.close())
        down = self.h.opened(cache="cache2", endpoint=dead_endpoint(), close_timeout="0s")
        self.h.resolve(down.truncate(5, BLOCK + 10))  # mid-block, of a block not cached
        self.h.resolve(down.delete(8))
        self.assertEqual(self.h.map(5).length, BLOCK + 10)
        self.assertEqual(self.h.map(8).slices, ())
        self.h.resolve(down.close())
        fresh = self.h.opened(cache="fresh")
        self.assertEqual(self.read(fresh, 5), data[: BLOCK + 10])
        self.assertEqual(self.read(fresh, 8), b"")
        self.h.resolve(fresh.truncate(5, 2 * BLOCK))
        self.assertEqual(self.read(fresh, 5), data[: BLOCK + 10] + bytes(BLOCK - 10))

    def test_truncate_then_restart_keeps_the_cut(self) -> None:
        """After truncate and a restart on the same cache, the cut bytes stay gone."""
        store = self.h.opened(durability="remote")
        data = os.urandom(3 * BLOCK)
        self.write(store, 6, 0, data)
        self.h.resolve(store.truncate(6, BLOCK + 10))
        self.h.resolve(store.truncate(6, 3 * BLOCK))
        self.h.resolve(store.close())
        again = self.h.opened()
        expected = data[: BLOCK + 10]
        got = self.read(again, 6)
        self.assertEqual(got[: BLOCK + 10], expected)
        self.assertEqual(got[BLOCK + 10 :], bytes(len(got) - BLOCK - 10))

    def test_outage_cache_fills_then_jukebox(self) -> None:
        """With S3 down, writes go on into the cache; once it is full they get JUKEBOX."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        relay = self.h.proxy()
        store = self.h.opened(endpoint=relay.endpoint, close_timeout="0s", cache_size="6MiB")
        self.assertEqual(self.read(store, 21), b"")
        relay.cut()
        chunk = os.urandom(BLOCK)
        statuses = []
        for index in range(40):
            deferred = store.write(21, index * BLOCK, chunk, False)
            self.h.reactor.run_until(deferred)
            outcome: list[object] = []
            deferred.addBoth(outcome.append)
            if isinstance(outcome[0], Failure):
                statuses.append(outcome[0].value.status)
                break
            statuses.append(Status.OK)
        self.assertEqual(statuses[-1], Status.JUKEBOX)
        self.assertGreaterEqual(statuses.count(Status.OK), 15)  # most of 6 MiB was taken
        self.assertEqual(self.read(store, 21, 0, BLOCK), chunk)  # the cache still serves
        self.h.resolve(store.space())  # runs the log calls queued so far
        outages = [e for e in events if "unreachable" in (formatEvent(e) or "")]
        self.assertEqual(len(outages), 1, "an outage is logged once, not per block")

    def test_outage_reads_jukebox_then_io(self) -> None:
        """Reads of data only S3 has: JUKEBOX during an outage, IO once it has lasted too long."""
        store = self.h.opened(durability="remote")
        self.write(store, 31, 0, os.urandom(2 * BLOCK))
        self.h.resolve(store.close())
        down = self.h.opened(cache="other", endpoint=dead_endpoint(), close_timeout="0s")
        self.assertEqual(self.h.failure(down.read(31, 0, 10)).value.status, Status.JUKEBOX)
        impatient = self.h.opened(
            cache="third", endpoint=dead_endpoint(), close_timeout="0s", io_error_after="0s"
        )
        self.assertEqual(self.h.failure(impatient.read(31, 0, 10)).value.status, Status.IO)

    def test_backpressure_waits_for_uploads(self) -> None:
        """Writing far more than the cache holds succeeds: writers wait for uploads."""
        store = self.h.opened(cache_size="6MiB", uploads=4)
        data = os.urandom(24 * BLOCK * 2)  # 12 MiB through a 6 MiB cache
        peak = 0
        deferreds = []
        for at in range(0, len(data), 128 * 1024):
            deferreds.append(store.write(41, at, data[at : at + 128 * 1024], False))
        for deferred in deferreds:
            self.h.resolve(deferred)
            peak = max(peak, store._cache.used)
        self.h.resolve(store.commit(41))
        self.assertLessEqual(peak, store.settings.cache_size + BLOCK)
        self.assertEqual(self.read(store, 41), data)

    def test_gc_collects_only_old_unnamed_objects(self) -> None:
        """gc spares named and young objects and deletes old ones no map names."""
        store = self.h.opened(durability="remote")
        self.write(store, 51, 0, os.urandom(2 * BLOCK))
        stray = f"{self.h.prefix}/blocks/{51:016x}/00000009-{'0' * 16}"
        orphan = f"{self.h.prefix}/blocks/{52:016x}/00000000-{'1' * 16}"
        for key in (stray, orphan):
            self.h.client.put_object(Bucket=BUCKET, Key=key, Body=b"junk")
        young = self.h.resolve(store.gc(3600.0))
        self.assertEqual((young.deleted, young.spared, young.referenced), (0, 2, 2))
        later = datetime.now(UTC) + timedelta(hours=2)

        def named() -> list[str]:
            keys: list[str] = self.h.resolve(self.h.maps.object_keys("", 1000))
            return keys

        report = collect_garbage(store.s3, store.settings, named, grace=3600.0, now=later)
        self.assertEqual((report.deleted, report.referenced, report.named), (2, 2, 2))
        self.assertNotIn(stray, self.h.keys("blocks/"))
        self.assertEqual(len(self.read(store, 51)), 2 * BLOCK)

    def test_content_ids(self) -> None:
        """The inventory lists files with content (in S3 or the cache), not deleted ones."""
        store = self.h.opened(durability="remote")
        self.write(store, 61, 0, b"in s3")
        self.write(store, 62, 0, b"gone")
        self.h.resolve(store.delete(62))
        self.assertEqual(self.h.resolve(store.content_ids()), [61])
        self.h.resolve(store.close())
        down = self.h.opened(cache="down", endpoint=dead_endpoint(), close_timeout="0s")
        self.assertEqual(self.h.resolve(down.content_ids()), [61], "the map alone answers")

    def test_cache_dir_of_another_prefix_is_refused(self) -> None:
        """A cache directory remembers its prefix, so a journal never goes to the wrong one."""
        self.h.resolve(self.h.opened().close())
        other = S3Harness(self)
        settings = parse_s3_spec(other.spec(cache_dir=self.h.scratch / "cache"))
        store = S3ContentStore(settings, other.reactor)
        store.use_block_maps(other.maps)
        self.assertIn("belongs to", str(other.failure(store.open()).value))
        other.resolve(store.close())

    def test_a_second_gateway_on_the_prefix_is_refused(self) -> None:
        """Two gateways on one prefix would overwrite each other's files: the second refuses.

        Once the first has closed (its claim deleted), another starts at once.
        """
        first = self.h.opened()
        self.write(first, 3, 0, b"first")
        second = self.h.store(cache="second")
        error = str(self.h.failure(second.open()).value)
        self.assertIn(f"{self.h.prefix}/ is in use by another gateway", error)
        self.assertIn(f"pid {os.getpid()}, cache {self.h.scratch / 'cache'}", error)
        self.h.resolve(second.close())
        self.h.resolve(first.close())
        self.assertEqual(self.h.keys("dittofs-gateways/"), [])
        third = self.h.opened(cache="third")
        self.assertEqual(self.read(third, 3), b"first")
        self.assertEqual(len(self.h.keys("dittofs-gateways/")), 1)

    def test_a_gateway_restarted_on_its_cache_takes_its_claim_back(self) -> None:
        """After a crash the claim is still live; the same cache (and journal) may take it."""
        relay = self.h.proxy()
        crashed = self.h.opened(endpoint=relay.endpoint, close_timeout="0s")
        relay.cut()  # the claim cannot be deleted: as after kill -9
        self.h.resolve(crashed.close())
        self.assertEqual(len(self.h.keys("dittofs-gateways/")), 1)
        other = self.h.store(cache="other")
        self.assertIn("in use by another gateway", str(self.h.failure(other.open()).value))
        self.h.resolve(other.close())
        self.h.opened()

    def test_a_claim_not_renewed_expires(self) -> None:
        """A gateway gone for good stops counting once its claim is older than the TTL."""
        opened = self.h.opened()
        self.h.resolve(opened.close())
        s3 = ObjectStore(opened.settings, 4)
        gone = Claim(s3, opened.settings, "gone", lambda level, text: None, ttl=1.0)
        gone.take()
        late = Claim(s3, opened.settings, "late", lambda level, text: None, ttl=1.0)
        self.assertRaises(PrefixInUse, late.take)
        time.sleep(2.2)  # LastModified has whole seconds
        late.take()
        late.release()

    def test_another_live_claim_is_reported_while_serving(self) -> None:
        """A claim that stays live beside ours (after a long outage) is logged, once."""
        opened = self.h.opened()
        self.h.resolve(opened.close())
        s3 = ObjectStore(opened.settings, 4)
        reports: list[tuple[str, str]] = []
        ours = Claim(
            s3, opened.settings, "ours", lambda *said: reports.append(said), renew_every=0.2
        )
        ours.take()
        ours.start()
        self.addCleanup(ours.release)
        rogue = Claim(s3, opened.settings, "rogue", lambda *said: None)
        s3.put(rogue.key, b"{}")  # as a gateway that took the prefix when ours looked stale
        deadline = time.monotonic() + 10
        while not reports and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # more renewals: still one report
        self.assertEqual(len(reports), 1, reports)
        level, text = reports[0]
        self.assertEqual(level, "critical")
        self.assertIn("another gateway (gateway rogue) also serves", text)

    def test_check_finds_missing_objects_and_counts_unnamed_ones(self) -> None:
        """fsck's check: an object a map names and S3 lacks is a problem; strays are counted."""
        store = self.h.opened(durability="remote")
        self.write(store, 21, 0, os.urandom(3 * BLOCK))
        self.write(store, 22, 0, b"small")
        self.h.resolve(store.close())
        lost_key = next(p.key for p in self.h.map(21).slices if p.block == 1)
        self.h.client.delete_object(Bucket=BUCKET, Key=lost_key)
        stray_key = f"{self.h.prefix}/blocks/{23:016x}/{0:08x}-stray"
        self.h.client.put_object(Bucket=BUCKET, Key=stray_key, Body=b"x" * 100)
        checker = self.h.opened(cache="checker")
        phases: list[str] = []

        @contextlib.contextmanager
        def progress(description: str, total: int | None, unit: str) -> Iterator[Advance]:
            phases.append(description)
            yield lambda count: None

        found = self.h.resolve(checker.check_content(progress))
        self.assertEqual(
            found.problems,
            [f"object {lost_key} of file id 21, block 1, is missing from S3: its reads fail"],
        )
        self.assertTrue(found.summary.startswith("4 objects named by the block maps, 4 block"))
        self.assertIn("1 named by none (100 bytes;", found.summary)
        self.assertEqual(phases, ["walking the maps and the bucket"])

    def test_gateways_with_remote_durability_share_a_prefix(self) -> None:
        """What one gateway committed, another reads, even over a block it had cached."""
        one = self.h.opened(cache="one", durability="remote")
        two = self.h.opened(cache="two", durability="remote")
        data = bytearray(os.urandom(2 * BLOCK + 77))
        self.write(one, 31, 0, bytes(data))
        self.assertEqual(self.read(two, 31), bytes(data))  # two caches the blocks whole
        for round_ in range(20):
            writer, reader = (one, two) if round_ % 2 else (two, one)
            at = (round_ * 7919) % (2 * BLOCK)
            patch = os.urandom(1000)
            self.write(writer, 31, at, patch, stable=False)
            self.h.resolve(writer.commit(31))
            data[at : at + len(patch)] = patch
            self.assertEqual(self.read(reader, 31), bytes(data), f"round {round_}")
        self.h.resolve(two.truncate(31, BLOCK + 5))
        self.assertEqual(self.read(one, 31), bytes(data[: BLOCK + 5]))

    def test_local_durability_needs_the_prefix_alone(self) -> None:
        """A durability=local gateway refuses to share, and others refuse to share with it."""
        remote = self.h.opened(cache="remote", durability="remote")
        local = self.h.store(cache="local")
        self.assertIn("durability=local", str(self.h.failure(local.open()).value))
        self.h.resolve(local.close())
        self.h.resolve(remote.close())
        self.h.opened(cache="local")
        late = self.h.store(cache="late", durability="remote")
        self.assertIn("in use by another gateway", str(self.h.failure(late.open()).value))
        self.h.resolve(late.close())

    def test_a_prefix_with_manifests_is_migrated_once(self) -> None:
        """A prefix of the manifest era is refused with one line, then migrated and served."""
        data = os.urandom(BLOCK + 123)
        self.h.client.put_object(
            Bucket=BUCKET,
            Key=f"{self.h.prefix}/dittofs-s3.json",
            Body=json.dumps({"version": 1, "block_size": BLOCK}).encode(),
        )
        for index in (0, 1):
            key = f"{self.h.prefix}/blocks/{44:016x}/{index:08x}-v{index}"
            body = data[index * BLOCK : (index + 1) * BLOCK]
            self.h.client.put_object(Bucket=BUCKET, Key=key, Body=body)
        manifest = Manifest(size=len(data), block_size=BLOCK, blocks={0: "v0", 1: "v1"})
        manifest_key = f"{self.h.prefix}/manifests/{44:016x}"
        self.h.client.put_object(Bucket=BUCKET, Key=manifest_key, Body=manifest.encode())
        refused = self.h.store()
        self.assertIn("dittofs s3-migrate", str(self.h.failure(refused.open()).value))
        self.h.resolve(refused.close())
        settings = parse_s3_spec(self.h.spec())

        def change_map(
            fileid: int, add: list[Slice], drop_from: int | None, length: int
        ) -> BlockChange:
            changed: BlockChange = self.h.resolve(
                self.h.maps.change_blocks(fileid, add, drop_from, length)
            )
            return changed

        report = migrate(ObjectStore(settings, 4), settings, change_map)
        self.assertEqual((report.files, report.blocks), (1, 2))
        self.assertEqual(self.h.keys("manifests/"), [])
        self.assertTrue(migrate(ObjectStore(settings, 4), settings, change_map).already)
        store = self.h.opened()
        self.assertEqual(self.read(store, 44), data)

    def free_bytes(self, store: S3ContentStore) -> int:
        """What FSSTAT would report as free."""
        return int(self.h.resolve(store.space()).free_bytes)

    def settled_free_bytes(self, store: S3ContentStore, expected: int) -> int:
        """Ask FSSTAT until the background listing has caught up with *expected* (10 s at most)."""
        deadline = time.monotonic() + 10
        free = self.free_bytes(store)
        while free != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            free = self.free_bytes(store)
        return free

    def test_space_counts_what_the_prefix_holds(self) -> None:
        """FSSTAT's free space drops by what is written at once, and a listing recounts it.

        Written data shows as soon as it is in the cache; a new store counts
        the block objects by listing them, and only at its listing interval; a
        deleted file's space shows free once a listing runs after the delete.
        """
        store = self.h.opened(durability="remote", capacity="1GiB", usage_interval="0s")
        capacity = 1 << 30
        self.assertEqual(self.settled_free_bytes(store, capacity), capacity)
        self.write(store, 71, 0, os.urandom(3 * BLOCK + 10), stable=False)
        self.assertLessEqual(self.free_bytes(store), capacity - 3 * BLOCK)
        self.h.resolve(store.commit(71))
        held = sum(
            item["Size"]
            for item in self.h.client.list_objects_v2(
                Bucket=BUCKET, Prefix=f"{self.h.prefix}/blocks/"
            )["Contents"]
        )
        self.assertEqual(held, 3 * BLOCK + 10)
        self.h.resolve(store.close())
        other = self.h.opened(cache="other", capacity="1GiB", usage_interval="1h")
        self.assertEqual(self.settled_free_bytes(other, capacity - held), capacity - held)
        self.h.resolve(other.delete(71))
        self.assertEqual(self.free_bytes(other), capacity - held, "other lists once an hour")
        self.h.resolve(other.close())
        third = self.h.opened(cache="third", capacity="1GiB", usage_interval="0s")
        self.assertEqual(self.settled_free_bytes(third, capacity), capacity)

    def test_readiness_probe_asks_s3(self) -> None:
        """The probe succeeds while S3 answers and fails, asking to retry, while it does not."""
        self.assertIsNone(self.h.resolve(self.h.opened().probe()))
        down = self.h.opened(cache="down", endpoint=dead_endpoint(), close_timeout="0s")
        self.assertEqual(self.h.failure(down.probe()).value.status, Status.JUKEBOX)

    def test_cache_statistics(self) -> None:
        """Hits, misses and data waiting for upload are counted as reads and writes happen."""
        store = self.h.opened(durability="remote")
        self.write(store, 81, 0, os.urandom(2 * BLOCK))
        self.read(store, 81)
        figures = store.cache_statistics()
        self.assertEqual((figures.hits, figures.misses), (2, 0))
        self.assertEqual(figures.capacity_bytes, 64 << 20)
        self.assertGreaterEqual(figures.used_bytes, 2 * BLOCK)
        self.h.resolve(store.close())  # one gateway on a prefix at a time
        cold = self.h.opened(cache="cold")
        self.read(cold, 81, 0, 10)
        self.read(cold, 81, 0, 10)
        self.assertEqual((cold.cache_statistics().hits, cold.cache_statistics().misses), (1, 1))
        self.h.resolve(cold.close())
        relay = self.h.proxy()
        down = self.h.opened(
            cache="down", endpoint=relay.endpoint, durability="remote", close_timeout="0s"
        )
        self.write(down, 82, 0, b"uploaded")
        relay.cut()
        self.write(down, 82, 0, os.urandom(BLOCK + 5), stable=False)
        figures = down.cache_statistics()
        self.assertEqual(figures.pending_upload_bytes, BLOCK + 5)
        self.assertEqual(figures.pending_upload_files, 1)

    def test_concurrent_writers_and_readers(self) -> None:
        """Many files written and read at once through the pools come back intact."""
        store = self.h.opened(uploads=8)
        files = {fileid: os.urandom(BLOCK + fileid * 1000) for fileid in range(100, 120)}
        deferreds = [store.write(fid, 0, data, False) for fid, data in files.items()]
        for deferred in deferreds:
            self.h.resolve(deferred)
        reads = {fid: store.read(fid, 0, 1 << 22) for fid in files}
        for fid, deferred in reads.items():
            self.assertEqual(bytes(self.h.resolve(deferred)), files[fid])
        self.assertLess(threading.active_count(), 200)


class StoredBytesTests(SynchronousTestCase):
    """The used-space count behind FSSTAT, without S3: listings and uploads between them."""

    def listing(self, *sizes: int, during: Callable[[], None] = lambda: None) -> Any:
        """Listed objects of *sizes*, calling *during* half way, as uploads race a listing."""
        now = datetime.now(UTC)
        for number, size in enumerate(sizes):
            if number == len(sizes) // 2:
                during()
            yield ListedObject(f"blocks/{number}", size, now)

    def test_uploads_between_listings_are_added(self) -> None:
        """Uploads show at once; the next listing replaces them with what it found."""
        stored = StoredBytes(interval=0)
        self.assertTrue(stored.claim_listing())
        self.assertFalse(stored.claim_listing(), "one listing at a time")
        stored.recount(self.listing(100, 200))
        stored.uploaded(50)
        self.assertEqual(stored.total, 350)
        self.assertTrue(stored.claim_listing())
        stored.recount(self.listing(100, 200, 50))
        self.assertEqual(stored.total, 350)

    def test_an_upload_during_a_listing_is_never_lost(self) -> None:
        """An upload the listing may have missed still counts (twice at worst, never zero)."""
        stored = StoredBytes(interval=0)
        stored.claim_listing()
        stored.recount(self.listing(10, 20, during=lambda: stored.uploaded(5)))
        self.assertEqual(stored.total, 35)

    def test_a_failed_listing_keeps_the_count_and_waits(self) -> None:
        """S3 failing mid-listing leaves the last sum, and the next try waits ``interval``."""

        def failing() -> Any:
            yield ListedObject("blocks/0", 7, datetime.now(UTC))
            raise S3Unavailable("cut")

        for interval, again in ((0, True), (3600, False)):
            stored = StoredBytes(interval)
            stored.claim_listing()
            stored.recount(self.listing(1000))
            stored._listed_at = None  # due now, whatever the interval
            self.assertTrue(stored.claim_listing())
            self.assertRaises(S3Unavailable, stored.recount, failing())
            self.assertEqual(stored.total, 1000)
            self.assertEqual(stored.claim_listing(), again)


class ClaimJudgementTests(SynchronousTestCase):
    """Which other gateways' claims count, judged by S3's clock alone."""

    def listed(self, **ages: float) -> list[ListedObject]:
        """Claim objects of these gateways, each *age* seconds older than "now"."""
        now = datetime(2026, 1, 1, tzinfo=UTC)
        return [
            ListedObject(f"p/dittofs-gateways/{name}", 10, now - timedelta(seconds=age))
            for name, age in ages.items()
        ]

    def test_live_and_expired(self) -> None:
        """Younger than the TTL counts; as old or older does not; ours never does."""
        found = live_others(
            self.listed(mine=0, young=29, old=30, older=3600), "p/dittofs-gateways/", "mine", 30
        )
        self.assertEqual(found, [("p/dittofs-gateways/young", 29.0)])

    def test_clocks_are_s3s(self) -> None:
        """A claim written "in the future" (S3 nodes' clocks differ) counts, with age 0."""
        found = live_others(self.listed(mine=5, ahead=0), "p/dittofs-gateways/", "mine", 30)
        self.assertEqual(found, [("p/dittofs-gateways/ahead", 0.0)])

    def test_our_own_claim_not_listed_yet(self) -> None:
        """Without our own claim in the listing there is no "now": nothing is judged."""
        self.assertEqual(live_others(self.listed(other=1), "p/dittofs-gateways/", "mine", 30), [])
