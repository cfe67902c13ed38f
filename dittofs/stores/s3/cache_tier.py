"""The S3 store's local disk tier: a write-back journal of dirty blocks and an LRU of clean ones.

One file per cached block, in two directories:

* ``dirty/<fileid>-<index>``: a block newer than what S3 holds.  This
  directory *is* the journal of pending uploads: after a crash, :meth:`open`
  finds every dirty block again and the store uploads it.  ``dirty/<fileid>.meta``
  records a truncate or delete that S3 has not heard of yet (the file's new
  size and the lowest size it was cut to), so a crash never brings cut bytes
  back.
* ``clean/<fileid>-<index>-<version>``: a copy of the block object with that
  version, kept to serve reads; the version in the name lets a copy be checked
  against the manifest, so a stale copy is never served.

The cache is bounded by bytes (the lengths of all block files).  Clean blocks
are evicted least recently used first; dirty blocks cannot be, so when the
cache is full of data not yet uploaded, :meth:`CacheTier.reserve` makes the
writer wait for uploads (backpressure) instead of failing or growing memory.

All state is guarded by one :class:`threading.Condition`, :attr:`CacheTier.cv`,
which the S3 store shares for its own per-file state: methods documented
"cv held" must be called with it held.  File system calls made under it are
short (open, rename, unlink); reading and writing block data happen outside it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import attrs

_DIRTY = "dirty"
_CLEAN = "clean"


class CacheFull(Exception):
    """No room for a write: the cache holds only data not yet uploaded.

    ``outage`` says whether S3 was unreachable (so waiting could not help)
    rather than merely slow.
    """

    def __init__(self, outage: bool) -> None:
        super().__init__("S3 unreachable and the cache is full" if outage else "cache full")
        self.outage = outage


class CacheEntry:
    """One cached block: dirty (newer than S3) or a clean copy of object ``version``."""

    __slots__ = ("dirty", "fileid", "gen", "index", "length", "synced", "version")

    def __init__(self, fileid: int, index: int, dirty: bool, length: int, version: str) -> None:
        self.fileid = fileid
        self.index = index
        self.dirty = dirty
        #: Bytes in the block file; content past it (within the file's size) is zeros.
        self.length = length
        #: For a clean copy, the version of the block object it copies.
        self.version = version
        #: Bumped by every change to a dirty block, so an upload knows if it is still current.
        self.gen = 0
        #: False while a dirty block holds data written since its last fsync.
        self.synced = True


@attrs.frozen
class Recovered:
    """What :meth:`CacheTier.open` found of a previous run: dirty blocks and pending cuts."""

    #: file id -> {index: length} of dirty blocks.
    dirty: dict[int, dict[int, int]]
    #: file id -> (size, clip): a truncate or delete not yet in S3.
    meta: dict[int, tuple[int, int]]


def fsync_path(path: Path, directory: bool = False) -> None:
    """``fsync`` a file or a directory by name (a directory after creating/renaming in it)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CacheTier:
    """Block files on local disk, bounded to *capacity* bytes."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity
        self.dirty_dir = root / _DIRTY
        self.clean_dir = root / _CLEAN
        self.cv = threading.Condition()
        self._entries: dict[int, dict[int, CacheEntry]] = {}
        self._lru: OrderedDict[tuple[int, int], CacheEntry] = OrderedDict()
        self._gens = itertools.count(1)
        #: Bytes in block files, and bytes promised to writes in progress.
        self.used = 0
        self.reserved = 0
        #: Bytes in dirty block files: what an upload must still carry.
        self.dirty_bytes = 0
        #: Writers waiting for room; the uploader treats every dirty block as due then.
        self.waiters = 0
        #: Block reads served from the cache, and those that had to fetch the block.
        self.hits = 0
        self.misses = 0
        self._dirty_dir_unsynced = False

    # -- paths -------------------------------------------------------------------------

    def dirty_path(self, fileid: int, index: int) -> Path:
        """Where a dirty block lives."""
        return self.dirty_dir / f"{fileid:016x}-{index:08x}"

    def clean_path(self, fileid: int, index: int, version: str) -> Path:
        """Where a clean copy of block object *version* lives."""
        return self.clean_dir / f"{fileid:016x}-{index:08x}-{version}"

    def meta_path(self, fileid: int) -> Path:
        """Where a file's pending truncate/delete record lives."""
        return self.dirty_dir / f"{fileid:016x}.meta"

    def path(self, entry: CacheEntry) -> Path:
        """The block file of *entry*."""
        if entry.dirty:
            return self.dirty_path(entry.fileid, entry.index)
        return self.clean_path(entry.fileid, entry.index, entry.version)

    # -- start-up ----------------------------------------------------------------------

    def open(self) -> Recovered:
        """Create the directories and load what a previous run left (blocking; no lock needed).

        Dirty blocks on disk are exactly what was made durable before a crash
        (and perhaps a little more), so all of them are kept and marked synced.
        """
        self.dirty_dir.mkdir(parents=True, exist_ok=True)
        self.clean_dir.mkdir(parents=True, exist_ok=True)
        dirty: dict[int, dict[int, int]] = {}
        meta: dict[int, tuple[int, int]] = {}
        for path in self.dirty_dir.iterdir():
            name = path.name
            if name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            try:
                if name.endswith(".meta"):
                    record = json.loads(path.read_bytes())
                    meta[int(name[:-5], 16)] = (int(record["size"]), int(record["clip"]))
                    continue
                fileid_text, index_text = name.split("-")
                fileid, index = int(fileid_text, 16), int(index_text, 16)
            except (ValueError, KeyError, TypeError):
                continue  # not ours; leave it alone
            length = path.stat().st_size
            entry = CacheEntry(fileid, index, True, length, "")
            entry.gen = next(self._gens)
            self._entries.setdefault(fileid, {})[index] = entry
            self.used += length
            self.dirty_bytes += length
            dirty.setdefault(fileid, {})[index] = length
        clean: list[tuple[float, CacheEntry]] = []
        for path in self.clean_dir.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a fetch cut short by a crash
                continue
            try:
                fileid_text, index_text, version = path.name.split("-")
                fileid, index = int(fileid_text, 16), int(index_text, 16)
                stat = path.stat()
            except (ValueError, OSError):
                path.unlink(missing_ok=True)
                continue
            if index in self._entries.get(fileid, {}):
                path.unlink(missing_ok=True)  # a dirty copy supersedes it
                continue
            clean.append((stat.st_mtime, CacheEntry(fileid, index, False, stat.st_size, version)))
        for _, entry in sorted(clean, key=lambda pair: pair[0]):
            self._entries.setdefault(entry.fileid, {})[entry.index] = entry
            self._lru[(entry.fileid, entry.index)] = entry
            self.used += entry.length
        return Recovered(dirty, meta)

    # -- lookups (cv held) -----------------------------------------------------------------

    def get(self, fileid: int, index: int) -> CacheEntry | None:
        """The cached block, if any (cv held)."""
        return self._entries.get(fileid, {}).get(index)

    def entries(self, fileid: int) -> dict[int, CacheEntry]:
        """A copy of one file's cached blocks by index (cv held)."""
        return dict(self._entries.get(fileid, {}))

    def dirty_files(self) -> list[int]:
        """File ids with dirty blocks (cv held)."""
        return [
            fid for fid, blocks in self._entries.items() if any(e.dirty for e in blocks.values())
        ]

    def open_for_read(self, entry: CacheEntry) -> int | None:
        """An fd on *entry*'s file, opened under the lock so no rename or eviction races it.

        Returns None if the file vanished (cv held).
        """
        if not entry.dirty:
            self._lru.move_to_end((entry.fileid, entry.index))
        try:
            return os.open(self.path(entry), os.O_RDONLY)
        except FileNotFoundError:
            return None

    # -- space (cv held) -------------------------------------------------------------------

    def _evict_one(self) -> bool:
        if not self._lru:
            return False
        _, entry = self._lru.popitem(last=False)
        self._forget(entry)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.clean_path(entry.fileid, entry.index, entry.version))
        return True

    def _fits(self, amount: int) -> bool:
        while self.used + self.reserved + amount > self.capacity:
            if not self._evict_one():
                return False
        return True

    def try_reserve(self, amount: int) -> bool:
        """Reserve *amount* bytes, evicting clean blocks if need be, without waiting (cv held)."""
        if self._fits(amount):
            self.reserved += amount
            return True
        return False

    def reserve(self, amount: int, deadline: float, unavailable: Callable[[], bool]) -> None:
        """Reserve *amount* bytes, waiting while uploads make room (cv held; released to wait).

        Raises :class:`CacheFull` at *deadline*, or at once while
        *unavailable()* says S3 is down (uploads cannot make room then).
        """
        amount = min(amount, self.capacity)
        self.waiters += 1
        try:
            for _ in range(1_000_000):
                if self._fits(amount):
                    self.reserved += amount
                    return
                if unavailable():
                    raise CacheFull(outage=True)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CacheFull(outage=False)
                self.cv.notify_all()  # the uploader looks at waiters
                self.cv.wait(min(remaining, 0.25))
            raise CacheFull(outage=False)
        finally:
            self.waiters -= 1

    def release(self, reserved: int) -> None:
        """Return a reservation once the write it covered has been accounted (cv held)."""
        self.reserved = max(0, self.reserved - reserved)
        self.cv.notify_all()

    def resize(self, entry: CacheEntry, length: int) -> None:
        """Record that *entry*'s file is now *length* bytes (cv held)."""
        delta = length - entry.length
        entry.length = length
        self.used += delta
        if entry.dirty:
            self.dirty_bytes += delta
        if delta < 0:
            self.cv.notify_all()

    # -- state changes (cv held) -----------------------------------------------------------

    def _forget(self, entry: CacheEntry) -> None:
        blocks = self._entries.get(entry.fileid)
        if blocks is not None and blocks.get(entry.index) is entry:
            del blocks[entry.index]
            if not blocks:
                del self._entries[entry.fileid]
        self._lru.pop((entry.fileid, entry.index), None)
        self.used -= entry.length
        if entry.dirty:
            self.dirty_bytes -= entry.length
        self.cv.notify_all()

    def make_dirty(self, fileid: int, index: int) -> CacheEntry:
        """The dirty entry for a block, turning a clean copy into one or creating an empty file.

        The file exists when this returns, so readers never miss it (cv held).
        """
        entry = self.get(fileid, index)
        if entry is not None and entry.dirty:
            return entry
        if entry is not None:
            self._lru.pop((fileid, index), None)
            os.rename(self.path(entry), self.dirty_path(fileid, index))
            entry.dirty = True
            entry.version = ""
            self.dirty_bytes += entry.length
        else:
            fd = os.open(
                self.dirty_path(fileid, index), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
            )
            os.close(fd)
            entry = CacheEntry(fileid, index, True, 0, "")
            self._entries.setdefault(fileid, {})[index] = entry
        entry.gen = next(self._gens)
        entry.synced = False
        self._dirty_dir_unsynced = True
        return entry

    def touched(self, entry: CacheEntry, synced: bool) -> None:
        """Note a write to dirty *entry*: a new generation, and whether it is on disk (cv held)."""
        entry.gen = next(self._gens)
        entry.synced = entry.synced and synced

    def mark_clean(self, entry: CacheEntry, version: str) -> None:
        """A dirty block now matches uploaded object *version*: make it evictable (cv held)."""
        os.rename(self.path(entry), self.clean_path(entry.fileid, entry.index, version))
        entry.dirty = False
        entry.version = version
        self.dirty_bytes -= entry.length
        self._lru[(entry.fileid, entry.index)] = entry
        self.cv.notify_all()

    def drop(self, entry: CacheEntry) -> None:
        """Remove a cached block and its file (cv held)."""
        path = self.path(entry)
        self._forget(entry)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if entry.dirty:
            self._dirty_dir_unsynced = True

    def drop_stale(self, fileid: int, valid: dict[int, str]) -> None:
        """Drop clean copies of *fileid* whose version is not the manifest's (cv held)."""
        for index, entry in list(self._entries.get(fileid, {}).items()):
            if not entry.dirty and valid.get(index) != entry.version:
                self.drop(entry)

    def stage_clean(self, fileid: int, index: int, version: str, data: bytes) -> Path:
        """Write a fetched block to a temporary file (blocking; call *without* cv).

        Writing megabytes is kept out of the lock; :meth:`insert_clean` then
        renames the file into place, so a crash never leaves a short copy
        under a real name.
        """
        final = self.clean_path(fileid, index, version)
        temporary = final.with_name(f"{final.name}.{threading.get_ident()}.tmp")
        with open(temporary, "wb") as file:
            file.write(data)
        return temporary

    def insert_clean(
        self, fileid: int, index: int, version: str, staged: Path, length: int
    ) -> None:
        """Keep a staged block (cv held; after :meth:`try_reserve` of *length*).

        If the block was cached meanwhile (a write, another fetch), the staged
        copy is thrown away instead.
        """
        self.reserved = max(0, self.reserved - length)
        if self.get(fileid, index) is not None:
            staged.unlink(missing_ok=True)
            return
        os.rename(staged, self.clean_path(fileid, index, version))
        entry = CacheEntry(fileid, index, False, length, version)
        self._entries.setdefault(fileid, {})[index] = entry
        self._lru[(fileid, index)] = entry
        self.used += length

    # -- durability (blocking; call without cv) ---------------------------------------------

    def sync_dirty_dir(self) -> None:
        """``fsync`` the journal directory if blocks were created or renamed in it since."""
        with self.cv:
            if not self._dirty_dir_unsynced:
                return
            self._dirty_dir_unsynced = False
        fsync_path(self.dirty_dir, directory=True)

    def write_meta(self, fileid: int, size: int, clip: int) -> None:
        """Durably record a pending truncate/delete (temporary file, fsync, rename, fsync dir)."""
        final = self.meta_path(fileid)
        temporary = final.with_name(final.name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(json.dumps({"size": size, "clip": clip}).encode())
            file.flush()
            os.fsync(file.fileno())
        os.rename(temporary, final)
        fsync_path(self.dirty_dir, directory=True)

    def remove_meta(self, fileid: int) -> None:
        """Forget a pending truncate/delete once S3's manifest says the same."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.meta_path(fileid))
