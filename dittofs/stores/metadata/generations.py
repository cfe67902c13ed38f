"""Change counters that tell every process on one host which cached metadata went stale.

A metadata cache (:mod:`dittofs.stores.metadata.cache`) may keep what a
store answered about a file only as long as no process changed that file
since.  The processes that share a store on one host (the workers of one
server, or gateways over one SQLite file) share this table, a file mapped
into each of them: a header holding a counter, then :data:`SLOTS` slots, and
each file id hashes to one slot.

The protocol, with ``C`` the counter and ``slot(f)`` a file's slot:

* A change commits in the store first; then, holding the table's lock, its
  process takes ``G = C + 1``, stores it in ``C`` and in the slot of every
  file the change touched; only then is the change answered.  The lock makes
  the increment atomic across processes, so slot values never repeat and
  only grow.
* A reader reads ``start = C`` *before* asking the store, and after the
  answer reads ``slot(f)``.  If that is still at most ``start``, no change to
  ``f`` was published after the store was asked, so the answer can be kept,
  tagged with that slot value.  (A change committed after the read
  publishes a value above ``start``: either before the check, so nothing is
  kept, or after it, so the tag stops matching.)
* A kept answer is used while its file's slot still holds its tag.

Changes committed by processes on other hosts reach the table as they are
heard (:meth:`Generations.heard`, fed by a store's change feed): later than
those of this host, but by the same rule.

Reads of the table take no lock: the counter and slots are aligned 8-byte
words, read whole.  Files sharing a slot only make each other's entries go
stale sooner.  The table holds no data, only counters, so it is never
flushed; delete it only while no process has it open.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import secrets
import socket
import stat
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

#: Slots of the table (each file id hashes to one); 512 KiB of counters.
SLOTS = 1 << 16
_WORD = struct.Struct("<Q")
_SIZE = _WORD.size * (SLOTS + 1)


class Generations:
    """The counter and slots, in a file shared by the processes of one host, or private.

    With *path* None the table lives in this process only (a store no other
    process opens, or a test).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._fd: int | None = None
        #: Serialises this process's threads (``lockf`` locks are per process).
        self._thread_lock = threading.Lock()
        #: False while changes may go unheard (a store's feed is cut off): then
        #: nothing is current, whatever the slots say.
        self.live = True
        if path is None:
            self._table: mmap.mmap | bytearray = bytearray(_SIZE)
            #: The same in every process mapping this table, and only in them.
            self.identity = secrets.token_hex(8)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zeros: every slot unchanged since the beginning
            self._table = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED)
            found = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self.identity = f"{socket.gethostname()}:{found.st_dev}:{found.st_ino}"

    def close(self) -> None:
        """Unmap the table (a private one is simply dropped).

        Under the lock: a store's listening thread may be publishing a
        notice into it at this very moment.
        """
        with self._thread_lock:
            if isinstance(self._table, mmap.mmap):
                self._table.close()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def counter(self) -> int:
        """The value the last published change took (read it before asking the store)."""
        return int(_WORD.unpack_from(self._table, 0)[0])

    def slot(self, fileid: int) -> int:
        """The value of *fileid*'s slot: the counter as of the last change published to it."""
        return int(_WORD.unpack_from(self._table, _offset(fileid))[0])

    def publish(self, fileids: Iterable[int], start: int) -> tuple[int, frozenset[int]]:
        """Publish a committed change of *fileids*; return its value and who raced it.

        *start* is the counter read before the change was asked of the store.
        The ids whose slot had moved past *start* were changed (or share a
        slot with a file changed) by another process meanwhile: what the
        store answered about them may already be old, so it is not to be
        kept.
        """
        offsets = {fileid: _offset(fileid) for fileid in fileids}
        with self._locked():
            value = int(_WORD.unpack_from(self._table, 0)[0]) + 1
            _WORD.pack_into(self._table, 0, value)
            raced = frozenset(
                fileid
                for fileid, offset in offsets.items()
                if _WORD.unpack_from(self._table, offset)[0] > start
            )
            for offset in offsets.values():
                _WORD.pack_into(self._table, offset, value)
        return value, raced

    def heard(self, fileids: Iterable[int]) -> None:
        """Publish a change another host committed to *fileids* (heard from the store)."""
        offsets = [_offset(fileid) for fileid in fileids]
        with self._locked():
            value = int(_WORD.unpack_from(self._table, 0)[0]) + 1
            _WORD.pack_into(self._table, 0, value)
            for offset in offsets:
                _WORD.pack_into(self._table, offset, value)

    def publish_all(self) -> None:
        """A change whose files are unknown (a store failed mid-way): every slot moves."""
        with self._locked():
            value = int(_WORD.unpack_from(self._table, 0)[0]) + 1
            _WORD.pack_into(self._table, 0, value)
            self._table[_WORD.size :] = _WORD.pack(value) * SLOTS

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the table's lock across this process's threads and, if shared, across processes."""
        with self._thread_lock:
            if self._fd is None:
                yield
                return
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)


def _offset(fileid: int) -> int:
    return _WORD.size * (1 + fileid % SLOTS)


def entry_key(directory: int, name: bytes) -> int:
    """The number whose slot stands for the entry *name* of *directory*, in every process."""
    return zlib.crc32(name, directory & 0xFFFFFFFF) ^ (directory >> 32)


def host_tables() -> Path:
    """Where this user's change tables of stores shared with other hosts live on this host.

    A directory of the temporary directory only this user may enter, so that
    every process of the user serving one filesystem shares its table
    whatever its data directory, and no other user can write to it.  A
    directory found there that another user owns, or that others may enter,
    is refused (ValueError): it could feed the caches stale counters.
    """
    directory = Path(tempfile.gettempdir()) / f"dittofs-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    found = directory.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o077:
        raise ValueError(f"{directory} is not a private directory of this user")
    return directory
