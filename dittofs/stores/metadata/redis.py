"""Redis metadata, for gateways that share one Redis server.

Layout, every key under one prefix (``dittofs:<name>:``, the name from the
URL's ``prefix`` query parameter, default ``default``):

- ``meta``: hash of ``generation`` and ``root``; ``next_fileid``: a counter
  (``INCR``), so file ids are never reused; ``files``: how many inodes exist;
  ``orphans``: a set of file ids whose content is still to be deleted.
- ``i:<fileid>``: hash of an inode's fields.
- ``d:<dir>``: hash from entry name to ``<cookie>:<fileid>``.
- ``c:<dir>``: sorted set of entry names scored by cookie, so a READDIR page
  is one ``ZRANGEBYSCORE`` from the cookie, never a rescan.

Changes are optimistic transactions: every key an operation's decision
depends on is ``WATCH``ed before it is read, the writes go in one
``MULTI``/``EXEC``, and a concurrent change by another gateway makes ``EXEC``
fail and the operation run again.  A directory move watches the whole chain
of parents it checks, so two moves can never build a cycle together.

redis-py blocks, so it runs in a bounded thread pool, never on the reactor
thread.  Durability is Redis's: see ``docs/backends.md``; on open the store
logs a warning when Redis keeps no append-only file.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis
from redis.client import Pipeline
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from dittofs import log as dittofs_log
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

log = Logger(observer=dittofs_log.observer)

T = TypeVar("T")

#: Optimistic transactions retried this often before the client is told to come back later.
MAX_RETRIES = 50
DEFAULT_THREADS = 8
MAX_FILES = 2**32

_INT_FIELDS = (
    "type",
    "mode",
    "nlink",
    "uid",
    "gid",
    "size",
    "rdev_major",
    "rdev_minor",
    "atime",
    "mtime",
    "ctime",
    "parent",
    "next_cookie",
)


def _split_url(url: str) -> tuple[str, str]:
    """Take our ``prefix`` parameter out of a Redis URL; redis-py gets the rest."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    prefix = query.pop("prefix", ["default"])[0]
    rest = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    return rest, prefix


def _parse_fields(raw: dict[bytes, bytes], fileid: int) -> dict[str, Any] | None:
    """Turn an inode hash as Redis returns it into typed fields (None if it is empty)."""
    if not raw:
        return None
    fields: dict[str, Any] = {k.decode(): v for k, v in raw.items()}
    for name in _INT_FIELDS:
        fields[name] = int(fields[name])
    fields["fileid"] = fileid
    return fields


def _attributes(fields: dict[str, Any], generation: int) -> Attributes:
    return rules.attributes(
        fileid=fields["fileid"],
        generation=generation,
        type=fields["type"],
        mode=fields["mode"],
        nlink=fields["nlink"],
        uid=fields["uid"],
        gid=fields["gid"],
        size=fields["size"],
        rdev=(fields["rdev_major"], fields["rdev_minor"]),
        atime=fields["atime"],
        mtime=fields["mtime"],
        ctime=fields["ctime"],
    )


class _Transaction:
    """One attempt of an operation: watched reads, then queued writes."""

    def __init__(self, pipe: Pipeline, prefix: bytes, generation: int) -> None:
        # redis-py types replies as unions of str and bytes; ours are always bytes.
        self.pipe: Any = pipe
        self.prefix = prefix
        self.generation = generation
        self.writing = False

    def key(self, kind: str, fileid: int | str) -> bytes:
        return self.prefix + f"{kind}:{fileid}".encode()

    def fields(self, fileid: int) -> dict[str, Any] | None:
        """Watch and read an inode's fields, or None if it does not exist."""
        key = self.key("i", fileid)
        self.pipe.watch(key)
        return _parse_fields(self.pipe.hgetall(key), fileid)

    def inode(self, fileid: int) -> Attributes:
        fields = self.fields(fileid)
        if fields is None:
            raise NFSError(Status.STALE, f"file id {fileid} does not exist")
        return self.attributes(fields)

    def attributes(self, fields: dict[str, Any]) -> Attributes:
        return _attributes(fields, self.generation)

    def directory(self, fileid: int) -> Attributes:
        attributes = self.inode(fileid)
        if attributes.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        return attributes

    def entry(self, directory: int, name: bytes) -> Attributes | None:
        """Watch and read an entry (and its inode)."""
        key = self.key("d", directory)
        self.pipe.watch(key)
        value = self.pipe.hget(key, name)
        if value is None:
            return None
        return self.inode(int(value.split(b":")[1]))

    def has_entries(self, directory: int) -> bool:
        return bool(self.pipe.hlen(self.key("d", directory)))

    def write(self) -> Any:
        """Switch from reading to queueing writes (MULTI)."""
        if not self.writing:
            self.writing = True
            self.pipe.multi()
        return self.pipe


@implementer(IMetadataStore, IMetadataInventory)
class RedisMetadataStore:
    """Metadata in Redis (``redis://host:port/db?prefix=NAME``)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        reactor: IReactorFromThreads,
        threads: int = DEFAULT_THREADS,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        client_url, prefix = _split_url(url)
        # Any: redis-py types replies as unions of str and bytes; ours are always bytes.
        self._client: Any = redis.Redis.from_url(client_url, max_connections=threads * 2)
        self._prefix = f"dittofs:{prefix}:".encode()
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="dittofs-redis")
        self._clock = clock
        self._generation = 0
        self._root = 0

    # -- plumbing ----------------------------------------------------------------------

    def _in_thread(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        def call() -> T:
            try:
                return function(*args)
            except redis.ConnectionError as error:
                raise NFSError(Status.JUKEBOX, f"redis: {error}") from error
            except redis.RedisError as error:
                raise NFSError(Status.IO, f"redis: {error}") from error

        return deferToThreadPool(self._reactor, self._pool, call)

    def _transact(self, operation: Callable[..., T], *args: Any) -> T:
        """Run *operation* until its watched reads still hold at EXEC (blocking)."""
        with self._client.pipeline(transaction=True) as pipe:
            for attempt in range(MAX_RETRIES):
                if attempt:
                    # Back off a little, at random, so gateways colliding on one directory
                    # stop colliding instead of exhausting their retries together.
                    time.sleep(random.uniform(0, min(0.0005 * 2**attempt, 0.05)))
                tx = _Transaction(pipe, self._prefix, self._generation)
                try:
                    result = operation(tx, *args)
                    if tx.writing:
                        pipe.execute()
                except redis.WatchError:
                    continue
                except NFSError:
                    # The refusal may rest on reads from different moments (an entry,
                    # then its inode already deleted by another gateway).  An empty
                    # MULTI/EXEC fails exactly when a watched key changed: then the
                    # refusal is not trustworthy and the operation runs again.
                    if not tx.writing and self._reads_changed(pipe):
                        continue
                    raise
                else:
                    return result
                finally:
                    pipe.reset()
        raise NFSError(Status.JUKEBOX, "too much contention; try again")

    @staticmethod
    def _reads_changed(pipe: Pipeline) -> bool:
        """True if a key watched by this attempt changed since it was read."""
        pipe.multi()
        try:
            pipe.execute()
        except redis.WatchError:
            return True
        return False

    def _run(self, operation: Callable[..., T], *args: Any) -> Deferred[T]:
        return self._in_thread(self._transact, operation, *args)

    def _new_inode(self, tx: _Transaction, node: NewNode, now: int, nlink: int) -> int:
        fileid = int(self._client.incr(self._prefix + b"next_fileid"))
        tx.write().incr(self._prefix + b"files")
        initial = node.attributes
        size = rules.initial_size(node)
        tx.write().hset(
            tx.key("i", fileid),
            mapping={
                "type": int(node.type),
                "mode": node.mode & MODE_MASK,
                "nlink": nlink,
                "uid": node.uid,
                "gid": node.gid,
                "size": size,
                "rdev_major": node.rdev[0],
                "rdev_minor": node.rdev[1],
                "atime": now if initial.atime is None else initial.atime,
                "mtime": now if initial.mtime is None else initial.mtime,
                "ctime": now,
                "parent": 0,
                "target": node.symlink_target,
                "verifier": node.verifier if node.how == CreateMode.EXCLUSIVE else b"",
                "next_cookie": 1,
            },
        )
        return fileid

    def _add_entry(
        self,
        tx: _Transaction,
        directory: dict[str, Any],
        name: bytes,
        fileid: int,
        child_type: FileType,
    ) -> None:
        cookie = directory["next_cookie"]
        directory["next_cookie"] += 1
        pipe = tx.write()
        pipe.hset(tx.key("i", directory["fileid"]), "next_cookie", directory["next_cookie"])
        pipe.hset(tx.key("d", directory["fileid"]), name, f"{cookie}:{fileid}".encode())
        pipe.zadd(tx.key("c", directory["fileid"]), {name: cookie})
        if child_type == FileType.DIR:
            pipe.hset(tx.key("i", fileid), "parent", directory["fileid"])
            pipe.hincrby(tx.key("i", directory["fileid"]), "nlink", 1)

    def _drop_entry(
        self, tx: _Transaction, directory: int, name: bytes, child_type: FileType
    ) -> None:
        pipe = tx.write()
        pipe.hdel(tx.key("d", directory), name)
        pipe.zrem(tx.key("c", directory), name)
        if child_type == FileType.DIR:
            pipe.hincrby(tx.key("i", directory), "nlink", -1)

    def _unlink(self, tx: _Transaction, child: Attributes, now: int) -> int | None:
        remaining = child.nlink - rules.links_lost(child.type)
        pipe = tx.write()
        if remaining <= 0:
            pipe.delete(
                tx.key("i", child.fileid), tx.key("d", child.fileid), tx.key("c", child.fileid)
            )
            pipe.decr(self._prefix + b"files")
            pipe.sadd(self._prefix + b"orphans", child.fileid)
            return child.fileid
        pipe.hset(tx.key("i", child.fileid), mapping={"nlink": remaining, "ctime": now})
        return None

    def _touch(self, tx: _Transaction, fileid: int, now: int) -> None:
        tx.write().hset(tx.key("i", fileid), mapping={"mtime": now, "ctime": now})

    @staticmethod
    def _after(before: Attributes, **changes: Any) -> Attributes:
        """The attributes a queued change will leave (EXEC has not run yet)."""
        return rules.attributes(
            fileid=before.fileid,
            generation=before.generation,
            type=before.type,
            mode=changes.get("mode", before.mode),
            nlink=changes.get("nlink", before.nlink),
            uid=changes.get("uid", before.uid),
            gid=changes.get("gid", before.gid),
            size=changes.get("size", before.size),
            rdev=before.rdev,
            atime=changes.get("atime", before.atime),
            mtime=changes.get("mtime", before.mtime),
            ctime=changes.get("ctime", before.ctime),
        )

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Create the root on first use, learn the generation; warn when Redis keeps nothing."""
        self._pool.start()

        def learn(identity: tuple[int, int]) -> None:
            self._generation, self._root = identity

        return self._in_thread(self._open).addCallback(learn)

    def _open(self) -> tuple[int, int]:
        try:
            appendonly = self._client.config_get("appendonly").get("appendonly")
        except redis.ResponseError:
            appendonly = None  # CONFIG may be disabled on managed Redis
        if appendonly == "no":
            log.warn(
                "Redis keeps no append-only file: metadata changes since its last snapshot "
                "are lost if Redis stops (see docs/backends.md)"
            )
        meta = self._prefix + b"meta"
        created = self._client.hsetnx(meta, "generation", secrets.randbits(31) + 1)
        if created:
            generation = int(self._client.hget(meta, "generation"))
            now = self._clock()

            def make_root(tx: _Transaction) -> int:
                tx.pipe.watch(meta)
                if tx.pipe.hget(meta, "root") is not None:
                    return int(tx.pipe.hget(meta, "root"))
                root = self._new_inode(
                    tx, NewNode(type=FileType.DIR, mode=rules.ROOT_MODE, uid=0, gid=0), now, 2
                )
                tx.write().hset(tx.key("i", root), "parent", root)
                tx.write().hset(meta, "root", root)
                return root

            self._generation = generation
            self._transact(make_root)
        deadline = time.monotonic() + 10
        while self._client.hget(meta, "root") is None and time.monotonic() < deadline:
            time.sleep(0.05)  # another gateway is creating the root right now
        generation = int(self._client.hget(meta, "generation"))
        root = int(self._client.hget(meta, "root"))
        return generation, root

    def close(self) -> Deferred[None]:
        """Drain the thread pool and close the connections."""
        drained = self._in_thread(self._client.close)

        def stop(result: object) -> None:
            self._pool.stop()

        return drained.addBoth(stop)

    # -- IMetadataStore -------------------------------------------------------------------

    def root(self) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.root`."""
        return self.getattr(self._root)

    def getattr(self, fileid: int) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.getattr`: one HGETALL, no transaction needed."""
        return self._in_thread(self._getattr, fileid)

    def _getattr(self, fileid: int) -> Attributes:
        fields = _parse_fields(self._client.hgetall(self._key("i", fileid)), fileid)
        if fields is None:
            raise NFSError(Status.STALE, f"file id {fileid} does not exist")
        return _attributes(fields, self._generation)

    def _key(self, kind: str, fileid: int) -> bytes:
        return self._prefix + f"{kind}:{fileid}".encode()

    def setattr(
        self, fileid: int, changes: SetAttributes, guard_ctime: int | None
    ) -> Deferred[WccAttributes]:
        """See :meth:`IMetadataStore.setattr`."""
        return self._run(self._setattr, fileid, changes, guard_ctime)

    def _setattr(
        self, tx: _Transaction, fileid: int, changes: SetAttributes, guard_ctime: int | None
    ) -> WccAttributes:
        before = tx.inode(fileid)
        if guard_ctime is not None and guard_ctime != before.ctime:
            raise NFSError(Status.NOT_SYNC)
        if changes.size is not None and before.type != FileType.REG:
            raise NFSError(Status.INVAL, "size can only be set on regular files")
        now = self._clock()
        values: dict[str, int] = {"ctime": now}
        if changes.mode is not None:
            values["mode"] = changes.mode & MODE_MASK
        for name in ("uid", "gid", "size", "atime", "mtime"):
            value = getattr(changes, name)
            if value is not None:
                values[name] = value
        if changes.size is not None and changes.mtime is None:
            values["mtime"] = now
        tx.write().hset(tx.key("i", fileid), mapping=values)
        return WccAttributes(before, self._after(before, **values))

    def lookup(self, directory: int, name: bytes) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.lookup`."""
        return self._run(self._lookup, directory, name)

    def _lookup(self, tx: _Transaction, directory: int, name: bytes) -> Attributes:
        tx.directory(directory)
        if name == b"..":
            fields = tx.fields(directory)
            assert fields is not None
            return tx.inode(fields["parent"])
        found = tx.entry(directory, name)
        if found is None:
            raise NFSError(Status.NOENT)
        return found

    def create(self, directory: int, name: bytes, node: NewNode) -> Deferred[Created]:
        """See :meth:`IMetadataStore.create`."""
        return self._run(self._create, directory, name, node)

    def _create(self, tx: _Transaction, directory: int, name: bytes, node: NewNode) -> Created:
        parent = tx.fields(directory)
        if parent is None:
            raise NFSError(Status.STALE)
        before = tx.attributes(parent)
        if before.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        existing = tx.entry(directory, name)
        now = self._clock()
        if existing is not None:
            verifier = tx.pipe.hget(tx.key("i", existing.fileid), "verifier") or b""
            rules.check_create_replay(node, existing.type, verifier)
            if node.how == CreateMode.UNCHECKED and node.attributes.size is not None:
                values = {"size": node.attributes.size, "mtime": now, "ctime": now}
                tx.write().hset(tx.key("i", existing.fileid), mapping=values)
                existing = self._after(existing, **values)
            return Created(existing, WccAttributes(before, before), existed=True)
        nlink = 2 if node.type == FileType.DIR else 1
        fileid = self._new_inode(tx, node, now, nlink)
        self._add_entry(tx, parent, name, fileid, node.type)
        self._touch(tx, directory, now)
        initial = node.attributes
        child = rules.attributes(
            fileid=fileid,
            generation=self._generation,
            type=node.type,
            mode=node.mode & MODE_MASK,
            nlink=nlink,
            uid=node.uid,
            gid=node.gid,
            size=rules.initial_size(node),
            rdev=node.rdev,
            atime=now if initial.atime is None else initial.atime,
            mtime=now if initial.mtime is None else initial.mtime,
            ctime=now,
        )
        after = self._after(
            before, nlink=before.nlink + (node.type == FileType.DIR), mtime=now, ctime=now
        )
        return Created(child, WccAttributes(before, after))

    def link(self, fileid: int, directory: int, name: bytes) -> Deferred[Linked]:
        """See :meth:`IMetadataStore.link`."""
        return self._run(self._link, fileid, directory, name)

    def _link(self, tx: _Transaction, fileid: int, directory: int, name: bytes) -> Linked:
        node = tx.inode(fileid)
        parent = tx.fields(directory)
        if parent is None:
            raise NFSError(Status.STALE)
        before = tx.attributes(parent)
        if before.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        if node.type == FileType.DIR:
            raise NFSError(Status.ISDIR, "hard links to directories are not allowed")
        if tx.entry(directory, name) is not None:
            raise NFSError(Status.EXIST)
        now = self._clock()
        self._add_entry(tx, parent, name, fileid, node.type)
        tx.write().hset(tx.key("i", fileid), mapping={"nlink": node.nlink + 1, "ctime": now})
        self._touch(tx, directory, now)
        return Linked(
            self._after(node, nlink=node.nlink + 1, ctime=now),
            WccAttributes(before, self._after(before, mtime=now, ctime=now)),
        )

    def remove(self, directory: int, name: bytes, is_directory: bool) -> Deferred[Removed]:
        """See :meth:`IMetadataStore.remove`."""
        return self._run(self._remove, directory, name, is_directory)

    def _remove(self, tx: _Transaction, directory: int, name: bytes, is_directory: bool) -> Removed:
        before = tx.directory(directory)
        child = tx.entry(directory, name)
        if child is None:
            raise NFSError(Status.NOENT)
        if child.type == FileType.DIR:
            tx.pipe.watch(tx.key("d", child.fileid))
        has_entries = child.type == FileType.DIR and tx.has_entries(child.fileid)
        rules.check_remove(child.type, is_directory, has_entries)
        now = self._clock()
        self._drop_entry(tx, directory, name, child.type)
        orphan = self._unlink(tx, child, now)
        self._touch(tx, directory, now)
        nlink = before.nlink - (child.type == FileType.DIR)
        return Removed(
            WccAttributes(before, self._after(before, nlink=nlink, mtime=now, ctime=now)), orphan
        )

    def rename(
        self, source: int, source_name: bytes, target: int, target_name: bytes
    ) -> Deferred[Renamed]:
        """See :meth:`IMetadataStore.rename`."""
        return self._run(self._rename, source, source_name, target, target_name)

    def _rename(
        self, tx: _Transaction, source: int, source_name: bytes, target: int, target_name: bytes
    ) -> Renamed:
        from_fields = tx.fields(source)
        to_fields = tx.fields(target) if target != source else from_fields
        if from_fields is None or to_fields is None:
            raise NFSError(Status.STALE)
        from_before = tx.attributes(from_fields)
        to_before = tx.attributes(to_fields)
        if from_before.type != FileType.DIR or to_before.type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        moving = tx.entry(source, source_name)
        if moving is None:
            raise NFSError(Status.NOENT)
        replaced = tx.entry(target, target_name)
        if replaced is not None and replaced.fileid == moving.fileid:
            return Renamed(
                WccAttributes(from_before, from_before), WccAttributes(to_before, to_before), None
            )
        if (
            moving.type == FileType.DIR
            and source != target
            and self._is_ancestor(tx, moving.fileid, target)
        ):
            raise NFSError(Status.INVAL, "cannot move a directory into its own subtree")
        now = self._clock()
        orphan = None
        if replaced is not None:
            if replaced.type == FileType.DIR:
                tx.pipe.watch(tx.key("d", replaced.fileid))
            has_entries = replaced.type == FileType.DIR and tx.has_entries(replaced.fileid)
            rules.check_rename_target(moving.type, replaced.type, has_entries)
            self._drop_entry(tx, target, target_name, replaced.type)
            orphan = self._unlink(tx, replaced, now)
        self._drop_entry(tx, source, source_name, moving.type)
        self._add_entry(tx, to_fields, target_name, moving.fileid, moving.type)
        tx.write().hset(tx.key("i", moving.fileid), "ctime", now)
        self._touch(tx, source, now)
        self._touch(tx, target, now)
        is_dir = moving.type == FileType.DIR
        replaced_dir = replaced is not None and replaced.type == FileType.DIR
        if source == target:
            after = self._after(
                from_before, nlink=from_before.nlink - replaced_dir, mtime=now, ctime=now
            )
            return Renamed(
                WccAttributes(from_before, after), WccAttributes(to_before, after), orphan
            )
        from_after = self._after(
            from_before, nlink=from_before.nlink - is_dir, mtime=now, ctime=now
        )
        to_after = self._after(
            to_before, nlink=to_before.nlink + is_dir - replaced_dir, mtime=now, ctime=now
        )
        return Renamed(
            WccAttributes(from_before, from_after), WccAttributes(to_before, to_after), orphan
        )

    def _is_ancestor(self, tx: _Transaction, fileid: int, directory: int) -> bool:
        """Walk (and watch) the parents of *directory*; a concurrent move then fails EXEC."""
        node = directory
        for _ in range(1_000_000):
            if node == fileid:
                return True
            fields = tx.fields(node)
            if fields is None or fields["parent"] == node:
                return False
            node = fields["parent"]
        raise NFSError(Status.IO, "directory tree too deep or cyclic")

    def readdir(
        self, directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> Deferred[DirPage]:
        """See :meth:`IMetadataStore.readdir`."""
        return self._in_thread(self._readdir, directory, cookie, max_entries, with_attributes)

    def _readdir(
        self, directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> DirPage:
        """A page in three round trips: the names from the cookie, their ids, their inodes."""
        if self._getattr(directory).type != FileType.DIR:
            raise NFSError(Status.NOTDIR)
        names = self._client.zrangebyscore(
            self._key("c", directory),
            f"({cookie}",
            "+inf",
            start=0,
            num=max_entries + 1,
            withscores=True,
        )
        shown = names[:max_entries]
        values = (
            self._client.hmget(self._key("d", directory), [name for name, _ in shown])
            if shown
            else []
        )
        found = [
            (int(score), bytes(name), int(value.split(b":")[1]))
            for (name, score), value in zip(shown, values, strict=True)
            if value is not None  # removed between the two reads: simply not listed
        ]
        inodes: list[Attributes | None] = [None] * len(found)
        if with_attributes and found:
            pipe = self._client.pipeline(transaction=False)
            for _, _, fileid in found:
                pipe.hgetall(self._key("i", fileid))
            for index, (raw, (_, _, fileid)) in enumerate(zip(pipe.execute(), found, strict=True)):
                fields = _parse_fields(raw, fileid)
                inodes[index] = None if fields is None else _attributes(fields, self._generation)
        entries = [
            DirEntry(entry_cookie, name, fileid, attributes)
            for (entry_cookie, name, fileid), attributes in zip(found, inodes, strict=True)
        ]
        return DirPage(entries, eof=len(names) <= max_entries)

    def readlink(self, fileid: int) -> Deferred[bytes]:
        """See :meth:`IMetadataStore.readlink`."""
        return self._run(self._readlink, fileid)

    def _readlink(self, tx: _Transaction, fileid: int) -> bytes:
        fields = tx.fields(fileid)
        if fields is None:
            raise NFSError(Status.STALE)
        if fields["type"] != FileType.LNK:
            raise NFSError(Status.INVAL, "not a symbolic link")
        return bytes(fields["target"])

    def record_write(self, fileid: int, end: int) -> Deferred[WccAttributes]:
        """See :meth:`IMetadataStore.record_write`."""
        return self._run(self._record_write, fileid, end)

    def _record_write(self, tx: _Transaction, fileid: int, end: int) -> WccAttributes:
        before = tx.inode(fileid)
        now = self._clock()
        values = {"size": max(before.size, end), "mtime": now, "ctime": now}
        tx.write().hset(tx.key("i", fileid), mapping=values)
        return WccAttributes(before, self._after(before, **values))

    def pending_orphans(self) -> Deferred[list[int]]:
        """See :meth:`IMetadataStore.pending_orphans`."""
        return self._in_thread(
            lambda: sorted(
                int(member) for member in self._client.smembers(self._prefix + b"orphans")
            )
        )

    def release_orphan(self, fileid: int) -> Deferred[None]:
        """See :meth:`IMetadataStore.release_orphan`."""
        return self._in_thread(self._release_orphan, fileid)

    def _release_orphan(self, fileid: int) -> None:
        self._client.srem(self._prefix + b"orphans", fileid)

    def file_counts(self) -> Deferred[FileCounts]:
        """See :meth:`IMetadataStore.file_counts`: a counter kept with every create and delete."""
        return self._in_thread(self._file_counts)

    def _file_counts(self) -> FileCounts:
        files = int(self._client.get(self._prefix + b"files") or 0)
        return FileCounts(files, MAX_FILES - files)

    # -- IMetadataInventory --------------------------------------------------------------

    def inventory(self) -> Deferred[Inventory]:
        """See :meth:`IMetadataInventory.inventory` (SCAN: safe on a live Redis)."""
        return self._in_thread(self._inventory)

    def _inventory(self) -> Inventory:
        inodes: dict[int, InodeRecord] = {}
        entries: list[tuple[int, bytes, int]] = []
        for key in self._client.scan_iter(match=self._prefix + b"i:*", count=1000):
            fileid = int(key[len(self._prefix) + 2 :])
            type_, nlink, parent = self._client.hmget(key, "type", "nlink", "parent")
            if type_ is not None:
                inodes[fileid] = InodeRecord(fileid, FileType(int(type_)), int(nlink), int(parent))
        for key in self._client.scan_iter(match=self._prefix + b"d:*", count=1000):
            directory = int(key[len(self._prefix) + 2 :])
            for name, value in self._client.hscan_iter(key, count=1000):
                entries.append((directory, bytes(name), int(value.split(b":")[1])))
        return Inventory(self._root, inodes, entries)

    def repair(self, repairs: list[Repair]) -> Deferred[None]:
        """See :meth:`IMetadataInventory.repair`: one MULTI/EXEC for all of them."""
        return self._in_thread(self._repair, repairs)

    def _repair(self, repairs: list[Repair]) -> None:
        pipe = self._client.pipeline(transaction=True)
        for repair in repairs:
            inode = self._key("i", repair.fileid)
            if repair.action == "drop-inode":
                pipe.delete(inode, self._key("d", repair.fileid), self._key("c", repair.fileid))
                pipe.decr(self._prefix + b"files")
            elif repair.action == "nlink":
                pipe.hset(inode, "nlink", repair.value)
            elif repair.action == "parent":
                pipe.hset(inode, "parent", repair.value)
            elif repair.action == "drop-entry":
                pipe.hdel(self._key("d", repair.fileid), repair.name)
                pipe.zrem(self._key("c", repair.fileid), repair.name)
        pipe.execute()
