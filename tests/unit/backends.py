"""Real database backends for the store suites: SQLite files, and the local PostgreSQL and Redis.

Each test gets its own SQLite file, PostgreSQL schema or Redis key prefix,
removed when it ends.  The stores' thread pools are replaced by
:class:`dittofs.testing.SynchronousThreadPool` and their reactor by
:class:`SynchronousReactor`, so the real ``adbapi``/``deferToThreadPool``
code runs, inline, and every Deferred has fired when a store call returns:
the tests stay ``SynchronousTestCase`` and run the same under trial and
pytest.  PostgreSQL (127.0.0.1:5432, database ``test``) and Redis
(127.0.0.1:6379) must be running: CI starts them; they are never faked.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
import redis
from twisted.python import threadpool
from twisted.trial.unittest import SynchronousTestCase

from dittofs.stores.metadata import redis as redis_metadata
from dittofs.stores.metadata.postgres import PostgresMetadataStore
from dittofs.stores.metadata.redis import RedisMetadataStore
from dittofs.stores.metadata.sqlite import SqliteMetadataStore
from dittofs.testing import SynchronousReactorThreads, SynchronousThreadPool, TickingClock

POSTGRES = os.environ.get(
    "DITTOFS_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)
REDIS = os.environ.get("DITTOFS_TEST_REDIS", "redis://127.0.0.1:6379/0")

T = TypeVar("T")


class SynchronousReactor(SynchronousReactorThreads):
    """What ``adbapi.ConnectionPool`` asks of a reactor, done at once."""

    def callWhenRunning(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """The tests' "reactor" is always running."""
        callable(*args, **kwargs)

    def addSystemEventTrigger(self, *args: Any, **kwargs: Any) -> int:
        """No shutdown will come; the test closes the store itself."""
        return 0

    def removeSystemEventTrigger(self, trigger: int) -> None:
        """Nothing was registered."""


def synchronous_threads(case: SynchronousTestCase) -> SynchronousReactor:
    """Make thread pools created during *case* run work inline; return the matching reactor.

    The change tables of caches over PostgreSQL and Redis
    (:func:`~dittofs.stores.metadata.generations.host_tables`) go to a
    temporary directory of the test's own, removed when it ends.
    """
    case.patch(threadpool, "ThreadPool", SynchronousThreadPool)
    case.patch(redis_metadata, "ThreadPool", SynchronousThreadPool)
    if not getattr(case, "_private_tempdir", False):
        directory = tempfile.mkdtemp(prefix="dittofs-tables-")
        case.addCleanup(shutil.rmtree, directory, True)
        case.patch(tempfile, "tempdir", directory)
        case._private_tempdir = True  # type: ignore[attr-defined]
    return SynchronousReactor()


def sqlite_store(case: SynchronousTestCase) -> SqliteMetadataStore:
    """A SQLite store in a new temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="dittofs-sqlite-"))
    case.addCleanup(shutil.rmtree, directory, True)
    return SqliteMetadataStore(directory / "metadata.db", synchronous_threads(case), TickingClock())


@contextlib.contextmanager
def postgres_schema(label: str = "test") -> Iterator[str]:
    """A new, empty schema of the test database; dropped afterwards."""
    schema = f"dittofs_{label}_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def postgres_url(schema: str, port: int = 5432) -> str:
    """A ``--metadata`` URL for *schema* of the test database (through *port*)."""
    options = quote(f"-csearch_path={schema}", safe="")
    return f"postgresql://postgres@127.0.0.1:{port}/test?options={options}"


@contextlib.contextmanager
def redis_prefix(label: str = "test") -> Iterator[str]:
    """A new Redis key prefix; its keys are deleted afterwards."""
    prefix = f"{label}-{secrets.token_hex(6)}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS)
        try:
            keys = list(client.scan_iter(match=f"dittofs:{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def entered(manager: contextlib.AbstractContextManager[T], add_cleanup: Callable[..., object]) -> T:
    """Enter *manager* now and leave it at clean-up (trial's addCleanup, pytest's addfinalizer)."""
    value = manager.__enter__()
    add_cleanup(lambda: manager.__exit__(None, None, None))
    return value


def postgres_store(case: SynchronousTestCase, host: str | None = None) -> PostgresMetadataStore:
    """A PostgreSQL store in a new schema of the test database (dropped afterwards).

    *host* overrides where the store connects (e.g. a proxy: ``"127.0.0.1 port=N"``).
    """
    schema = entered(postgres_schema(), case.addCleanup)
    conninfo = f"{POSTGRES} options='-c search_path={schema}'"
    if host is not None:
        conninfo += f" host={host}"
    return PostgresMetadataStore(conninfo, synchronous_threads(case), clock=TickingClock())


def redis_store(case: SynchronousTestCase) -> RedisMetadataStore:
    """A Redis store under a new key prefix (its keys deleted afterwards)."""
    prefix = entered(redis_prefix(), case.addCleanup)
    return RedisMetadataStore(
        f"{REDIS}?prefix={prefix}", synchronous_threads(case), clock=TickingClock()
    )
