"""An :class:`~dittofs.interfaces.IMetadataStore` on a SQL database, through ``adbapi``.

Every operation is one function run by ``ConnectionPool.runInteraction``: one
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
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from dittofs.errors import NFSError
from dittofs.interfaces import IMetadataInventory, IMetadataStore
from dittofs.model import (
    MODE_MASK,
    Attributes,
    Created,
    DirEntry,
    DirPage,
    FileCounts,
    InodeRecord,
    Inventory,
    Linked,
    NewNode,
    Removed,
    Renamed,
    Repair,
    SetAttributes,
    WccAttributes,
)
from dittofs.stores.metadata import rules
from dittofs.vocabulary import CreateMode, FileType, Status

SCHEMA_VERSION = 1
#: Back-off after the database was found unreachable (seconds, doubling).
MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: A nominal inode limit reported by FSSTAT: the database, not a table size, is the bound.
MAX_FILES = 2**32

T = TypeVar("T")

_INODE_COLUMNS = (
    "fileid, type, mode, nlink, uid, gid, size, rdev_major, rdev_minor, atime, mtime, ctime"
)
_JOINED_INODE_COLUMNS = ", ".join("i." + column for column in _INODE_COLUMNS.split(", "))


class Cursor(Protocol):
    """The part of a DB-API cursor (as wrapped by ``adbapi.Transaction``) we use."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any:
        """Run one statement."""

    def fetchone(self) -> Any:
        """Return the next row or None."""

    def fetchall(self) -> list[Any]:
        """Return the remaining rows."""


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

    def translate_error(self, error: Exception) -> Exception:
        """Map an engine error to the NFSError a client should see (or return it unchanged)."""

    def unavailable(self, error: Exception) -> bool:
        """True when *error* means the database cannot be reached right now."""


@implementer(IMetadataStore, IMetadataInventory)
class SqlMetadataStore:
    """Metadata in SQL tables; a subclass chooses the engine and its dialect."""

    name = "sql"

    def __init__(
        self,
        pool: adbapi.ConnectionPool,
        dialect: Dialect,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._pool = pool
        self._dialect = dialect
        self._clock = clock
        self._generation = 0
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

    def _row_attributes(self, row: Sequence[Any]) -> Attributes:
        return rules.attributes(
            fileid=row[0],
            generation=self._generation,
            type=row[1],
            mode=row[2],
            nlink=row[3],
            uid=row[4],
            gid=row[5],
            size=row[6],
            rdev=(row[7], row[8]),
            atime=row[9],
            mtime=row[10],
            ctime=row[11],
        )

    def _inode(self, cursor: Cursor, fileid: int) -> Attributes:
        row = self._one(
            cursor, f"SELECT {_INODE_COLUMNS} FROM dittofs_inodes WHERE fileid = ?", fileid
        )
        if row is None:
            raise NFSError(Status.STALE, f"file id {fileid} does not exist")
        return self._row_attributes(row)

    def _directory(self, cursor: Cursor, fileid: int) -> Attributes:
        attributes = self._inode(cursor, fileid)
        if attributes.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        return attributes

    def _entry(self, cursor: Cursor, directory: int, name: bytes) -> Attributes | None:
        row = self._one(
            cursor,
            f"SELECT {_JOINED_INODE_COLUMNS} "
            "FROM dittofs_entries e JOIN dittofs_inodes i ON i.fileid = e.fileid "
            "WHERE e.dir = ? AND e.name = ?",
            directory,
            name,
        )
        return None if row is None else self._row_attributes(row)

    def _has_entries(self, cursor: Cursor, directory: int) -> bool:
        return (
            self._one(cursor, "SELECT 1 FROM dittofs_entries WHERE dir = ? LIMIT 1", directory)
            is not None
        )

    def _touch(self, cursor: Cursor, fileid: int, now: int) -> None:
        self._execute(
            cursor,
            "UPDATE dittofs_inodes SET mtime = ?, ctime = ? WHERE fileid = ?",
            now,
            now,
            fileid,
        )

    def _add_entry(self, cursor: Cursor, directory: int, name: bytes, child: Attributes) -> None:
        cookie = self._one(
            cursor,
            "UPDATE dittofs_inodes SET next_cookie = next_cookie + 1 WHERE fileid = ? "
            "RETURNING next_cookie - 1",
            directory,
        )[0]
        self._execute(
            cursor,
            "INSERT INTO dittofs_entries (dir, name, cookie, fileid) VALUES (?, ?, ?, ?)",
            directory,
            name,
            cookie,
            child.fileid,
        )
        if child.type == FileType.DIR:
            self._execute(
                cursor,
                "UPDATE dittofs_inodes SET parent = ? WHERE fileid = ?",
                directory,
                child.fileid,
            )
            self._execute(
                cursor, "UPDATE dittofs_inodes SET nlink = nlink + 1 WHERE fileid = ?", directory
            )

    def _drop_entry(self, cursor: Cursor, directory: int, name: bytes, child: Attributes) -> None:
        self._execute(
            cursor, "DELETE FROM dittofs_entries WHERE dir = ? AND name = ?", directory, name
        )
        if child.type == FileType.DIR:
            self._execute(
                cursor, "UPDATE dittofs_inodes SET nlink = nlink - 1 WHERE fileid = ?", directory
            )

    def _unlink(self, cursor: Cursor, child: Attributes, now: int) -> int | None:
        """Drop one link of *child*; delete it and return its id when that was the last."""
        remaining = child.nlink - rules.links_lost(child.type)
        if remaining <= 0:
            self._execute(cursor, "DELETE FROM dittofs_inodes WHERE fileid = ?", child.fileid)
            self._execute(cursor, "INSERT INTO dittofs_orphans (fileid) VALUES (?)", child.fileid)
            return child.fileid
        self._execute(
            cursor,
            "UPDATE dittofs_inodes SET nlink = ?, ctime = ? WHERE fileid = ?",
            remaining,
            now,
            child.fileid,
        )
        return None

    def _insert_inode(self, cursor: Cursor, node: NewNode, now: int, nlink: int) -> int:
        initial = node.attributes
        size = rules.initial_size(node)
        row = self._one(
            cursor,
            "INSERT INTO dittofs_inodes (type, mode, nlink, uid, gid, size, rdev_major, "
            "rdev_minor, atime, mtime, ctime, parent, target, verifier, next_cookie) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, 1) RETURNING fileid",
            int(node.type),
            node.mode & MODE_MASK,
            nlink,
            node.uid,
            node.gid,
            size,
            node.rdev[0],
            node.rdev[1],
            now if initial.atime is None else initial.atime,
            now if initial.mtime is None else initial.mtime,
            now,
            node.symlink_target,
            node.verifier if node.how == CreateMode.EXCLUSIVE else b"",
        )
        return int(row[0])

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Apply the schema and create the root, in one transaction; refuse newer schemas."""

        def learn(identity: tuple[int, int]) -> None:
            self._generation, self._root = identity

        opened: Deferred[tuple[int, int]] = self._pool.runInteraction(self._open)
        return opened.addCallback(learn)

    def _open(self, cursor: Cursor) -> tuple[int, int]:
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
        now = self._clock()
        root_node = NewNode(type=FileType.DIR, mode=rules.ROOT_MODE, uid=0, gid=0)
        root = self._insert_inode(cursor, root_node, now, nlink=2)
        self._execute(cursor, "UPDATE dittofs_inodes SET parent = ? WHERE fileid = ?", root, root)
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

    def root(self) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.root`."""
        return self._run(self._inode, self._root)

    def getattr(self, fileid: int) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.getattr`."""
        return self._run(self._inode, fileid)

    def setattr(
        self, fileid: int, changes: SetAttributes, guard_ctime: int | None
    ) -> Deferred[WccAttributes]:
        """See :meth:`IMetadataStore.setattr`."""
        return self._run(self._setattr, fileid, changes, guard_ctime)

    def _setattr(
        self, cursor: Cursor, fileid: int, changes: SetAttributes, guard_ctime: int | None
    ) -> WccAttributes:
        self._dialect.lock_inodes(cursor, [fileid])
        before = self._inode(cursor, fileid)
        if guard_ctime is not None and guard_ctime != before.ctime:
            raise NFSError(Status.NOT_SYNC)
        if changes.size is not None and before.type != FileType.REG:
            raise NFSError(Status.INVAL, "size can only be set on regular files")
        now = self._clock()
        assignments: list[str] = []
        values: list[Any] = []
        for column, value in (
            ("mode", None if changes.mode is None else changes.mode & MODE_MASK),
            ("uid", changes.uid),
            ("gid", changes.gid),
            ("size", changes.size),
            ("atime", changes.atime),
            (
                "mtime",
                changes.mtime
                if changes.mtime is not None
                else (now if changes.size is not None else None),
            ),
        ):
            if value is not None:
                assignments.append(f"{column} = ?")
                values.append(value)
        assignments.append("ctime = ?")
        values.append(now)
        self._execute(
            cursor,
            f"UPDATE dittofs_inodes SET {', '.join(assignments)} WHERE fileid = ?",
            *values,
            fileid,
        )
        return WccAttributes(before, self._inode(cursor, fileid))

    def lookup(self, directory: int, name: bytes) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.lookup`."""
        return self._run(self._lookup, directory, name)

    def _lookup(self, cursor: Cursor, directory: int, name: bytes) -> Attributes:
        self._directory(cursor, directory)
        if name == b"..":
            parent = self._one(
                cursor, "SELECT parent FROM dittofs_inodes WHERE fileid = ?", directory
            )[0]
            return self._inode(cursor, parent)
        found = self._entry(cursor, directory, name)
        if found is None:
            raise NFSError(Status.NOENT)
        return found

    def create(self, directory: int, name: bytes, node: NewNode) -> Deferred[Created]:
        """See :meth:`IMetadataStore.create`."""
        return self._run(self._create, directory, name, node)

    def _create(self, cursor: Cursor, directory: int, name: bytes, node: NewNode) -> Created:
        self._dialect.lock_inodes(cursor, [directory])
        before = self._directory(cursor, directory)
        existing = self._entry(cursor, directory, name)
        now = self._clock()
        if existing is not None:
            verifier = self._one(
                cursor, "SELECT verifier FROM dittofs_inodes WHERE fileid = ?", existing.fileid
            )[0]
            rules.check_create_replay(node, existing.type, bytes(verifier))
            if node.how == CreateMode.UNCHECKED and node.attributes.size is not None:
                self._execute(
                    cursor,
                    "UPDATE dittofs_inodes SET size = ?, mtime = ?, ctime = ? WHERE fileid = ?",
                    node.attributes.size,
                    now,
                    now,
                    existing.fileid,
                )
                existing = self._inode(cursor, existing.fileid)
            return Created(existing, WccAttributes(before, before), existed=True)
        fileid = self._insert_inode(cursor, node, now, nlink=2 if node.type == FileType.DIR else 1)
        child = self._inode(cursor, fileid)
        self._add_entry(cursor, directory, name, child)
        self._touch(cursor, directory, now)
        return Created(child, WccAttributes(before, self._inode(cursor, directory)))

    def link(self, fileid: int, directory: int, name: bytes) -> Deferred[Linked]:
        """See :meth:`IMetadataStore.link`."""
        return self._run(self._link, fileid, directory, name)

    def _link(self, cursor: Cursor, fileid: int, directory: int, name: bytes) -> Linked:
        self._dialect.lock_inodes(cursor, [fileid, directory])
        node = self._inode(cursor, fileid)
        before = self._directory(cursor, directory)
        if node.type == FileType.DIR:
            raise NFSError(Status.ISDIR, "hard links to directories are not allowed")
        if self._entry(cursor, directory, name) is not None:
            raise NFSError(Status.EXIST)
        now = self._clock()
        self._add_entry(cursor, directory, name, node)
        self._execute(
            cursor,
            "UPDATE dittofs_inodes SET nlink = nlink + 1, ctime = ? WHERE fileid = ?",
            now,
            fileid,
        )
        self._touch(cursor, directory, now)
        return Linked(
            self._inode(cursor, fileid), WccAttributes(before, self._inode(cursor, directory))
        )

    def remove(self, directory: int, name: bytes, is_directory: bool) -> Deferred[Removed]:
        """See :meth:`IMetadataStore.remove`."""
        return self._run(self._remove, directory, name, is_directory)

    def _remove(self, cursor: Cursor, directory: int, name: bytes, is_directory: bool) -> Removed:
        self._dialect.lock_inodes(cursor, [directory])
        before = self._directory(cursor, directory)
        child = self._entry(cursor, directory, name)
        if child is None:
            raise NFSError(Status.NOENT)
        self._dialect.lock_inodes(cursor, [child.fileid])
        has_entries = child.type == FileType.DIR and self._has_entries(cursor, child.fileid)
        rules.check_remove(child.type, is_directory, has_entries)
        now = self._clock()
        self._drop_entry(cursor, directory, name, child)
        orphan = self._unlink(cursor, child, now)
        self._touch(cursor, directory, now)
        return Removed(WccAttributes(before, self._inode(cursor, directory)), orphan)

    def rename(
        self, source: int, source_name: bytes, target: int, target_name: bytes
    ) -> Deferred[Renamed]:
        """See :meth:`IMetadataStore.rename`."""
        return self._run(self._rename, source, source_name, target, target_name)

    def _rename(
        self, cursor: Cursor, source: int, source_name: bytes, target: int, target_name: bytes
    ) -> Renamed:
        self._dialect.lock_inodes(cursor, [source, target])
        from_before = self._directory(cursor, source)
        to_before = self._directory(cursor, target)
        moving = self._entry(cursor, source, source_name)
        if moving is None:
            raise NFSError(Status.NOENT)
        replaced = self._entry(cursor, target, target_name)
        if replaced is not None and replaced.fileid == moving.fileid:
            return Renamed(
                WccAttributes(from_before, from_before), WccAttributes(to_before, to_before), None
            )
        if moving.type == FileType.DIR and source != target:
            self._dialect.lock_namespace(cursor)
            if self._is_ancestor(cursor, moving.fileid, target):
                raise NFSError(Status.INVAL, "cannot move a directory into its own subtree")
        now = self._clock()
        orphan = None
        if replaced is not None:
            self._dialect.lock_inodes(cursor, [replaced.fileid])
            has_entries = replaced.type == FileType.DIR and self._has_entries(
                cursor, replaced.fileid
            )
            rules.check_rename_target(moving.type, replaced.type, has_entries)
            self._drop_entry(cursor, target, target_name, replaced)
            orphan = self._unlink(cursor, replaced, now)
        self._drop_entry(cursor, source, source_name, moving)
        self._add_entry(cursor, target, target_name, moving)
        self._execute(
            cursor, "UPDATE dittofs_inodes SET ctime = ? WHERE fileid = ?", now, moving.fileid
        )
        self._touch(cursor, source, now)
        self._touch(cursor, target, now)
        return Renamed(
            WccAttributes(from_before, self._inode(cursor, source)),
            WccAttributes(to_before, self._inode(cursor, target)),
            orphan,
        )

    def _is_ancestor(self, cursor: Cursor, fileid: int, directory: int) -> bool:
        node = directory
        while True:
            if node == fileid:
                return True
            parent = self._one(cursor, "SELECT parent FROM dittofs_inodes WHERE fileid = ?", node)[
                0
            ]
            if parent == node:
                return False
            node = parent

    def readdir(
        self, directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> Deferred[DirPage]:
        """See :meth:`IMetadataStore.readdir`."""
        return self._run(self._readdir, directory, cookie, max_entries, with_attributes)

    def _readdir(
        self, cursor: Cursor, directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> DirPage:
        self._directory(cursor, directory)
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
        entries = [
            DirEntry(
                row[0],
                bytes(row[1]),
                row[2],
                self._row_attributes(row[2:]) if with_attributes else None,
            )
            for row in rows[:max_entries]
        ]
        return DirPage(entries, eof=len(rows) <= max_entries)

    def readlink(self, fileid: int) -> Deferred[bytes]:
        """See :meth:`IMetadataStore.readlink`."""
        return self._run(self._readlink, fileid)

    def _readlink(self, cursor: Cursor, fileid: int) -> bytes:
        row = self._one(cursor, "SELECT type, target FROM dittofs_inodes WHERE fileid = ?", fileid)
        if row is None:
            raise NFSError(Status.STALE)
        if row[0] != FileType.LNK:
            raise NFSError(Status.INVAL, "not a symbolic link")
        return bytes(row[1])

    def record_write(self, fileid: int, end: int) -> Deferred[WccAttributes]:
        """See :meth:`IMetadataStore.record_write`."""
        return self._run(self._record_write, fileid, end)

    def _record_write(self, cursor: Cursor, fileid: int, end: int) -> WccAttributes:
        self._dialect.lock_inodes(cursor, [fileid])
        before = self._inode(cursor, fileid)
        now = self._clock()
        self._execute(
            cursor,
            "UPDATE dittofs_inodes SET size = ?, mtime = ?, ctime = ? WHERE fileid = ?",
            max(before.size, end),
            now,
            now,
            fileid,
        )
        return WccAttributes(before, self._inode(cursor, fileid))

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
