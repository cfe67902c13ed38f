"""Block-map reads that share one query: READs in flight on one file ask the store once.

A READ needs the map of the blocks it covers, asked of the metadata store
after the READ arrived, so that it sees every change committed before (a
COMMIT another gateway answered, then the client's open).  A query already
running may have started before it arrived, so a READ never joins that one;
it joins the *next* query of its file and stretch of blocks, which starts
as soon as the running one ends and covers every READ that waited for it.
With N READs in flight on a file the store then answers about two queries,
not N, and each READ still sees everything committed before it arrived.

The stretch (``BLOCKS`` blocks) bounds what one query loads: random READs
far apart in a huge file are never merged into one query of the map
between them.  Everything here runs on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dittofs.model import BlockMap

#: Blocks of one stretch: READs whose first blocks fall in one stretch share a query.
BLOCKS = 16

Ask = Callable[[int, int, int], Deferred[BlockMap]]


@attrs.define
class _Batch:
    first: int
    last: int
    waiters: list[Deferred[BlockMap]] = attrs.field(factory=list)


class MapReads:
    """Coalesces ``block_slices(fileid, first, last)`` calls (see the module docstring)."""

    def __init__(self, ask: Ask) -> None:
        self._ask = ask
        self._waiting: dict[tuple[int, int], _Batch] = {}
        self._running: set[tuple[int, int]] = set()

    def block_slices(self, fileid: int, first: int, last: int) -> Deferred[BlockMap]:
        """Blocks *first*..*last* of a file's map (possibly with more blocks around them)."""
        key = (fileid, first // BLOCKS)
        batch = self._waiting.get(key)
        if batch is None:
            batch = self._waiting[key] = _Batch(first, last)
        else:
            batch.first, batch.last = min(batch.first, first), max(batch.last, last)
        answer: Deferred[BlockMap] = Deferred()
        batch.waiters.append(answer)
        if key not in self._running:
            self._start(key)
        return answer

    def _start(self, key: tuple[int, int]) -> None:
        batch = self._waiting.pop(key)
        self._running.add(key)
        query = self._ask(key[0], batch.first, batch.last)

        def answered(result: BlockMap | Failure) -> None:
            self._running.discard(key)
            if key in self._waiting:
                self._start(key)
            for waiter in batch.waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)

        query.addBoth(answered)
