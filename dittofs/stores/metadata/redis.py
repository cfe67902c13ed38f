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
- ``s:<fileid>``: a file's block map (:class:`~dittofs.interfaces.IBlockMaps`),
  a sorted set of slices scored by block, each member
  ``<seq, 20 digits>:<offset>:<length>:<start>:<key>``, so the members of one
  block sort oldest first; ``n:<fileid>``: its content length; ``next_seq``
  hands out ``seq``; ``objects`` is the sorted set (all scores 0) of every
  key a slice names, listed by ``ZRANGEBYLEX``.

Changes are optimistic transactions: every key an operation's decision
depends on is ``WATCH``ed before it is read, the writes go in one
``MULTI``/``EXEC``, and a concurrent change by another gateway makes ``EXEC``
fail and the operation run again.  A directory move watches the whole chain
of parents it checks, so two moves can never build a cycle together.  The
same ``EXEC`` publishes a notice of what the change wrote on the channel
``changes`` (under the prefix), which every gateway's
:class:`~dittofs.interfaces.IChangeFeed` hears.

redis-py blocks, so it runs in a bounded thread pool, never on the reactor
thread.  Durability is Redis's: see ``docs/backends.md``; on open the store
logs a warning when Redis keeps no append-only file.
"""

from __future__ import annotations

import random
import secrets
import socket
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis
from redis.client import Pipeline
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from dittofs import log as dittofs_log
from dittofs.errors import NFSError
from dittofs.interfaces import IBlockMaps, IChangeFeed, IMetadataInventory, IMetadataStore
from dittofs.model import (
    Attributes,
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
from dittofs.stores.metadata import blockmap, feed, namespace
from dittofs.stores.metadata.namespace import Inode, Namespace, NamespaceStore
from dittofs.vocabulary import FileType, Status

log = Logger(observer=dittofs_log.observer)

T = TypeVar("T")

#: The feed's connection's TCP keepalives (idle, interval, count): a Redis gone
#: silent is noticed in about 20 seconds, and the caches stop trusting what they kept.
KEEPALIVES = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 3, socket.TCP_KEEPCNT: 3}

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


def _slice_member(piece: Slice, seq: int) -> bytes:
    """A slice as a member of its file's map (the block is its score)."""
    return f"{seq:020d}:{piece.offset}:{piece.length}:{piece.start}:{piece.key}".encode()


def _slice(member: bytes, block: float) -> Slice:
    """A slice from a member of its file's map and its score."""
    seq, offset, length, start, key = member.decode().split(":", 4)
    return Slice(int(block), int(offset), int(length), key, int(start), int(seq))


def _inode(fields: dict[str, Any]) -> Inode:
    """An inode from its parsed hash."""
    return Inode(
        fields["fileid"], FileType(fields["type"]), fields["mode"], fields["nlink"],
        fields["uid"], fields["gid"], fields["size"],
        (fields["rdev_major"], fields["rdev_minor"]), fields["atime"], fields["mtime"],
        fields["ctime"], fields["parent"],
    )  # fmt: skip


class _Transaction:
    """The namespace's primitives as one attempt of an optimistic Redis transaction.

    Every key a decision rests on is ``WATCH``ed when it is first read; the
    first write starts ``MULTI`` and the writes are queued for ``EXEC``.  The
    namespace reads nothing new after its first write, and what it reads
    again (an inode it changed) comes from the fields this attempt has read
    and written, which are what ``EXEC`` will leave unless a watched key
    changes, in which case the whole attempt runs again.
    """

    def __init__(self, client: Any, pipe: Pipeline, prefix: bytes) -> None:
        # redis-py types replies as unions of str and bytes; ours are always bytes.
        self.client = client
        self.pipe: Any = pipe
        self.prefix = prefix
        self.writing = False
        #: Inodes read or written by this attempt (None: there is none, or it went).
        self._inodes: dict[int, dict[str, Any] | None] = {}

    def key(self, kind: str, fileid: int | str) -> bytes:
        return self.prefix + f"{kind}:{fileid}".encode()

    def _watch(self, key: bytes) -> None:
        assert not self.writing, "the namespace read something new after its first write"
        self.pipe.watch(key)

    def queue(self) -> Any:
        """The pipeline, queueing writes (MULTI) from the first one on."""
        if not self.writing:
            self.writing = True
            self.pipe.multi()
        return self.pipe

    def _fields(self, fileid: int) -> dict[str, Any] | None:
        if fileid not in self._inodes:
            key = self.key("i", fileid)
            self._watch(key)
            self._inodes[fileid] = _parse_fields(self.pipe.hgetall(key), fileid)
        return self._inodes[fileid]

    def lock(self, *fileids: int) -> None:
        pass  # each key is watched as it is read

    def lock_namespace(self) -> None:
        pass  # the ancestor walk watches every parent it reads

    def read(self, fileid: int) -> Inode | None:
        fields = self._fields(fileid)
        return None if fields is None else _inode(fields)

    def find(self, directory: int, name: bytes) -> Inode | None:
        key = self.key("d", directory)
        self._watch(key)
        value = self.pipe.hget(key, name)
        # An entry whose inode is gone was removed meanwhile: a watched key changed,
        # and the attempt runs again.
        return None if value is None else self.read(int(value.split(b":")[1]))

    def is_empty(self, directory: int) -> bool:
        key = self.key("d", directory)
        self._watch(key)
        return not self.pipe.hlen(key)

    def verifier(self, fileid: int) -> bytes:
        fields = self._fields(fileid)
        assert fields is not None
        return bytes(fields.get("verifier", b""))

    def target(self, fileid: int) -> bytes:
        fields = self._fields(fileid)
        assert fields is not None
        return bytes(fields.get("target", b""))

    def insert(self, inode: Inode, target: bytes, verifier: bytes) -> int:
        fileid = int(self.client.incr(self.prefix + b"next_fileid"))
        fields: dict[str, Any] = {
            "type": int(inode.type), "mode": inode.mode, "nlink": inode.nlink,
            "uid": inode.uid, "gid": inode.gid, "size": inode.size,
            "rdev_major": inode.rdev[0], "rdev_minor": inode.rdev[1], "atime": inode.atime,
            "mtime": inode.mtime, "ctime": inode.ctime, "parent": inode.parent,
            "target": target, "verifier": verifier, "next_cookie": 1,
        }  # fmt: skip
        pipe = self.queue()
        pipe.hset(self.key("i", fileid), mapping=fields)
        pipe.incr(self.prefix + b"files")
        self._inodes[fileid] = {**fields, "fileid": fileid}
        return fileid

    def write(self, fileid: int, **fields: int) -> None:
        known = self._inodes[fileid]
        assert known is not None, "written before it was read"
        known.update(fields)
        self.queue().hset(self.key("i", fileid), mapping=fields)

    def add_entry(self, directory: int, name: bytes, fileid: int) -> None:
        known = self._inodes[directory]
        assert known is not None, "a directory is read before an entry is added"
        cookie = known["next_cookie"]
        known["next_cookie"] = cookie + 1
        pipe = self.queue()
        pipe.hset(self.key("i", directory), "next_cookie", cookie + 1)
        pipe.hset(self.key("d", directory), name, f"{cookie}:{fileid}".encode())
        pipe.zadd(self.key("c", directory), {name: cookie})

    def drop_entry(self, directory: int, name: bytes) -> None:
        pipe = self.queue()
        pipe.hdel(self.key("d", directory), name)
        pipe.zrem(self.key("c", directory), name)

    def delete(self, fileid: int) -> None:
        self._inodes[fileid] = None
        pipe = self.queue()
        pipe.delete(self.key("i", fileid), self.key("d", fileid), self.key("c", fileid))
        pipe.decr(self.prefix + b"files")

    def journal_orphan(self, fileid: int) -> None:
        self.queue().sadd(self.prefix + b"orphans", fileid)


@implementer(IMetadataStore, IMetadataInventory, IBlockMaps, IChangeFeed)
class RedisMetadataStore(feed.Feeding, NamespaceStore):
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
        self._client_url = client_url
        # Any: redis-py types replies as unions of str and bytes; ours are always bytes.
        self._client: Any = redis.Redis.from_url(client_url, max_connections=threads * 2)
        self._prefix = f"dittofs:{prefix}:".encode()
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="dittofs-redis")
        self._clock = clock
        self._namespace = Namespace(0, clock)
        self._root = 0
        self._channel = self._prefix + b"changes"
        self._origin = feed.new_origin()

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
                tx = _Transaction(self._client, pipe, self._prefix)
                noting = feed.Noting(tx)
                try:
                    result = operation(noting, *args)
                    if tx.writing:
                        if noting.keys:
                            pipe.publish(self._channel, feed.notice(self._origin, noting.keys))
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

    def _in_transaction(self, operation: Callable[..., T], *args: Any) -> Deferred[T]:
        return self._in_thread(self._transact, operation, *args)

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """Create the root on first use, learn the generation; warn when Redis keeps nothing."""
        self._pool.start()

        def learn(identity: tuple[int, int]) -> None:
            generation, self._root = identity
            self._namespace = Namespace(generation, self._clock)

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

            def make_root(tx: _Transaction) -> int:
                tx.pipe.watch(meta)
                if tx.pipe.hget(meta, "root") is not None:
                    return int(tx.pipe.hget(meta, "root"))
                root = self._namespace.make_root(tx)
                tx.pipe.hset(meta, "root", root)  # queued after MULTI, with the root's inode
                return root

            self._transact(make_root)
        deadline = time.monotonic() + 10
        while self._client.hget(meta, "root") is None and time.monotonic() < deadline:
            time.sleep(0.05)  # another gateway is creating the root right now
        generation = int(self._client.hget(meta, "generation"))
        root = int(self._client.hget(meta, "root"))
        return generation, root

    def close(self) -> Deferred[None]:
        """Stop listening, drain the thread pool and close the connections."""
        self._stop_following()
        drained = self._in_thread(self._client.close)

        def stop(result: object) -> None:
            self._pool.stop()

        return drained.addBoth(stop)

    # -- IChangeFeed -------------------------------------------------------------------

    def _listen(self) -> Generator[str | None]:
        """See :data:`feed.Listen`: ``SUBSCRIBE`` on a connection of its own.

        redis-py reconnects a broken subscription by itself and subscribes
        again, silently: what was published meanwhile is lost.  So a second
        subscription confirmation counts as a broken channel.
        """
        client = redis.Redis.from_url(
            self._client_url, socket_keepalive=True, socket_keepalive_options=KEEPALIVES
        )
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self._channel)
            subscribed = False
            while True:
                message = pubsub.get_message(timeout=feed.POLL)
                if message is None:
                    if subscribed:
                        yield None
                elif message["type"] == "subscribe":
                    if subscribed:
                        raise redis.ConnectionError("subscribed again: notices may be lost")
                    subscribed = True
                    yield None
                elif message["type"] == "message":
                    yield bytes(message["data"]).decode()
        finally:
            pubsub.close()
            client.close()

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
        return namespace.attributes(_inode(fields), self._namespace.generation)

    def _key(self, kind: str, fileid: int) -> bytes:
        return self._prefix + f"{kind}:{fileid}".encode()

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
        generation = self._namespace.generation
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
                if fields is not None:
                    inodes[index] = namespace.attributes(_inode(fields), generation)
        entries = [
            DirEntry(entry_cookie, name, fileid, attributes)
            for (entry_cookie, name, fileid), attributes in zip(found, inodes, strict=True)
        ]
        return DirPage(entries, eof=len(names) <= max_entries)

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

    # -- IBlockMaps ----------------------------------------------------------------------

    def block_slices(self, fileid: int, first: int, last: int) -> Deferred[BlockMap]:
        """See :meth:`IBlockMaps.block_slices`: one round trip, in one MULTI."""
        return self._in_thread(self._block_slices, fileid, first, last)

    def _block_slices(self, fileid: int, first: int, last: int) -> BlockMap:
        pipe = self._client.pipeline(transaction=True)
        pipe.get(self._key("n", fileid))
        pipe.zrangebyscore(self._key("s", fileid), first, last, withscores=True)
        length, found = pipe.execute()
        slices = tuple(_slice(member, block) for member, block in found)
        return BlockMap(int(length or 0), slices)

    def change_blocks(
        self, fileid: int, add: Sequence[Slice], drop_from: int | None, length: int
    ) -> Deferred[BlockChange]:
        """See :meth:`IBlockMaps.change_blocks`: the file's map watched, the change one EXEC."""
        try:
            blockmap.check_change(add, length)
        except NFSError:
            return fail()
        return self._in_thread(self._transact, self._change_blocks, fileid, add, drop_from, length)

    def _change_blocks(
        self,
        tx: _Transaction,
        fileid: int,
        add: Sequence[Slice],
        drop_from: int | None,
        length: int,
    ) -> BlockChange:
        key, length_key = tx.key("s", fileid), tx.key("n", fileid)
        tx.pipe.watch(key, length_key)
        dropped: list[str] = []
        if drop_from is not None:
            members = tx.pipe.zrangebyscore(key, drop_from, "+inf", withscores=True)
            dropped = [_slice(member, block).key for member, block in members]
        old = int(tx.pipe.get(length_key) or 0)
        # Handed out after the watch: a change committed before this one has lower numbers,
        # and one committed in between makes this attempt run again with new ones.
        last = int(self._client.incrby(self._prefix + b"next_seq", len(add))) if add else 0
        seqs = tuple(range(last - len(add) + 1, last + 1))
        orphaned = blockmap.orphaned(dropped, add)
        pipe = tx.queue()
        if drop_from is not None:
            pipe.zremrangebyscore(key, drop_from, "+inf")
        if add:
            members = {_slice_member(p, seq): p.block for p, seq in zip(add, seqs, strict=True)}
            pipe.zadd(key, members)
            named = {piece.key: 0 for piece in add if piece.key}
            if named:
                pipe.zadd(self._prefix + b"objects", named)
        if orphaned:
            pipe.zrem(self._prefix + b"objects", *orphaned)
        if blockmap.forgets(add, drop_from, length):
            pipe.delete(length_key)
        else:
            pipe.set(length_key, blockmap.new_length(old, drop_from, length))
        return BlockChange(seqs, orphaned)

    def object_keys(self, after: str, limit: int) -> Deferred[list[str]]:
        """See :meth:`IBlockMaps.object_keys`: one ``ZRANGEBYLEX``."""
        return self._in_thread(self._object_keys, after, limit)

    def _object_keys(self, after: str, limit: int) -> list[str]:
        keys = self._client.zrangebylex(
            self._prefix + b"objects", b"(" + after.encode(), b"+", start=0, num=limit
        )
        return [key.decode() for key in keys]

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
