"""The rules of a block map (:class:`~dittofs.interfaces.IBlockMaps`), decided once for every store.

A backend stores slices, drops a file's blocks from one index on and hands
out sequence numbers; what may be added and which objects a change leaves
unnamed are decided here, so the memory, SQL and Redis maps cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dittofs.errors import NFSError
from dittofs.model import Slice
from dittofs.vocabulary import Status


def check_change(add: Sequence[Slice], length: int) -> None:
    """Refuse (``INVAL``) slices that cannot describe bytes (a negative field or no length)."""
    if length < 0:
        raise NFSError(Status.INVAL, f"a negative length: {length}")
    for piece in add:
        if min(piece.block, piece.offset, piece.start) < 0 or piece.length <= 0:
            raise NFSError(Status.INVAL, f"not a slice of a block: {piece}")


def new_length(old: int, drop_from: int | None, length: int) -> int:
    """The length after a change: as given by a truncate, never shorter after a write."""
    return length if drop_from is not None else max(old, length)


def forgets(add: Sequence[Slice], drop_from: int | None, length: int) -> bool:
    """True when a change leaves nothing to remember: no slice and length 0 (a delete)."""
    return drop_from == 0 and not add and length == 0


def orphaned(dropped: Iterable[str], add: Sequence[Slice]) -> tuple[str, ...]:
    """The keys of dropped slices that no slice names after the change, sorted.

    A key names slices of one block only, and a change drops whole blocks,
    so a dropped key is still named only if the change adds it again.
    """
    kept = {piece.key for piece in add}
    return tuple(sorted({key for key in dropped if key and key not in kept}))
