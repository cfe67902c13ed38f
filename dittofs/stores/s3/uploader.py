"""Background uploads for the S3 store: from dirty blocks in the cache to objects and manifests.

A flusher thread looks at the files with changes S3 has not seen and starts
an *upload round* for each file that is due: a block is due once it is full,
once its file has been quiet for ``flush_delay``, or at once when someone waits
(a COMMIT with ``durability=remote``, a writer short of cache space, close).
A round uploads the file's due blocks in parallel (``uploads`` at a time
across all files), each to a new, uniquely named object, then rewrites the
file's manifest with one PUT.  Only after that PUT succeeds do the blocks
become clean (evictable) and the pending cut record go; so at every moment
either the journal or S3 holds every acknowledged byte.

A block changed while its upload was in flight stays dirty and goes again
in a later round; the object just uploaded is still a consistent older
version, so the manifest may name it meanwhile.  Objects a manifest stops
naming are deleted after it is written; if that is interrupted, ``gc``
finds them.

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

from dittofs.stores.s3.cache_tier import CacheTier
from dittofs.stores.s3.objects import Manifest, ObjectStore, S3Failure, S3Unavailable
from dittofs.stores.s3.settings import S3Settings
from dittofs.stores.s3.state import FileState, FileTable, Health, StoredBytes, load_state

#: Seconds between probes of an unreachable S3, and before a failed round is retried.
PROBE_INTERVAL = 1.0
RETRY_AFTER_FAILURE = 2.0
#: How often the flusher looks for due work when nothing wakes it.
TICK = 0.1

_Upload = tuple[int, str, int, int]  # index, version, generation read, truncate epoch


def read_block(fd: int, length: int) -> bytes:
    """Read *length* bytes from the start of a block file (short only if the file is)."""
    pieces: list[bytes] = []
    offset = 0
    while offset < length:
        piece = os.pread(fd, length - offset, offset)
        if not piece:
            break
        pieces.append(piece)
        offset += len(piece)
    return b"".join(pieces)


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
    ) -> None:
        self._settings = settings
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
        #: Keys uploaded but not yet named by a manifest: ``gc`` must not take them.
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
            dirty = {i: e for i, e in cache.entries(fileid).items() if e.dirty}
            pending = state.seq != state.synced_seq or state.garbage or state.clip is not None
            if state.loaded and not dirty and not pending:
                table.active.discard(fileid)
                continue
            urgent = pressed or state.commit_waiters > 0 or not state.loaded
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
        cache, settings = self._cache, self._settings
        fileid = state.fileid
        try:
            if not state.loaded:
                with state.io:
                    load_state(state, settings, self._s3, cache, self._table)
            with cache.cv:
                snapshot = state.seq
                dirty_now = {i for i, e in cache.entries(fileid).items() if e.dirty}
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
            for index, version, _, _ in uploads:
                key = self._settings.block_key(state.fileid, index, version)
                state.garbage.append(key)
                self.in_flight.discard(key)
        raise error

    def _upload_block(self, state: FileState, index: int) -> _Upload | None:
        """Snapshot one dirty block (under ``io``) and PUT it as a new object."""
        cache = self._cache
        with state.io:
            with cache.cv:
                entry = cache.get(state.fileid, index)
                if entry is None or not entry.dirty:
                    return None
                generation, epoch, length = entry.gen, state.trunc_epoch, entry.length
                fd = cache.open_for_read(entry)
            if fd is None:
                return None
            try:
                data = read_block(fd, length)
            finally:
                os.close(fd)
        version = secrets.token_hex(8)
        key = self._settings.block_key(state.fileid, index, version)
        with cache.cv:
            self.in_flight.add(key)
        try:
            self._s3.put(key, data)
        except BaseException:
            with cache.cv:
                self.in_flight.discard(key)
            raise
        self._stored.uploaded(len(data))
        return index, version, generation, epoch

    def _commit_round(
        self, state: FileState, uploads: list[_Upload], snapshot: int, complete: bool
    ) -> None:
        """Write the manifest naming the new blocks, then mark them clean and tidy up."""
        cache, settings, fileid = self._cache, self._settings, state.fileid
        kept: list[_Upload] = []
        with cache.cv:
            for upload in uploads:
                index, version, _, epoch = upload
                key = settings.block_key(fileid, index, version)
                self.in_flight.discard(key)
                if epoch != state.trunc_epoch or cache.get(fileid, index) is None:
                    state.garbage.append(key)  # cut or deleted meanwhile
                    complete = False
                    continue
                old = state.blocks.get(index)
                if old is not None and old != version:
                    state.garbage.append(settings.block_key(fileid, index, old))
                state.blocks[index] = version
                kept.append(upload)
            manifest = Manifest(state.size, settings.block_size, dict(state.blocks))
            remove = state.size == 0 and not state.blocks
            garbage, state.garbage = state.garbage, []
            meta_gen = state.meta_gen
        try:
            if remove:
                self._s3.delete([settings.manifest_key(fileid)])
            else:
                self._s3.put(settings.manifest_key(fileid), manifest.encode())
        except BaseException:
            with cache.cv:
                state.garbage = garbage + state.garbage
            raise
        self._health.success()
        with state.io, cache.cv:
            for index, version, generation, _ in kept:
                entry = cache.get(fileid, index)
                current = entry is not None and entry.dirty and entry.gen == generation
                if entry is not None and current and state.blocks.get(index) == version:
                    cache.mark_clean(entry, version)
            if complete:
                state.synced_seq = max(state.synced_seq, snapshot)
            if state.meta_gen == meta_gen and state.clip is not None:
                state.clip = None
                cache.remove_meta(fileid)
            cache.cv.notify_all()
        if garbage:
            with contextlib.suppress(S3Unavailable, S3Failure):
                self._s3.delete(garbage)  # if this fails, gc collects them
