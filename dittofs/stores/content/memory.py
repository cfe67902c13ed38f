"""An in-memory :class:`~dittofs.interfaces.IContentStore`, sparse by blocks.

Content is kept as fixed-size blocks in a dict per file, so a hole costs
nothing: one client writing a byte at offset 2**40 allocates one block, not a
terabyte of zeros.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from dittofs.interfaces import IContentInventory, IContentStore
from dittofs.model import SpaceUsage

BLOCK_SIZE = 64 * 1024


class _Content:
    """One file's blocks and its stored length."""

    __slots__ = ("blocks", "size")

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}
        self.size = 0


@implementer(IContentStore, IContentInventory)
class MemoryContentStore:
    """File contents held in memory; every write is as durable as it will ever be."""

    name = "memory"

    def __init__(self, capacity: int = 2**40) -> None:
        self._capacity = capacity
        self._files: dict[int, _Content] = {}
        self._blocks = 0

    def open(self) -> Deferred[None]:
        """Nothing to prepare."""
        return succeed(None)

    def close(self) -> Deferred[None]:
        """Nothing to flush."""
        return succeed(None)

    def read(self, fileid: int, offset: int, count: int) -> Deferred[bytes]:
        """See :meth:`IContentStore.read`; holes read as zeros."""
        content = self._files.get(fileid)
        if content is None or offset >= content.size:
            return succeed(b"")
        end = min(offset + count, content.size)
        out = bytearray(end - offset)
        position = offset
        while position < end:
            index, start = divmod(position, BLOCK_SIZE)
            length = min(BLOCK_SIZE - start, end - position)
            block = content.blocks.get(index)
            if block is not None:
                out[position - offset : position - offset + length] = block[start : start + length]
            position += length
        return succeed(bytes(out))

    def write(
        self, fileid: int, offset: int, data: bytes | memoryview, stable: bool
    ) -> Deferred[None]:
        """See :meth:`IContentStore.write`."""
        if not data:
            return succeed(None)
        content = self._files.setdefault(fileid, _Content())
        view = memoryview(data)
        position = offset
        while view:
            index, start = divmod(position, BLOCK_SIZE)
            length = min(BLOCK_SIZE - start, len(view))
            block = content.blocks.get(index)
            if block is None:
                block = content.blocks[index] = bytearray(BLOCK_SIZE)
                self._blocks += 1
            block[start : start + length] = view[:length]
            view = view[length:]
            position += length
        content.size = max(content.size, offset + len(data))
        return succeed(None)

    def truncate(self, fileid: int, size: int) -> Deferred[None]:
        """See :meth:`IContentStore.truncate`: blocks past *size* go, the last is zeroed past it."""
        content = self._files.get(fileid)
        if content is None or size >= content.size:
            return succeed(None)
        last, start = divmod(size, BLOCK_SIZE)
        for index in [i for i in content.blocks if i > last or (i == last and start == 0)]:
            del content.blocks[index]
            self._blocks -= 1
        block = content.blocks.get(last)
        if block is not None:
            block[start:] = bytes(BLOCK_SIZE - start)
        content.size = size
        return succeed(None)

    def delete(self, fileid: int) -> Deferred[None]:
        """See :meth:`IContentStore.delete`."""
        content = self._files.pop(fileid, None)
        if content is not None:
            self._blocks -= len(content.blocks)
        return succeed(None)

    def commit(self, fileid: int) -> Deferred[None]:
        """Memory is as durable as this store gets."""
        return succeed(None)

    def space(self) -> Deferred[SpaceUsage]:
        """Report the configured capacity less the blocks held."""
        used = self._blocks * BLOCK_SIZE
        return succeed(SpaceUsage(self._capacity, max(self._capacity - used, 0)))

    def content_ids(self) -> Deferred[list[int]]:
        """See :meth:`IContentInventory.content_ids`."""
        return succeed(sorted(self._files))
