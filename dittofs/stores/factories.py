"""The store factories DittoFS ships, plugins listed by ``twisted/plugins/dittofs_stores.py``.

Each names its schemes and builds its store on demand: a backend's module,
and the libraries it needs, are imported only when a specification asks for
it, so an optional dependency of one backend never burdens the others.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorFromThreads
from twisted.plugin import IPlugin
from zope.interface import implementer

from dittofs.interfaces import IStoreFactory
from dittofs.stores import StoreSpecError


def argument(spec: str) -> str:
    """What follows the scheme and its colon: ``/srv/meta.db`` in ``sqlite:/srv/meta.db``."""
    return spec.partition(":")[2]


@implementer(IPlugin, IStoreFactory)
@attrs.frozen
class StoreFactory:
    """An :class:`~dittofs.interfaces.IStoreFactory` made of three functions.

    *make* builds the store; *locate* says where its data is (by default, nowhere
    worth naming); *verify* checks a specification beyond its scheme.
    """

    role: str
    schemes: tuple[str, ...]
    usage: str
    description: str
    make: Callable[[str, Path, IReactorFromThreads], Any]
    locate: Callable[[str, Path], str | None] = lambda spec, data_dir: None
    verify: Callable[[str], None] = lambda spec: None

    def check(self, spec: str) -> None:
        """See :meth:`IStoreFactory.check`."""
        self.verify(spec)

    def where(self, spec: str, data_dir: Path) -> str | None:
        """See :meth:`IStoreFactory.where`."""
        return self.locate(spec, data_dir)

    def build(self, spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
        """See :meth:`IStoreFactory.build`."""
        return self.make(spec, data_dir, reactor)


def _missing(what: str, extra: str, error: ImportError) -> StoreSpecError:
    return StoreSpecError(f"{what} needs {extra}: pip install 'dittofs[{extra}]' ({error})")


# -- metadata --------------------------------------------------------------------------


def _memory_metadata(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
    from dittofs.stores.metadata.memory import MemoryMetadataStore

    return MemoryMetadataStore()


def _sqlite_path(spec: str, data_dir: Path) -> str:
    return argument(spec) or str(data_dir / "metadata.db")


def _sqlite(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
    from dittofs.stores.metadata.sqlite import SqliteMetadataStore

    return SqliteMetadataStore(Path(_sqlite_path(spec, data_dir)), reactor)


def _postgresql(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
    try:
        from dittofs.stores.metadata.postgres import PostgresMetadataStore
    except ImportError as error:
        raise _missing("PostgreSQL metadata", "postgresql", error) from None
    return PostgresMetadataStore(spec, reactor)


def _redis(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
    try:
        from dittofs.stores.metadata.redis import RedisMetadataStore
    except ImportError as error:
        raise _missing("Redis metadata", "redis", error) from None
    return RedisMetadataStore(spec, reactor)


def _the_url(spec: str, data_dir: Path) -> str:
    return spec.strip()


memory_metadata = StoreFactory(
    "metadata", ("memory",), "memory", "in this process's memory, gone when it stops",
    _memory_metadata,
)  # fmt: skip
sqlite_metadata = StoreFactory(
    "metadata", ("sqlite",), "sqlite[:PATH]",
    "a SQLite file (default: metadata.db in the data directory)", _sqlite, _sqlite_path,
)  # fmt: skip
postgresql_metadata = StoreFactory(
    "metadata", ("postgresql", "postgres"), "postgresql://URL",
    "a PostgreSQL database, shared by every gateway that names it", _postgresql, _the_url,
)  # fmt: skip
redis_metadata = StoreFactory(
    "metadata", ("redis", "rediss"), "redis://URL",
    "a Redis database (?prefix=NAME keeps several filesystems in one)", _redis, _the_url,
)  # fmt: skip


# -- content ---------------------------------------------------------------------------


def _memory_content(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
    from dittofs.stores.content.memory import MemoryContentStore

    return MemoryContentStore()


def _fs_path(spec: str, data_dir: Path) -> str:
    return argument(spec) or str(data_dir / "content")


def _fs(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
    from dittofs.stores.content.fs import FilesystemContentStore

    return FilesystemContentStore(Path(_fs_path(spec, data_dir)), reactor)


def _check_s3(spec: str) -> None:
    from dittofs.stores.s3.settings import S3SpecError, parse_s3_spec

    try:
        parse_s3_spec(spec)
    except S3SpecError as error:
        raise StoreSpecError(f"content store {spec!r}: {error}") from None


def _s3(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
    from dittofs.stores.s3.settings import parse_s3_spec

    try:
        import boto3  # type: ignore[import-untyped]  # noqa: F401

        from dittofs.stores.s3.content import S3ContentStore
    except ImportError as error:
        raise _missing("S3 content", "s3", error) from None
    return S3ContentStore(parse_s3_spec(spec, data_dir), reactor)


memory_content = StoreFactory(
    "content", ("memory",), "memory", "in this process's memory, gone when it stops",
    _memory_content,
)  # fmt: skip
fs_content = StoreFactory(
    "content", ("fs",), "fs[:PATH]",
    "files in a directory (default: content in the data directory)", _fs, _fs_path,
)  # fmt: skip
s3_content = StoreFactory(
    "content", ("s3",), "s3://BUCKET[/PREFIX][?OPTIONS]",
    "an S3 bucket, with a local cache (see docs/s3.md)", _s3, _the_url, _check_s3,
)  # fmt: skip

#: DittoFS's own, in the order --help lists them (before any other package's).
SHIPPED = (
    memory_metadata, sqlite_metadata, postgresql_metadata, redis_metadata,
    memory_content, fs_content, s3_content,
)  # fmt: skip
