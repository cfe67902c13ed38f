"""An :class:`~dittofs.interfaces.IMetadataStore` on a SQL database, through a :class:`Pool`.

Every operation is one function run by the pool's ``runInteraction``
(``adbapi.ConnectionPool``'s, or SQLite's :mod:`group commits
<dittofs.stores.metadata.grouped>`): one transaction, or one savepoint of a
transaction, committed when it returns and rolled back when it raises, on a
pool thread so the reactor never waits for the database.  The SQL is shared
by the SQLite and PostgreSQL stores; a :class:`Dialect` supplies what
differs (placeholders, schema types, and how rows are locked so that several
gateways on one PostgreSQL database serialise their changes to a directory).

Schema (version :data:`SCHEMA_VERSION`):

- ``dittofs_meta(key, value)``: ``schema_version``, ``generation`` and ``root``.
- ``dittofs_inodes``: one row per file, id allocated by the database and never
  reused; ``next_cookie`` is the next READDIR cookie of a directory.
- ``dittofs_entries(dir, name, cookie, fileid)``: unique by (dir, name) and by
  (dir, cookie), so a listing resumes at a cookie through the index.
- ``dittofs_orphans(fileid)``: files whose last link went and whose content is
  still to be deleted (written in the same transaction as the unlink).
- ``dittofs_slices``: the block maps (:class:`~dittofs.interfaces.IBlockMaps`),
  one row per slice, its ``seq`` handed out by the database; indexed by
  (fileid, block, seq) so a read of a few blocks never scans the file, and by
  key so a collector can walk the keys in order.  ``dittofs_block_lengths``:
  each mapped file's content length.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from dittofs.errors import NFSError
from dittofs.interfaces import IBlockMaps, IMetadataInventory, IMetadataStore
from dittofs.model import (
    BlockChange,
    BlockMap,
    DirEntry,
    DirPage,
    FileCounts,
    InodeRecord,
    Inventory,
    Repair,
    Slice,
)
from dittofs.stores.metadata import blockmap, namespace
from dittofs.stores.metadata.namespace import Inode, Namespace, NamespaceStore
from dittofs.vocabulary import FileType, Status

SCHEMA_VERSION = 1
#: Back-off after the database was found unreachable (seconds, doubling).
MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: A nominal inode limit reported by FSSTAT: the database, not a table size, is the bound.
MAX_FILES = 2**32

T = TypeVar("T")

_INODE_COLUMNS = (
    "fileid, type, mode, nlink, uid, gid, size, rdev_major, rdev_minor, atime, mtime, ctime, parent"
)
_JOINED_INODE_COLUMNS = ", ".join("i." + column for column in _INODE_COLUMNS.split(", "))
#: The columns :meth:`SqlTransaction.write` may set, each under its Inode field's name.
_WRITABLE = frozenset({"mode", "nlink", "uid", "gid", "size", "atime", "mtime", "ctime", "parent"})


def _inode(row: Sequence[Any]) -> Inode:
    """An inode from the columns of :data:`_INODE_COLUMNS`, in order."""
    return Inode(
        fileid=row[0], type=FileType(row[1]), mode=row[2], nlink=row[3], uid=row[4],
        gid=row[5], size=row[6], rdev=(row[7], row[8]), atime=row[9], mtime=row[10],
        ctime=row[11], parent=row[12],
    )  # fmt: skip


class Cursor(Protocol):
    """The part of a DB-API cursor (as wrapped by ``adbapi.Transaction``) we use."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any:
        """Run one statement."""

    def fetchone(self) -> Any:
        """Return the next row or None."""

    def fetchall(self) -> list[Any]:
        """Return the remaining rows."""


class Pool(Protocol):
    """What runs the transactions: ``adbapi.ConnectionPool``, or SQLite's group commits."""

    def runInteraction(self, interaction: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run ``interaction(cursor, *args)`` in one transaction; fire with its result."""

    def close(self) -> None:
        """Close the connections once the work queued is done."""


class Dialect(Protocol):
    """What differs between SQL engines."""

    #: Statements that create the schema (each idempotent), in order.
    schema: Sequence[str]

    def sql(self, statement: str) -> str:
        """Rewrite a statement written with ``?`` placeholders for this engine."""

    def lock_inodes(self, cursor: Cursor, fileids: Sequence[int]) -> None:
        """Lock these inode rows until the transaction ends (in id order, against deadlocks)."""

    def lock_namespace(self, cursor: Cursor) -> None:
        """Serialise directory moves, so two of them can never build a cycle together."""

    def lock_blocks(self, cursor: Cursor, fileid: int) -> None:
        """Serialise changes to one file's block map until the transaction ends."""

    def translate_error(self, error: Exception) -> Exception:
        """Map an engine error to the NFSError a client should see (or return it unchanged)."""

    def unavailable(self, error: Exception) -> bool:
        """True when *error* means the database cannot be reached right now."""


@implementer(IMetadataStore, IMetadataInventory, IBlockMaps)
class SqlMetadataStore(NamespaceStore):
    """Metadata in SQL tables; a subclass chooses the engine and its dialect."""

    name = "sql"

    def __init__(
        self,
        pool: Pool,
        dialect: Dialect,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._pool = pool
        self._dialect = dialect
        self._clock = clock
        self._namespace = Namespace(0, clock)
        self._root = 0
        self._backoff = 0.0
        self._retry_at = 0.0

    # -- plumbing --------------------------------------------------------------------

    def _run(self, operation: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run *operation* in one transaction, translating database errors for the client.

        While the database is unreachable, calls fail fast with JUKEBOX for a
        back-off period (doubling to :data:`MAX_BACKOFF`) instead of each one
        waiting on a connection attempt; the next call after it tries again.
        """
        if time.monotonic() < self._retry_at:
            return fail(NFSError(Status.JUKEBOX, "the database is unreachable; retrying soon"))
        dialect = self._dialect

        def succeeded(result: T) -> T:
            self._backoff = 0.0
            return result

        def translate(reason: Any) -> Any:
            error = reason.value
            if isinstance(error, NFSError):
                return reason
            if dialect.unavailable(error):
                self._backoff = min(max(self._backoff * 2, MIN_BACKOFF), MAX_BACKOFF)
                self._retry_at = time.monotonic() + self._backoff
            translated = dialect.translate_error(error)
            if translated is error:
                return reason
            raise translated

        deferred: Deferred[T] = self._pool.runInteraction(operation, *args)
        return deferred.addCallbacks(succeeded, translate)

    def _execute(self, cursor: Cursor, statement: str, *params: Any) -> None:
        cursor.execute(self._dialect.sql(statement), params)

    def _one(self, cursor: Cursor, statement: str, *params: Any) -> Any:
        self._execute(cursor, statement, *params)
        return cursor.fetchone()

    def _in_transaction(self, operation: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run a :class:`Namespace` operation in one transaction."""
        return self._run(lambda cursor: operation(SqlTransaction(cursor, self._dialect), *args))

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Apply the schema and create the root, in one transaction; refuse newer schemas."""

        def learn(identity: tuple[int, int]) -> None:
            generation, self._root = identity
            self._namespace = Namespace(generation, self._clock)

        opened: Deferred[tuple[int, int]] = self._pool.runInteraction(self._open)
        return opened.addCallback(learn)

    def _open(self, cursor: Cursor) -> tuple[int, int]:
        # Gateways (or workers) opening a new database at once: one creates the root.
        self._dialect.lock_namespace(cursor)
        for statement in self._dialect.schema:
            self._execute(cursor, statement)
        row = self._one(cursor, "SELECT value FROM dittofs_meta WHERE key = 'schema_version'")
        if row is not None:
            version = int(row[0])
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the metadata schema is version {version}, newer than this DittoFS "
                    f"understands ({SCHEMA_VERSION}): upgrade DittoFS"
                )
            generation = int(
                self._one(cursor, "SELECT value FROM dittofs_meta WHERE key = 'generation'")[0]
            )
            root = int(self._one(cursor, "SELECT value FROM dittofs_meta WHERE key = 'root'")[0])
            return generation, root
        root = Namespace(0, self._clock).make_root(SqlTransaction(cursor, self._dialect))
        generation = secrets.randbits(31) + 1
        for key, value in (
            ("schema_version", SCHEMA_VERSION),
            ("generation", generation),
            ("root", root),
        ):
            self._execute(
                cursor, "INSERT INTO dittofs_meta (key, value) VALUES (?, ?)", key, str(value)
            )
        return generation, root

    def close(self) -> Deferred[None]:
        """Close the pool's connections (every transaction was already committed)."""
        self._pool.close()
        return succeed(None)

    # -- IMetadataStore -------------------------------------------------------------------

    def readdir(
        self, directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> Deferred[DirPage]:
        """See :meth:`IMetadataStore.readdir`."""
        return self._run(self._readdir, directory, cookie, max_entries, with_attributes)

    def _readdir(
        self, cursor: Cursor, directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> DirPage:
        self._namespace.listable(SqlTransaction(cursor, self._dialect), directory)
        if with_attributes:
            self._execute(
                cursor,
                f"SELECT e.cookie, e.name, {_JOINED_INODE_COLUMNS} FROM dittofs_entries e "
                "JOIN dittofs_inodes i ON i.fileid = e.fileid "
                "WHERE e.dir = ? AND e.cookie > ? ORDER BY e.cookie LIMIT ?",
                directory,
                cookie,
                max_entries + 1,
            )
        else:
            self._execute(
                cursor,
                "SELECT cookie, name, fileid FROM dittofs_entries "
                "WHERE dir = ? AND cookie > ? ORDER BY cookie LIMIT ?",
                directory,
                cookie,
                max_entries + 1,
            )
        rows = cursor.fetchall()
        generation = self._namespace.generation
        entries = [
            DirEntry(
                row[0],
                bytes(row[1]),
                row[2],
                namespace.attributes(_inode(row[2:]), generation) if with_attributes else None,
            )
            for row in rows[:max_entries]
        ]
        return DirPage(entries, eof=len(rows) <= max_entries)

    def pending_orphans(self) -> Deferred[list[int]]:
        """See :meth:`IMetadataStore.pending_orphans`."""
        return self._run(self._pending_orphans)

    def _pending_orphans(self, cursor: Cursor) -> list[int]:
        self._execute(cursor, "SELECT fileid FROM dittofs_orphans ORDER BY fileid")
        return [int(row[0]) for row in cursor.fetchall()]

    def release_orphan(self, fileid: int) -> Deferred[None]:
        """See :meth:`IMetadataStore.release_orphan`."""
        return self._run(self._execute, "DELETE FROM dittofs_orphans WHERE fileid = ?", fileid)

    def file_counts(self) -> Deferred[FileCounts]:
        """See :meth:`IMetadataStore.file_counts`."""
        return self._run(self._file_counts)

    def _file_counts(self, cursor: Cursor) -> FileCounts:
        files = int(self._one(cursor, "SELECT COUNT(*) FROM dittofs_inodes")[0])
        return FileCounts(files, MAX_FILES - files)

    # -- IBlockMaps ----------------------------------------------------------------------

    def block_slices(self, fileid: int, first: int, last: int) -> Deferred[BlockMap]:
        """See :meth:`IBlockMaps.block_slices`."""
        return self._run(self._block_slices, fileid, first, last)

    def _block_slices(self, cursor: Cursor, fileid: int, first: int, last: int) -> BlockMap:
        # One statement (a READ asks this every time): the length on every row, and one
        # row of NULL slice columns when no slice is in the range.
        self._execute(
            cursor,
            "SELECT (SELECT length FROM dittofs_block_lengths WHERE fileid = ?), "
            "s.block, s.at, s.length, s.obj_key, s.obj_start, s.seq "
            "FROM (SELECT 1 AS one) AS r LEFT JOIN dittofs_slices AS s "
            "ON s.fileid = ? AND s.block >= ? AND s.block <= ? ORDER BY s.block, s.seq",
            fileid,
            fileid,
            first,
            last,
        )
        rows = cursor.fetchall()
        found = tuple(Slice(*row[1:]) for row in rows if row[1] is not None)
        return BlockMap(int(rows[0][0] or 0), found)

    def _block_length(self, cursor: Cursor, fileid: int) -> int:
        row = self._one(cursor, "SELECT length FROM dittofs_block_lengths WHERE fileid = ?", fileid)
        return 0 if row is None else int(row[0])

    def change_blocks(
        self, fileid: int, add: Sequence[Slice], drop_from: int | None, length: int
    ) -> Deferred[BlockChange]:
        """See :meth:`IBlockMaps.change_blocks`: one transaction, the file's map locked."""
        try:
            blockmap.check_change(add, length)
        except NFSError:
            return fail()
        return self._run(self._change_blocks, fileid, add, drop_from, length)

    def _change_blocks(
        self,
        cursor: Cursor,
        fileid: int,
        add: Sequence[Slice],
        drop_from: int | None,
        length: int,
    ) -> BlockChange:
        self._dialect.lock_blocks(cursor, fileid)
        dropped: list[str] = []
        if drop_from is not None:
            self._execute(
                cursor,
                "DELETE FROM dittofs_slices WHERE fileid = ? AND block >= ? RETURNING obj_key",
                fileid,
                drop_from,
            )
            dropped = [row[0] for row in cursor.fetchall()]
        seqs = []
        for piece in add:
            row = self._one(
                cursor,
                "INSERT INTO dittofs_slices (fileid, block, at, length, obj_key, obj_start) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
                fileid, piece.block, piece.offset, piece.length, piece.key, piece.start,
            )  # fmt: skip
            seqs.append(int(row[0]))
        if blockmap.forgets(add, drop_from, length):
            self._execute(cursor, "DELETE FROM dittofs_block_lengths WHERE fileid = ?", fileid)
        else:
            new = blockmap.new_length(self._block_length(cursor, fileid), drop_from, length)
            self._execute(
                cursor,
                "INSERT INTO dittofs_block_lengths (fileid, length) VALUES (?, ?) "
                "ON CONFLICT (fileid) DO UPDATE SET length = excluded.length",
                fileid,
                new,
            )
        return BlockChange(tuple(seqs), blockmap.orphaned(dropped, add))

    def object_keys(self, after: str, limit: int) -> Deferred[list[str]]:
        """See :meth:`IBlockMaps.object_keys` (byte order: SQLite's and PostgreSQL's "C")."""
        return self._run(self._object_keys, after, limit)

    def _object_keys(self, cursor: Cursor, after: str, limit: int) -> list[str]:
        self._execute(
            cursor,
            "SELECT DISTINCT obj_key FROM dittofs_slices WHERE obj_key > ? "
            "ORDER BY obj_key LIMIT ?",
            after,
            limit,
        )
        return [row[0] for row in cursor.fetchall()]

    # -- IMetadataInventory --------------------------------------------------------------

    def inventory(self) -> Deferred[Inventory]:
        """See :meth:`IMetadataInventory.inventory`."""
        return self._run(self._inventory)

    def _inventory(self, cursor: Cursor) -> Inventory:
        self._execute(cursor, "SELECT fileid, type, nlink, parent FROM dittofs_inodes")
        inodes = {
            row[0]: InodeRecord(row[0], FileType(row[1]), row[2], row[3])
            for row in cursor.fetchall()
        }
        self._execute(cursor, "SELECT dir, name, fileid FROM dittofs_entries")
        entries = [(row[0], bytes(row[1]), row[2]) for row in cursor.fetchall()]
        return Inventory(self._root, inodes, entries)

    def repair(self, repairs: list[Repair]) -> Deferred[None]:
        """See :meth:`IMetadataInventory.repair`: one transaction for all of them."""
        return self._run(self._repair, repairs)

    def _repair(self, cursor: Cursor, repairs: list[Repair]) -> None:
        for repair in repairs:
            if repair.action == "drop-inode":
                self._execute(cursor, "DELETE FROM dittofs_entries WHERE dir = ?", repair.fileid)
                self._execute(cursor, "DELETE FROM dittofs_inodes WHERE fileid = ?", repair.fileid)
            elif repair.action == "nlink":
                self._execute(
                    cursor,
                    "UPDATE dittofs_inodes SET nlink = ? WHERE fileid = ?",
                    repair.value,
                    repair.fileid,
                )
            elif repair.action == "parent":
                self._execute(
                    cursor,
                    "UPDATE dittofs_inodes SET parent = ? WHERE fileid = ?",
                    repair.value,
                    repair.fileid,
                )
            elif repair.action == "drop-entry":
                self._execute(
                    cursor,
                    "DELETE FROM dittofs_entries WHERE dir = ? AND name = ?",
                    repair.fileid,
                    repair.name,
                )


class SqlTransaction:
    """The namespace's primitives as SQL statements in one database transaction.

    Rows are locked (``lock``) before they are read for a change, so on
    PostgreSQL several gateways serialise their changes to a directory; the
    read-modify-write of a link count is then safe.
    """

    def __init__(self, cursor: Cursor, dialect: Dialect) -> None:
        self._cursor = cursor
        self._dialect = dialect

    def _execute(self, statement: str, *params: Any) -> None:
        self._cursor.execute(self._dialect.sql(statement), params)

    def _one(self, statement: str, *params: Any) -> Any:
        self._execute(statement, *params)
        return self._cursor.fetchone()

    def lock(self, *fileids: int) -> None:
        self._dialect.lock_inodes(self._cursor, fileids)

    def lock_namespace(self) -> None:
        self._dialect.lock_namespace(self._cursor)

    def read(self, fileid: int) -> Inode | None:
        row = self._one(f"SELECT {_INODE_COLUMNS} FROM dittofs_inodes WHERE fileid = ?", fileid)
        return None if row is None else _inode(row)

    def find(self, directory: int, name: bytes) -> Inode | None:
        # One statement: under READ COMMITTED, an entry and its inode read apart could
        # straddle another gateway's removal of both.
        row = self._one(
            f"SELECT {_JOINED_INODE_COLUMNS} FROM dittofs_entries e "
            "JOIN dittofs_inodes i ON i.fileid = e.fileid WHERE e.dir = ? AND e.name = ?",
            directory,
            name,
        )
        return None if row is None else _inode(row)

    def is_empty(self, directory: int) -> bool:
        return self._one("SELECT 1 FROM dittofs_entries WHERE dir = ? LIMIT 1", directory) is None

    def verifier(self, fileid: int) -> bytes:
        return bytes(self._one("SELECT verifier FROM dittofs_inodes WHERE fileid = ?", fileid)[0])

    def target(self, fileid: int) -> bytes:
        return bytes(self._one("SELECT target FROM dittofs_inodes WHERE fileid = ?", fileid)[0])

    def insert(self, inode: Inode, target: bytes, verifier: bytes) -> int:
        row = self._one(
            "INSERT INTO dittofs_inodes (type, mode, nlink, uid, gid, size, rdev_major, "
            "rdev_minor, atime, mtime, ctime, parent, target, verifier, next_cookie) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) RETURNING fileid",
            int(inode.type), inode.mode, inode.nlink, inode.uid, inode.gid, inode.size,
            inode.rdev[0], inode.rdev[1], inode.atime, inode.mtime, inode.ctime, inode.parent,
            target, verifier,
        )  # fmt: skip
        return int(row[0])

    def write(self, fileid: int, **fields: int) -> None:
        assert _WRITABLE.issuperset(fields), fields
        assignments = ", ".join(f"{column} = ?" for column in fields)
        self._execute(
            f"UPDATE dittofs_inodes SET {assignments} WHERE fileid = ?", *fields.values(), fileid
        )

    def add_entry(self, directory: int, name: bytes, fileid: int) -> None:
        cookie = self._one(
            "UPDATE dittofs_inodes SET next_cookie = next_cookie + 1 WHERE fileid = ? "
            "RETURNING next_cookie - 1",
            directory,
        )[0]
        self._execute(
            "INSERT INTO dittofs_entries (dir, name, cookie, fileid) VALUES (?, ?, ?, ?)",
            directory, name, cookie, fileid,
        )  # fmt: skip

    def drop_entry(self, directory: int, name: bytes) -> None:
        self._execute("DELETE FROM dittofs_entries WHERE dir = ? AND name = ?", directory, name)

    def delete(self, fileid: int) -> None:
        self._execute("DELETE FROM dittofs_inodes WHERE fileid = ?", fileid)

    def journal_orphan(self, fileid: int) -> None:
        self._execute("INSERT INTO dittofs_orphans (fileid) VALUES (?)", fileid)
