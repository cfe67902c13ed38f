"""The database-backed metadata stores against the shared conformance suite.

Real servers only: a SQLite file per test, and the local PostgreSQL and Redis
(a schema or key prefix per test); see ``tests/unit/backends.py``.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dittofs.interfaces import IMetadataStore
from dittofs.testing.conformance import BlockMapConformance, MetadataStoreConformance
from tests.unit import backends


class SqliteMetadataStoreTests(MetadataStoreConformance, SynchronousTestCase):
    """The SQLite store (the embedded default) keeps the whole metadata contract."""

    def make_store(self) -> IMetadataStore:
        """A store in a fresh SQLite file."""
        return backends.sqlite_store(self)


class PostgresMetadataStoreTests(MetadataStoreConformance, SynchronousTestCase):
    """The PostgreSQL store keeps the whole metadata contract, on the real local server."""

    def make_store(self) -> IMetadataStore:
        """A store in a fresh schema of the test database."""
        return backends.postgres_store(self)


class RedisMetadataStoreTests(MetadataStoreConformance, SynchronousTestCase):
    """The Redis store keeps the whole metadata contract, on the real local server."""

    def make_store(self) -> IMetadataStore:
        """A store under a fresh key prefix."""
        return backends.redis_store(self)


class SqliteBlockMapTests(BlockMapConformance, SynchronousTestCase):
    """The SQLite store keeps the block map contract."""

    def make_store(self) -> IMetadataStore:
        """A store in a fresh SQLite file."""
        return backends.sqlite_store(self)


class PostgresBlockMapTests(BlockMapConformance, SynchronousTestCase):
    """The PostgreSQL store keeps the block map contract, on the real local server."""

    def make_store(self) -> IMetadataStore:
        """A store in a fresh schema of the test database."""
        return backends.postgres_store(self)


class RedisBlockMapTests(BlockMapConformance, SynchronousTestCase):
    """The Redis store keeps the block map contract, on the real local server."""

    def make_store(self) -> IMetadataStore:
        """A store under a fresh key prefix."""
        return backends.redis_store(self)
