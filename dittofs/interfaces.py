"""The two contracts that decouple DittoFS's metadata from its content.

Any :class:`IMetadataStore` pairs with any :class:`IContentStore`.  Every
method returns a ``Deferred`` (a synchronous store returns an already-fired
one, which costs no thread hop); failures the client must hear about arrive
as :class:`~dittofs.errors.NFSError` with the RFC 1813 status named in each
method's documentation.  Any other exception becomes ``NFS3ERR_IO`` (or
``NFS3ERR_JUKEBOX`` when it is a :class:`~dittofs.errors.NFSError` saying so)
and is logged.

The metadata contract is shaped for transactional backends: each method that
touches several records (create, link, remove, rename) is one atomic
operation, so a SQL store runs it in one transaction and a Redis store in one
script, and no caller ever composes two calls that must be atomic together.

File ids are positive integers, never reused within one store, and 1 is not
special (the root is whatever :meth:`IMetadataStore.root` says).  The content
store keys a file's bytes by that file id.

Stores are found by :class:`IStoreFactory` plugins, so a store in a package of
its own is used as DittoFS's own are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IReactorFromThreads

    from dittofs.model import (
        Attributes,
        BlockChange,
        BlockMap,
        CacheStatistics,
        ContentCheck,
        Created,
        DirPage,
        FileCounts,
        FileRegion,
        Inventory,
        Linked,
        MetadataCacheStatistics,
        NewNode,
        Removed,
        Renamed,
        Repair,
        SetAttributes,
        Slice,
        SpaceUsage,
        WccAttributes,
    )
    from dittofs.progress import Phases

# Methods in a zope Interface take no ``self``; these signatures document the
# contract that implementations (verified with ``verifyObject``) must follow.


class IMetadataStore(Interface):
    """Attributes, directory entries and the namespace of one filesystem."""

    name = Attribute("A short name for logs and metrics, e.g. 'memory' or 'sqlite'.")

    def open() -> Deferred[None]:
        """Prepare the store (connect, apply schema, create the root if missing).

        Returns a Deferred that fires with None.
        """

    def close() -> Deferred[None]:
        """Flush and release resources.  Returns a Deferred firing with None."""

    def root() -> Deferred[Attributes]:
        """Return a Deferred of the root directory's ``Attributes``."""

    def getattr(fileid: int) -> Deferred[Attributes]:
        """Return a Deferred of a file's ``Attributes``; ``STALE`` if it does not exist."""

    def setattr(
        fileid: int, changes: SetAttributes, guard_ctime: int | None
    ) -> Deferred[WccAttributes]:
        """Apply ``SetAttributes`` *changes*; return a Deferred of ``WccAttributes``.

        With *guard_ctime* set, fail with ``NOT_SYNC`` unless the file's ctime
        equals it.  A size change sets mtime; any change sets ctime.  The
        content store is resized by the caller, not here.  ``STALE`` if the
        file is gone; ``INVAL`` for a size on a non-regular file.
        """

    def lookup(directory: int, name: bytes) -> Deferred[Attributes]:
        """Return a Deferred of the ``Attributes`` of *name* in *directory*.

        *name* may be ``b".."`` (the parent; the root is its own parent).
        ``NOENT`` if absent, ``NOTDIR`` if *directory* is not one, ``STALE``
        if it is gone.
        """

    def create(directory: int, name: bytes, node: NewNode) -> Deferred[Created]:
        """Create ``NewNode`` *node* as *name*; return a Deferred of ``Created``.

        One atomic step.  ``EXIST`` if *name* exists, except: for
        ``CreateMode.UNCHECKED`` an existing regular file is returned
        (``existed=True``, its size set to ``node.attributes.size`` if given);
        for ``CreateMode.EXCLUSIVE`` an existing file created with the same
        verifier is returned.  The new node's nlink is 1 (2 for a directory,
        whose parent's nlink grows by one).
        """

    def link(fileid: int, directory: int, name: bytes) -> Deferred[Linked]:
        """Add hard link *name* to non-directory *fileid*; Deferred of ``Linked``.

        ``EXIST`` if *name* exists; ``ISDIR`` if *fileid* is a directory.
        """

    def remove(directory: int, name: bytes, is_directory: bool) -> Deferred[Removed]:
        """Remove *name*; return a Deferred of ``Removed``.

        With *is_directory* false (REMOVE) a directory gives ``ISDIR``; with
        it true (RMDIR) a non-directory gives ``NOTDIR`` and a non-empty
        directory ``NOTEMPTY``.
        """

    def rename(
        source: int, source_name: bytes, target: int, target_name: bytes
    ) -> Deferred[Renamed]:
        """Atomically move an entry, replacing a compatible existing target.

        Returns a Deferred of ``Renamed``.  ``NOENT`` if the source name is
        missing; ``INVAL`` when moving a directory into its own subtree;
        ``ISDIR``/``NOTDIR`` when the target's type does not match;
        ``NOTEMPTY`` for a non-empty target directory.  Renaming a name onto
        another link of the same file does nothing, as POSIX says.
        """

    def readdir(
        directory: int, cookie: int, max_entries: int, with_attributes: bool
    ) -> Deferred[DirPage]:
        """Return a Deferred of a ``DirPage`` of entries after *cookie*.

        Cookie 0 starts the listing.  Entry cookies are positive, strictly
        increasing in listing order, and stay valid while entries are added
        or removed, so paging never rescans from the start.  ``.`` and ``..``
        are not included (the NFS layer adds them).  ``NOTDIR`` for a
        non-directory.
        """

    def readlink(fileid: int) -> Deferred[bytes]:
        """Return a Deferred of a symlink's target bytes; ``INVAL`` if not a symlink."""

    def record_write(fileid: int, end: int) -> Deferred[WccAttributes]:
        """Note that bytes up to offset *end* were written; Deferred of ``WccAttributes``.

        Grows the size to *end* if it is smaller and sets mtime and ctime.
        """

    def file_counts() -> Deferred[FileCounts]:
        """Return a Deferred of ``FileCounts`` for FSSTAT."""

    def pending_orphans() -> Deferred[list[int]]:
        """File ids whose last link went (``Removed.orphan``/``Renamed.orphan``) but whose
        content has not been released yet.

        A store records the orphan in the same atomic step that removes the
        last link, so a crash before the content is deleted leaves a note
        rather than content nobody owns; the server deletes the content of
        every pending orphan when it opens the stores.
        """

    def release_orphan(fileid: int) -> Deferred[None]:
        """Forget a pending orphan once its content is gone (unknown ids are ignored)."""


class IContentStore(Interface):
    """The bytes of regular files, keyed by file id."""

    name = Attribute("A short name for logs and metrics, e.g. 'memory' or 'fs'.")

    def open() -> Deferred[None]:
        """Prepare the store.  Returns a Deferred firing with None."""

    def close() -> Deferred[None]:
        """Make everything durable and release resources.  Deferred of None."""

    def read(fileid: int, offset: int, count: int) -> Deferred[bytes]:
        """Return a Deferred of at most *count* bytes from *offset*.

        Fewer bytes only at the end of the stored content; holes read as
        zeros; a file never written reads as empty.  Stored content may end
        before the file's size in metadata (after a truncate that extends):
        the caller reads that tail as zeros.
        """

    def write(fileid: int, offset: int, data: bytes | memoryview, stable: bool) -> Deferred[None]:
        """Write *data* at *offset*, extending with zeros as needed.

        With *stable*, the Deferred fires only once the data (and the size
        change) would survive a crash of the server; otherwise as soon as a
        later :meth:`commit` will be able to make it durable.
        """

    def truncate(fileid: int, size: int) -> Deferred[None]:
        """Discard content beyond *size*.

        Extending needs no allocation: reads past the stored end are zeros.
        A store may still record the new length (a sparse file) if it likes.
        """

    def delete(fileid: int) -> Deferred[None]:
        """Forget a file's content; deleting absent content is not an error."""

    def commit(fileid: int) -> Deferred[None]:
        """Make every earlier write to *fileid* durable; Deferred of None."""

    def space() -> Deferred[SpaceUsage]:
        """Return a Deferred of ``SpaceUsage`` for FSSTAT."""


class IMetadataInventory(Interface):
    """Optional: lets ``dittofs fsck`` read a whole metadata store and repair it.

    Meant for a store no gateway is serving at the time.
    """

    def inventory() -> Deferred[Inventory]:
        """Return a Deferred of every inode and every directory entry."""

    def repair(repairs: list[Repair]) -> Deferred[None]:
        """Apply ``Repair`` changes, all in one transaction where the store has them."""


class IBlockMaps(Interface):
    """Optional, on a metadata store: which content objects hold each block of each file.

    A content store that writes immutable objects (the S3 store) records here
    which objects make up each file, so that every gateway sharing the
    metadata store reads one map, changed atomically, whatever gateway wrote.
    The map is a content length and a list of :class:`~dittofs.model.Slice`
    per block; the content store chooses the block size and names the
    objects.  A file never mapped has length 0 and no slices.  An object key names
    slices of one block of one file only (the content store names each object
    it writes anew), so dropping a block's slices tells exactly which objects
    nothing names any more.
    """

    def block_slices(fileid: int, first: int, last: int) -> Deferred[BlockMap]:
        """Return a Deferred of the length and the slices of blocks *first* to *last*.

        Both ends are included; slices are ordered by block, then oldest first
        (``seq``).  What it reads grows with the slices of those blocks,
        never with the size of the file.
        """

    def change_blocks(
        fileid: int, add: Sequence[Slice], drop_from: int | None, length: int
    ) -> Deferred[BlockChange]:
        """Change a file's map in one atomic step; return a Deferred of ``BlockChange``.

        First every slice of blocks *drop_from* and above goes (when
        *drop_from* is not None), then each slice of *add* is added with a
        ``seq`` higher than any slice of *fileid* ever had, in order.  The
        length becomes *length* when *drop_from* is given (a truncate), else
        the larger of *length* and the old one (a write, or a truncate that
        extends).  A change that leaves no slice and length 0 forgets the
        file.  The changes of one file are serialised across every gateway,
        so a higher ``seq`` was committed later.  ``INVAL`` for a slice with a
        negative field or no length, or a negative *length*.
        """

    def object_keys(after: str, limit: int) -> Deferred[list[str]]:
        """Return a Deferred of the object keys some slice names, each once, in order.

        At most *limit* keys greater than *after*, in the order of their UTF-8
        bytes (the order in which S3 lists keys), so a collector can walk the
        map beside a bucket listing with bounded memory.
        """


class IHostLocal(Interface):
    """Optional, on a metadata store: only processes on this host change it.

    A metadata cache (:mod:`dittofs.stores.metadata.cache`) may then stand in
    front of it: every process that opens the store maps one change table,
    through which each learns at once what the others changed.  A store
    other hosts change too (PostgreSQL, Redis) does not provide this.
    """

    def change_table() -> Path:
        """The file of the change table, beside the store's own files."""


class IChangeFeed(Interface):
    """Optional, on a metadata store other hosts change too: it tells of every change committed.

    Each change commits with a notice, in the same transaction, of the file
    ids and entry keys
    (:func:`~dittofs.stores.metadata.generations.entry_key`) it wrote; the
    store hears the notices of every other process through the database's
    own channel (PostgreSQL ``LISTEN``/``NOTIFY``, Redis pub/sub).  A
    metadata cache follows the feed, so what it keeps goes stale as soon as
    a notice arrives: a bound, not the strict coherence of
    :class:`IHostLocal`.
    """

    def change_table() -> Path:
        """The change table the processes of this host share for this filesystem (once open)."""

    def follow(
        changed: Callable[[list[int] | None], None],
        following: Callable[[bool], None],
        origin: str,
    ) -> None:
        """Hear other processes' changes from now until the store closes.

        *origin* names this process's change table in the notices this store
        sends from now on; notices carrying it are not heard, since the
        processes that share the table publish their changes there at once.

        ``changed(keys)`` is called, from a thread of the store's own, with
        the keys of each change another process committed, once that change
        is committed (None: it wrote too much to name, every key may have
        changed); ``following(True)`` once notices are heard (before the
        first ``changed``), and ``following(False)`` whenever they may be
        missed (the channel's connection broke; the store reconnects, then
        says ``following(True)`` again).
        """


class IBlockMapUser(Interface):
    """Optional, on a content store: it keeps its block maps in the export's metadata store.

    The server hands it the metadata store (which must provide
    :class:`IBlockMaps`) before opening either.
    """

    def use_block_maps(maps: IBlockMaps) -> None:
        """Keep block maps in *maps* (called once, before :meth:`IContentStore.open`)."""


class IFileRegions(IContentStore):
    """Optional: a content store whose bytes are in local files lends regions of them.

    The server sends a large READ's data from the region with ``sendfile``,
    so the bytes never pass through Python.  It extends the content contract,
    so that metrics and tracing, which wrap a store's contract, count it too.
    """

    def read_lent(fileid: int, offset: int, count: int) -> Deferred[bytes | FileRegion]:
        """As :meth:`IContentStore.read`, but the bytes may come as a region of a file.

        A region is *count* bytes long; where its file ends first, the rest
        reads as zeros (as a sparse tail does).  The caller owns it and
        closes it.  A store lends only what it can lend as it stands (a file
        already open, a block already cached), and reads the rest.
        """


class IContentInventory(Interface):
    """Optional: lets ``dittofs fsck`` find content that no file owns."""

    def content_ids() -> Deferred[list[int]]:
        """Return a Deferred of the file ids that have stored content."""


class IContentCheck(Interface):
    """Optional: lets ``dittofs fsck`` check a content store's own records against its data.

    For stores that keep a map of where content is (the S3 store's block maps
    and block objects).  Meant for a store no gateway is serving.
    """

    def check_content(progress: Phases) -> Deferred[ContentCheck]:
        """Return a Deferred of a ``ContentCheck``; *progress* hears of each phase."""


class IReadinessProbe(Interface):
    """Optional: lets ``/ready`` ask a store whether its backing service answers now.

    For stores whose ordinary calls can succeed without that service (an S3
    store answers from its cache); other stores are probed with an ordinary
    call.
    """

    def probe() -> Deferred[None]:
        """Return a Deferred that fires with None if the service answers, else fails."""


class ICacheStatistics(Interface):
    """Optional: a content store with a local cache reports it to the metrics endpoint."""

    def cache_statistics() -> CacheStatistics:
        """Return the cache's figures now (cheap and non-blocking: called on each scrape)."""


class IMetadataCache(Interface):
    """Optional: a metadata store that keeps answers in memory reports it to the metrics."""

    def statistics() -> MetadataCacheStatistics:
        """Return the cache's figures now (cheap and non-blocking: called on each scrape)."""


class IStoreFactory(Interface):
    """Builds a store from the specification a user writes (``--metadata``, ``--content``).

    DittoFS finds store factories as Twisted plugins, the way
    ``twisted.cred.strcred`` finds checker factories: an object that provides
    this interface and ``twisted.plugin.IPlugin``, in a module of a
    ``twisted/plugins/`` directory of any installed package.  The scheme,
    the part of a specification before its first colon, picks the factory.
    Importing the plugin module must be cheap: import the store's own
    module (and its libraries) in :meth:`build`.
    """

    role = Attribute("'metadata' (an IMetadataStore) or 'content' (an IContentStore).")
    schemes = Attribute("The schemes it answers to, lower case; the first is its name.")
    usage = Attribute("How a specification is written, for --help: 'sqlite[:PATH]'.")
    description = Attribute("One line saying what the store keeps where, for --help.")

    def check(spec: str) -> None:
        """Raise :class:`~dittofs.stores.StoreSpecError` (one line) if *spec* cannot work.

        Nothing is built, opened or connected: this runs while options are
        parsed, so a typo is a usage error before anything starts.
        """

    def where(spec: str, data_dir: Path) -> str | None:
        """Where the store keeps its data (a file, a URL), for the log; None when nowhere.

        The caller hides passwords in what this returns.
        """

    def build(spec: str, data_dir: Path, reactor: IReactorFromThreads) -> Any:
        """The store *spec* names, not yet opened; *data_dir* is the server's data directory.

        Raise :class:`~dittofs.stores.StoreSpecError` when a library the
        store needs is not installed.
        """
