"""Every content store against the shared conformance suite (``dittofs/testing/conformance.py``).

The filesystem store does its blocking I/O in a ``ThreadPool`` through
``deferToThreadPool``.  These tests replace the pool class inside
``dittofs.stores.content.fs`` with :class:`dittofs.testing.SynchronousThreadPool`
and give the store a reactor whose ``callFromThread`` calls at once, so the
real ``deferToThreadPool`` path runs but every Deferred has fired on return.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from dittofs.errors import NFSError
from dittofs.interfaces import IContentStore
from dittofs.stores.content import fs as fs_content
from dittofs.stores.content import memory as memory_content
from dittofs.stores.content.fs import FilesystemContentStore
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.testing import SynchronousReactorThreads, SynchronousThreadPool
from dittofs.testing.conformance import ContentStoreConformance
from dittofs.vocabulary import Status


class MemoryContentStoreTests(ContentStoreConformance, SynchronousTestCase):
    """The in-memory content store keeps the whole content contract."""

    def make_store(self) -> IContentStore:
        """A fresh, empty store."""
        return MemoryContentStore()

    def test_hole_costs_nothing(self) -> None:
        """A byte written 4 TiB in allocates one block: no client can exhaust memory so."""
        store = MemoryContentStore(capacity=2**50)
        self.successResultOf(store.write(1, 2**42, b"x", False))
        self.assertEqual(self.successResultOf(store.read(1, 2**42 - 2, 4)), b"\0\0x")
        free = self.successResultOf(store.space()).free_bytes
        self.assertEqual(free, 2**50 - memory_content.BLOCK_SIZE)


def make_fs_store(case: SynchronousTestCase) -> tuple[FilesystemContentStore, Path]:
    """A store over a new temporary directory (removed after *case*), with a synchronous pool."""
    case.patch(fs_content, "ThreadPool", SynchronousThreadPool)
    directory = Path(tempfile.mkdtemp(prefix="dittofs-content-"))
    case.addCleanup(shutil.rmtree, directory, True)
    store = FilesystemContentStore(directory / "content", SynchronousReactorThreads())
    return store, directory


class FilesystemContentStoreTests(ContentStoreConformance, SynchronousTestCase):
    """The local-directory content store keeps the whole content contract."""

    def make_store(self) -> IContentStore:
        """A store over a fresh temporary directory."""
        return make_fs_store(self)[0]


class FilesystemContentStoreSpecificTests(SynchronousTestCase):
    """Behaviour of the filesystem store beyond the shared contract."""

    def setUp(self) -> None:
        super().setUp()
        self.store, self.directory = make_fs_store(self)
        self.successResultOf(self.store.open())
        self.addCleanup(lambda: self.successResultOf(self.store.close()))

    def test_open_creates_root(self) -> None:
        """Opening creates the content directory, parents included."""
        self.assertTrue((self.directory / "content").is_dir())

    @property
    def pool(self) -> SynchronousThreadPool:
        pool = self.store._pool
        assert isinstance(pool, SynchronousThreadPool)
        self.assertTrue(pool.started)
        return pool

    def test_blocking_work_goes_to_the_pool(self) -> None:
        """Every operation that can block runs in the thread pool, never on the reactor thread."""
        before = self.pool.calls
        self.successResultOf(self.store.write(1, 0, b"x", True))
        self.successResultOf(self.store.commit(1))
        self.successResultOf(self.store.space())
        # Short of what was asked: only a blocking read can tell end of file from "not cached".
        self.assertEqual(self.successResultOf(self.store.read(1, 0, 10)), b"x")
        self.successResultOf(self.store.read(2, 0, 10))  # never opened
        big = fs_content.NOWAIT_READ_BYTES + 1
        self.successResultOf(self.store.read(1, 0, big))
        self.assertEqual(self.pool.calls, before + 6)

    def test_cached_small_reads_skip_the_pool(self) -> None:
        """A small read of an open file the page cache holds is answered inline (RWF_NOWAIT)."""
        data = os.urandom(8192)
        self.successResultOf(self.store.write(1, 0, data, True))
        before = self.pool.calls
        self.assertEqual(self.successResultOf(self.store.read(1, 4096, 4096)), data[4096:])
        self.assertEqual(self.pool.calls, before)

    def test_file_systems_without_nowait_reads_use_the_pool(self) -> None:
        """Where RWF_NOWAIT is refused (EOPNOTSUPP) every read goes to the pool, and it is
        not tried again."""
        attempts = []

        def unsupported(*args: object) -> int:
            attempts.append(args)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        self.successResultOf(self.store.write(1, 0, b"data", True))
        self.patch(os, "preadv", unsupported)
        before = self.pool.calls
        for _ in range(3):
            self.assertEqual(self.successResultOf(self.store.read(1, 0, 4)), b"data")
        self.assertEqual((len(attempts), self.pool.calls), (1, before + 3))

    def test_fan_out_layout(self) -> None:
        """Content files live two fan-out levels deep, so no directory grows huge."""
        self.successResultOf(self.store.write(0x1234ABCD, 0, b"x", True))
        files = [p for p in (self.directory / "content").rglob("*") if p.is_file()]
        self.assertEqual(len(files), 1)
        self.assertEqual(len(files[0].relative_to(self.directory / "content").parts), 3)

    def test_read_creates_nothing(self) -> None:
        """Reading or truncating absent content leaves no file behind."""
        self.successResultOf(self.store.read(5, 0, 10))
        self.successResultOf(self.store.truncate(5, 0))
        self.successResultOf(self.store.commit(5))
        files = [p for p in (self.directory / "content").rglob("*") if p.is_file()]
        self.assertEqual(files, [])

    def test_disk_full_is_nospc(self) -> None:
        """A full disk is reported as NFS3ERR_NOSPC, not as a generic I/O error."""

        def full(fd: int, data: object, offset: int) -> int:
            """A pwrite on a full disk."""
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "pwrite", full)
        failure = self.failureResultOf(self.store.write(1, 0, b"data", True), NFSError)
        self.assertEqual(failure.value.status, Status.NOSPC)

    def test_other_os_errors_are_io(self) -> None:
        """An unexpected OSError becomes NFS3ERR_IO with the error's text."""

        def broken(*args: object) -> bytes:
            """A pread or preadv on a failing disk."""
            raise OSError(errno.EIO, "Input/output error")

        self.successResultOf(self.store.write(1, 0, b"data", True))
        self.patch(os, "pread", broken)
        self.patch(os, "preadv", broken)  # the inline try fails alike and leaves it to the pool
        failure = self.failureResultOf(self.store.read(1, 0, 4), NFSError)
        self.assertEqual(failure.value.status, Status.IO)
        self.assertIn("Input/output error", str(failure.value))

    def test_descriptors_stay_open_until_delete_or_close(self) -> None:
        """Files stay open between calls; a delete or close lets go, so no unlinked file is held."""
        for fileid in (1, 2):
            self.successResultOf(self.store.write(fileid, 0, b"data", False))
            self.successResultOf(self.store.read(fileid, 0, 4))
        self.assertEqual(len(self.store._files), 2)
        self.successResultOf(self.store.delete(1))
        self.assertEqual(len(self.store._files), 1)
        self.successResultOf(self.store.close())
        self.assertEqual(len(self.store._files), 0)
        self.successResultOf(self.store.open())  # the cleanup closes it again
        self.assertEqual(self.successResultOf(self.store.read(2, 0, 4)), b"data")

    def test_close_stops_the_pool(self) -> None:
        """Closing drains and stops the I/O threads."""
        pool = self.store._pool
        assert isinstance(pool, SynchronousThreadPool)
        self.successResultOf(self.store.close())
        self.assertFalse(pool.started)
        self.successResultOf(self.store.open())  # the cleanup closes it again
