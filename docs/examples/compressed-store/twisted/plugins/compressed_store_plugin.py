"""Offer the compressed store to DittoFS as ``--content compressed[:CAPACITY]``.

DittoFS finds it as a Twisted plugin: this module provides ``IStoreFactory``
and ``IPlugin`` and sits in ``twisted/plugins/`` of this package.  It stays
cheap to import; the store's own module is imported only to build one.
"""

from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorFromThreads
from twisted.plugin import IPlugin
from zope.interface import implementer

from dittofs.interfaces import IStoreFactory
from dittofs.stores import StoreSpecError


def _capacity(spec: str) -> int | None:
    """The CAPACITY of ``compressed:CAPACITY`` in bytes, None if not given."""
    capacity = spec.partition(":")[2]
    if not capacity:
        return None
    if not capacity.isdigit():
        raise StoreSpecError(f"content store {spec!r}: CAPACITY must be a number of bytes")
    return int(capacity)


@implementer(IPlugin, IStoreFactory)
class CompressedStoreFactory:
    """Builds a CompressedMemoryContentStore for ``compressed`` specifications."""

    role = "content"
    schemes = ("compressed",)
    usage = "compressed[:CAPACITY]"
    description = "file contents zlib-compressed in memory, gone when the server stops"

    def check(self, spec: str) -> None:
        _capacity(spec)

    def where(self, spec: str, data_dir: Path) -> str | None:
        return None

    def build(self, spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
        from compressed_store import CompressedMemoryContentStore

        capacity = _capacity(spec)
        if capacity is None:
            return CompressedMemoryContentStore()
        return CompressedMemoryContentStore(capacity)


compressed = CompressedStoreFactory()
