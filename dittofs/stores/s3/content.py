"""An :class:`~dittofs.interfaces.IContentStore` on S3, with a bounded local disk cache in front.

Layout in the bucket (``prefix/`` is the spec's path)::

    prefix/dittofs-s3.json                  the block size this prefix was created with
    prefix/manifests/<fileid>               {"size": .., "blocks": [[index, version], ..]}
    prefix/blocks/<fileid>/<index>-<version> one immutable block (default 4 MiB)

Nothing on the write path ever reads, modifies and rewrites an object: a
changed block is uploaded under a new random version and the file's small
manifest is replaced with one atomic PUT, so a random 4 KiB write into a big
file costs one block, not the file, and a reader always sees a whole manifest.

Writes land in the cache tier (:mod:`dittofs.stores.s3.cache_tier`) and are
uploaded in the background (:mod:`dittofs.stores.s3.uploader`).  Reads come
from the cache or, for blocks not cached, from S3 with GETs run in parallel:
whole blocks (kept in the cache) for sequential readers, who also get the
next blocks prefetched, and ranged GETs of just the bytes asked for otherwise.

``durability=local`` (the default) acknowledges a stable WRITE or a COMMIT
once the data is fsynced in the cache's journal; ``durability=remote`` once S3
holds it and a manifest names it.  Either way nothing acknowledged is lost by
a crash: on start the journal is replayed and uploaded.

All blocking work (disk and boto3) runs in bounded thread pools, never on the
reactor thread.  When S3 is unreachable, writes carry on into the cache until
it is full and are then answered NFS3ERR_JUKEBOX (clients wait and retry), as
are reads of data not in the cache, until ``io_error_after`` has passed, when
those reads fail with NFS3ERR_IO.  Each outage is logged once.

One store per bucket prefix at a time: two servers sharing a prefix would
overwrite each other's manifests, so each claims its prefix
(:mod:`dittofs.stores.s3.claims`) and a second one refuses to start.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from dittofs import log as dittofs_log
from dittofs.errors import NFSError
from dittofs.interfaces import (
    ICacheStatistics,
    IContentCheck,
    IContentInventory,
    IContentStore,
    IReadinessProbe,
)
from dittofs.model import CacheStatistics, ContentCheck, SpaceUsage
from dittofs.progress import Phases
from dittofs.stores.s3.cache_tier import CacheFull, CacheTier, fsync_path
from dittofs.stores.s3.claims import Claim
from dittofs.stores.s3.gc import DEFAULT_GRACE, GcReport, check_blocks, collect_garbage
from dittofs.stores.s3.objects import ObjectStore, S3Failure, S3NotFound, S3Unavailable
from dittofs.stores.s3.settings import DURABILITY_REMOTE, S3Settings
from dittofs.stores.s3.state import FileState, FileTable, Health, StoredBytes, load_state
from dittofs.stores.s3.uploader import Uploader
from dittofs.vocabulary import Status

T = TypeVar("T")

log = Logger(observer=dittofs_log.observer)

#: Threads serving NFS calls; each may wait on S3 (a GET) or for cache space.
DEFAULT_THREADS = 16
#: How many times a read retries a block whose object was replaced under it.
_READ_ATTEMPTS = 3

__all__ = ["GcReport", "S3ContentStore"]


class _StoreError(Exception):
    """The store cannot start: wrong cache directory, unreachable bucket on first use."""


def _disk_error(error: OSError) -> NFSError:
    if error.errno == errno.ENOSPC:
        return NFSError(Status.NOSPC, f"cache disk full: {error}")
    return NFSError(Status.IO, str(error))


@implementer(IContentStore, IContentInventory, IContentCheck, IReadinessProbe, ICacheStatistics)
class S3ContentStore:
    """File contents as block objects in an S3 bucket, written back through a local cache."""

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
        self._uploader: Uploader | None = None
        self._fetches: ThreadPoolExecutor | None = None
        self._claim: Claim | None = None
        self.block_size = settings.block_size

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

    @contextlib.contextmanager
    def _using(self, fileid: int, load: bool = True) -> Iterator[FileState]:
        """The state of *fileid*, loaded from S3 if *load*, pinned in memory meanwhile."""
        cv = self._cache.cv
        with cv:
            state = self._table.get(fileid)
            state.users += 1
        try:
            if load and not state.loaded:
                with state.io:
                    load_state(state, self.settings, self.s3, self._cache, self._table)
            yield state
        finally:
            with cv:
                state.users -= 1
                self._table.trim(self._cache)

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Replay the cache's journal, check the bucket, and start the uploader."""
        self._pool.start()
        return self._run(self._open)

    def _open(self) -> None:
        settings = self.settings
        assert settings.cache_dir is not None
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        gateway = self._check_cache_owner()
        recovered = self._cache.open()
        self._s3 = ObjectStore(settings, max_connections=2 * settings.uploads + 32)
        self._check_format()
        self._claim = Claim(self._s3, settings, gateway, self._report)
        self._take_claim()
        with self._cache.cv:
            for fileid in set(recovered.dirty) | set(recovered.meta):
                state = self._table.get(fileid)
                state.recovered_meta = recovered.meta.get(fileid)
                state.changed()
                self._table.active.add(fileid)
        if recovered.dirty or recovered.meta:
            pending = sum(len(blocks) for blocks in recovered.dirty.values())
            self._report(
                "info",
                f"S3 cache: {pending} blocks of {len(recovered.dirty)} files and "
                f"{len(recovered.meta)} cuts were not yet in S3; uploading them now",
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
        )
        self._uploader.start()
        self._recount_if_due()

    def _take_claim(self) -> None:
        """Claim the prefix for this gateway alone (see :mod:`dittofs.stores.s3.claims`)."""
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

    def _check_cache_owner(self) -> str:
        """Refuse a cache directory of another bucket or prefix (its journal would go astray).

        Returns the id of the gateway that owns the cache, made on its first use.
        """
        settings = self.settings
        assert settings.cache_dir is not None
        owner_path = settings.cache_dir / "owner.json"
        owner = {"bucket": settings.bucket, "prefix": settings.prefix}
        if owner_path.exists():
            found = json.loads(owner_path.read_bytes())
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
            if "gateway" in found:
                return str(found["gateway"])
            record = {**found, "gateway": secrets.token_hex(8)}  # a cache from before claims
        else:
            record = {**owner, "block_size": settings.block_size, "gateway": secrets.token_hex(8)}
        temporary = owner_path.with_name("owner.json.tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, owner_path)
        fsync_path(settings.cache_dir, directory=True)
        return str(record["gateway"])

    def _check_format(self) -> None:
        """Record the block size in a new prefix, or check it matches an existing one's."""
        settings = self.settings
        try:
            try:
                recorded = json.loads(self.s3.get(settings.format_key))
            except S3NotFound:
                body = {"version": 1, "block_size": settings.block_size}
                self.s3.put(settings.format_key, json.dumps(body).encode())
                return
        except S3Unavailable as error:
            # The cache's owner record already pins the block size: serve from the cache.
            self._health.failure(error)
            return
        except S3Failure as error:
            raise _StoreError(
                f"cannot use s3://{settings.bucket}/{settings.prefix}: {error}"
            ) from None
        if int(recorded.get("block_size", 0)) != settings.block_size:
            raise _StoreError(
                f"s3://{settings.bucket}/{settings.prefix} was created with "
                f"block_size={recorded.get('block_size')}; use that"
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
                "they are uploaded at the next start",
            )

    # -- reading --------------------------------------------------------------------------

    def read(self, fileid: int, offset: int, count: int) -> Deferred[bytes]:
        """See :meth:`IContentStore.read`."""
        return self._run(self._read, fileid, offset, count, reading=True)

    def _read(self, fileid: int, offset: int, count: int) -> bytes:
        with self._using(fileid) as state:
            for _ in range(_READ_ATTEMPTS - 1):
                with contextlib.suppress(S3NotFound):
                    return self._read_once(state, offset, count)
            return self._read_once(state, offset, count)

    def _read_once(self, state: FileState, offset: int, count: int) -> bytes:
        """One attempt; S3NotFound means a block was replaced under us (try again)."""
        cache, bs = self._cache, self.block_size
        with cache.cv:
            end = min(offset + count, state.size)
            if end <= offset:
                return b""
            sequential = offset in (0, state.last_read_end)
            state.last_read_end = end
        out = bytearray(end - offset)
        missing: list[tuple[int, int, int, str]] = []
        first, last = offset // bs, (end - 1) // bs
        for index in range(first, last + 1):
            start = index * bs
            low, high = max(offset, start) - start, min(end, start + bs) - start
            fd = None
            with cache.cv:
                entry = cache.get(state.fileid, index)
                version = state.blocks.get(index)
                if entry is not None and (entry.dirty or entry.version == version):
                    fd = cache.open_for_read(entry)
                if fd is not None:
                    cache.hits += 1
                elif version is not None:
                    cache.misses += 1
            if fd is not None:
                try:
                    data = os.pread(fd, high - low, low)
                finally:
                    os.close(fd)
                at = start + low - offset
                out[at : at + len(data)] = data
            elif version is not None:
                missing.append((index, low, high, version))
        if missing:
            self._fetch_into(state, out, offset, missing, whole=sequential or len(missing) > 1)
        if sequential and self.settings.readahead:
            self._prefetch(state, last + 1)
        return bytes(out)

    def _fetch_into(
        self,
        state: FileState,
        out: bytearray,
        offset: int,
        missing: list[tuple[int, int, int, str]],
        whole: bool,
    ) -> None:
        """GET the missing blocks in parallel: whole (and cache them) or just the range."""
        assert self._fetches is not None
        bs = self.block_size
        futures: list[tuple[int, int, Future[bytes]]] = []
        for index, low, high, version in missing:
            if whole or (low == 0 and high == bs):
                future = self._fetches.submit(self._fetch_block, state, index, version)
                futures.append((index, low, self._slice(future, low, high)))
            else:
                key = self.settings.block_key(state.fileid, index, version)
                futures.append((index, low, self._fetches.submit(self.s3.get, key, low, high)))
        error: BaseException | None = None
        for index, low, future in futures:
            try:
                data = future.result()
            except BaseException as failure:
                error = error or failure
                continue
            at = index * bs + low - offset
            out[at : at + len(data)] = data
        if error is not None:
            raise error
        self._health.success()

    @staticmethod
    def _slice(future: Future[bytes], low: int, high: int) -> Future[bytes]:
        sliced: Future[bytes] = Future()

        def done(source: Future[bytes]) -> None:
            error = source.exception()
            if error is not None:
                sliced.set_exception(error)
            else:
                sliced.set_result(source.result()[low:high])

        future.add_done_callback(done)
        return sliced

    def _fetch_block(self, state: FileState, index: int, version: str) -> bytes:
        """GET a whole block object and keep a clean copy in the cache if there is room."""
        cache = self._cache
        fileid = state.fileid
        data = self.s3.get(self.settings.block_key(fileid, index, version))
        with cache.cv:
            current = state.blocks.get(index) == version and cache.get(fileid, index) is None
            if not (current and cache.try_reserve(len(data))):
                return data
        try:
            staged = cache.stage_clean(fileid, index, version, data)
        except OSError:
            with cache.cv:
                cache.release(len(data))
            return data
        with cache.cv:
            if state.blocks.get(index) == version:
                cache.insert_clean(fileid, index, version, staged, len(data))
            else:
                cache.release(len(data))
                staged.unlink(missing_ok=True)
        return data

    def _prefetch(self, state: FileState, first: int) -> None:
        """Fetch the next blocks of a sequential reader in the background."""
        if self._fetches is None:
            return
        cache = self._cache
        with cache.cv:
            wanted = []
            for index in range(first, first + self.settings.readahead):
                version = state.blocks.get(index)
                if index * self.block_size >= state.size:
                    break
                if version is None or index in state.prefetching:
                    continue
                if cache.get(state.fileid, index) is not None:
                    continue
                state.prefetching.add(index)
                wanted.append((index, version))

        def one(index: int, version: str) -> None:
            try:
                self._fetch_block(state, index, version)
            except (S3Unavailable, S3NotFound, S3Failure, OSError):
                pass  # a prefetch is a hint; the read itself reports errors
            finally:
                with cache.cv:
                    state.prefetching.discard(index)

        for index, version in wanted:
            with contextlib.suppress(RuntimeError):  # shut down by close
                self._fetches.submit(one, index, version)

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
        with self._using(fileid) as state:
            end = offset + len(view)
            first, last = offset // bs, (end - 1) // bs
            with cache.cv:
                estimate = 0
                for index in range(first, last + 1):
                    high = min(end, (index + 1) * bs) - index * bs
                    entry = cache.get(fileid, index)
                    if entry is not None:
                        estimate += max(0, high - entry.length)
                    elif index in state.blocks:
                        estimate += bs
                    else:
                        estimate += high
                deadline = time.monotonic() + self.settings.write_wait
                cache.reserve(estimate, deadline, self._health.is_down)
            try:
                with state.io:
                    for index in range(first, last + 1):
                        self._write_block(state, index, offset, view, stable)
            finally:
                with cache.cv:
                    cache.release(estimate)
                    cache.cv.notify_all()
            remote = self.settings.durability == DURABILITY_REMOTE
            if stable and not remote:
                cache.sync_dirty_dir()
            if stable and remote:
                assert self._uploader is not None
                self._uploader.wait_uploaded(state, time.monotonic() + self.settings.write_wait)

    def _write_block(
        self, state: FileState, index: int, offset: int, view: memoryview, stable: bool
    ) -> None:
        """Write the part of *view* that falls in block *index* (``state.io`` held)."""
        cache, bs, fileid = self._cache, self.block_size, state.fileid
        start = index * bs
        end = offset + len(view)
        low, high = max(offset, start) - start, min(end, start + bs) - start
        piece = view[start + low - offset : start + high - offset]
        with cache.cv:
            entry = cache.get(fileid, index)
            version = state.blocks.get(index)
            valid = min(bs, max(0, state.size - start))
            cached = entry is not None and (entry.dirty or entry.version == version)
            if entry is not None and not cached:
                cache.drop(entry)  # a stale copy
        base = b""
        if not cached and version is not None and not (low == 0 and high >= valid):
            base = self.s3.get(self.settings.block_key(fileid, index, version))[:valid]
        with cache.cv:
            entry = cache.make_dirty(fileid, index)
        durable = stable and self.settings.durability != DURABILITY_REMOTE
        fd = os.open(cache.path(entry), os.O_WRONLY)
        try:
            if base:
                _pwrite_all(fd, memoryview(base), 0)
            _pwrite_all(fd, piece, low)
            if durable:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        with cache.cv:
            cache.resize(entry, max(entry.length, len(base), high))
            cache.touched(entry, synced=durable)
            state.size = max(state.size, start + high)
            state.changed()
            self._table.active.add(fileid)

    # -- truncate, delete, commit --------------------------------------------------------

    def truncate(self, fileid: int, size: int) -> Deferred[None]:
        """See :meth:`IContentStore.truncate`: cut blocks are dropped and the cut is journaled."""
        if size == 0:
            return self._run(self._delete, fileid)
        return self._run(self._truncate, fileid, size)

    def _truncate(self, fileid: int, size: int) -> None:
        cache, bs = self._cache, self.block_size
        with self._using(fileid) as state, state.io:
            with cache.cv:
                if size >= state.size:
                    if size > state.size:
                        state.size = size  # sparse: reads of the extension are zeros
                        state.changed()
                        self._table.active.add(fileid)
                    return
                cut = size // bs if size % bs else None
                cut_version = state.blocks.get(cut) if cut is not None else None
                entry = cache.get(fileid, cut) if cut is not None else None
                usable = entry is not None and (entry.dirty or entry.version == cut_version)
            base: bytes | None = None
            if cut is not None and cut_version is not None and not usable:
                # Fetch before changing anything, so an unreachable S3 leaves the file as it was.
                key = self.settings.block_key(fileid, cut, cut_version)
                base = self.s3.get(key)[: size - cut * bs]
            with cache.cv:
                for index, cached in cache.entries(fileid).items():
                    if index * bs >= size or (index == cut and not usable):
                        cache.drop(cached)
                for index in [i for i in state.blocks if (i + 1) * bs > size]:
                    version = state.blocks.pop(index)
                    state.garbage.append(self.settings.block_key(fileid, index, version))
            if cut is not None and (usable or base is not None):
                self._cut_block(fileid, cut, size - cut * bs, base)
            with cache.cv:
                state.size = size
                state.clip = size if state.clip is None else min(state.clip, size)
                state.trunc_epoch += 1
                state.meta_gen += 1
                state.changed()
                self._table.active.add(fileid)
                clip = state.clip
            cache.sync_dirty_dir()
            cache.write_meta(fileid, size, clip)

    def _cut_block(self, fileid: int, index: int, keep: int, base: bytes | None) -> None:
        """Make block *index* dirty holding only its first *keep* bytes, durably (io held).

        *base* is the block's content fetched from S3 when it was not cached.
        """
        cache = self._cache
        with cache.cv:
            entry = cache.make_dirty(fileid, index)
        path = cache.path(entry)
        if base is None:
            length = min(entry.length, keep)
            os.truncate(path, length)
        else:
            length = len(base)
            fd = os.open(path, os.O_WRONLY)
            try:
                _pwrite_all(fd, memoryview(base), 0)
            finally:
                os.close(fd)
        fsync_path(path)
        with cache.cv:
            cache.resize(entry, length)
            cache.touched(entry, synced=True)

    def delete(self, fileid: int) -> Deferred[None]:
        """See :meth:`IContentStore.delete`; works while S3 is down (the journal remembers)."""
        return self._run(self._delete, fileid)

    def _delete(self, fileid: int) -> None:
        cache = self._cache
        with self._using(fileid, load=False) as state, state.io:
            with cache.cv:
                had_content = state.loaded and (state.size > 0 or bool(state.blocks))
                known_empty = state.loaded and not had_content and state.clip is None
                entries = cache.entries(fileid)
                if known_empty and not entries and state.seq == state.synced_seq:
                    # Nothing here and nothing in S3 (as far as this run knows): no journal needed.
                    return
                for entry in entries.values():
                    cache.drop(entry)
                for index, version in state.blocks.items():
                    state.garbage.append(self.settings.block_key(fileid, index, version))
                state.blocks = {}
                state.size = 0
                state.clip = 0
                state.recovered_meta = None
                state.loaded = True
                state.trunc_epoch += 1
                state.meta_gen += 1
                state.changed()
                self._table.active.add(fileid)
            cache.write_meta(fileid, 0, 0)

    def commit(self, fileid: int) -> Deferred[None]:
        """See :meth:`IContentStore.commit`: fsync in the cache, or wait for S3 (``durability``)."""
        return self._run(self._commit, fileid)

    def _commit(self, fileid: int) -> None:
        with self._using(fileid, load=False) as state:
            if not state.loaded:
                return  # untouched in this run: whatever exists is durable already
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
            pending = [e for e in cache.entries(fileid).values() if e.dirty and not e.synced]
            paths = [(entry, cache.path(entry), entry.gen) for entry in pending]
        for entry, path, generation in paths:
            with contextlib.suppress(FileNotFoundError):
                fsync_path(path)
            with cache.cv:
                if entry.gen == generation:
                    entry.synced = True
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
        """See :meth:`IContentInventory.content_ids`: manifests in S3, adjusted by the cache."""
        return self._run(self._content_ids, reading=True)

    def _content_ids(self) -> list[int]:
        folder = self.settings.manifest_key()
        ids: set[int] = set()
        for listed in self.s3.list(folder):
            with contextlib.suppress(ValueError):
                ids.add(int(listed.key[len(folder) :], 16))
        with self._cache.cv:
            for fileid, state in self._table.states.items():
                if not state.loaded:
                    continue
                has_dirty = any(e.dirty for e in self._cache.entries(fileid).values())
                if state.size > 0 or has_dirty:
                    ids.add(fileid)
                else:
                    ids.discard(fileid)
            ids.update(self._cache.dirty_files())
        return sorted(ids)

    def check_content(self, progress: Phases) -> Deferred[ContentCheck]:
        """See :meth:`IContentCheck.check_content`: every block a manifest names is in S3.

        Blocks no manifest names are counted, not reported: ``dittofs gc``
        collects them.
        """
        return self._run(self._check_content, progress, reading=True)

    def _check_content(self, progress: Phases) -> ContentCheck:
        found = check_blocks(self.s3, self.settings, progress)
        problems = [
            f"block {index} of file id {fileid} is missing from S3 ({key}): its reads fail"
            for fileid, index, key in found.missing
        ]
        summary = (
            f"{found.manifests} manifests, {found.blocks} block objects, "
            f"{found.unowned} named by no manifest ({found.unowned_bytes} bytes; "
            "dittofs gc deletes those older than its grace period)"
        )
        return ContentCheck(problems, summary)

    def gc(self, grace: float = DEFAULT_GRACE) -> Deferred[GcReport]:
        """Delete block objects no manifest names and older than *grace* seconds.

        Safe while serving: blocks this store has uploaded but not yet named
        in a manifest, and those its in-memory manifests name, are kept too.
        """
        return self._run(self._gc, grace)

    def _gc(self, grace: float) -> GcReport:
        def protected() -> set[str]:
            keys: set[str] = set()
            with self._cache.cv:
                if self._uploader is not None:
                    keys |= self._uploader.in_flight
                for fileid, state in self._table.states.items():
                    keys.update(
                        self.settings.block_key(fileid, index, version)
                        for index, version in state.blocks.items()
                    )
            return keys

        return collect_garbage(self.s3, self.settings, grace, protected)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written
