"""The store factories DittoFS ships, found as ``IStoreFactory`` plugins like anyone else's."""

from dittofs.stores.factories import SHIPPED

# getPlugins collects the module's attributes that provide the interface.
(
    memory_metadata, sqlite_metadata, postgresql_metadata, redis_metadata,
    memory_content, fs_content, s3_content,
) = SHIPPED  # fmt: skip
