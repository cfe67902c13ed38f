"""Open file descriptors of recently used content files, shared by a store's I/O threads.

Opening and closing a file for every READ and WRITE was most of the
filesystem content store's time on small random reads (see
docs/benchmarks.md).  This keeps up to ``limit`` descriptors open, least
recently used closed first.  A descriptor is never closed under a thread
using it: each use holds a count, and one evicted or forgotten meanwhile is
closed by its last user.

A descriptor opened while a file was being forgotten (deleted) is used for
that one call and not kept, so no descriptor outlives its file's deletion
and pins the space of an unlinked file.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Descriptors kept open by default: well under the usual soft limit of 1,024 per process.
DEFAULT_LIMIT = 256


class _Descriptor:
    __slots__ = ("doomed", "fd", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 1
        #: Evicted or forgotten while in use: the last user closes it.
        self.doomed = False


class OpenFiles:
    """A bounded, thread-safe cache of open descriptors keyed by file id."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._open: OrderedDict[int, _Descriptor] = OrderedDict()
        #: Bumped by every :meth:`forget`, so an open that raced one is not kept.
        self._forgets = 0

    @contextlib.contextmanager
    def use(self, fileid: int, opener: Callable[[], int]) -> Iterator[int]:
        """A descriptor for *fileid*, from the cache or from *opener* (whose errors pass out)."""
        with self._lock:
            descriptor = self._open.get(fileid)
            if descriptor is not None:
                descriptor.users += 1
                self._open.move_to_end(fileid)
            forgets = self._forgets
        if descriptor is None:
            descriptor = self._opened(fileid, opener(), forgets)
        try:
            yield descriptor.fd
        finally:
            self._release(descriptor)

    def _opened(self, fileid: int, fd: int, forgets: int) -> _Descriptor:
        with self._lock:
            existing = self._open.get(fileid)
            if existing is not None:
                existing.users += 1
                os.close(fd)
                return existing
            descriptor = _Descriptor(fd)
            if forgets != self._forgets:
                descriptor.doomed = True  # a delete ran meanwhile: use once, keep nothing
                return descriptor
            self._open[fileid] = descriptor
            while len(self._open) > self.limit:
                _, oldest = self._open.popitem(last=False)
                self._retire(oldest)
            return descriptor

    def _release(self, descriptor: _Descriptor) -> None:
        with self._lock:
            descriptor.users -= 1
            if descriptor.doomed and descriptor.users == 0:
                os.close(descriptor.fd)

    def _retire(self, descriptor: _Descriptor) -> None:
        """Close now, or when the last user is done (lock held)."""
        if descriptor.users == 0:
            os.close(descriptor.fd)
        else:
            descriptor.doomed = True

    def with_open(self, fileid: int, function: Callable[[int], T]) -> T | None:
        """*function*'s result on *fileid*'s descriptor if one is open, else None.

        The lock is held throughout, so *function* must not block: it is for
        calls that give up rather than wait (``RWF_NOWAIT`` reads).
        """
        with self._lock:
            descriptor = self._open.get(fileid)
            if descriptor is None:
                return None
            self._open.move_to_end(fileid)
            return function(descriptor.fd)

    def forget(self, fileid: int) -> None:
        """Drop *fileid*'s descriptor, before its file is deleted."""
        with self._lock:
            self._forgets += 1
            descriptor = self._open.pop(fileid, None)
            if descriptor is not None:
                self._retire(descriptor)

    def close(self) -> None:
        """Close every descriptor (those in use when their users are done)."""
        with self._lock:
            while self._open:
                _, descriptor = self._open.popitem()
                self._retire(descriptor)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)
