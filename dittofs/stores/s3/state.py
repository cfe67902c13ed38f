"""What the S3 store knows about each file, and whether S3 is reachable.

A :class:`FileState` is this gateway's view of one file: the work in progress
on its cached blocks (the block map itself is in the metadata store, read
afresh by every read).  Every field is guarded by the cache's condition
variable (``CacheTier.cv``); ``io`` serialises the work that changes a file's
block files (writes, cuts, and an upload's snapshot of a block), so an
upload never reads a block half written; ``mapping`` serialises this
gateway's changes to the file's map (truncates, deletes, the commit of an
upload round), so an upload made before a truncate never lands after it.
Lock order: ``mapping``, then ``io``, then ``cv``, never the reverse.

:class:`Health` tracks S3 outages so each one is logged once, when it starts
and when it ends, however many requests fail in between.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import attrs

from dittofs.stores.s3.cache_tier import CacheTier
from dittofs.stores.s3.objects import ListedObject

#: File states kept in memory when idle; more are dropped least recently used first.
MAX_IDLE_STATES = 10_000


@attrs.define(eq=False)
class FileState:
    """One file's work in progress (fields guarded by ``CacheTier.cv``)."""

    fileid: int
    io: threading.Lock = attrs.field(factory=threading.Lock)
    mapping: threading.Lock = attrs.field(factory=threading.Lock)
    #: Bumped by every change; ``synced_seq`` is the change S3 and the map have caught up to.
    seq: int = 0
    synced_seq: int = 0
    #: Bumped by every truncate or delete: an upload snapshot from before one is stale.
    trunc_epoch: int = 0
    #: Objects to delete once nothing names them (uploads a truncate made stale).
    garbage: list[str] = attrs.field(factory=list)
    round_busy: bool = False
    commit_waiters: int = 0
    #: Monotonic time of the last change, and before which no new upload round starts.
    last_change: float = 0.0
    retry_at: float = 0.0
    users: int = 0
    last_read_end: int = -1
    prefetching: set[int] = attrs.field(factory=set)
    #: The first block of the last read-ahead: the READs within one block start it once.
    prefetched_from: int = -1

    def changed(self) -> None:
        """Record a change (cv held)."""
        self.seq += 1
        self.last_change = time.monotonic()


class FileTable:
    """File states by id, with the set of files the uploader must look at."""

    def __init__(self) -> None:
        self.states: OrderedDict[int, FileState] = OrderedDict()
        #: Files with changes S3 has not caught up with.
        self.active: set[int] = set()

    def get(self, fileid: int) -> FileState:
        """The state of *fileid*, created empty if new (cv held)."""
        state = self.states.get(fileid)
        if state is None:
            state = self.states[fileid] = FileState(fileid)
        else:
            self.states.move_to_end(fileid)
        return state

    def trim(self, cache: CacheTier) -> None:
        """Forget idle, fully uploaded states beyond :data:`MAX_IDLE_STATES` (cv held)."""
        excess = len(self.states) - MAX_IDLE_STATES
        for fileid in list(self.states)[: max(0, excess) * 2]:
            if excess <= 0:
                return
            state = self.states[fileid]
            idle = (
                state.users == 0
                and not state.round_busy
                and fileid not in self.active
                and state.seq == state.synced_seq
                and not state.garbage
                and not cache.dirty_blocks(fileid)
            )
            if idle:
                del self.states[fileid]
                excess -= 1


class Health:
    """Whether S3 answers; logs each outage once, at its start and its end."""

    def __init__(self, report: Callable[[str, str], None]) -> None:
        self._report = report
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._last_failure = ""

    def failure(self, error: Exception, permanent: bool = False) -> None:
        """Note a failed request; logs only the first of an outage (or a new permanent error)."""
        with self._lock:
            if permanent:
                if str(error) != self._last_failure:
                    self._last_failure = str(error)
                    self._report("error", f"S3 refused a request: {error}")
                return
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        self._report(
            "warn",
            f"S3 is unreachable ({error}); writes go on into the local cache until it is "
            "full, then clients are asked to retry (NFS3ERR_JUKEBOX)",
        )

    def success(self) -> None:
        """Note a successful request; ends an outage (logging how long it lasted)."""
        if self.down_since is None and not self._last_failure:
            return
        with self._lock:
            since, self.down_since = self.down_since, None
            self._last_failure = ""
        if since is not None:
            seconds = time.monotonic() - since
            self._report("info", f"S3 is reachable again after {seconds:.1f}s; uploading the cache")

    def is_down(self) -> bool:
        """True during an outage."""
        return self.down_since is not None

    def outage_seconds(self) -> float:
        """How long the current outage has lasted (0 when there is none)."""
        since = self.down_since
        return 0.0 if since is None else time.monotonic() - since


class StoredBytes:
    """Bytes the prefix's block objects take in S3, for FSSTAT's used space.

    Object storage reports no used or free space, and summing it means
    listing every block object, which is far too slow for each FSSTAT (``df``
    asks often).  So the sum of a listing is kept and refreshed in the
    background at most every ``interval`` seconds, and each block uploaded
    in between is added as it goes, so written data shows at once; space
    freed by deletes shows at the next listing, as on a log-structured file
    system.  Overwritten blocks count twice until then too.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._listed = 0
        self._uploaded = 0
        self._listed_at: float | None = None
        self._listing = False

    @property
    def total(self) -> int:
        """The last listing's sum plus every block uploaded since it began."""
        with self._lock:
            return self._listed + self._uploaded

    def uploaded(self, size: int) -> None:
        """Count a block object just stored (any thread)."""
        with self._lock:
            self._uploaded += size

    def claim_listing(self) -> bool:
        """True, once, when a listing is due and none is running: the caller then lists."""
        with self._lock:
            if self._listing:
                return False
            if self._listed_at is not None and time.monotonic() - self._listed_at < self.interval:
                return False
            self._listing = True
            return True

    def recount(self, objects: Iterable[ListedObject]) -> None:
        """Replace the sum with a fresh listing's (after :meth:`claim_listing`; blocking).

        Blocks uploaded while the listing runs may be counted twice, until
        the next listing: overstating use briefly beats hiding it.  A listing
        that fails keeps the old sum and waits ``interval`` before the next.
        """
        with self._lock:
            before = self._uploaded
        try:
            listed = sum(item.size for item in objects)
        except BaseException:
            with self._lock:
                self._listing = False
                self._listed_at = time.monotonic()
            raise
        with self._lock:
            self._listed = listed
            self._uploaded -= before
            self._listing = False
            self._listed_at = time.monotonic()
