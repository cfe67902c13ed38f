"""The S3 store's disk tier: a journal of bytes not yet uploaded, and an LRU of whole blocks.

Each block of a file may have two files here, in two directories:

* ``dirty/<fileid>-<index>``: the bytes this gateway wrote into the block and
  has not uploaded, each at its offset (a sparse file), with
  ``dirty/<fileid>-<index>.x`` listing the ranges written (16 bytes each,
  appended with every write).  This directory *is* the journal of pending
  uploads: after a crash, :meth:`CacheTier.open` finds every written range
  again and the store uploads it.  Only written ranges are uploaded, never
  the holes between them, so two gateways writing different parts of one
  block never undo each other.
* ``clean/<fileid>-<index>-<tag>``: the block's whole content as the block map
  said when its newest slice had ``seq`` *tag*, kept to serve reads; a copy
  whose tag is not the map's newest is never served.

The cache is bounded by bytes (the lengths of all block files).  Clean blocks
are evicted least recently used first; dirty ones cannot be, so when the
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
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import attrs

from dittofs.stores.s3.extents import Extents

_DIRTY = "dirty"
_CLEAN = "clean"
_RANGE = struct.Struct(">QQ")


class CacheFull(Exception):
    """No room for a write: the cache holds only data not yet uploaded.

    ``outage`` says whether S3 was unreachable (so waiting could not help)
    rather than merely slow.
    """

    def __init__(self, outage: bool) -> None:
        super().__init__("S3 unreachable and the cache is full" if outage else "cache full")
        self.outage = outage


class DirtyBlock:
    """The bytes this gateway wrote into one block and has not uploaded yet."""

    __slots__ = ("extents", "fileid", "gen", "index", "length", "synced")

    def __init__(self, fileid: int, index: int) -> None:
        self.fileid = fileid
        self.index = index
        #: Bytes in the (sparse) block file: where its last written range ends.
        self.length = 0
        #: The ranges written; only these are uploaded.
        self.extents = Extents()
        #: Bumped by every change, so an upload knows whether it is still current.
        self.gen = 0
        #: False while the block holds data written since its last fsync.
        self.synced = True


class CleanBlock:
    """A block's whole content as the map said when its newest slice had ``seq`` == tag."""

    __slots__ = ("fileid", "index", "length", "tag")

    def __init__(self, fileid: int, index: int, length: int, tag: str) -> None:
        self.fileid = fileid
        self.index = index
        self.length = length
        self.tag = tag


@attrs.frozen
class Recovered:
    """What :meth:`CacheTier.open` found of a previous run: files with bytes not uploaded."""

    #: file id -> the indices of its dirty blocks.
    dirty: dict[int, set[int]]


def fsync_path(path: Path, directory: bool = False) -> None:
    """``fsync`` a file or a directory by name (a directory after creating/renaming in it)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_range(fd: int, start: int, end: int) -> bytes:
    """Bytes ``start``..``end`` of a block file (zeros where the file is shorter)."""
    pieces: list[bytes] = []
    offset = start
    while offset < end:
        piece = os.pread(fd, end - offset, offset)
        if not piece:
            break
        pieces.append(piece)
        offset += len(piece)
    data = b"".join(pieces)
    return data + bytes(end - start - len(data))


class CacheTier:
    """Block files on local disk, bounded to *capacity* bytes."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity
        self.dirty_dir = root / _DIRTY
        self.clean_dir = root / _CLEAN
        self.cv = threading.Condition()
        self._dirty: dict[int, dict[int, DirtyBlock]] = {}
        self._clean: OrderedDict[tuple[int, int], CleanBlock] = OrderedDict()
        self._gens = itertools.count(1)
        #: Bytes in block files, and bytes promised to writes in progress.
        self.used = 0
        self.reserved = 0
        #: Bytes in dirty block files: what uploads must still carry.
        self.dirty_bytes = 0
        #: Writers waiting for room; the uploader treats every dirty block as due then.
        self.waiters = 0
        #: Block reads served from the cache, and those that had to fetch the block.
        self.hits = 0
        self.misses = 0
        self._dirty_dir_unsynced = False

    # -- paths -------------------------------------------------------------------------

    def dirty_path(self, fileid: int, index: int) -> Path:
        """Where a dirty block's bytes live."""
        return self.dirty_dir / f"{fileid:016x}-{index:08x}"

    def ranges_path(self, fileid: int, index: int) -> Path:
        """Where a dirty block's written ranges are listed."""
        return self.dirty_dir / f"{fileid:016x}-{index:08x}.x"

    def clean_path(self, fileid: int, index: int, tag: str) -> Path:
        """Where a clean copy of a block at map state *tag* lives."""
        return self.clean_dir / f"{fileid:016x}-{index:08x}-{tag}"

    # -- start-up ----------------------------------------------------------------------

    def open(self) -> Recovered:
        """Create the directories and load what a previous run left (blocking; no lock needed).

        A range list ends at its last whole record: a write cut short by a
        crash was never acknowledged.
        """
        self.dirty_dir.mkdir(parents=True, exist_ok=True)
        self.clean_dir.mkdir(parents=True, exist_ok=True)
        recovered: dict[int, set[int]] = {}
        for path in self.dirty_dir.iterdir():
            name = path.name
            if name.endswith((".tmp", ".meta")):
                path.unlink(missing_ok=True)  # a cut record of the manifest era, or a torn write
                continue
            if name.endswith(".x"):
                continue
            try:
                fileid_text, index_text = name.split("-")
                fileid, index = int(fileid_text, 16), int(index_text, 16)
            except ValueError:
                continue  # not ours; leave it alone
            block = DirtyBlock(fileid, index)
            ranges = self.ranges_path(fileid, index)
            data = ranges.read_bytes() if ranges.exists() else b""
            for at in range(0, len(data) - _RANGE.size + 1, _RANGE.size):
                start, end = _RANGE.unpack_from(data, at)
                block.extents.lay(start, end)
            block.length = path.stat().st_size
            block.extents.cut(block.length)
            if not block.extents:
                path.unlink(missing_ok=True)
                ranges.unlink(missing_ok=True)
                continue
            block.gen = next(self._gens)
            self._dirty.setdefault(fileid, {})[index] = block
            self.used += block.length
            self.dirty_bytes += block.length
            recovered.setdefault(fileid, set()).add(index)
        clean: list[tuple[float, CleanBlock]] = []
        for path in self.clean_dir.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a fetch cut short by a crash
                continue
            try:
                fileid_text, index_text, tag = path.name.split("-")
                fileid, index = int(fileid_text, 16), int(index_text, 16)
                stat = path.stat()
            except (ValueError, OSError):
                path.unlink(missing_ok=True)
                continue
            clean.append((stat.st_mtime, CleanBlock(fileid, index, stat.st_size, tag)))
        for _, copy in sorted(clean, key=lambda pair: pair[0]):
            self._clean[(copy.fileid, copy.index)] = copy
            self.used += copy.length
        return Recovered(recovered)

    # -- lookups (cv held) -----------------------------------------------------------------

    def dirty(self, fileid: int, index: int) -> DirtyBlock | None:
        """The block's bytes not yet uploaded, if any (cv held)."""
        return self._dirty.get(fileid, {}).get(index)

    def dirty_blocks(self, fileid: int) -> dict[int, DirtyBlock]:
        """A copy of one file's dirty blocks by index (cv held)."""
        return dict(self._dirty.get(fileid, {}))

    def dirty_files(self) -> list[int]:
        """File ids with dirty blocks (cv held)."""
        return list(self._dirty)

    def clean(self, fileid: int, index: int, tag: str | None) -> CleanBlock | None:
        """The clean copy of a block at map state *tag*, touched as recently used (cv held).

        A copy of another state is stale: it is dropped.
        """
        block = self._clean.get((fileid, index))
        if block is None:
            return None
        if block.tag != tag:
            self.drop_clean(block)
            return None
        self._clean.move_to_end((fileid, index))
        return block

    def open_block(self, path: Path) -> int | None:
        """An fd on a block file, opened under the lock so no rename or eviction races it.

        Returns None if the file vanished (cv held).
        """
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None

    # -- space (cv held) -------------------------------------------------------------------

    def _evict_one(self) -> bool:
        if not self._clean:
            return False
        _, block = next(iter(self._clean.items()))
        self.drop_clean(block)
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

    # -- dirty blocks ------------------------------------------------------------------------

    def make_dirty(self, fileid: int, index: int) -> DirtyBlock:
        """The block's dirty entry, created with empty files if new (cv held).

        The files exist when this returns, so readers never miss them.
        """
        block = self.dirty(fileid, index)
        if block is not None:
            return block
        for path in (self.dirty_path(fileid, index), self.ranges_path(fileid, index)):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        block = DirtyBlock(fileid, index)
        block.gen = next(self._gens)
        self._dirty.setdefault(fileid, {})[index] = block
        self._dirty_dir_unsynced = True
        return block

    def note_ranges(self, block: DirtyBlock, ranges: list[tuple[int, int]], sync: bool) -> None:
        """Append written ranges to the block's list, fsynced if *sync* (blocking; io held)."""
        fd = os.open(self.ranges_path(block.fileid, block.index), os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"".join(_RANGE.pack(start, end) for start, end in ranges))
            if sync:
                os.fdatasync(fd)
        finally:
            os.close(fd)

    def written(self, block: DirtyBlock, start: int, end: int, synced: bool) -> None:
        """Account bytes ``start``..``end`` written into *block* (cv held)."""
        block.extents.lay(start, end)
        grown = max(0, end - block.length)
        block.length += grown
        self.used += grown
        self.dirty_bytes += grown
        block.gen = next(self._gens)
        block.synced = block.synced and synced

    def cut_dirty(self, block: DirtyBlock, keep: int) -> None:
        """Keep only the first *keep* bytes of a dirty block, durably (blocking; io held)."""
        with self.cv:
            block.extents.cut(keep)
            shrink = max(0, block.length - keep)
            block.length -= shrink
            self.used -= shrink
            self.dirty_bytes -= shrink
            block.gen = next(self._gens)
            ranges = [(extent.start, extent.end) for extent in block.extents]
        path = self.dirty_path(block.fileid, block.index)
        os.truncate(path, block.length)
        fsync_path(path)
        listed = self.ranges_path(block.fileid, block.index)
        temporary = listed.with_name(listed.name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(b"".join(_RANGE.pack(start, end) for start, end in ranges))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, listed)
        fsync_path(self.dirty_dir, directory=True)

    def _forget_dirty(self, block: DirtyBlock) -> None:
        blocks = self._dirty.get(block.fileid)
        if blocks is not None and blocks.get(block.index) is block:
            del blocks[block.index]
            if not blocks:
                del self._dirty[block.fileid]
            self.used -= block.length
            self.dirty_bytes -= block.length
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.ranges_path(block.fileid, block.index))
        self._dirty_dir_unsynced = True
        self.cv.notify_all()

    def drop_dirty(self, block: DirtyBlock) -> None:
        """Forget a dirty block and its files (cv held)."""
        self._forget_dirty(block)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dirty_path(block.fileid, block.index))

    def promote(self, block: DirtyBlock, tag: str) -> None:
        """A dirty block that holds its whole content, now uploaded, becomes clean (cv held)."""
        old = self._clean.get((block.fileid, block.index))
        if old is not None:
            self.drop_clean(old)
        os.rename(
            self.dirty_path(block.fileid, block.index),
            self.clean_path(block.fileid, block.index, tag),
        )
        self._forget_dirty(block)
        self._clean[(block.fileid, block.index)] = CleanBlock(
            block.fileid, block.index, block.length, tag
        )
        self.used += block.length

    # -- clean blocks ------------------------------------------------------------------------

    def drop_clean(self, block: CleanBlock) -> None:
        """Remove a clean copy and its file (cv held)."""
        if self._clean.get((block.fileid, block.index)) is block:
            del self._clean[(block.fileid, block.index)]
            self.used -= block.length
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.clean_path(block.fileid, block.index, block.tag))
        self.cv.notify_all()

    def drop_file(self, fileid: int, first: int = 0) -> None:
        """Forget every cached block of *fileid* from index *first* on (cv held)."""
        for index, block in self.dirty_blocks(fileid).items():
            if index >= first:
                self.drop_dirty(block)
        for key, clean in list(self._clean.items()):
            if key[0] == fileid and key[1] >= first:
                self.drop_clean(clean)

    def stage_clean(self, fileid: int, index: int, tag: str, data: bytes) -> Path:
        """Write a fetched block to a temporary file (blocking; call *without* cv)."""
        final = self.clean_path(fileid, index, tag)
        temporary = final.with_name(f"{final.name}.{threading.get_ident()}.tmp")
        with open(temporary, "wb") as file:
            file.write(data)
        return temporary

    def insert_clean(self, fileid: int, index: int, tag: str, staged: Path, length: int) -> None:
        """Keep a staged block (cv held; after :meth:`try_reserve` of *length*)."""
        self.reserved = max(0, self.reserved - length)
        old = self._clean.get((fileid, index))
        if old is not None:
            self.drop_clean(old)
        os.rename(staged, self.clean_path(fileid, index, tag))
        self._clean[(fileid, index)] = CleanBlock(fileid, index, length, tag)
        self.used += length

    # -- durability (blocking; call without cv) ---------------------------------------------

    def sync_dirty_dir(self) -> None:
        """``fsync`` the journal directory if blocks were created or removed in it since."""
        with self.cv:
            if not self._dirty_dir_unsynced:
                return
            self._dirty_dir_unsynced = False
        fsync_path(self.dirty_dir, directory=True)
