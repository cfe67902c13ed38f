"""The descriptor cache behind the filesystem content store: bounded, and never closes in use."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from dittofs.stores.content.open_files import OpenFiles


class OpenFilesTests(SynchronousTestCase):
    """Each promise of :class:`OpenFiles`, with real files and real descriptors."""

    def setUp(self) -> None:
        super().setUp()
        self.directory = Path(tempfile.mkdtemp(prefix="dittofs-open-files-"))
        self.opened: list[int] = []

    def tearDown(self) -> None:
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()
        super().tearDown()

    def opener(self, fileid: int) -> Callable[[], int]:
        """An opener that creates the file and notes each descriptor it opens."""

        def opener() -> int:
            fd = os.open(self.directory / str(fileid), os.O_RDWR | os.O_CREAT, 0o600)
            self.opened.append(fd)
            return fd

        return opener

    def assertClosed(self, fd: int) -> None:
        """*fd* no longer refers to an open file."""
        error = self.assertRaises(OSError, os.fstat, fd)
        self.assertEqual(error.errno, errno.EBADF)

    def test_a_file_is_opened_once_for_many_uses(self) -> None:
        """Later uses reuse the first descriptor instead of opening again."""
        files = OpenFiles()
        self.addCleanup(files.close)
        for _ in range(3):
            with files.use(1, self.opener(1)) as fd:
                os.pwrite(fd, b"x", 0)
        self.assertEqual(len(self.opened), 1)

    def test_least_recently_used_is_closed_past_the_limit(self) -> None:
        """With a limit of two, a third file closes the one used longest ago."""
        files = OpenFiles(limit=2)
        self.addCleanup(files.close)
        for fileid in (1, 2, 1, 3):
            with files.use(fileid, self.opener(fileid)):
                pass
        self.assertEqual(len(files), 2)
        first, second, third = self.opened
        self.assertClosed(second)
        os.fstat(first)
        os.fstat(third)

    def test_with_open_uses_only_descriptors_already_open(self) -> None:
        """with_open never opens; on an open file it runs the function and counts as a use."""
        files = OpenFiles(limit=2)
        self.addCleanup(files.close)
        self.assertIsNone(files.with_open(1, lambda fd: self.fail("nothing is open")))
        for fileid in (1, 2):
            with files.use(fileid, self.opener(fileid)):
                pass
        first, second = self.opened
        self.assertEqual(files.with_open(1, lambda fd: fd), first)
        with files.use(3, self.opener(3)):  # 1 was used last, so 2 goes
            pass
        self.assertClosed(second)
        self.assertIsNone(files.with_open(2, lambda fd: fd))
        self.assertEqual(len(self.opened), 3)  # with_open opened nothing

    def test_a_descriptor_in_use_outlives_forget_and_eviction(self) -> None:
        """Forgetting or evicting a file another thread is using closes it only after that use."""
        files = OpenFiles(limit=1)
        with files.use(1, self.opener(1)) as fd:
            files.forget(1)
            os.pwrite(fd, b"still open", 0)
        self.assertClosed(fd)
        with files.use(2, self.opener(2)) as fd:
            with files.use(3, self.opener(3)):
                os.pwrite(fd, b"evicted, still open", 0)
            os.pwrite(fd, b"still", 0)
        self.assertClosed(fd)
        files.close()
        self.assertClosed(self.opened[-1])

    def test_an_open_racing_a_forget_is_not_kept(self) -> None:
        """A descriptor opened while its file was being deleted serves one call, then closes."""
        files = OpenFiles()
        self.addCleanup(files.close)
        inner = self.opener(4)

        def racing() -> int:
            fd = inner()
            files.forget(4)  # the delete lands between our open and our insert
            return fd

        with files.use(4, racing) as fd:
            os.fstat(fd)
        self.assertClosed(fd)
        self.assertEqual(len(files), 0)

    def test_opener_errors_pass_out_and_leave_nothing(self) -> None:
        """A file that cannot be opened raises the opener's error and caches nothing."""
        files = OpenFiles()

        def missing() -> int:
            return os.open(self.directory / "absent", os.O_RDWR)

        with self.assertRaises(FileNotFoundError), files.use(9, missing):
            pass
        self.assertEqual(len(files), 0)
