"""SQLite metadata: the embedded, persistent default.

One connection on one pool thread (SQLite allows a single writer anyway, as
synapse also does), whose transactions queued together commit together
(:mod:`~dittofs.stores.metadata.grouped`), WAL journal so readers never
block the writer, and
``synchronous=NORMAL``: a committed transaction survives a crash of the
DittoFS process (the case the write verifier protects against); ``FULL``
would add an fsync per transaction for power-loss durability of metadata.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred
from zope.interface import implementer

from dittofs.errors import NFSError
from dittofs.interfaces import IHostLocal
from dittofs.stores.metadata.grouped import GroupCommits
from dittofs.stores.metadata.sql import Cursor, SqlMetadataStore
from dittofs.vocabulary import Status

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dittofs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dittofs_inodes ("
    " fileid INTEGER PRIMARY KEY AUTOINCREMENT, type INTEGER NOT NULL, mode INTEGER NOT NULL,"
    " nlink INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL, size INTEGER NOT NULL,"
    " rdev_major INTEGER NOT NULL, rdev_minor INTEGER NOT NULL, atime INTEGER NOT NULL,"
    " mtime INTEGER NOT NULL, ctime INTEGER NOT NULL, parent INTEGER NOT NULL,"
    " target BLOB NOT NULL, verifier BLOB NOT NULL, next_cookie INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dittofs_entries ("
    " dir INTEGER NOT NULL, name BLOB NOT NULL, cookie INTEGER NOT NULL, fileid INTEGER NOT NULL,"
    " PRIMARY KEY (dir, name)) WITHOUT ROWID",
    "CREATE UNIQUE INDEX IF NOT EXISTS dittofs_entries_cookie ON dittofs_entries (dir, cookie)",
    "CREATE INDEX IF NOT EXISTS dittofs_entries_fileid ON dittofs_entries (fileid)",
    "CREATE TABLE IF NOT EXISTS dittofs_orphans (fileid INTEGER PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS dittofs_slices ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, fileid INTEGER NOT NULL, block INTEGER NOT NULL,"
    " at INTEGER NOT NULL, length INTEGER NOT NULL, obj_key TEXT NOT NULL,"
    " obj_start INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS dittofs_slices_block ON dittofs_slices (fileid, block, seq)",
    "CREATE INDEX IF NOT EXISTS dittofs_slices_key ON dittofs_slices (obj_key)",
    "CREATE TABLE IF NOT EXISTS dittofs_block_lengths ("
    " fileid INTEGER PRIMARY KEY, length INTEGER NOT NULL)",
)


class SqliteDialect:
    """SQLite: ``?`` placeholders already; one writer at a time, whose lock every change takes."""

    schema: Sequence[str] = SCHEMA

    def sql(self, statement: str) -> str:
        """Statements are written for SQLite."""
        return statement

    def lock_inodes(self, cursor: Cursor, fileids: Sequence[int]) -> None:
        """Take the database's write lock (see :func:`_write_lock`)."""
        _write_lock(cursor)

    def lock_namespace(self, cursor: Cursor) -> None:
        """Take the database's write lock (see :func:`_write_lock`)."""
        _write_lock(cursor)

    def lock_blocks(self, cursor: Cursor, fileid: int) -> None:
        """Take the database's write lock (see :func:`_write_lock`)."""
        _write_lock(cursor)

    def translate_error(self, error: Exception) -> Exception:
        """A full disk or a locked/corrupt database is an I/O error for the client."""
        if isinstance(error, sqlite3.OperationalError | sqlite3.DatabaseError):
            return NFSError(Status.IO, f"sqlite: {error}")
        return error

    def unavailable(self, error: Exception) -> bool:
        """A local file is never "away"; its errors are I/O errors."""
        return False


class _SqliteCursor(Cursor, Protocol):
    """A cursor whose connection is sqlite3's."""

    connection: sqlite3.Connection


def _write_lock(cursor: Cursor) -> None:
    """Begin the transaction as SQLite's one writer (``BEGIN IMMEDIATE``), unless it already is.

    Several processes may open one database (the workers of one server,
    gateways on one host).  Python's ``sqlite3`` begins a transaction only at
    its first write, so the reads a change checks first would run outside
    it, and another process could change what they read before the write:
    an entry added for an inode just deleted.  Every change takes a lock
    before it reads anything, and here that lock is the database's: the
    transaction begins, holding the write lock (waiting up to the
    connection's timeout for another process to commit), so everything it
    then reads stays as read until it commits.
    """
    if not cast(_SqliteCursor, cursor).connection.in_transaction:
        cursor.execute("BEGIN IMMEDIATE")


#: How long a new connection waits for another process to finish turning a new
#: database to WAL (seconds), and how often it looks again.
WAL_WAIT = 10.0
WAL_POLL = 0.05


def _configure(connection: sqlite3.Connection) -> None:
    """Put the database in WAL mode (once per database), as a connection opens.

    Turning a database to WAL takes it for a moment alone, and SQLite
    answers "database is locked" at once, without its busy wait, to a
    process that tries meanwhile: workers opening a new database together
    do.  So that answer is tried again, on this pool thread, for a while.
    """
    deadline = time.monotonic() + WAL_WAIT
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(WAL_POLL)
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=OFF")


@implementer(IHostLocal)
class SqliteMetadataStore(SqlMetadataStore):
    """Metadata in one SQLite file, which only processes of this host open."""

    name = "sqlite"

    def __init__(
        self, path: str | Path, reactor: Any = None, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.path = Path(path)
        super().__init__(GroupCommits(self._connect, reactor), SqliteDialect(), clock)

    def _connect(self) -> sqlite3.Connection:
        """The store's one connection, opened in its thread when first needed."""
        connection = sqlite3.connect(str(self.path), check_same_thread=False)
        try:
            _configure(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def change_table(self) -> Path:
        """See :meth:`IHostLocal.change_table`: ``metadata.db-changes`` beside ``metadata.db``."""
        return self.path.with_name(self.path.name + "-changes")

    def open(self) -> Deferred[None]:
        """Create the database's directory if needed, then apply the schema."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return super().open()
