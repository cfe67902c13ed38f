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

from dittofs.interfaces import IContentStore, IMetadataStore, IStoreFactory
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


def metadata_store(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> IMetadataStore:
    """Build the metadata store a specification names."""
    store: IMetadataStore = build_store("metadata", spec, data_dir, reactor)
    return store


def content_store(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> IContentStore:
    """Build the content store a specification names."""
    store: IContentStore = build_store("content", spec, data_dir, reactor)
    return store
