"""Store backends, chosen by a short specification string (like ``twisted.cred.strcred``).

Metadata: ``memory``, ``sqlite`` (in the data directory) or ``sqlite:PATH``,
``postgresql://...`` (a libpq URL), ``redis://...`` (a Redis URL, with
``?prefix=NAME`` to keep several filesystems in one database).  Content:
``memory``, ``fs`` (in the data directory) or ``fs:PATH``, or
``s3://bucket/prefix?option=value`` (see docs/s3.md).  Each backend
module is imported only when asked for, so an optional dependency of one
backend never burdens the others.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.interfaces import IReactorFromThreads

from dittofs.interfaces import IContentStore, IMetadataStore
from dittofs.log import redact

METADATA_CHOICES = "memory, sqlite[:PATH], postgresql://URL, redis://URL"
CONTENT_CHOICES = "memory, fs[:PATH], s3://BUCKET[/PREFIX][?OPTIONS]"


class StoreSpecError(ValueError):
    """A store specification string names no known backend or lacks its argument."""


def _split(spec: str) -> tuple[str, str]:
    kind, _, argument = spec.partition(":")
    return kind.strip().lower(), argument


def _sqlite_path(argument: str, data_dir: Path) -> Path:
    return Path(argument) if argument else data_dir / "metadata.db"


def _fs_path(argument: str, data_dir: Path) -> Path:
    return Path(argument) if argument else data_dir / "content"


def describe_store(role: str, spec: str, data_dir: Path) -> str:
    """Name a store for the log: its backend, its *role* and where its data is, passwords hidden.

    ``sqlite metadata (/var/lib/dittofs/metadata.db)``, ``memory content``,
    ``postgresql metadata (postgresql://dittofs:***@db/dittofs)``: the start-up
    line and a store that fails to open say which files or which database
    are meant, as resolved from the data directory, not only the option as
    typed.
    """
    kind, argument = _split(spec)
    if kind == "memory":
        return f"memory {role}"
    if kind == "sqlite":
        where = str(_sqlite_path(argument, data_dir))
    elif kind == "fs":
        where = str(_fs_path(argument, data_dir))
    else:
        where = spec.strip()
    return redact(f"{kind} {role} ({where})")


def check_metadata_spec(spec: str) -> None:
    """Raise StoreSpecError unless *spec* names a metadata backend (nothing is built)."""
    if _split(spec)[0] not in ("memory", "sqlite", "postgresql", "postgres", "redis", "rediss"):
        raise StoreSpecError(f"unknown metadata store {spec!r} (choose from {METADATA_CHOICES})")


def check_content_spec(spec: str) -> None:
    """Raise StoreSpecError unless *spec* names a content backend (nothing is built)."""
    kind = _split(spec)[0]
    if kind not in ("memory", "fs", "s3"):
        raise StoreSpecError(f"unknown content store {spec!r} (choose from {CONTENT_CHOICES})")
    if kind == "s3":
        from dittofs.stores.s3_settings import S3SpecError, parse_s3_spec

        try:
            parse_s3_spec(spec)
        except S3SpecError as error:
            raise StoreSpecError(f"content store {spec!r}: {error}") from None


def metadata_store(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> IMetadataStore:
    """Build the metadata store a specification names."""
    check_metadata_spec(spec)
    kind, argument = _split(spec)
    if kind == "memory":
        from dittofs.stores.memory_metadata import MemoryMetadataStore

        return MemoryMetadataStore()
    if kind == "sqlite":
        from dittofs.stores.sqlite_metadata import SqliteMetadataStore

        return SqliteMetadataStore(_sqlite_path(argument, data_dir), reactor)
    if kind in ("postgresql", "postgres"):
        try:
            from dittofs.stores.postgres_metadata import PostgresMetadataStore
        except ImportError as error:
            raise StoreSpecError(
                f"PostgreSQL metadata needs psycopg: pip install 'dittofs[postgresql]' ({error})"
            ) from None
        return PostgresMetadataStore(spec, reactor)
    if kind in ("redis", "rediss"):
        try:
            from dittofs.stores.redis_metadata import RedisMetadataStore
        except ImportError as error:
            raise StoreSpecError(
                f"Redis metadata needs redis-py: pip install 'dittofs[redis]' ({error})"
            ) from None
        return RedisMetadataStore(spec, reactor)
    raise AssertionError(kind)


def content_store(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> IContentStore:
    """Build the content store a specification names."""
    check_content_spec(spec)
    kind, argument = _split(spec)
    if kind == "memory":
        from dittofs.stores.memory_content import MemoryContentStore

        return MemoryContentStore()
    if kind == "fs":
        from dittofs.stores.fs_content import FilesystemContentStore

        return FilesystemContentStore(_fs_path(argument, data_dir), reactor)
    if kind == "s3":
        from dittofs.stores.s3_settings import parse_s3_spec

        try:
            import boto3  # type: ignore[import-untyped]  # noqa: F401

            from dittofs.stores.s3_content import S3ContentStore
        except ImportError as error:
            raise StoreSpecError(
                f"S3 content needs boto3: pip install 'dittofs[s3]' ({error})"
            ) from None
        return S3ContentStore(parse_s3_spec(spec, data_dir), reactor)
    raise AssertionError(kind)
