"""PostgreSQL metadata, for several DittoFS gateways sharing one database.

Each NFS operation is one transaction (READ COMMITTED) that first locks the
inode rows it will change with ``SELECT ... FOR UPDATE``, in file-id order,
so two gateways changing one directory take turns and each sees the other's
committed entries.  Directory moves between parents also take a
transaction-scoped advisory lock, so two concurrent moves can never create a
cycle between them (the same reason Linux has a per-filesystem rename mutex).
A lost connection, a deadlock or a serialisation failure becomes
``NFS3ERR_JUKEBOX``: the client waits and retries while the database is away.

Every change also sends, in its transaction, a notice of what it wrote on
the channel ``dittofs_<generation>`` (:mod:`dittofs.stores.metadata.feed`),
which PostgreSQL delivers to every listening gateway once it commits: the
store's :class:`~dittofs.interfaces.IChangeFeed`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import make_conninfo
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from zope.interface import implementer

from dittofs.errors import NFSError
from dittofs.interfaces import IChangeFeed
from dittofs.stores.metadata import feed
from dittofs.stores.metadata.sql import Cursor, SqlMetadataStore, SqlTransaction
from dittofs.vocabulary import Status

T = TypeVar("T")

#: The listening connection's TCP keepalives: a peer gone silent is noticed
#: in about 20 seconds, and the caches stop trusting what they kept.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}

#: Advisory lock keys (arbitrary constants, scoped to DittoFS's tables).
_SCHEMA_LOCK = 0x0D1770F5
_NAMESPACE_LOCK = 0x0D1770F6
#: The class of the advisory locks that serialise changes to one file's block map.
_BLOCKS_LOCK_CLASS = 0x0D1770F7

SCHEMA = (
    f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})",
    "CREATE TABLE IF NOT EXISTS dittofs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dittofs_inodes ("
    " fileid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, type INTEGER NOT NULL,"
    " mode INTEGER NOT NULL, nlink BIGINT NOT NULL, uid BIGINT NOT NULL, gid BIGINT NOT NULL,"
    " size BIGINT NOT NULL, rdev_major BIGINT NOT NULL, rdev_minor BIGINT NOT NULL,"
    " atime BIGINT NOT NULL, mtime BIGINT NOT NULL, ctime BIGINT NOT NULL,"
    " parent BIGINT NOT NULL, target BYTEA NOT NULL, verifier BYTEA NOT NULL,"
    " next_cookie BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dittofs_entries ("
    " dir BIGINT NOT NULL, name BYTEA NOT NULL, cookie BIGINT NOT NULL, fileid BIGINT NOT NULL,"
    " PRIMARY KEY (dir, name))",
    "CREATE UNIQUE INDEX IF NOT EXISTS dittofs_entries_cookie ON dittofs_entries (dir, cookie)",
    "CREATE INDEX IF NOT EXISTS dittofs_entries_fileid ON dittofs_entries (fileid)",
    "CREATE TABLE IF NOT EXISTS dittofs_orphans (fileid BIGINT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS dittofs_slices ("
    " seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, fileid BIGINT NOT NULL,"
    " block BIGINT NOT NULL, at BIGINT NOT NULL, length BIGINT NOT NULL,"
    ' obj_key TEXT COLLATE "C" NOT NULL, obj_start BIGINT NOT NULL)',
    "CREATE INDEX IF NOT EXISTS dittofs_slices_block ON dittofs_slices (fileid, block, seq)",
    "CREATE INDEX IF NOT EXISTS dittofs_slices_key ON dittofs_slices (obj_key)",
    "CREATE TABLE IF NOT EXISTS dittofs_block_lengths ("
    " fileid BIGINT PRIMARY KEY, length BIGINT NOT NULL)",
)

DEFAULT_POOL_SIZE = 8


class PostgresDialect:
    """PostgreSQL: ``%s`` placeholders and row locks for concurrent gateways."""

    schema: Sequence[str] = SCHEMA

    def sql(self, statement: str) -> str:
        """Statements are written with ``?``; psycopg wants ``%s``."""
        return statement.replace("?", "%s")

    def lock_inodes(self, cursor: Cursor, fileids: Sequence[int]) -> None:
        """Lock the rows in id order, so every transaction takes shared locks alike."""
        cursor.execute(
            "SELECT fileid FROM dittofs_inodes WHERE fileid = ANY(%s) ORDER BY fileid FOR UPDATE",
            (sorted(set(fileids)),),
        )
        cursor.fetchall()

    def lock_namespace(self, cursor: Cursor) -> None:
        """Serialise directory moves across every gateway of this database."""
        cursor.execute(f"SELECT pg_advisory_xact_lock({_NAMESPACE_LOCK})", ())
        cursor.fetchall()

    def lock_blocks(self, cursor: Cursor, fileid: int) -> None:
        """Serialise changes to one file's block map, so ``seq`` order is commit order.

        The identity column hands out ``seq`` when a row is inserted, not when
        it commits; under this lock the two orders agree for each file.  Ids
        that agree in their low 31 bits share a lock, which only serialises more.
        """
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", (_BLOCKS_LOCK_CLASS, fileid & 0x7FFFFFFF)
        )
        cursor.fetchall()

    def translate_error(self, error: Exception) -> Exception:
        """Transient database trouble is JUKEBOX (retry later); a name race is EXIST."""
        if isinstance(error, pg_errors.UniqueViolation):
            return NFSError(Status.EXIST, "created concurrently by another gateway")
        if isinstance(
            error,
            pg_errors.DeadlockDetected
            | pg_errors.SerializationFailure
            | psycopg.OperationalError
            | adbapi.ConnectionLost,
        ):
            return NFSError(Status.JUKEBOX, f"postgresql: {error}")
        if isinstance(error, psycopg.Error):
            return NFSError(Status.IO, f"postgresql: {error}")
        return error

    def unavailable(self, error: Exception) -> bool:
        """A failed or broken connection (not a deadlock, which is the database working)."""
        return isinstance(
            error, psycopg.OperationalError | adbapi.ConnectionLost
        ) and not isinstance(error, pg_errors.DeadlockDetected | pg_errors.SerializationFailure)


@implementer(IChangeFeed)
class PostgresMetadataStore(feed.Feeding, SqlMetadataStore):
    """Metadata in a PostgreSQL database (a libpq connection string or URL)."""

    name = "postgresql"

    def __init__(
        self,
        conninfo: str,
        reactor: Any = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        pool = adbapi.ConnectionPool(
            "psycopg",
            conninfo,
            cp_min=1,
            cp_max=pool_size,
            cp_reconnect=True,
            cp_noisy=False,
            cp_reactor=reactor,
        )
        super().__init__(pool, PostgresDialect(), clock)
        self._conninfo = conninfo
        self._origin = feed.new_origin()

    @property
    def _channel(self) -> str:
        return f"dittofs_{self._namespace.generation}"

    def _in_transaction(self, operation: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run a namespace operation in one transaction that also notifies what it wrote."""

        def run(cursor: Cursor) -> T:
            noting = feed.Noting(SqlTransaction(cursor, self._dialect))
            result = operation(noting, *args)
            if noting.keys:
                cursor.execute(
                    "SELECT pg_notify(%s, %s)",
                    (self._channel, feed.notice(self._origin, noting.keys)),
                )
            return result

        return self._run(run)

    def _listen(self) -> Generator[str | None]:
        """See :data:`feed.Listen`: ``LISTEN`` on a connection of its own."""
        conninfo = make_conninfo(self._conninfo, **KEEPALIVES)
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f"LISTEN {self._channel}")
            yield None
            while True:
                for notify in connection.notifies(timeout=feed.POLL):
                    yield notify.payload
                yield None

    def close(self) -> Deferred[None]:
        """Stop listening and close the pool's connections."""
        self._stop_following()
        return super().close()
