"""Block-map reads in flight on one file share queries, and never one that started before them."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from dittofs.errors import NFSError, Status
from dittofs.model import BlockMap, Slice
from dittofs.stores.s3.map_reads import BLOCKS, MapReads


class MapReadsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.asked: list[tuple[int, int, int, Deferred[BlockMap]]] = []
        self.reads = MapReads(self.ask)

    def ask(self, fileid: int, first: int, last: int) -> Deferred[BlockMap]:
        answer: Deferred[BlockMap] = Deferred()
        self.asked.append((fileid, first, last, answer))
        return answer

    def answer(self, number: int, length: int) -> BlockMap:
        mapped = BlockMap(length, (Slice(0, 0, length, f"key-{length}", 0, 1),))
        self.asked[number][3].callback(mapped)
        return mapped

    def test_a_read_waits_for_the_next_query_not_the_running_one(self) -> None:
        """Reads arriving during a query share the next one, which covers all their blocks."""
        first = self.reads.block_slices(7, 0, 0)
        second = self.reads.block_slices(7, 1, 1)
        third = self.reads.block_slices(7, 3, 4)
        self.assertEqual([a[:3] for a in self.asked], [(7, 0, 0)])
        old = self.answer(0, 10)
        self.assertIs(self.successResultOf(first), old)
        self.assertNoResult(second)  # the answer to a query asked before it arrived: not its own
        self.assertEqual([a[:3] for a in self.asked], [(7, 0, 0), (7, 1, 4)])
        new = self.answer(1, 20)
        self.assertIs(self.successResultOf(second), new)
        self.assertIs(self.successResultOf(third), new)
        self.assertEqual(len(self.asked), 2)
        self.reads.block_slices(7, 2, 2)
        self.assertEqual(len(self.asked), 3)  # nothing running: asked at once

    def test_files_and_distant_blocks_have_queries_of_their_own(self) -> None:
        """Nothing merges other files, or blocks a stretch apart, into one query."""
        self.reads.block_slices(7, 0, 0)
        self.reads.block_slices(8, 0, 0)
        self.reads.block_slices(7, BLOCKS * 1000, BLOCKS * 1000)
        self.assertEqual(
            [a[:3] for a in self.asked], [(7, 0, 0), (8, 0, 0), (7, BLOCKS * 1000, BLOCKS * 1000)]
        )

    def test_a_failed_query_fails_its_reads_only(self) -> None:
        """Every read of a failed query gets the failure; the next query still runs."""
        first = self.reads.block_slices(7, 0, 0)
        second = self.reads.block_slices(7, 0, 0)
        self.asked[0][3].errback(NFSError(Status.JUKEBOX, "the database is unreachable"))
        self.assertEqual(self.failureResultOf(first, NFSError).value.status, Status.JUKEBOX)
        new = self.answer(1, 5)
        self.assertIs(self.successResultOf(second), new)
