"""Garbage collection for the S3 store: delete block objects no manifest names.

Blocks become garbage when a file is overwritten, truncated or deleted; the
uploader deletes them right after writing the manifest that drops them, but a
crash (or an outage) in between leaves them behind, and so does a crash
between uploading a block and writing the manifest naming it.  The second
case is why collection is never "everything unreferenced": a block uploaded
moments ago may be named by a manifest being written right now, by this
process or another.  Only unreferenced blocks older than *grace* are taken,
and a running store also protects the blocks it knows about in memory.

:func:`collect_garbage` needs only S3, so a ``dittofs gc`` command can run it
with no cache directory; :meth:`S3ContentStore.gc` runs it inside a serving
store, with that store's in-flight uploads protected as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import attrs

from dittofs.progress import Advance, Phases, unwatched
from dittofs.stores.s3.objects import ListedObject, Manifest, ObjectStore, S3NotFound
from dittofs.stores.s3.settings import S3Settings

#: Unreferenced blocks younger than this (seconds) are left alone by default.
DEFAULT_GRACE = 3600.0
#: Keys S3 deletes in one request.
DELETE_BATCH = 1000


@attrs.frozen
class GcReport:
    """What one collection saw and did."""

    manifests: int
    blocks: int
    referenced: int
    deleted: int
    deleted_bytes: int
    #: Unreferenced blocks spared because they are younger than the grace period.
    spared: int


def _fileid_of(key: str, folder: str) -> int | None:
    name = key[len(folder) :].split("/", 1)[0]
    try:
        return int(name, 16)
    except ValueError:
        return None


def referenced_blocks(
    s3: ObjectStore, settings: S3Settings, progress: Phases = unwatched
) -> tuple[int, dict[str, tuple[int, int]]]:
    """How many manifests there are, and every block key they name with its (file id, index).

    Blocking: one listing, then one GET per manifest (the long part on a
    large filesystem, so *progress* hears of both phases).
    """
    manifest_folder = settings.manifest_key()
    with progress("listing manifests", None, "manifest") as advance:
        listed_manifests = _counted(s3.list(manifest_folder), advance)
    referenced: dict[str, tuple[int, int]] = {}
    manifests = 0
    with progress("reading manifests", len(listed_manifests), "manifest") as advance:
        for listed in listed_manifests:
            advance(1)
            fileid = _fileid_of(listed.key, manifest_folder)
            if fileid is None:
                continue
            try:
                manifest = Manifest.decode(s3.get(listed.key))
            except S3NotFound:
                continue
            manifests += 1
            for index, version in manifest.blocks.items():
                referenced[settings.block_key(fileid, index, version)] = (fileid, index)
    return manifests, referenced


def collect_garbage(
    s3: ObjectStore,
    settings: S3Settings,
    grace: float = DEFAULT_GRACE,
    protected: Callable[[], set[str]] = set,
    now: datetime | None = None,
    *,
    progress: Phases = unwatched,
) -> GcReport:
    """Delete block objects that no manifest names and that are older than *grace* seconds.

    Blocking.  Manifests are read first and blocks listed after, so a block
    uploaded during the run is young and spared.  *protected()* adds keys a
    running store knows are in use; it is called after listing the blocks.
    *progress* is told about each phase (listing and reading the manifests,
    listing and deleting the blocks) as it goes.
    """
    manifests, named = referenced_blocks(s3, settings, progress)
    referenced = set(named)
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace)
    with progress("listing blocks", None, "block") as advance:
        blocks = _counted(s3.list(settings.block_key_prefix()), advance)
    referenced |= protected()
    doomed: list[str] = []
    doomed_bytes = spared = 0
    for listed in blocks:
        if listed.key in referenced:
            continue
        if listed.modified > cutoff:
            spared += 1
            continue
        doomed.append(listed.key)
        doomed_bytes += listed.size
    with progress("deleting blocks", len(doomed), "block") as advance:
        for start in range(0, len(doomed), DELETE_BATCH):
            batch = doomed[start : start + DELETE_BATCH]
            s3.delete(batch)
            advance(len(batch))
    live = sum(1 for listed in blocks if listed.key in referenced)
    return GcReport(manifests, len(blocks), live, len(doomed), doomed_bytes, spared)


@attrs.frozen
class BlockCheck:
    """What ``fsck`` found comparing the manifests with the block objects in the bucket."""

    manifests: int
    blocks: int
    #: (file id, block index, key) of every block a manifest names that S3 does not hold.
    missing: list[tuple[int, int, str]]
    #: Block objects no manifest names (``gc`` collects them once past the grace period).
    unowned: int
    unowned_bytes: int


def check_blocks(s3: ObjectStore, settings: S3Settings, progress: Phases = unwatched) -> BlockCheck:
    """Compare every manifest with the block objects the bucket holds (blocking).

    Meant for a prefix no gateway serves (``dittofs fsck`` opens the store,
    whose claim makes sure): a serving gateway deletes the blocks a manifest
    stops naming, which would look missing here.  A block a manifest names
    and S3 lacks is lost data: its reads fail.
    """
    manifests, referenced = referenced_blocks(s3, settings, progress)
    with progress("listing blocks", None, "block") as advance:
        blocks = _counted(s3.list(settings.block_key_prefix()), advance)
    held = {listed.key for listed in blocks}
    missing = sorted((*where, key) for key, where in referenced.items() if key not in held)
    unowned = [listed for listed in blocks if listed.key not in referenced]
    return BlockCheck(
        manifests, len(blocks), missing, len(unowned), sum(item.size for item in unowned)
    )


def _counted(listing: Iterable[ListedObject], advance: Advance) -> list[ListedObject]:
    """Every object of a listing, advancing as each arrives (S3 sends 1000 a request)."""
    listed: list[ListedObject] = []
    for item in listing:
        listed.append(item)
        advance(1)
    return listed
