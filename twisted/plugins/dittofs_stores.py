"""The store factories DittoFS ships, found as ``IStoreFactory`` plugins like anyone else's."""

from dittofs.stores.factories import (
    fs_content,
    memory_content,
    memory_metadata,
    postgresql_metadata,
    redis_metadata,
    s3_content,
    sqlite_metadata,
)

__all__ = [
    "fs_content",
    "memory_content",
    "memory_metadata",
    "postgresql_metadata",
    "redis_metadata",
    "s3_content",
    "sqlite_metadata",
]
