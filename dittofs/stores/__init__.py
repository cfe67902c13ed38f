"""Stores chosen by a short specification string, found as plugins (like ``twisted.cred.strcred``).

A specification's scheme, the part before its first colon, names an
:class:`~dittofs.interfaces.IStoreFactory` plugin; the rest is the factory's
to read.  DittoFS's own (``dittofs/stores/factories.py``): metadata
``memory``, ``sqlite[:PATH]``, ``postgresql://URL``, ``redis://URL``; content
``memory``, ``fs[:PATH]``, ``s3://BUCKET[/PREFIX][?OPTIONS]``.  Any installed
package can add more (``docs/writing-stores.md``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorFromThreads

from dittofs.interfaces import (
    IBlockMaps,
    IBlockMapUser,
    IChangeFeed,
    IContentStore,
    IHostLocal,
    IMetadataStore,
    IStoreFactory,
)
from dittofs.log import redact

ROLES = ("metadata", "content")


class StoreSpecError(ValueError):
    """A store specification names no installed store, or one that cannot work as written."""


@functools.cache
def installed(role: str) -> dict[str, IStoreFactory]:
    """Every installed store factory for *role*, by scheme."""
    from twisted.plugin import getPlugins

    found: dict[str, IStoreFactory] = {}
    for factory in getPlugins(IStoreFactory):
        if factory.role == role:
            for scheme in factory.schemes:
                found.setdefault(scheme, factory)
    return found


def choices(role: str) -> str:
    """The installed stores for *role*, as --help lists them: ``memory, sqlite[:PATH], ...``.

    DittoFS's own come first, in their usual order; other packages' follow by name.
    """
    from dittofs.stores.factories import SHIPPED

    rank = {id(factory): index for index, factory in enumerate(SHIPPED)}
    distinct = {id(factory): factory for factory in installed(role).values()}.values()
    ordered = sorted(distinct, key=lambda f: (rank.get(id(f), len(rank)), f.usage))
    return ", ".join(factory.usage for factory in ordered)


def _scheme(spec: str) -> str:
    return spec.partition(":")[0].strip().lower()


def factory_for(role: str, spec: str) -> IStoreFactory:
    """The factory *spec* names for *role*; StoreSpecError if none is installed."""
    factory = installed(role).get(_scheme(spec))
    if factory is None:
        raise StoreSpecError(f"unknown {role} store {spec!r} (choose from {choices(role)})")
    return factory


def check_spec(role: str, spec: str) -> None:
    """Raise StoreSpecError unless *spec* can build a *role* store (nothing is built)."""
    factory_for(role, spec).check(spec)


def describe_store(role: str, spec: str, data_dir: Path) -> str:
    """Name a store for the log: its backend, its *role* and where its data is, passwords hidden.

    ``sqlite metadata (/var/lib/dittofs/metadata.db)``, ``memory content``,
    ``postgresql metadata (postgresql://dittofs:***@db/dittofs)``: the start-up
    line and a store that fails to open say which files or which database
    are meant, as resolved from the data directory, not only the option as
    typed.
    """
    where = factory_for(role, spec).where(spec, data_dir)
    described = f"{_scheme(spec)} {role}"
    return described if where is None else redact(f"{described} ({where})")


def build_store(role: str, spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
    """Build (not open) the *role* store *spec* names."""
    check_spec(role, spec)
    return factory_for(role, spec).build(spec, data_dir, reactor)


def store_pair(
    metadata_spec: str, content_spec: str, data_dir: Path, reactor: IReactorFromThreads
) -> tuple[IMetadataStore, IContentStore]:
    """Build (not open) an export's two stores, the content store given the block maps it needs.

    StoreSpecError, one line, when the content store keeps its block maps in
    the metadata store (the S3 store does) and that one keeps none.
    """
    metadata: IMetadataStore = build_store("metadata", metadata_spec, data_dir, reactor)
    content: IContentStore = build_store("content", content_spec, data_dir, reactor)
    if IBlockMapUser.providedBy(content):
        if not IBlockMaps.providedBy(metadata):
            raise StoreSpecError(
                f"the {_scheme(content_spec)} content store keeps its block maps in the "
                f"metadata store, and the {_scheme(metadata_spec)} metadata store keeps none"
            )
        content.use_block_maps(metadata)
    return metadata, content


def with_cache(metadata: IMetadataStore, content: IContentStore, entries: int) -> IMetadataStore:
    """*metadata* behind a cache of *entries* entries per map, where one can stay coherent.

    A store only this host changes (:class:`~dittofs.interfaces.IHostLocal`)
    gets one, strictly coherent; so does one that tells of other hosts'
    changes (:class:`~dittofs.interfaces.IChangeFeed`), coherent within the
    time a notice takes, unless its content store keeps its block maps in it
    (S3): gateways on several hosts over one bucket promise close-to-open
    coherence (``docs/s3.md``), which such a bound would break.  *entries* 0
    means no cache.
    """
    if entries <= 0:
        return metadata
    shared = IChangeFeed.providedBy(metadata) and not IBlockMapUser.providedBy(content)
    if not (IHostLocal.providedBy(metadata) or shared):
        return metadata
    from dittofs.stores.metadata.cache import CachedMetadataStore

    return CachedMetadataStore(metadata, entries=entries)
