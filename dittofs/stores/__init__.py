"""Store backends, chosen by a short specification string (like ``twisted.cred.strcred``).

``memory`` for either store; ``fs:PATH`` for content on a local directory.
Each backend module is imported only when it is asked for, so an optional
dependency of one backend never burdens the others.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorFromThreads

from dittofs.interfaces import IContentStore, IMetadataStore

METADATA_CHOICES = "memory"
CONTENT_CHOICES = "memory, fs:PATH"


class StoreSpecError(ValueError):
    """A store specification string names no known backend or lacks its argument."""


def _split(spec: str) -> tuple[str, str]:
    kind, _, argument = spec.partition(":")
    return kind.strip().lower(), argument


def metadata_store(spec: str) -> IMetadataStore:
    """Build the metadata store a specification names."""
    kind, _ = _split(spec)
    if kind == "memory":
        from dittofs.stores.memory_metadata import MemoryMetadataStore

        return MemoryMetadataStore()
    raise StoreSpecError(f"unknown metadata store {spec!r} (choose from {METADATA_CHOICES})")


def content_store(spec: str, reactor: IReactorFromThreads) -> IContentStore:
    """Build the content store a specification names."""
    kind, argument = _split(spec)
    if kind == "memory":
        from dittofs.stores.memory_content import MemoryContentStore

        return MemoryContentStore()
    if kind == "fs":
        if not argument:
            raise StoreSpecError("content store 'fs' needs a directory: fs:/path/to/content")
        from dittofs.stores.fs_content import FilesystemContentStore

        return FilesystemContentStore(argument, reactor)
    raise StoreSpecError(f"unknown content store {spec!r} (choose from {CONTENT_CHOICES})")
