"""Garbage collection and checking for the S3 store: the bucket's objects against the block maps.

Objects become garbage when a file is overwritten, truncated or deleted; the
store deletes them right after the change of the map that stops naming them,
but a crash (or an outage) in between leaves them behind, and so does a crash
between uploading an object and the change that names it.  The second case
is why collection is never "everything unnamed": an object uploaded moments
ago may be named by a change committing right now, by this gateway or
another.  Only unnamed objects older than *grace* are taken, and a running
store also protects the uploads it has in flight.

Both walks read the map's keys and the bucket's listing side by side, each
in byte order, so memory stays bounded however many objects there are.
:func:`collect_garbage` runs inside a serving store (``dittofs gc`` opens
the stores for it); :func:`check_blocks` serves ``dittofs fsck``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

import attrs

from dittofs.progress import Phases, unwatched
from dittofs.stores.s3.objects import ListedObject, ObjectStore
from dittofs.stores.s3.settings import S3Settings

#: Unnamed objects younger than this (seconds) are left alone by default.
DEFAULT_GRACE = 3600.0
#: Keys S3 deletes in one request.
DELETE_BATCH = 1000


@attrs.frozen
class GcReport:
    """What one collection saw and did."""

    #: Object keys the block maps name, and block objects the bucket holds.
    named: int
    blocks: int
    #: Block objects the maps name.
    referenced: int
    deleted: int
    deleted_bytes: int
    #: Unnamed objects spared because they are younger than the grace period.
    spared: int


@attrs.frozen
class BlockCheck:
    """What ``fsck`` found comparing the block maps with the bucket."""

    named: int
    blocks: int
    #: (file id, block index, key) of every object a map names that S3 does not hold.
    missing: list[tuple[int, int, str]]
    #: Block objects no map names (``gc`` collects them once past the grace period).
    unowned: int
    unowned_bytes: int


class NothingNamed(Exception):
    """No block map names any object of a prefix that holds some: the wrong metadata store?"""


@attrs.frozen
class _Side:
    """One step of the walk: a key named by the maps, an object in the bucket, or both."""

    key: str
    named: bool
    listed: ListedObject | None


def _walk(named: Iterable[str], listed: Iterable[ListedObject]) -> Iterator[_Side]:
    """Merge two key streams in byte order (both must come in that order)."""
    names, objects = iter(named), iter(listed)
    name, item = next(names, None), next(objects, None)
    while name is not None or item is not None:
        name_bytes = None if name is None else name.encode()
        item_bytes = None if item is None else item.key.encode()
        if item_bytes is None or (name_bytes is not None and name_bytes < item_bytes):
            assert name is not None
            yield _Side(name, True, None)
            name = next(names, None)
        elif name_bytes is None or item_bytes < name_bytes:
            assert item is not None
            yield _Side(item.key, False, item)
            item = next(objects, None)
        else:
            assert item is not None
            yield _Side(item.key, True, item)
            name, item = next(names, None), next(objects, None)


def _located(key: str, settings: S3Settings) -> tuple[int, int]:
    """The file id and block index in a block object's key (-1s if it is not one of ours)."""
    name = key[len(settings.block_key_prefix()) :]
    try:
        fileid, rest = name.split("/", 1)
        return int(fileid, 16), int(rest.split("-", 1)[0], 16)
    except ValueError:
        return -1, -1


def collect_garbage(
    s3: ObjectStore,
    settings: S3Settings,
    named: Callable[[], Iterable[str]],
    *,
    grace: float = DEFAULT_GRACE,
    protected: Callable[[], set[str]] = set,
    now: datetime | None = None,
    progress: Phases = unwatched,
) -> GcReport:
    """Delete block objects no map names that are older than *grace* seconds (blocking).

    *named()* gives the keys the maps name, in byte order.  An object
    uploaded while the walk runs is young and spared; *protected()* adds the
    uploads a running store has in flight.  :class:`NothingNamed`, deleting
    nothing, when the maps name no object at all but there are old ones.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace)
    keep = protected()
    doomed: list[str] = []
    counts = {"named": 0, "blocks": 0, "referenced": 0, "bytes": 0, "spared": 0}
    with progress("walking the maps and the bucket", None, "object") as advance:
        for side in _walk(named(), s3.list(settings.block_key_prefix())):
            advance(1)
            counts["named"] += side.named
            if side.listed is None:
                continue
            counts["blocks"] += 1
            if side.named or side.key in keep:
                counts["referenced"] += side.named
                continue
            if side.listed.modified > cutoff:
                counts["spared"] += 1
                continue
            doomed.append(side.key)
            counts["bytes"] += side.listed.size
    if doomed and not counts["named"]:
        # Collecting now would delete every file's content: far likelier a wrong
        # --metadata (another data directory, schema or prefix) than an empty filesystem.
        raise NothingNamed(
            f"no block map names any object of s3://{settings.bucket}/{settings.prefix}, "
            f"which holds {counts['blocks']}: is the metadata store the gateways' own? "
            "Nothing was deleted"
        )
    with progress("deleting objects", len(doomed), "object") as advance:
        for start in range(0, len(doomed), DELETE_BATCH):
            batch = doomed[start : start + DELETE_BATCH]
            s3.delete(batch)
            advance(len(batch))
    return GcReport(
        counts["named"], counts["blocks"], counts["referenced"], len(doomed), counts["bytes"],
        counts["spared"],
    )  # fmt: skip


def check_blocks(
    s3: ObjectStore,
    settings: S3Settings,
    named: Callable[[], Iterable[str]],
    progress: Phases = unwatched,
) -> BlockCheck:
    """Compare the block maps with the block objects in the bucket (blocking).

    Meant for a prefix no gateway serves (``dittofs fsck`` opens the store,
    whose claim makes sure): a serving gateway deletes the objects a change
    stops naming, which would look missing here.  An object a map names and
    S3 lacks is lost data: its reads fail.
    """
    missing: list[tuple[int, int, str]] = []
    named_count = blocks = unowned = unowned_bytes = 0
    with progress("walking the maps and the bucket", None, "object") as advance:
        for side in _walk(named(), s3.list(settings.block_key_prefix())):
            advance(1)
            named_count += side.named
            blocks += side.listed is not None
            if side.named and side.listed is None:
                missing.append((*_located(side.key, settings), side.key))
            elif side.listed is not None and not side.named:
                unowned += 1
                unowned_bytes += side.listed.size
    return BlockCheck(named_count, blocks, missing, unowned, unowned_bytes)
