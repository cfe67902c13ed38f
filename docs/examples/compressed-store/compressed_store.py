"""Write your own content store: file contents kept zlib-compressed in memory.

A store is a class that provides :class:`dittofs.interfaces.IContentStore`
(every method returns a Deferred; a synchronous store returns fired ones).
It is done when it passes the shared conformance suite::

    from twisted.trial.unittest import SynchronousTestCase
    from dittofs.testing.conformance import ContentStoreConformance

    class CompressedStoreTests(ContentStoreConformance, SynchronousTestCase):
        def make_store(self):
            return CompressedMemoryContentStore()

``tests/unit/test_doc_examples.py`` runs exactly that.
"""

from __future__ import annotations

import zlib

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from dittofs.interfaces import IContentStore
from dittofs.model import SpaceUsage


@implementer(IContentStore)
class CompressedMemoryContentStore:
    """Each file is one compressed blob: small, simple, and slow for big random writes."""

    name = "compressed-memory"

    def __init__(self, capacity: int = 2**30) -> None:
        self._capacity = capacity
        self._blobs: dict[int, bytes] = {}

    def _get(self, fileid: int) -> bytearray:
        blob = self._blobs.get(fileid)
        return bytearray(zlib.decompress(blob)) if blob is not None else bytearray()

    def _put(self, fileid: int, data: bytearray) -> None:
        self._blobs[fileid] = zlib.compress(bytes(data))

    def open(self) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def read(self, fileid: int, offset: int, count: int) -> Deferred[bytes]:
        return succeed(bytes(self._get(fileid)[offset : offset + count]))

    def write(
        self, fileid: int, offset: int, data: bytes | memoryview, stable: bool
    ) -> Deferred[None]:
        content = self._get(fileid)
        if offset > len(content):
            content.extend(bytes(offset - len(content)))
        content[offset : offset + len(data)] = data
        self._put(fileid, content)
        return succeed(None)

    def truncate(self, fileid: int, size: int) -> Deferred[None]:
        content = self._get(fileid)
        if size < len(content):
            self._put(fileid, content[:size])
        return succeed(None)

    def delete(self, fileid: int) -> Deferred[None]:
        self._blobs.pop(fileid, None)
        return succeed(None)

    def commit(self, fileid: int) -> Deferred[None]:
        return succeed(None)

    def space(self) -> Deferred[SpaceUsage]:
        used = sum(len(blob) for blob in self._blobs.values())
        return succeed(SpaceUsage(self._capacity, self._capacity - used))
