"""Exports: a path clients mount, bound to one metadata store and one content store.

MOUNT and NFS share one :class:`ExportTable` (and so one pair of stores per
export), the way ``twisted.mail.tap`` lets several servers share their
non-network state.  The export id travels inside every file handle, so a
handle is resolved to its export without any lookup by path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import attrs
from twisted.internet.defer import Deferred, DeferredList, FirstError, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from dittofs import log as dittofs_log
from dittofs.errors import NFSError
from dittofs.interfaces import IContentStore, IMetadataStore
from dittofs.model import Attributes
from dittofs.nfs3.handle import FileHandle
from dittofs.policy import AccessPolicy
from dittofs.vocabulary import Status

log = Logger(observer=dittofs_log.observer)


@attrs.define
class Export:
    """One exported filesystem."""

    export_id: int
    path: bytes
    metadata: IMetadataStore
    content: IContentStore
    policy: AccessPolicy = attrs.field(factory=AccessPolicy)
    root: Attributes | None = None

    @property
    def fsid(self) -> int:
        """The ``fsid`` reported in attributes: distinct per export."""
        return self.export_id

    def handle(self, attributes: Attributes) -> bytes:
        """Return the file handle of a file in this export."""
        return FileHandle(self.export_id, attributes.fileid, attributes.generation).encode()


class ExportTable:
    """All exports of one server, by id (for handles) and by path (for MNT)."""

    def __init__(self, exports: list[Export]) -> None:
        self._by_id = {export.export_id: export for export in exports}
        self._by_path = {export.path: export for export in exports}
        #: The stores :meth:`open` opened, in order; :meth:`close` closes only these.
        self._opened: list[IMetadataStore | IContentStore] = []
        if len(self._by_id) != len(exports) or len(self._by_path) != len(exports):
            raise ValueError("export ids and paths must be unique")

    def __iter__(self) -> Iterator[Export]:
        return iter(self._by_id.values())

    def by_path(self, path: bytes) -> Export | None:
        """Return the export mounted at *path* (a trailing slash is ignored)."""
        if len(path) > 1:
            path = path.rstrip(b"/")
        return self._by_path.get(path)

    def containing(self, path: bytes) -> tuple[Export, list[bytes]] | None:
        """Find the export a path lies in and the names below it (longest export path wins)."""
        names = [name for name in path.split(b"/") if name]
        for depth in range(len(names), -1, -1):
            export = self._by_path.get(b"/" + b"/".join(names[:depth]))
            if export is not None:
                return export, names[depth:]
        return None

    def by_handle(self, handle: FileHandle) -> Export:
        """Return the export a handle belongs to; STALE for an export that is gone."""
        export = self._by_id.get(handle.export_id)
        if export is None:
            raise NFSError(Status.STALE, f"no export with id {handle.export_id}")
        return export

    def open(self) -> Deferred[None]:
        """Open every export's stores and learn each root.

        Fails with the first :class:`StoreOpenError`, which names the export
        and the store that would not open.
        """

        async def open_export(export: Export) -> None:
            role: str | None = "metadata"
            try:
                await export.metadata.open()
                self._opened.append(export.metadata)
                role = "content"
                await export.content.open()
                self._opened.append(export.content)
                role = "metadata"
                export.root = await export.metadata.root()
                role = None
                await reap_orphans(export)
            except Exception as error:
                raise StoreOpenError(export, role, error) from error

        def first_error(reason: Failure) -> Failure:
            error = reason.value
            return error.subFailure if isinstance(error, FirstError) else reason

        opened = [Deferred.fromCoroutine(open_export(export)) for export in self]
        return (
            gatherResults(opened, consumeErrors=True)
            .addCallback(lambda _: None)
            .addErrback(first_error)
        )

    def close(self) -> Deferred[None]:
        """Close every store that opened, even when some of them fail to close.

        Each export's content store closes before its metadata store: the S3
        store's last uploads still change block maps in the metadata store.
        Exports close side by side.  A store that never opened is left alone:
        closing one can wait for work that never started (the filesystem
        store's I/O threads), and a stop after a failed start must not hang
        on it.
        """
        opened, self._opened = self._opened, []

        async def close_export(export: Export) -> None:
            for store in (export.content, export.metadata):
                if store in opened:
                    with contextlib.suppress(Exception):
                        await store.close()

        closing = [Deferred.fromCoroutine(close_export(export)) for export in self]
        return DeferredList(closing, consumeErrors=True).addCallback(lambda _: None)


class StoreOpenError(Exception):
    """A store of an export could not be opened (or brought into service) when serving began.

    *role* is ``"metadata"`` or ``"content"``, or ``None`` when the export's
    stores failed together (finishing the deletions a crash interrupted);
    *error* is what the store raised.
    """

    def __init__(self, export: Export, role: str | None, error: Exception) -> None:
        super().__init__(export.path, role, error)
        self.export = export
        self.role = role
        self.error = error

    def cause(self) -> Failure:
        """What the store raised, with its own traceback (for the log)."""
        return Failure(self.error, type(self.error), self.error.__traceback__)

    def __str__(self) -> str:
        store = f"{self.role} store" if self.role else "stores"
        return f"the {store} of {self.export.path.decode()}: {dittofs_log.error_line(self.error)}"


async def release_orphan(export: Export, fileid: int) -> None:
    """Delete an orphan's content, then forget the orphan (in that order, for crashes)."""
    await export.content.delete(fileid)
    await export.metadata.release_orphan(fileid)


async def reap_orphans(export: Export) -> int:
    """Finish deleting the content of files removed before a crash; return how many."""
    orphans = await export.metadata.pending_orphans()
    for fileid in orphans:
        await release_orphan(export, fileid)
    if orphans:
        log.info(
            "Deleted the content of {count} files removed before the last stop",
            count=len(orphans),
        )
    return len(orphans)
