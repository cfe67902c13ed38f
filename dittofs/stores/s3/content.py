"""An :class:`~dittofs.interfaces.IContentStore` on S3, with a bounded local disk cache in front.

Layout in the bucket (``prefix/`` is the spec's path)::

    prefix/dittofs-s3.json                  {"version": 2, "block_size": ...}
    prefix/blocks/<fileid>/<index>-<version> one immutable object: ranges of one block
    prefix/dittofs-gateways/<gateway id>    a serving gateway's claim

Which objects make up each file lives in the metadata store, as its block
map (:class:`~dittofs.interfaces.IBlockMaps`), so every gateway sharing the
metadata store reads one truth, changed in transactions: a file's length and,
for each block, slices ("these bytes of the block are those bytes of that
object", newer over older).  Objects are immutable and uniquely named, and
are written before the change of the map that names them commits.

Writes land in the cache tier (:mod:`dittofs.stores.s3.cache_tier`) as the
ranges written, and are uploaded in the background
(:mod:`dittofs.stores.s3.uploader`): each block's written ranges, and only
those, in one new object, so a write never reads the block first and two
gateways writing different parts of one block never undo each other.
Reads ask the map for the blocks they need, serve each from a cached copy
only if it matches the map's newest slice, fetch the rest from S3 (whole
blocks, cached, for sequential readers, who also get the next blocks
prefetched; ranged GETs of just the bytes asked for otherwise) and lay this
gateway's ranges not yet uploaded over them.

``durability=local`` (the default) acknowledges a stable WRITE or a COMMIT
once the data is fsynced in the cache's journal, which only this gateway can
read until it is uploaded; ``durability=remote`` once S3 holds it and the map
names it, so every gateway reads it.  Local durability therefore needs the
prefix to itself, and the claim (:mod:`dittofs.stores.s3.claims`) refuses
it beside any other gateway; remote ones share a prefix.  Either way nothing
acknowledged is lost by a crash: on start the journal is replayed.

All blocking work (disk and boto3) runs in bounded thread pools, never on the
reactor thread; the map is asked through the reactor.  When S3 is
unreachable, writes carry on into the cache until it is full and are then
answered NFS3ERR_JUKEBOX (clients wait and retry), as are reads of data not
in the cache, until ``io_error_after`` has passed, when those reads fail with
NFS3ERR_IO.  Each outage is logged once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from dittofs import log as dittofs_log
from dittofs.errors import NFSError
from dittofs.interfaces import (
    IBlockMaps,
    IBlockMapUser,
    ICacheStatistics,
    IContentCheck,
    IContentInventory,
    IContentStore,
    IFileRegions,
    IReadinessProbe,
)
from dittofs.model import (
    BlockChange,
    BlockMap,
    CacheStatistics,
    ContentCheck,
    FileRegion,
    Slice,
    SpaceUsage,
)
from dittofs.progress import Phases
from dittofs.stores.s3.cache_tier import CacheFull, CacheTier, Recovered, fsync_path, read_range
from dittofs.stores.s3.claims import Claim
from dittofs.stores.s3.extents import Extent, Extents
from dittofs.stores.s3.gc import DEFAULT_GRACE, GcReport, check_blocks, collect_garbage
from dittofs.stores.s3.map_reads import MapReads
from dittofs.stores.s3.objects import ObjectStore, S3Failure, S3NotFound, S3Unavailable
from dittofs.stores.s3.settings import DURABILITY_LOCAL, DURABILITY_REMOTE, S3Settings
from dittofs.stores.s3.state import FileState, FileTable, Health, StoredBytes
from dittofs.stores.s3.uploader import Uploader
from dittofs.vocabulary import Status

T = TypeVar("T")

log = Logger(observer=dittofs_log.observer)

#: Threads serving NFS calls; each may wait on S3 (a GET) or for cache space.
DEFAULT_THREADS = 16
#: How many times a read retries a block whose object was deleted under it.
_READ_ATTEMPTS = 3
#: The bucket layout this code writes; version 1 kept manifests in the bucket.
FORMAT_VERSION = 2

__all__ = ["GcReport", "S3ContentStore"]


class _StoreError(Exception):
    """The store cannot start: wrong cache directory, unreachable bucket on first use."""


def _disk_error(error: OSError) -> NFSError:
    if error.errno == errno.ENOSPC:
        return NFSError(Status.NOSPC, f"cache disk full: {error}")
    return NFSError(Status.IO, str(error))


def resolve(slices: Sequence[Slice]) -> Extents:
    """Where each byte of a block comes from, by its slices (oldest first: newer ones win)."""
    resolved = Extents()
    for piece in slices:
        resolved.lay(piece.offset, piece.offset + piece.length, piece.key, piece.start)
    return resolved


@attrs.frozen
class _Overlay:
    """A block's ranges this gateway wrote and has not uploaded, and an fd on their file."""

    extents: Extents
    fd: int


@implementer(
    IContentStore,
    IFileRegions,
    IBlockMapUser,
    IContentInventory,
    IContentCheck,
    IReadinessProbe,
    ICacheStatistics,
)
class S3ContentStore:
    """File contents as objects in an S3 bucket, mapped in the metadata store, cached locally."""

    name = "s3"

    def __init__(
        self,
        settings: S3Settings,
        reactor: IReactorFromThreads,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        if settings.cache_dir is None:
            raise ValueError("S3ContentStore needs settings.cache_dir")
        self.settings = settings
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="dittofs-s3-content")
        self._cache = CacheTier(settings.cache_dir, settings.cache_size)
        self._table = FileTable()
        self._health = Health(self._report)
        self._stored = StoredBytes(settings.usage_interval)
        self._s3: ObjectStore | None = None
        self._maps: IBlockMaps | None = None
        self._map_reads: MapReads | None = None
        self._uploader: Uploader | None = None
        self._fetches: ThreadPoolExecutor | None = None
        self._claim: Claim | None = None
        #: The durability the cache's journal is marked with (see :meth:`_open`).
        self._journal_durability = settings.durability
        self.block_size = settings.block_size

    def use_block_maps(self, maps: IBlockMaps) -> None:
        """See :meth:`IBlockMapUser.use_block_maps`."""
        self._maps = maps
        self._map_reads = MapReads(maps.block_slices)

    # -- plumbing ------------------------------------------------------------------------

    def _report(self, level: str, message: str) -> None:
        """Log from any thread, through the reactor (observers are not all thread-safe)."""
        emit = getattr(log, level)
        self._reactor.callFromThread(emit, "{s3_event}", s3_event=message)

    def _unavailable(self, error: Exception, reading: bool) -> NFSError:
        self._health.failure(error)
        if reading and self._health.outage_seconds() >= self.settings.io_error_after:
            return NFSError(Status.IO, f"S3 unreachable for too long: {error}")
        return NFSError(Status.JUKEBOX, f"S3 unreachable: {error}")

    def _run(self, function: Callable[..., T], *args: Any, reading: bool = False) -> Deferred[T]:
        def call() -> T:
            try:
                return function(*args)
            except S3Unavailable as error:
                raise self._unavailable(error, reading) from error
            except S3NotFound as error:
                raise NFSError(Status.IO, f"object missing from S3: {error}") from error
            except S3Failure as error:
                self._health.failure(error, permanent=True)
                raise NFSError(Status.IO, str(error)) from error
            except CacheFull as error:
                if not error.outage:
                    self._report("warn", "cache full of data not yet uploaded; asking to retry")
                raise NFSError(Status.JUKEBOX, str(error)) from error
            except OSError as error:
                raise _disk_error(error) from error

        return deferToThreadPool(self._reactor, self._pool, call)

    @property
    def s3(self) -> ObjectStore:
        """The S3 client (only after :meth:`open`)."""
        assert self._s3 is not None, "the store is not open"
        return self._s3

    def _map(self, fileid: int, first: int, last: int) -> BlockMap:
        """Blocks *first* to *last* of a file's map (blocking: asked through the reactor)."""
        assert self._map_reads is not None
        ask: Any = self._map_reads.block_slices
        found: BlockMap = blockingCallFromThread(self._reactor, ask, fileid, first, last)
        return found

    def _change_map(
        self, fileid: int, add: list[Slice], drop_from: int | None, length: int
    ) -> BlockChange:
        """Change a file's map (blocking: asked through the reactor)."""
        assert self._maps is not None
        change: Any = self._maps.change_blocks
        changed: BlockChange = blockingCallFromThread(
            self._reactor, change, fileid, add, drop_from, length
        )
        return changed

    @contextlib.contextmanager
    def _using(self, fileid: int) -> Iterator[FileState]:
        """The state of *fileid*, pinned in memory meanwhile."""
        cv = self._cache.cv
        with cv:
            state = self._table.get(fileid)
            state.users += 1
        try:
            yield state
        finally:
            with cv:
                state.users -= 1
                self._table.trim(self._cache)

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Replay the cache's journal, check the bucket, and start the uploader."""
        self._pool.start()
        if self._maps is None:
            raise ValueError("the S3 store keeps its block maps in a metadata store: none given")
        return self._run(self._open)

    def _open(self) -> None:
        settings = self.settings
        assert settings.cache_dir is not None
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        owner, journal_durability = self._check_cache_owner()
        recovered = self._cache.open()
        # A journal of acknowledged bytes stays marked local until a run has uploaded it.
        replaying = bool(recovered.dirty) and journal_durability != DURABILITY_REMOTE
        self._journal_durability = DURABILITY_LOCAL if replaying else settings.durability
        self._record_owner(owner, self._journal_durability)
        gateway = str(owner["gateway"])
        self._s3 = ObjectStore(settings, max_connections=2 * settings.uploads + 32)
        self._check_format()
        exclusive = settings.durability != DURABILITY_REMOTE
        self._claim = Claim(self._s3, settings, gateway, self._report, exclusive=exclusive)
        self._take_claim()
        if recovered.dirty and not replaying:
            self._drop_unacknowledged(recovered)
        elif replaying:
            with self._cache.cv:
                for fileid in recovered.dirty:
                    self._table.get(fileid).changed()
                    self._table.active.add(fileid)
            pending = sum(len(blocks) for blocks in recovered.dirty.values())
            self._report(
                "info",
                f"S3 cache: {pending} blocks of {len(recovered.dirty)} files were not yet "
                "in S3; uploading them now",
            )
        self._fetches = ThreadPoolExecutor(
            max(4, settings.uploads), thread_name_prefix="dittofs-s3-get"
        )
        self._uploader = Uploader(
            settings=settings,
            cache=self._cache,
            table=self._table,
            s3=self._s3,
            health=self._health,
            stored=self._stored,
            report=self._report,
            change_map=self._change_map,
        )
        self._uploader.start()
        self._recount_if_due()

    def _take_claim(self) -> None:
        """Claim the prefix (see :mod:`dittofs.stores.s3.claims`)."""
        assert self._claim is not None
        try:
            self._claim.take()  # PrefixInUse says which gateway holds it
        except S3Unavailable as error:
            self._health.failure(error)
            self._report(
                "warn",
                "S3 is unreachable: whether another gateway uses this prefix is checked "
                "once it answers",
            )
        self._claim.start()

    def _drop_unacknowledged(self, recovered: Recovered) -> None:
        """Forget the bytes a ``durability=remote`` run left in the journal.

        That run acknowledged nothing before S3 and the map held it, so what
        it left was never acknowledged as stable: writes cut short, and
        UNSTABLE writes not yet committed, which clients send again when
        COMMIT answers this start's new write verifier.  Uploading them now
        would lay old bytes over what other gateways have written since.
        """
        with self._cache.cv:
            for fileid, indices in recovered.dirty.items():
                for index in indices:
                    block = self._cache.dirty(fileid, index)
                    if block is not None:
                        self._cache.drop_dirty(block)
        pending = sum(len(blocks) for blocks in recovered.dirty.values())
        self._report(
            "info",
            f"S3 cache: dropped {pending} blocks of {len(recovered.dirty)} files that the last "
            "run (durability=remote) never acknowledged as stable; clients resend them",
        )

    def _check_cache_owner(self) -> tuple[dict[str, Any], str]:
        """Refuse a cache directory of another bucket or prefix (its journal would go astray).

        Returns the cache's owner record (with the id of the gateway that owns
        it, made on its first use) and the durability its journal was written
        with (``local`` for a cache from before that was recorded).
        """
        settings = self.settings
        assert settings.cache_dir is not None
        owner_path = settings.cache_dir / "owner.json"
        owner = {"bucket": settings.bucket, "prefix": settings.prefix}
        if not owner_path.exists():
            record = {**owner, "block_size": settings.block_size}
            return {**record, "gateway": secrets.token_hex(8)}, settings.durability
        found: dict[str, Any] = json.loads(owner_path.read_bytes())
        if {k: found.get(k) for k in owner} != owner:
            raise _StoreError(
                f"cache directory {settings.cache_dir} belongs to s3://{found.get('bucket')}/"
                f"{found.get('prefix')}, not s3://{settings.bucket}/{settings.prefix}"
            )
        if found.get("block_size") != settings.block_size:
            raise _StoreError(
                f"cache directory {settings.cache_dir} holds {found.get('block_size')}-byte "
                f"blocks; start with block_size={found.get('block_size')} or another cache_dir"
            )
        found.setdefault("gateway", secrets.token_hex(8))  # a cache from before claims
        return found, str(found.get("durability", DURABILITY_LOCAL))

    def _record_owner(self, owner: dict[str, Any], durability: str) -> None:
        """Write the owner record, with the durability this run's journal is written with."""
        assert self.settings.cache_dir is not None
        owner_path = self.settings.cache_dir / "owner.json"
        record = {**owner, "durability": durability}
        if owner_path.exists() and json.loads(owner_path.read_bytes()) == record:
            return
        temporary = owner_path.with_name("owner.json.tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, owner_path)
        fsync_path(self.settings.cache_dir, directory=True)

    def _check_format(self) -> None:
        """Record the format in a new prefix, or check an existing one's.

        A prefix of version 1 keeps manifests in the bucket: its files are
        read only once ``dittofs s3-migrate`` has put them in the block map.
        """
        settings = self.settings
        where = f"s3://{settings.bucket}/{settings.prefix}"
        try:
            try:
                recorded = json.loads(self.s3.get(settings.format_key))
            except S3NotFound:
                body = {"version": FORMAT_VERSION, "block_size": settings.block_size}
                self.s3.put(settings.format_key, json.dumps(body).encode())
                return
        except S3Unavailable as error:
            # The cache's owner record already pins the block size: serve from the cache.
            self._health.failure(error)
            return
        except S3Failure as error:
            raise _StoreError(f"cannot use {where}: {error}") from None
        if int(recorded.get("block_size", 0)) != settings.block_size:
            raise _StoreError(
                f"{where} was created with block_size={recorded.get('block_size')}; use that"
            )
        version = int(recorded.get("version", 1))
        if version > FORMAT_VERSION:
            raise _StoreError(f"{where} has format {version}, newer than this DittoFS: upgrade")
        if version < FORMAT_VERSION:
            raise _StoreError(
                f"{where} keeps its files' block lists in the bucket (format {version}); "
                "move them to the metadata store once with `dittofs s3-migrate` "
                "(same --metadata and --content), then start again"
            )

    def close(self) -> Deferred[None]:
        """Upload what can be within ``close_timeout``, fsync the rest, stop the threads."""
        closed = self._run(self._close)

        def stop_pool(result: object) -> object:
            self._pool.stop()
            return result

        return closed.addBoth(stop_pool)

    def _close(self) -> None:
        uploader, self._uploader = self._uploader, None
        if uploader is not None:
            uploader.drain(time.monotonic() + self.settings.close_timeout)
            uploader.stop()
        if self._fetches is not None:
            self._fetches.shutdown(wait=True)
            self._fetches = None
        with self._cache.cv:
            fileids = self._cache.dirty_files()
        for fileid in fileids:
            self._fsync_file(fileid)
        with self._cache.cv:
            left = self._cache.dirty_bytes
        if self._claim is not None:
            self._claim.release()
            self._claim = None
        if left:
            self._report(
                "info",
                f"S3 cache: {left} bytes not yet in S3 stay in the cache; "
                + (
                    "the next start drops them: durability=remote never acknowledged them "
                    "as stable, and clients resend them"
                    if self._journal_durability == DURABILITY_REMOTE
                    else "they are uploaded at the next start"
                ),
            )

    # -- reading --------------------------------------------------------------------------

    def read(self, fileid: int, offset: int, count: int) -> Deferred[bytes]:
        """See :meth:`IContentStore.read`."""
        return self._run(self._read, fileid, offset, count, False, reading=True)

    def read_lent(self, fileid: int, offset: int, count: int) -> Deferred[bytes | FileRegion]:
        """See :class:`~dittofs.interfaces.IFileRegions`: a READ within one block that the
        cache holds as the map has it is lent from the cached copy, once the map says so."""
        return self._run(self._read, fileid, offset, count, True, reading=True)

    def _read(self, fileid: int, offset: int, count: int, lend: bool) -> Any:
        with self._using(fileid) as state:
            for _ in range(_READ_ATTEMPTS - 1):
                with contextlib.suppress(S3NotFound):
                    return self._read_once(state, offset, count, lend)
            return self._read_once(state, offset, count, lend)

    def _overlays(self, fileid: int, first: int, last: int) -> tuple[dict[int, _Overlay], int]:
        """This gateway's ranges not yet uploaded in blocks *first*..*last*, and where its
        writes end (cv held).

        Taken before the map is read: ranges uploaded in between are then in
        both, with the same bytes, and none is in neither.
        """
        cache = self._cache
        overlays: dict[int, _Overlay] = {}
        local_end = 0
        for index, block in cache.dirty_blocks(fileid).items():
            local_end = max(local_end, index * self.block_size + block.length)
            if first <= index <= last:
                fd = cache.open_block(cache.dirty_path(fileid, index))
                if fd is not None:
                    overlays[index] = _Overlay(block.extents.copy(), fd)
        return overlays, local_end

    def _read_once(
        self, state: FileState, offset: int, count: int, lend: bool = False
    ) -> bytes | FileRegion:
        """One attempt; S3NotFound means an object was deleted under us (try again).

        With *lend*, a READ inside one block with nothing of this gateway's
        own in it, cached as the map has it, is a region of the cached copy.
        """
        cache, bs, fileid = self._cache, self.block_size, state.fileid
        if count <= 0:
            return b""
        first, last = offset // bs, (offset + count - 1) // bs
        with cache.cv:
            overlays, local_end = self._overlays(fileid, first, last)
        try:
            mapped = self._map(fileid, first, last)
            end = min(offset + count, max(mapped.length, local_end))
            if end <= offset:
                return b""
            with cache.cv:
                sequential = offset in (0, state.last_read_end)
                state.last_read_end = end
            by_block: dict[int, list[Slice]] = {}
            for piece in mapped.slices:
                by_block.setdefault(piece.block, []).append(piece)
            last = (end - 1) // bs
            if lend and first == last and offset + count <= end and not overlays:
                lent = self._lend_clean(
                    fileid, first, by_block.get(first), offset - first * bs, count
                )
                if lent is not None:
                    return self._after_read(state, last, sequential, lent)
            out = bytearray(end - offset)
            fetches: list[tuple[int, Future[bytes]]] = []
            for index in range(first, last + 1):
                start = index * bs
                low, high = max(offset, start) - start, min(end, start + bs) - start
                overlay = overlays.get(index)
                if overlay is not None and overlay.extents.covers(low, high):
                    with cache.cv:
                        cache.hits += 1  # this gateway's own bytes, not yet uploaded
                    continue
                slices = by_block.get(index, [])
                if not slices and overlay is not None:
                    with cache.cv:
                        cache.hits += 1  # partly written here, the rest a hole
                span = (low, high)
                fetches.extend(self._read_block(state, index, slices, span, sequential))
            for at, future in fetches:
                data = future.result()
                position = at - offset
                out[position : position + len(data)] = data
            for index, overlay in overlays.items():
                start = index * bs
                for extent in overlay.extents:
                    low, high = max(offset, start + extent.start), min(end, start + extent.end)
                    if low < high:
                        data = read_range(overlay.fd, low - start, high - start)
                        out[low - offset : high - offset] = data
        finally:
            for overlay in overlays.values():
                os.close(overlay.fd)
        return self._after_read(state, last, sequential, bytes(out))

    def _after_read(self, state: FileState, last: int, sequential: bool, data: T) -> T:
        """Read ahead of a sequential reader, note S3 answered, and return *data*."""
        if sequential and self.settings.readahead:
            self._prefetch(state, last + 1)
        self._health.success()
        return data

    def _lend_clean(
        self, fileid: int, index: int, slices: list[Slice] | None, low: int, count: int
    ) -> FileRegion | None:
        """A region of block *index*'s cached copy, if the cache holds it as *slices* have it."""
        if not slices:
            return None  # a hole: not worth a file
        cache = self._cache
        tag = str(slices[-1].seq)
        with cache.cv:
            if cache.clean(fileid, index, tag) is None:
                return None
            fd = cache.open_block(cache.clean_path(fileid, index, tag))
            if fd is None:
                return None
            cache.hits += 1
        return FileRegion(fd, low, count)

    def _read_block(
        self,
        state: FileState,
        index: int,
        slices: list[Slice],
        span: tuple[int, int],
        sequential: bool,
    ) -> list[tuple[int, Future[bytes]]]:
        """Start reading bytes *span* of a block as the map has it; (offset, bytes) pairs.

        From the cached copy of the map's state if there is one; else whole
        (and kept) for a sequential reader, or just the pieces asked for.
        """
        assert self._fetches is not None
        cache, fileid = self._cache, state.fileid
        start = index * self.block_size
        low, high = span
        if not slices:
            return []  # a hole: zeros
        tag = str(slices[-1].seq)
        fd = None
        with cache.cv:
            clean = cache.clean(fileid, index, tag)
            if clean is not None:
                fd = cache.open_block(cache.clean_path(fileid, index, tag))
            if fd is not None:
                cache.hits += 1
            else:
                cache.misses += 1
        if fd is not None:
            try:
                done: Future[bytes] = Future()
                done.set_result(read_range(fd, low, high))
                return [(start + low, done)]
            finally:
                os.close(fd)
        if sequential:
            whole = self._fetches.submit(self._fetch_block, fileid, index, slices, tag)
            return [(start + low, _sliced(whole, low, high))]
        return [
            (start + piece.start, self._fetches.submit(self._get, piece))
            for piece in resolve(slices).within(low, high)
            if piece.source
        ]

    def _get(self, piece: Extent) -> bytes:
        """The bytes of one resolved piece, with a ranged GET of its object."""
        return self.s3.get(piece.source, piece.at, piece.at + piece.end - piece.start)

    def _fetch_block(self, fileid: int, index: int, slices: list[Slice], tag: str) -> bytes:
        """A block's whole content as the map has it; kept in the cache if there is room."""
        resolved = resolve(slices)
        image = bytearray(resolved.end)
        for piece in resolved:
            if piece.source:
                image[piece.start : piece.end] = self._get(piece)
        data = bytes(image)
        cache = self._cache
        with cache.cv:
            if not cache.try_reserve(len(data)):
                return data
        try:
            staged = cache.stage_clean(fileid, index, tag, data)
        except OSError:
            with cache.cv:
                cache.release(len(data))
            return data
        with cache.cv:
            cache.insert_clean(fileid, index, tag, staged, len(data))
        return data

    def _prefetch(self, state: FileState, first: int) -> None:
        """Fetch the next blocks of a sequential reader in the background."""
        if self._fetches is None:
            return
        cache, fileid = self._cache, state.fileid
        last = first + self.settings.readahead - 1
        with cache.cv:
            if state.prefetched_from == first:
                return  # another READ of the same block started this read-ahead
            state.prefetched_from = first
            wanted = [i for i in range(first, last + 1) if i not in state.prefetching]
            state.prefetching.update(wanted)
        if not wanted:
            return

        def fetch() -> None:
            try:
                mapped = self._map(fileid, first, last)
                by_block: dict[int, list[Slice]] = {}
                for piece in mapped.slices:
                    by_block.setdefault(piece.block, []).append(piece)
                for index in wanted:
                    slices = by_block.get(index)
                    if not slices or index * self.block_size >= mapped.length:
                        continue
                    tag = str(slices[-1].seq)
                    with cache.cv:
                        if cache.clean(fileid, index, tag) is not None:
                            continue
                    self._fetch_block(fileid, index, slices, tag)
            except Exception:
                pass
            finally:
                with cache.cv:
                    state.prefetching.difference_update(wanted)

        with contextlib.suppress(RuntimeError):  # shut down by close
            self._fetches.submit(fetch)

    # -- writing --------------------------------------------------------------------------

    def write(
        self, fileid: int, offset: int, data: bytes | memoryview, stable: bool
    ) -> Deferred[None]:
        """See :meth:`IContentStore.write`; a full cache makes the writer wait, then JUKEBOX."""
        return self._run(self._write, fileid, offset, data, stable)

    def _write(self, fileid: int, offset: int, data: bytes | memoryview, stable: bool) -> None:
        view = memoryview(data).cast("B")
        if not view:
            return
        cache, bs = self._cache, self.block_size
        remote = self.settings.durability == DURABILITY_REMOTE
        durable = stable and not remote
        with self._using(fileid) as state:
            end = offset + len(view)
            with cache.cv:
                deadline = time.monotonic() + self.settings.write_wait
                cache.reserve(len(view), deadline, self._health.is_down)
            try:
                with state.io:
                    for index in range(offset // bs, (end - 1) // bs + 1):
                        start = index * bs
                        low, high = max(offset, start) - start, min(end, start + bs) - start
                        piece = view[start + low - offset : start + high - offset]
                        with cache.cv:
                            block = cache.make_dirty(fileid, index)
                        fd = os.open(cache.dirty_path(fileid, index), os.O_WRONLY)
                        try:
                            _pwrite_all(fd, piece, low)
                            if durable:
                                os.fdatasync(fd)
                        finally:
                            os.close(fd)
                        cache.note_ranges(block, [(low, high)], sync=durable)
                        with cache.cv:
                            cache.written(block, low, high, synced=durable)
                            state.changed()
                            self._table.active.add(fileid)
            finally:
                with cache.cv:
                    cache.release(len(view))
            if durable:
                cache.sync_dirty_dir()
            if stable and remote:
                assert self._uploader is not None
                self._uploader.wait_uploaded(state, time.monotonic() + self.settings.write_wait)

    # -- truncate, delete, commit --------------------------------------------------------

    def truncate(self, fileid: int, size: int) -> Deferred[None]:
        """See :meth:`IContentStore.truncate`: one change of the map, and the cache cut to match."""
        return self._run(self._truncate, fileid, size)

    def _truncate(self, fileid: int, size: int) -> None:
        """Drop the blocks past *size*, and zeros over the rest of the block it cuts.

        The zeros make a later extension read zeros there, not the old bytes;
        the map's length becomes *size*, longer or shorter.
        """
        cache, bs = self._cache, self.block_size
        cut, keep = divmod(size, bs)
        zeros = [Slice(cut, keep, bs - keep)] if keep else []
        drop_from = cut + 1 if keep else cut
        with self._using(fileid) as state, state.mapping:
            change = self._change_map(fileid, zeros, drop_from, size)
            with state.io:
                with cache.cv:
                    cache.drop_file(fileid, drop_from)
                    partial = cache.dirty(fileid, cut) if keep else None
                    state.trunc_epoch += 1
                    state.changed()
                    self._table.active.add(fileid)
                if partial is not None:
                    cache.cut_dirty(partial, keep)
            cache.sync_dirty_dir()
        self._forget(change.orphaned)

    def delete(self, fileid: int) -> Deferred[None]:
        """See :meth:`IContentStore.delete`: the map forgets the file; its objects go."""
        return self._run(self._delete, fileid)

    def _delete(self, fileid: int) -> None:
        cache = self._cache
        with self._using(fileid) as state, state.mapping:
            change = self._change_map(fileid, [], 0, 0)
            with state.io, cache.cv:
                cache.drop_file(fileid)
                state.trunc_epoch += 1
                state.changed()
                self._table.active.add(fileid)
            cache.sync_dirty_dir()
        self._forget(change.orphaned)

    def _forget(self, keys: Sequence[str]) -> None:
        """Delete objects nothing names any more; gc takes them if S3 cannot now."""
        if keys:
            with contextlib.suppress(S3Unavailable, S3Failure):
                self.s3.delete(list(keys))

    def commit(self, fileid: int) -> Deferred[None]:
        """See :meth:`IContentStore.commit`: fsync in the cache, or wait for S3 (``durability``)."""
        return self._run(self._commit, fileid)

    def _commit(self, fileid: int) -> None:
        with self._using(fileid) as state:
            if self.settings.durability == DURABILITY_REMOTE:
                assert self._uploader is not None
                self._uploader.wait_uploaded(state, time.monotonic() + self.settings.write_wait)
                return
            with state.io:
                self._fsync_file(fileid)

    def _fsync_file(self, fileid: int) -> None:
        """fsync a file's dirty blocks written since their last fsync, then the journal folder."""
        cache = self._cache
        with cache.cv:
            pending = [b for b in cache.dirty_blocks(fileid).values() if not b.synced]
            paths = [
                (block, block.gen, cache.dirty_path(fileid, block.index),
                 cache.ranges_path(fileid, block.index))
                for block in pending
            ]  # fmt: skip
        for block, generation, data, ranges in paths:
            for path in (data, ranges):
                with contextlib.suppress(FileNotFoundError):
                    fsync_path(path)
            with cache.cv:
                if block.gen == generation:
                    block.synced = True
        cache.sync_dirty_dir()

    # -- FSSTAT, inventory, gc ------------------------------------------------------------

    def space(self) -> Deferred[SpaceUsage]:
        """The configured ``capacity`` (object storage has no size) less what the prefix holds.

        What it holds is the block objects in S3 (see :class:`StoredBytes`)
        plus the cache's data not yet uploaded.
        """
        return self._run(self._space)

    def _space(self) -> SpaceUsage:
        self._recount_if_due()
        with self._cache.cv:
            pending = self._cache.dirty_bytes
        capacity = self.settings.capacity
        return SpaceUsage(capacity, max(capacity - self._stored.total - pending, 0))

    def _recount_if_due(self) -> None:
        """List the block objects again in the background if the last count is old."""
        if self._fetches is None or not self._stored.claim_listing():
            return
        with contextlib.suppress(RuntimeError):  # shut down by close
            self._fetches.submit(self._recount)

    def _recount(self) -> None:
        try:
            self._stored.recount(self.s3.list(self.settings.block_key_prefix()))
        except S3Unavailable as error:
            self._health.failure(error)
        except S3Failure as error:
            self._health.failure(error, permanent=True)

    def probe(self) -> Deferred[None]:
        """See :meth:`IReadinessProbe.probe`: S3 answers a HEAD of the bucket."""
        return self._run(self._probe)

    def _probe(self) -> None:
        self.s3.probe()
        self._health.success()

    def cache_statistics(self) -> CacheStatistics:
        """See :meth:`ICacheStatistics.cache_statistics`."""
        cache = self._cache
        with cache.cv:
            return CacheStatistics(
                used_bytes=cache.used,
                capacity_bytes=cache.capacity,
                pending_upload_bytes=cache.dirty_bytes,
                pending_upload_files=len(self._table.active),
                hits=cache.hits,
                misses=cache.misses,
            )

    def content_ids(self) -> Deferred[list[int]]:
        """See :meth:`IContentInventory.content_ids`: files the map names objects of.

        Plus files with data only in this gateway's cache.
        """
        return self._run(self._content_ids, reading=True)

    def _content_ids(self) -> list[int]:
        folder = self.settings.block_key_prefix()
        ids: set[int] = set()
        for key in self._mapped_keys():
            with contextlib.suppress(ValueError):
                ids.add(int(key[len(folder) :].split("/", 1)[0], 16))
        with self._cache.cv:
            ids.update(self._cache.dirty_files())
        return sorted(ids)

    def _mapped_keys(self) -> Iterator[str]:
        """Every object key the maps name, in byte order, a page at a time."""
        assert self._maps is not None
        after = ""
        for _ in range(2**62):
            ask: Any = self._maps.object_keys
            page: list[str] = blockingCallFromThread(self._reactor, ask, after, 1000)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1]

    def check_content(self, progress: Phases) -> Deferred[ContentCheck]:
        """See :meth:`IContentCheck.check_content`: every object the map names is in S3.

        Objects the map does not name are counted, not reported: ``dittofs
        gc`` collects them.
        """
        return self._run(self._check_content, progress, reading=True)

    def _check_content(self, progress: Phases) -> ContentCheck:
        found = check_blocks(self.s3, self.settings, self._mapped_keys, progress)
        problems = [
            f"object {key} of file id {fileid}, block {index}, is missing from S3: its reads fail"
            for fileid, index, key in found.missing
        ]
        summary = (
            f"{found.named} objects named by the block maps, {found.blocks} block objects, "
            f"{found.unowned} named by none ({found.unowned_bytes} bytes; "
            "dittofs gc deletes those older than its grace period)"
        )
        return ContentCheck(problems, summary)

    def gc(self, grace: float = DEFAULT_GRACE) -> Deferred[GcReport]:
        """Delete objects the maps do not name and older than *grace* seconds.

        Safe while serving: objects this store has uploaded but not yet named
        in the map are kept too.
        """
        return self._run(self._gc, grace)

    def _gc(self, grace: float) -> GcReport:
        def protected() -> set[str]:
            with self._cache.cv:
                return set(self._uploader.in_flight) if self._uploader is not None else set()

        return collect_garbage(
            self.s3, self.settings, self._mapped_keys, grace=grace, protected=protected
        )


def _sliced(future: Future[bytes], low: int, high: int) -> Future[bytes]:
    """A future of bytes *low*..*high* of another future's bytes."""
    sliced: Future[bytes] = Future()

    def done(source: Future[bytes]) -> None:
        error = source.exception()
        if error is not None:
            sliced.set_exception(error)
        else:
            sliced.set_result(source.result()[low:high])

    future.add_done_callback(done)
    return sliced


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written
