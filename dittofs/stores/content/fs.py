"""A :class:`~dittofs.interfaces.IContentStore` on a local directory: one file per file id.

File I/O that can block runs in a bounded thread pool, never on the reactor
thread; a small read the page cache can answer at once is the one exception
(``RWF_NOWAIT``, see :meth:`FilesystemContentStore._read_cached`).  Files live
under two levels of fan-out directories (``ab/cd/<fileid>``) so no directory
grows to millions of entries.  Unstable writes go to the page cache; stable
writes and COMMIT call ``fdatasync``/``fsync``, which is what makes the write
verifier's promise true.  Recently used files stay open
(:mod:`dittofs.stores.content.open_files`), so a READ or WRITE costs one system call,
not three, and a large READ of an open file is lent as a region of it
(:class:`~dittofs.interfaces.IFileRegions`) for the server to ``sendfile``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from dittofs.errors import NFSError
from dittofs.interfaces import IContentInventory, IContentStore, IFileRegions
from dittofs.model import FileRegion, SpaceUsage
from dittofs.stores.content.open_files import OpenFiles
from dittofs.vocabulary import Status

T = TypeVar("T")

#: Threads doing file I/O at once; more only queue on the same disk.
DEFAULT_THREADS = 8

#: Reads up to this size are first tried on the reactor thread, from the page cache only.
NOWAIT_READ_BYTES = 128 * 1024


def _storage_error(error: OSError) -> NFSError:
    if error.errno == errno.ENOSPC:
        return NFSError(Status.NOSPC, str(error))
    if error.errno == errno.EDQUOT:
        return NFSError(Status.DQUOT, str(error))
    if error.errno == errno.EFBIG:
        return NFSError(Status.FBIG, str(error))
    return NFSError(Status.IO, str(error))


@implementer(IContentStore, IContentInventory, IFileRegions)
class FilesystemContentStore:
    """File contents stored as files below *root*."""

    name = "fs"

    def __init__(
        self, root: str | Path, reactor: IReactorFromThreads, threads: int = DEFAULT_THREADS
    ) -> None:
        self.root = Path(root)
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="dittofs-fs-content")
        self._files = OpenFiles()
        #: Whether ``preadv(RWF_NOWAIT)`` works here (Linux, and a file system supporting it).
        self._nowait = hasattr(os, "RWF_NOWAIT")

    def _run(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        def call() -> T:
            try:
                return function(*args)
            except OSError as error:
                raise _storage_error(error) from error

        return deferToThreadPool(self._reactor, self._pool, call)

    def _path(self, fileid: int) -> str:
        # Formatted, not built with pathlib: this runs for every call that opens a file.
        name = f"{fileid:016x}"
        return f"{self.root}/{name[-2:]}/{name[-4:-2]}/{name}"

    def _open_existing(self, fileid: int) -> Callable[[], int]:
        return lambda: os.open(self._path(fileid), os.O_RDWR)

    def _open_or_create(self, fileid: int) -> Callable[[], int]:
        def opener() -> int:
            path = self._path(fileid)
            try:
                return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

        return opener

    def open(self) -> Deferred[None]:
        """Create the root directory if needed and start the I/O threads."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._pool.start()
        return self._run(lambda: None)

    def close(self) -> Deferred[None]:
        """Stop the I/O threads once queued work is done (all writes were already issued)."""
        drained = self._run(lambda: None)

        def stop_pool(result: object) -> None:
            self._pool.stop()
            self._files.close()

        return drained.addBoth(stop_pool)

    def read_lent(self, fileid: int, offset: int, count: int) -> Deferred[bytes | FileRegion]:
        """See :class:`~dittofs.interfaces.IFileRegions`: a region of a file already open.

        Reads small enough for :meth:`_read_cached` are cheaper read; a file
        not open is read as usual, which opens it in the pool.
        """
        if count > NOWAIT_READ_BYTES:
            try:
                fd = self._files.with_open(fileid, os.dup)
            except OSError:  # out of descriptors: read as usual
                fd = None
            if fd is not None:
                return succeed(FileRegion(fd, offset, count))
        read: Deferred[bytes | FileRegion] = self.read(fileid, offset, count)  # type: ignore[assignment]
        return read

    # -- blocking work, run in the pool ----------------------------------------

    def _read_cached(self, fileid: int, offset: int, count: int) -> bytes | None:
        """The data, read on the calling thread, if the file is open and all of it is cached.

        A small READ costs more in the hop to a pool thread and back than in
        the read itself.  ``RWF_NOWAIT`` makes the kernel answer from the page
        cache or not at all (EAGAIN), so the reactor never waits on the disk;
        anything else (not open, not cached, short, an error) is left to the
        pool, which gives the exact answer.
        """
        if not self._nowait or count > NOWAIT_READ_BYTES:
            return None
        buffer = bytearray(count)
        try:
            got = self._files.with_open(
                fileid, lambda fd: os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
            )
        except OSError as error:
            if error.errno == errno.EOPNOTSUPP:
                self._nowait = False  # this file system cannot; stop trying
            return None
        return bytes(buffer) if got == count else None

    def _read(self, fileid: int, offset: int, count: int) -> bytes:
        try:
            with self._files.use(fileid, self._open_existing(fileid)) as fd:
                return os.pread(fd, count, offset)
        except FileNotFoundError:
            return b""

    def _write(self, fileid: int, offset: int, data: bytes | memoryview, stable: bool) -> None:
        with self._files.use(fileid, self._open_or_create(fileid)) as fd:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
            if stable:
                os.fdatasync(fd)

    def _truncate(self, fileid: int, size: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self._path(fileid), size)

    def _delete(self, fileid: int) -> None:
        self._files.forget(fileid)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(fileid))

    def _commit(self, fileid: int) -> None:
        with (
            contextlib.suppress(FileNotFoundError),
            self._files.use(fileid, self._open_existing(fileid)) as fd,
        ):
            os.fsync(fd)

    def _content_ids(self) -> list[int]:
        return sorted(int(path.name, 16) for path in self.root.glob("??/??/" + "?" * 16))

    def _space(self) -> SpaceUsage:
        usage = shutil.disk_usage(self.root)
        return SpaceUsage(usage.total, usage.free)

    # -- IContentStore -------------------------------------------------------------

    def read(self, fileid: int, offset: int, count: int) -> Deferred[bytes]:
        """See :meth:`IContentStore.read`."""
        cached = self._read_cached(fileid, offset, count)
        if cached is not None:
            return succeed(cached)
        return self._run(self._read, fileid, offset, count)

    def write(
        self, fileid: int, offset: int, data: bytes | memoryview, stable: bool
    ) -> Deferred[None]:
        """See :meth:`IContentStore.write`."""
        return self._run(self._write, fileid, offset, data, stable)

    def truncate(self, fileid: int, size: int) -> Deferred[None]:
        """See :meth:`IContentStore.truncate`; a sparse extension costs no disk blocks."""
        return self._run(self._truncate, fileid, size)

    def delete(self, fileid: int) -> Deferred[None]:
        """See :meth:`IContentStore.delete`."""
        return self._run(self._delete, fileid)

    def commit(self, fileid: int) -> Deferred[None]:
        """See :meth:`IContentStore.commit`: ``fsync`` flushes every earlier write."""
        return self._run(self._commit, fileid)

    def space(self) -> Deferred[SpaceUsage]:
        """Report the disk holding *root*."""
        return self._run(self._space)

    def content_ids(self) -> Deferred[list[int]]:
        """See :meth:`IContentInventory.content_ids`."""
        return self._run(self._content_ids)
