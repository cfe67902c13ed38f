"""Extents against a model: a list holding, for each byte of a block, where it comes from."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dittofs.stores.s3.extents import Extent, Extents

SIZE = 64
ranges = st.tuples(st.integers(0, SIZE), st.integers(0, SIZE)).map(sorted)
layings = st.lists(st.tuples(ranges, st.sampled_from(["", "a", "b"]), st.integers(0, 9)))


def model_of(extents: Extents) -> list[tuple[str, int] | None]:
    """Each byte's (source, offset in source), None where no extent is."""
    bytes_: list[tuple[str, int] | None] = [None] * SIZE
    for extent in extents:
        for position in range(extent.start, extent.end):
            bytes_[position] = (extent.source, extent.at + position - extent.start)
    return bytes_


class ExtentsTests(SynchronousTestCase):
    """Laying, cutting, clipping and coverage agree with the byte-by-byte model."""

    @given(layings, st.integers(0, SIZE))
    def test_later_bytes_win_and_cuts_forget(
        self, laid: list[tuple[list[int], str, int]], cut: int
    ) -> None:
        """Each byte comes from the last extent laid over it; a cut forgets what lies past it."""
        extents = Extents()
        model: list[tuple[str, int] | None] = [None] * SIZE
        for (start, end), source, shift in laid:
            extents.lay(start, end, source, start + shift)
            for position in range(start, end):
                model[position] = (source, position + shift)
            self.assertEqual(model_of(extents), model)
            starts = [extent.start for extent in extents]
            self.assertEqual(starts, sorted(starts))
            for left, right in zip(list(extents), list(extents)[1:], strict=False):
                self.assertLessEqual(left.end, right.start, "extents never overlap")
        extents.cut(cut)
        self.assertEqual(model_of(extents), model[:cut] + [None] * (SIZE - cut))

    @given(layings, ranges)
    def test_within_and_covers(
        self, laid: list[tuple[list[int], str, int]], span: list[int]
    ) -> None:
        """``within`` returns exactly the bytes of the span; ``covers`` says if none is missing."""
        low, high = span
        extents = Extents()
        for (start, end), source, shift in laid:
            extents.lay(start, end, source, start + shift)
        model = model_of(extents)
        clipped = Extents()
        for extent in extents.within(low, high):
            self.assertTrue(low <= extent.start < extent.end <= high)
            clipped.lay(extent.start, extent.end, extent.source, extent.at)
        self.assertEqual(
            model_of(clipped), [b if low <= i < high else None for i, b in enumerate(model)]
        )
        self.assertEqual(extents.covers(low, high), all(model[i] for i in range(low, high)))

    def test_neighbours_that_continue_each_other_merge(self) -> None:
        """Sequential writes make one extent, so an upload of them is one slice."""
        extents = Extents()
        for start in range(0, 40, 8):
            extents.lay(start, start + 8)
        self.assertEqual(list(extents), [Extent(0, 40, "", 0)])
        extents.lay(40, 48, "other", 0)
        self.assertEqual(len(extents), 2)
