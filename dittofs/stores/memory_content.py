"""An in-memory :class:`~dittofs.interfaces.IContentStore`: one ``bytearray`` per file."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from dittofs.interfaces import IContentInventory, IContentStore
from dittofs.model import SpaceUsage


@implementer(IContentStore, IContentInventory)
class MemoryContentStore:
    """File contents held in memory; every write is as durable as it will ever be."""

    name = "memory"

    def __init__(self, capacity: int = 2**40) -> None:
        self._capacity = capacity
        self._files: dict[int, bytearray] = {}
        self._used = 0

    def open(self) -> Deferred[None]:
        """Nothing to prepare."""
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Nothing to flush."""
        return succeed(None)

    def read(self, fileid: int, offset: int, count: int) -> Deferred[bytes]:
        """See :meth:`IContentStore.read`."""
        data = self._files.get(fileid)
        if data is None:
            return succeed(b"")
        return succeed(bytes(data[offset : offset + count]))

    def write(
        self, fileid: int, offset: int, data: bytes | memoryview, stable: bool
    ) -> Deferred[None]:
        """See :meth:`IContentStore.write`."""
        content = self._files.setdefault(fileid, bytearray())
        old_size = len(content)
        if offset > old_size:
            content.extend(bytes(offset - old_size))
        content[offset : offset + len(data)] = data
        self._used += len(content) - old_size
        return succeed(None)

    def truncate(self, fileid: int, size: int) -> Deferred[None]:
        """See :meth:`IContentStore.truncate`."""
        content = self._files.get(fileid)
        if content is not None and size < len(content):
            self._used -= len(content) - size
            del content[size:]
        return succeed(None)

    def delete(self, fileid: int) -> Deferred[None]:
        """See :meth:`IContentStore.delete`."""
        content = self._files.pop(fileid, None)
        if content is not None:
            self._used -= len(content)
        return succeed(None)

    def commit(self, fileid: int) -> Deferred[None]:
        """Memory is as durable as this store gets."""
        return succeed(None)

    def space(self) -> Deferred[SpaceUsage]:
        """Report the configured capacity less what is held."""
        return succeed(SpaceUsage(self._capacity, max(self._capacity - self._used, 0)))

    def content_ids(self) -> Deferred[list[int]]:
        """See :meth:`IContentInventory.content_ids`."""
        return succeed(sorted(self._files))
