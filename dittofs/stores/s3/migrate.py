"""Moving a prefix of the manifest era into the block maps (``dittofs s3-migrate``).

Before block maps, each file's list of block objects was a manifest in the
bucket (``prefix/manifests/<fileid>``, format 1).  Migration reads every
manifest and records the same objects as whole-block slices in the metadata
store's map, in one change per file that replaces whatever the map had, so a
run cut short is simply run again.  Only then is the prefix marked format 2
and are the manifests deleted; the block objects stay where they are and are
named by the map from then on.  Nothing is read while a gateway serves the
prefix: gateways refuse a format 1 prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs

from dittofs.model import BlockChange, Slice
from dittofs.progress import Phases, unwatched
from dittofs.stores.s3.objects import Manifest, ObjectStore, S3NotFound
from dittofs.stores.s3.settings import S3Settings

#: The format a migrated prefix is marked with (the S3 store's).
MIGRATED_FORMAT = 2


@attrs.frozen
class MigrateReport:
    """What a migration moved."""

    files: int
    blocks: int
    #: True when the prefix was already of format 2 (nothing was done).
    already: bool = False


def migrate(
    s3: ObjectStore,
    settings: S3Settings,
    change_map: Callable[[int, list[Slice], int | None, int], BlockChange],
    progress: Phases = unwatched,
) -> MigrateReport:
    """Record every manifest's blocks in the map, mark the prefix format 2, drop the manifests.

    Blocking.  *change_map* is :meth:`~dittofs.interfaces.IBlockMaps.change_blocks`
    made blocking.
    """
    try:
        recorded = json.loads(s3.get(settings.format_key))
    except S3NotFound:
        recorded = {"version": 1, "block_size": settings.block_size}
    if int(recorded.get("version", 1)) >= MIGRATED_FORMAT:
        return MigrateReport(0, 0, already=True)
    folder = settings.manifest_key()
    with progress("listing manifests", None, "manifest") as advance:
        keys = []
        for listed in s3.list(folder):
            keys.append(listed.key)
            advance(1)
    files = blocks = 0
    with progress("moving manifests into the block map", len(keys), "manifest") as advance:
        for key in keys:
            advance(1)
            try:
                fileid = int(key[len(folder) :], 16)
                manifest = Manifest.decode(s3.get(key))
            except (ValueError, S3NotFound):
                continue
            bs = manifest.block_size
            slices = [
                Slice(index, 0, min(bs, manifest.size - index * bs),
                      settings.block_key(fileid, index, version))
                for index, version in sorted(manifest.blocks.items())
                if index * bs < manifest.size
            ]  # fmt: skip
            change_map(fileid, slices, 0, manifest.size)
            files += 1
            blocks += len(slices)
    body = {"version": MIGRATED_FORMAT, "block_size": int(recorded["block_size"])}
    s3.put(settings.format_key, json.dumps(body).encode())
    with progress("deleting manifests", len(keys), "manifest") as advance:
        for start in range(0, len(keys), 1000):
            s3.delete(keys[start : start + 1000])
            advance(len(keys[start : start + 1000]))
    return MigrateReport(files, blocks)
