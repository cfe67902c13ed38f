"""Background uploads for the S3 store: from written ranges in the cache to objects and the map.

A flusher thread looks at the files with changes S3 has not seen and starts
an *upload round* for each file that is due: a block is due once it is
written to its end, once its file has been quiet for ``flush_delay``, or at
once when someone waits (a COMMIT with ``durability=remote``, a writer short
of cache space, close).  A round uploads the file's due blocks in parallel
(``uploads`` at a time across all files): each block's written ranges, and
only those, go into one new, uniquely named object.  Then one change of the
block map (in the metadata store, shared by every gateway) adds a slice for
each range.  Only after that change commits does a block leave the journal;
so at every moment either the journal or S3 and the map hold every
acknowledged byte.

A block written while its upload was in flight stays dirty and goes again in
a later round; the slices just added describe bytes that were written, so
the map may name them meanwhile.  Objects a change leaves unnamed are
deleted after it; if that is interrupted, ``gc`` finds them.

While S3 is unreachable no rounds start; the flusher probes it once a second
and everything resumes when it answers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import attrs

from dittofs.model import BlockChange, Slice
from dittofs.stores.s3.cache_tier import CacheTier, read_range
from dittofs.stores.s3.objects import ObjectStore, S3Failure, S3Unavailable
from dittofs.stores.s3.settings import S3Settings
from dittofs.stores.s3.state import FileState, FileTable, Health, StoredBytes

#: Seconds between probes of an unreachable S3, and before a failed round is retried.
PROBE_INTERVAL = 1.0
RETRY_AFTER_FAILURE = 2.0
#: How often the flusher looks for due work when nothing wakes it.
TICK = 0.1


@attrs.frozen
class _Upload:
    """One block's written ranges, uploaded as one object."""

    index: int
    key: str
    #: The block's generation and the file's truncate epoch when the ranges were read.
    gen: int
    epoch: int
    slices: tuple[Slice, ...]
    #: True when the ranges were the whole block: the cached file then is its content.
    whole: bool


class Uploader:
    """The flusher thread and the upload/round worker pools of one S3 store."""

    def __init__(
        self,
        *,
        settings: S3Settings,
        cache: CacheTier,
        table: FileTable,
        s3: ObjectStore,
        health: Health,
        stored: StoredBytes,
        report: Callable[[str, str], None],
        change_map: Callable[[int, list[Slice], int | None, int], BlockChange],
    ) -> None:
        self._settings = settings
        self._change_map = change_map
        self._cache = cache
        self._table = table
        self._s3 = s3
        self._health = health
        self._stored = stored
        self._report = report
        self._blocks = ThreadPoolExecutor(settings.uploads, thread_name_prefix="dittofs-s3-put")
        self._rounds = ThreadPoolExecutor(settings.uploads, thread_name_prefix="dittofs-s3-round")
        self._thread = threading.Thread(target=self._run, name="dittofs-s3-flusher", daemon=True)
        self._stopping = False
        self._next_probe = 0.0
        #: Set by close: every dirty block is due at once.
        self.closing = False
        #: Keys uploaded but not yet named by the block map: ``gc`` must not take them.
        self.in_flight: set[str] = set()

    def start(self) -> None:
        """Start the flusher thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the flusher and wait for rounds in progress (each bounded by S3 timeouts)."""
        with self._cache.cv:
            self._stopping = True
            self._cache.cv.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        self._rounds.shutdown(wait=True)
        self._blocks.shutdown(wait=True)

    # -- waiting -------------------------------------------------------------------------

    def wait_uploaded(self, state: FileState, deadline: float) -> None:
        """Return once S3 holds every change made to *state* so far (blocking).

        Raises :class:`S3Unavailable` if S3 is down or *deadline* passes first.
        """
        cv = self._cache.cv
        with cv:
            target = state.seq
            if state.synced_seq >= target:
                return
            self._table.active.add(state.fileid)
            state.commit_waiters += 1
            cv.notify_all()
            try:
                for _ in range(10_000_000):
                    if state.synced_seq >= target:
                        return
                    if self._health.is_down():
                        raise S3Unavailable("S3 is unreachable")
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise S3Unavailable("timed out waiting for the upload to S3")
                    cv.wait(min(remaining, 0.25))
            finally:
                state.commit_waiters -= 1

    def drain(self, deadline: float) -> None:
        """Upload everything pending, until *deadline* or an outage (for close)."""
        cv = self._cache.cv
        with cv:
            self.closing = True
            cv.notify_all()
            while self._table.active and time.monotonic() < deadline:
                if self._health.is_down():
                    return
                cv.wait(min(0.25, max(0.0, deadline - time.monotonic())))

    # -- the flusher ------------------------------------------------------------------------

    def _run(self) -> None:
        cv = self._cache.cv
        for _ in range(2**62):
            probe = False
            with cv:
                if self._stopping:
                    return
                cv.wait(TICK)
                if self._stopping:
                    return
                if self._health.is_down():
                    probe = time.monotonic() >= self._next_probe
                else:
                    self._start_rounds()
            if probe:
                self._probe()

    def _probe(self) -> None:
        self._next_probe = time.monotonic() + PROBE_INTERVAL
        try:
            self._s3.probe()
        except S3Unavailable:
            return
        except S3Failure:
            pass  # it answered, if unhelpfully: the rounds will say what is wrong
        self._health.success()
        with self._cache.cv:
            self._cache.cv.notify_all()

    def _start_rounds(self) -> None:
        """Start a round for each file that is due (cv held)."""
        cache, table, settings = self._cache, self._table, self._settings
        now = time.monotonic()
        pressed = self.closing or cache.waiters > 0 or cache.dirty_bytes > cache.capacity // 2
        for fileid in list(table.active):
            state = table.states.get(fileid)
            if state is None:
                table.active.discard(fileid)
                continue
            if state.round_busy or now < state.retry_at:
                continue
            dirty = cache.dirty_blocks(fileid)
            pending = state.seq != state.synced_seq or state.garbage
            if not dirty and not pending:
                table.active.discard(fileid)
                continue
            urgent = pressed or state.commit_waiters > 0
            quiet = now - state.last_change >= settings.flush_delay
            if urgent or quiet:
                due = sorted(dirty)
            else:
                due = [i for i, e in dirty.items() if e.length >= settings.block_size]
                if not due:
                    continue
            state.round_busy = True
            self._rounds.submit(self._round, state, due)

    # -- a round ------------------------------------------------------------------------

    def _round(self, state: FileState, due: list[int]) -> None:
        cache = self._cache
        fileid = state.fileid
        try:
            with cache.cv:
                snapshot = state.seq
                dirty_now = set(cache.dirty_blocks(fileid))
                due = [i for i in due if i in dirty_now]
                complete = set(due) == dirty_now
            futures: list[Future[_Upload | None]] = [
                self._blocks.submit(self._upload_block, state, index) for index in due
            ]
            uploads: list[_Upload] = []
            error: BaseException | None = None
            for future in futures:
                try:
                    result = future.result()
                except BaseException as failure:
                    error = error or failure
                else:
                    if result is not None:
                        uploads.append(result)
            if error is None:
                self._commit_round(state, uploads, snapshot, complete)
            else:
                self._abandon(state, uploads, error)
        except S3Unavailable as failure:
            self._health.failure(failure)
            with cache.cv:
                state.retry_at = time.monotonic() + RETRY_AFTER_FAILURE
        except S3Failure as failure:
            self._health.failure(failure, permanent=True)
            with cache.cv:
                state.retry_at = time.monotonic() + RETRY_AFTER_FAILURE
        except Exception as failure:
            self._report("error", f"upload of file {fileid} failed: {failure!r}")
            with cache.cv:
                state.retry_at = time.monotonic() + RETRY_AFTER_FAILURE
        finally:
            with cache.cv:
                state.round_busy = False
                cache.cv.notify_all()

    def _abandon(self, state: FileState, uploads: list[_Upload], error: BaseException) -> None:
        """A round lost a block upload: its other new objects are garbage; re-raise the error."""
        with self._cache.cv:
            for upload in uploads:
                state.garbage.append(upload.key)
                self.in_flight.discard(upload.key)
        raise error

    def _upload_block(self, state: FileState, index: int) -> _Upload | None:
        """Read one dirty block's written ranges (under ``io``) and PUT them as one new object."""
        cache, bs = self._cache, self._settings.block_size
        with state.io:
            with cache.cv:
                block = cache.dirty(state.fileid, index)
                if block is None:
                    return None
                generation, epoch = block.gen, state.trunc_epoch
                extents = list(block.extents)
                whole = block.extents.covers(0, bs)
                fd = cache.open_block(cache.dirty_path(state.fileid, index))
            if fd is None or not extents:
                if fd is not None:
                    os.close(fd)
                return None
            try:
                pieces = [read_range(fd, extent.start, extent.end) for extent in extents]
            finally:
                os.close(fd)
        key = self._settings.block_key(state.fileid, index, secrets.token_hex(8))
        slices: list[Slice] = []
        at = 0
        for extent, piece in zip(extents, pieces, strict=True):
            slices.append(Slice(index, extent.start, len(piece), key, at))
            at += len(piece)
        with cache.cv:
            self.in_flight.add(key)
        try:
            self._s3.put(key, b"".join(pieces))
        except BaseException:
            with cache.cv:
                self.in_flight.discard(key)
            raise
        self._stored.uploaded(at)
        return _Upload(index, key, generation, epoch, tuple(slices), whole)

    def _commit_round(
        self, state: FileState, uploads: list[_Upload], snapshot: int, complete: bool
    ) -> None:
        """Add the uploaded ranges to the block map, then let their blocks leave the journal.

        Under ``mapping``, so a truncate cannot come between the check that
        the uploads are still current and the change that adds them.
        """
        cache, fileid, bs = self._cache, state.fileid, self._settings.block_size
        with state.mapping:
            with cache.cv:
                current = [u for u in uploads if u.epoch == state.trunc_epoch]
                stale = [u.key for u in uploads if u.epoch != state.trunc_epoch]
                complete = complete and not stale
                garbage, state.garbage = state.garbage + stale, []
            seqs: list[int] = []
            if current:
                slices = [piece for upload in current for piece in upload.slices]
                length = max(p.block * bs + p.offset + p.length for p in slices)
                try:
                    change = self._change_map(fileid, slices, None, length)
                except BaseException:
                    with cache.cv:
                        state.garbage = [u.key for u in current] + garbage + state.garbage
                        self.in_flight.difference_update(u.key for u in current)
                    raise
                seqs = list(change.seqs)
                garbage += list(change.orphaned)
            self._health.success()
            with state.io, cache.cv:
                for upload in uploads:
                    self.in_flight.discard(upload.key)
                for upload in current:
                    last_seq = seqs[len(upload.slices) - 1]
                    del seqs[: len(upload.slices)]
                    block = cache.dirty(fileid, upload.index)
                    if block is None or block.gen != upload.gen:
                        continue  # written again meanwhile: it goes in a later round
                    if upload.whole:
                        cache.promote(block, str(last_seq))
                    else:
                        cache.drop_dirty(block)
                if complete:
                    state.synced_seq = max(state.synced_seq, snapshot)
                cache.cv.notify_all()
        if garbage:
            with contextlib.suppress(S3Unavailable, S3Failure):
                self._s3.delete(garbage)  # if this fails, gc collects them
