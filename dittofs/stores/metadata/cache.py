"""A metadata cache in front of any :class:`~dittofs.interfaces.IMetadataStore`.

:class:`CachedMetadataStore` is itself an ``IMetadataStore``.  It keeps, in
bounded LRU maps, what the store answered: each file's attributes, each
directory entry (and each name a LOOKUP found absent) and symlink targets;
GETATTR, LOOKUP and READLINK are served from them while they are current;
READDIR always asks the store.  Changes go to the store, and what the store
answered about them is kept.

Current means: no process changed the file since the store answered, as
told by a shared :class:`~dittofs.stores.metadata.generations.Generations`
table.  Every change is published there once committed, before it is
answered, so the next call to reach any process sharing the table (the
workers of one server, gateways over one SQLite file or one PostgreSQL or
Redis filesystem on this host) never sees what preceded it.  A store that
other hosts change too (:class:`~dittofs.interfaces.IChangeFeed`) tells of
their changes as they commit, and each is published in the table once
heard: for them, what is kept goes stale within the time a notice takes to
arrive.  While the store cannot say (its channel broke), nothing is served
from memory or kept.

A change that fails for a reason the client must hear about (``NOENT``,
``EXIST`` ...) changed nothing.  One that fails otherwise (I/O, an
unreachable database) may or may not have committed, and its files may be
unknown, so every slot of the table is moved.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from cachetools import LRUCache
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from dittofs.errors import NFSError
from dittofs.interfaces import (
    IChangeFeed,
    IHostLocal,
    IMetadataCache,
    IMetadataStore,
    IReadinessProbe,
)
from dittofs.model import (
    Attributes,
    Created,
    DirPage,
    FileCounts,
    Linked,
    MetadataCacheStatistics,
    NewNode,
    Removed,
    Renamed,
    SetAttributes,
    WccAttributes,
)
from dittofs.stores.metadata.generations import Generations, entry_key
from dittofs.vocabulary import Status

#: Entries each map keeps by default (attributes, names, symlink targets).
DEFAULT_ENTRIES = 65536

#: Failures after which a change may or may not have committed.
_UNCERTAIN = frozenset({Status.IO, Status.JUKEBOX, Status.SERVERFAULT})

T = TypeVar("T")


class _Kept(LRUCache):  # type: ignore[type-arg]
    """An LRU map of key -> (slot value, what the store said), each tied to one file's slot."""

    def fresh(self, key: Hashable, fileid: int, generations: Generations) -> Any:
        """What is kept under *key* while *fileid*'s slot still holds its tag, else None."""
        if not generations.live:
            return None
        entry = self.get(key)
        if entry is None:
            return None
        tag, value = entry
        if generations.slot(fileid) != tag:
            del self[key]
            return None
        return value


@implementer(IMetadataStore, IMetadataCache, IReadinessProbe)
class CachedMetadataStore:
    """An ``IMetadataStore`` answering from memory what it can, and *store* the rest."""

    def __init__(
        self, store: Any, table: Path | None = None, entries: int = DEFAULT_ENTRIES
    ) -> None:
        self.store = store
        self.name = store.name
        #: Where the change table is shared (None: where the store says, if it says, once
        #: open; else private to this process).
        self.table = table
        self.generations = Generations()
        #: fileid -> Attributes; (directory, name) -> fileid or absent; fileid -> target.
        self._attributes = _Kept(entries)
        self._names = _Kept(entries)
        self._targets = _Kept(entries)
        self._root: int | None = None
        self._hits = self._misses = 0

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> Deferred[None]:
        """See :meth:`IMetadataStore.open`; the change table is mapped once the store opened."""

        def share(_: None) -> None:
            feed = IChangeFeed(self.store, None)
            if self.table is None and feed is not None:
                self.table = feed.change_table()
            elif self.table is None and IHostLocal.providedBy(self.store):
                self.table = IHostLocal(self.store).change_table()
            if self.table is not None:
                self.generations = Generations(self.table)
            if feed is not None:
                self.generations.live = False
                feed.follow(self._heard, self._following, self.generations.identity)

        opened: Deferred[None] = self.store.open()
        return opened.addCallback(share)

    def _heard(self, keys: list[int] | None) -> None:
        """Another host's change (None: of anything), heard from the store's feed."""
        if keys is None:
            self.generations.publish_all()
        else:
            self.generations.heard(keys)

    def _following(self, following: bool) -> None:
        """The store's feed is heard (again), or may miss changes from now on.

        Whatever was kept before it was heard again may have changed
        meanwhile, so every slot moves before anything is served again.
        """
        if following:
            self.generations.publish_all()
        self.generations.live = following

    def close(self) -> Deferred[None]:
        """See :meth:`IMetadataStore.close`; the table is unmapped once the store closed."""

        def unmap(outcome: Any) -> Any:
            self.generations.close()
            return outcome

        result: Deferred[None] = self.store.close()
        return result.addBoth(unmap)

    def statistics(self) -> MetadataCacheStatistics:
        """See :meth:`IMetadataCache.statistics`."""
        return MetadataCacheStatistics(
            entries={
                "attributes": len(self._attributes),
                "names": len(self._names),
                "targets": len(self._targets),
            },
            hits=self._hits,
            misses=self._misses,
            following=self.generations.live,
        )

    def _served(self, value: T) -> Deferred[T]:
        """*value*, answered from memory (a hit)."""
        self._hits += 1
        return succeed(value)

    # -- reads -------------------------------------------------------------------------

    def root(self) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.root`: the root's id is learned once, then it is a GETATTR."""
        if self._root is not None:
            return self.getattr(self._root)

        def learn(attributes: Attributes) -> Attributes:
            self._root = attributes.fileid
            return attributes

        return self._read(self.store.root).addCallback(learn)

    def probe(self) -> Deferred[None]:
        """See :meth:`IReadinessProbe.probe`: the store answers (its own probe, or its root),
        never this memory, which would answer the root while the database is gone."""
        if IReadinessProbe.providedBy(self.store):
            probed: Deferred[None] = self.store.probe()
            return probed
        root: Deferred[Attributes] = self.store.root()
        return root.addCallback(lambda _: None)

    def getattr(self, fileid: int) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.getattr`."""
        kept = self._attributes.fresh(fileid, fileid, self.generations)
        if kept is not None:
            return self._served(kept)
        self._misses += 1
        return self._read(self.store.getattr, fileid)

    def lookup(self, directory: int, name: bytes) -> Deferred[Attributes]:
        """See :meth:`IMetadataStore.lookup`; an absent name is remembered too.

        A name is tied to its own slot, not its directory's, so that creating
        one name leaves the others of a busy directory current.  A name kept
        as absent is trusted only while the directory's attributes are
        current too: a directory removed since must answer ``STALE``.
        """
        if name == b"..":
            return self._read(self.store.lookup, directory, name)
        entry = entry_key(directory, name)
        fileid = self._names.fresh((directory, name), entry, self.generations)
        if fileid is _ABSENT:
            if self._attributes.fresh(directory, directory, self.generations) is not None:
                self._hits += 1
                return fail(NFSError(Status.NOENT))
        elif fileid is not None:
            kept = self._attributes.fresh(fileid, fileid, self.generations)
            if kept is not None:
                return self._served(kept)
        self._misses += 1
        start = self.generations.counter()

        def found(attributes: Attributes) -> Attributes:
            self._keep_attributes(start, attributes)
            self._keep_name(start, directory, name, attributes.fileid)
            return attributes

        def absent(reason: Failure) -> Failure:
            error = reason.value
            if isinstance(error, NFSError) and error.status == Status.NOENT:
                self._keep_name(start, directory, name, _ABSENT)
            return reason

        answer: Deferred[Attributes] = self.store.lookup(directory, name)
        return answer.addCallbacks(found, absent)

    def readdir(
        self, directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> Deferred[DirPage]:
        """See :meth:`IMetadataStore.readdir`: always the store's page.

        What it lists is not kept: that cost READDIRPLUS a quarter of its
        rate, and a client that has listed a directory asks for little more.
        """
        page: Deferred[DirPage] = self.store.readdir(
            directory, cookie, max_entries, with_attributes
        )
        return page

    def readlink(self, fileid: int) -> Deferred[bytes]:
        """See :meth:`IMetadataStore.readlink`."""
        kept = self._targets.fresh(fileid, fileid, self.generations)
        if kept is not None:
            return self._served(kept)
        self._misses += 1
        start = self.generations.counter()

        def learn(target: bytes) -> bytes:
            self._keep(self._targets, start, fileid, fileid, target)
            return target

        target: Deferred[bytes] = self.store.readlink(fileid)
        return target.addCallback(learn)

    def file_counts(self) -> Deferred[FileCounts]:
        """See :meth:`IMetadataStore.file_counts`."""
        counts: Deferred[FileCounts] = self.store.file_counts()
        return counts

    def pending_orphans(self) -> Deferred[list[int]]:
        """See :meth:`IMetadataStore.pending_orphans`."""
        orphans: Deferred[list[int]] = self.store.pending_orphans()
        return orphans

    def release_orphan(self, fileid: int) -> Deferred[None]:
        """See :meth:`IMetadataStore.release_orphan`."""
        released: Deferred[None] = self.store.release_orphan(fileid)
        return released

    # -- changes -----------------------------------------------------------------------

    def setattr(
        self, fileid: int, changes: SetAttributes, guard_ctime: int | None
    ) -> Deferred[WccAttributes]:
        """See :meth:`IMetadataStore.setattr`."""
        return self._change(
            lambda wcc: ((fileid,), [wcc.after], []),
            self.store.setattr,
            fileid,
            changes,
            guard_ctime,
        )

    def record_write(self, fileid: int, end: int) -> Deferred[WccAttributes]:
        """See :meth:`IMetadataStore.record_write`."""
        return self._change(
            lambda wcc: ((fileid,), [wcc.after], []), self.store.record_write, fileid, end
        )

    def create(self, directory: int, name: bytes, node: NewNode) -> Deferred[Created]:
        """See :meth:`IMetadataStore.create`."""
        return self._change(
            lambda created: (
                (directory, created.node.fileid),
                [created.node, created.directory.after],
                [(directory, name, created.node.fileid)],
            ),
            self.store.create,
            directory,
            name,
            node,
        )

    def link(self, fileid: int, directory: int, name: bytes) -> Deferred[Linked]:
        """See :meth:`IMetadataStore.link`."""
        return self._change(
            lambda linked: (
                (fileid, directory),
                [linked.node, linked.directory.after],
                [(directory, name, fileid)],
            ),
            self.store.link,
            fileid,
            directory,
            name,
        )

    def remove(self, directory: int, name: bytes, is_directory: bool) -> Deferred[Removed]:
        """See :meth:`IMetadataStore.remove`."""
        return self._change(
            lambda removed: (
                (directory, removed.fileid),
                [removed.directory.after],
                [(directory, name, _ABSENT)],
            ),
            self.store.remove,
            directory,
            name,
            is_directory,
        )

    def rename(
        self, source: int, source_name: bytes, target: int, target_name: bytes
    ) -> Deferred[Renamed]:
        """See :meth:`IMetadataStore.rename`."""

        def outcome(renamed: Renamed) -> _Outcome:
            changed = [source, target, renamed.moved]
            if renamed.replaced is not None:
                changed.append(renamed.replaced)
            names: list[tuple[int, bytes, object]] = [(target, target_name, renamed.moved)]
            if (source, source_name) != (target, target_name) and renamed.replaced != renamed.moved:
                names.append((source, source_name, _ABSENT))
            return changed, [renamed.source.after, renamed.target.after], names

        return self._change(outcome, self.store.rename, source, source_name, target, target_name)

    # -- keeping -----------------------------------------------------------------------

    def _read(self, ask: Callable[..., Deferred[Attributes]], *args: Any) -> Deferred[Attributes]:
        """``ask(*args)`` of the store, keeping the attributes it answers.

        The counter is read before the store is asked: a change published
        while the store is being asked must count as after the answer.
        """
        start = self.generations.counter()

        def learn(attributes: Attributes) -> Attributes:
            self._keep_attributes(start, attributes)
            return attributes

        return ask(*args).addCallback(learn)

    def _keep(self, kept: _Kept, start: int, key: Hashable, fileid: int, value: object) -> None:
        """Keep *value*, read from the store after the counter was *start*, if still current."""
        tag = self.generations.slot(fileid)
        if tag <= start and self.generations.live:
            kept[key] = (tag, value)

    def _keep_attributes(self, start: int, attributes: Attributes) -> None:
        self._keep(self._attributes, start, attributes.fileid, attributes.fileid, attributes)

    def _keep_name(self, start: int, directory: int, name: bytes, fileid: object) -> None:
        self._keep(self._names, start, (directory, name), entry_key(directory, name), fileid)

    def _change(
        self, outcome: Callable[[T], _Outcome], change: Callable[..., Deferred[T]], *args: Any
    ) -> Deferred[T]:
        """Make ``change(*args)`` in the store, publish it once answered, keep what it answered.

        *outcome* says, from the answer, which files changed, their new
        attributes, and the directory entries as they now are.  What the
        store answered is kept only for files no other process changed since
        the change was asked: the counter is read before the store is asked.

        What a change removed (a file's attributes, a name) is dropped, not
        kept as gone: files and directories that are created and removed by
        the thousand would otherwise fill the maps with what no call asks
        for again (a removed directory's names least of all).
        """
        start = self.generations.counter()
        answer = change(*args)

        def changed(result: T) -> T:
            fileids, attributes, names = outcome(result)
            fileids = list(fileids)
            entries = {
                (directory, name): entry_key(directory, name) for directory, name, _ in names
            }
            value, raced = self.generations.publish([*fileids, *entries.values()], start)
            kept: set[int] = set()
            if self.generations.live:
                for each in attributes:
                    if each.fileid not in raced:
                        self._attributes[each.fileid] = (value, each)
                        kept.add(each.fileid)
            for each_id in fileids:
                if each_id not in kept:  # stale from now on (a removed file): keep nothing
                    self._attributes.pop(each_id, None)
            if not self.generations.live:
                return result
            for directory, name, fileid in names:
                if fileid is _ABSENT:  # gone: a LOOKUP that asks will keep it absent
                    self._names.pop((directory, name), None)
                elif entries[directory, name] not in raced:
                    self._names[directory, name] = (value, fileid)
            return result

        def failed(reason: Failure) -> Failure:
            error = reason.value
            if not isinstance(error, NFSError) or error.status in _UNCERTAIN:
                self.generations.publish_all()
            return reason

        return answer.addCallbacks(changed, failed)


#: What :meth:`CachedMetadataStore._change` learns from a change: the files it
#: changed, their attributes now, and (directory, name, fileid or _ABSENT) entries.
_Outcome = tuple[Iterable[int], list[Attributes], list[tuple[int, bytes, object]]]


class _Absent:
    """The value kept for a name LOOKUP found absent."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()
