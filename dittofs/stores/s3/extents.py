"""Which bytes of a block come from where: disjoint extents, each later one laid over the earlier.

One algorithm serves two needs of the S3 store: resolving a block's slices
from the block map (oldest first, so the newest wins where they overlap) and
keeping the ranges of a cached block that this gateway has written and not
yet uploaded.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import attrs


@attrs.frozen
class Extent:
    """Bytes ``start``..``end`` of a block are those from ``at`` of ``source``.

    ``source`` is an object key ("" for zeros) or, for written ranges, ""
    with ``at`` equal to ``start`` (the cache file holds them in place).
    """

    start: int
    end: int
    source: str = ""
    at: int = 0

    def clipped(self, low: int, high: int) -> Extent | None:
        """The part within ``low``..``high``, or None if there is none."""
        start, end = max(self.start, low), min(self.end, high)
        if start >= end:
            return None
        return Extent(start, end, self.source, self.at + start - self.start)


class Extents:
    """Disjoint extents sorted by start; :meth:`lay` puts new bytes over old ones."""

    def __init__(self) -> None:
        self._extents: list[Extent] = []

    def __iter__(self) -> Iterator[Extent]:
        return iter(self._extents)

    def __bool__(self) -> bool:
        return bool(self._extents)

    def __len__(self) -> int:
        return len(self._extents)

    @property
    def end(self) -> int:
        """Where the last extent ends (0 when there is none)."""
        return self._extents[-1].end if self._extents else 0

    def lay(self, start: int, end: int, source: str = "", at: int | None = None) -> None:
        """Lay bytes ``start``..``end`` over whatever was there (``at`` defaults to ``start``)."""
        if start >= end:
            return
        new = Extent(start, end, source, start if at is None else at)
        # The extents it overlaps, and a neighbour on each side it may merge with.
        first = bisect.bisect_left([extent.end for extent in self._extents], start)
        kept: list[Extent] = []
        index = first
        while index < len(self._extents) and self._extents[index].start <= end:
            old = self._extents[index]
            before, after = old.clipped(old.start, start), old.clipped(end, old.end)
            kept.extend(piece for piece in (before, after) if piece is not None)
            index += 1
        pieces = sorted([*kept, new], key=lambda extent: extent.start)
        self._extents[first:index] = _merged(pieces)

    def cut(self, size: int) -> None:
        """Forget everything at and past *size*."""
        kept = [extent.clipped(0, size) for extent in self._extents]
        self._extents = [extent for extent in kept if extent is not None]

    def within(self, low: int, high: int) -> list[Extent]:
        """The extents that fall in ``low``..``high``, clipped to it."""
        found = (extent.clipped(low, high) for extent in self._extents)
        return [extent for extent in found if extent is not None]

    def covers(self, low: int, high: int) -> bool:
        """True if every byte of ``low``..``high`` is in some extent."""
        at = low
        for extent in self.within(low, high):
            if extent.start > at:
                return False
            at = extent.end
        return at >= high

    def copy(self) -> Extents:
        """An independent copy."""
        twin = Extents()
        twin._extents = list(self._extents)
        return twin


def _merged(pieces: list[Extent]) -> list[Extent]:
    """Join neighbours that continue each other in the same source."""
    merged: list[Extent] = []
    for piece in pieces:
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.end == piece.start
            and last.source == piece.source
            and last.at + (last.end - last.start) == piece.at
        ):
            merged[-1] = Extent(last.start, piece.end, last.source, last.at)
        else:
            merged.append(piece)
    return merged
