"""Tests for :mod:`dittofs.rpc.record`: RPC record marking over a TCP byte stream.

TCP delivers the stream in arbitrary chunks, so the receiver must produce the
same records however the bytes arrive, and must refuse records that would make
the server buffer without bound.
"""

from __future__ import annotations

import itertools
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dittofs.rpc.record import (
    DEFAULT_MAX_RECORD,
    RecordError,
    RecordReceiver,
    record_header,
)

LAST = 0x80000000


def fragment(data: bytes, last: bool) -> bytes:
    """Encode one fragment with a hand-built record mark."""
    return struct.pack(">I", (LAST if last else 0) | len(data)) + data


def fragmented(record: bytes, cuts: list[int]) -> bytes:
    """Encode *record* as fragments split at the (sorted, deduplicated) offsets in *cuts*."""
    points = sorted({cut for cut in cuts if 0 < cut < len(record)})
    bounds = [0, *points, len(record)]
    pieces = [record[a:b] for a, b in itertools.pairwise(bounds)]
    return b"".join(
        fragment(piece, last=index == len(pieces) - 1) for index, piece in enumerate(pieces)
    )


def feed_in_chunks(receiver: RecordReceiver, stream: bytes, cuts: list[int]) -> list[bytes]:
    """Feed *stream* split at *cuts*, collecting every record returned."""
    points = sorted({cut for cut in cuts if 0 < cut < len(stream)})
    bounds = [0, *points, len(stream)]
    records: list[bytes] = []
    for a, b in itertools.pairwise(bounds):
        records.extend(receiver.feed(stream[a:b]))
    return records


class RecordHeaderTests(SynchronousTestCase):
    """``record_header`` marks a single, final fragment."""

    def test_header(self) -> None:
        """The header is the length with the last-fragment bit set, big-endian."""
        self.assertEqual(record_header(0), b"\x80\0\0\0")
        self.assertEqual(record_header(5), b"\x80\0\0\x05")
        self.assertEqual(record_header(0x7FFFFFFF), b"\xff\xff\xff\xff")

    def test_too_long(self) -> None:
        """A length that does not fit in 31 bits cannot be one fragment, and is refused."""
        self.assertRaises(ValueError, record_header, 0x80000000)

    def test_header_is_understood_by_receiver(self) -> None:
        """What the server writes is what a receiver reassembles."""
        receiver = RecordReceiver()
        self.assertEqual(receiver.feed(record_header(3) + b"abc"), [b"abc"])


class ReassemblyTests(SynchronousTestCase):
    """Fragments are reassembled into records, whatever the chunking of the stream."""

    def test_single_fragment(self) -> None:
        """A final fragment is a whole record."""
        self.assertEqual(RecordReceiver().feed(fragment(b"hello", True)), [b"hello"])

    def test_empty_record(self) -> None:
        """A final fragment of length zero is an empty record, not nothing."""
        self.assertEqual(RecordReceiver().feed(fragment(b"", True)), [b""])

    def test_multi_fragment(self) -> None:
        """Non-final fragments are joined with the final one, in order."""
        stream = fragment(b"ab", False) + fragment(b"", False) + fragment(b"cde", True)
        self.assertEqual(RecordReceiver().feed(stream), [b"abcde"])

    def test_two_records_in_one_chunk(self) -> None:
        """Pipelined records arriving together are all returned, in order."""
        stream = fragment(b"one", True) + fragment(b"tw", False) + fragment(b"o", True)
        self.assertEqual(RecordReceiver().feed(stream), [b"one", b"two"])

    def test_incomplete_record_waits(self) -> None:
        """Nothing is returned until the final fragment is complete, then the record is."""
        receiver = RecordReceiver()
        self.assertFalse(receiver.partial)
        self.assertEqual(receiver.feed(fragment(b"abc", False)), [])
        self.assertTrue(receiver.partial)
        last = fragment(b"def", True)
        self.assertEqual(receiver.feed(last[:-1]), [])
        self.assertTrue(receiver.partial)
        self.assertEqual(receiver.feed(last[-1:]), [b"abcdef"])
        self.assertFalse(receiver.partial)
        self.assertEqual(receiver.buffered, 0)

    def test_byte_by_byte(self) -> None:
        """Feeding one byte at a time gives the same records as feeding all at once."""
        records = [b"x" * 5, b"", b"y" * 300, b"z" * 4]
        stream = b"".join(fragmented(record, [2, 3]) for record in records)
        receiver = RecordReceiver()
        received: list[bytes] = []
        for index in range(len(stream)):
            received.extend(receiver.feed(stream[index : index + 1]))
        self.assertEqual(received, records)
        self.assertFalse(receiver.partial)

    def test_records_are_bytes(self) -> None:
        """Records are immutable ``bytes``, safe to keep while the buffer is reused."""
        receiver = RecordReceiver()
        (single,) = receiver.feed(fragment(b"abc", True))
        (joined,) = receiver.feed(fragment(b"a", False) + fragment(b"b", True))
        self.assertIs(type(single), bytes)
        self.assertIs(type(joined), bytes)

    def test_large_stream_in_small_chunks(self) -> None:
        """Many records through one receiver (exercising buffer compaction) stay intact."""
        records = [bytes([i % 256]) * (1000 + i) for i in range(200)]
        stream = b"".join(fragment(record, True) for record in records)
        receiver = RecordReceiver()
        received = feed_in_chunks(receiver, stream, list(range(0, len(stream), 777)))
        self.assertEqual(received, records)
        self.assertEqual(receiver.buffered, 0)

    @settings(max_examples=200, deadline=None, database=None)
    @given(
        st.lists(
            st.tuples(st.binary(max_size=40), st.lists(st.integers(0, 40), max_size=4)),
            max_size=6,
        ),
        st.lists(st.integers(0, 400), max_size=30),
    )
    def test_any_fragmentation_and_chunking(
        self, records: list[tuple[bytes, list[int]]], chunk_cuts: list[int]
    ) -> None:
        """However records are fragmented and the stream is chunked, the records come back."""
        stream = b"".join(fragmented(record, cuts) for record, cuts in records)
        receiver = RecordReceiver()
        received = feed_in_chunks(receiver, stream, chunk_cuts)
        self.assertEqual(received, [record for record, _ in records])
        self.assertFalse(receiver.partial)

    @settings(max_examples=50, deadline=None, database=None)
    @given(st.lists(st.binary(max_size=30), min_size=1, max_size=5))
    def test_byte_by_byte_matches_whole(self, records: list[bytes]) -> None:
        """Byte-by-byte feeding and one-chunk feeding agree exactly."""
        stream = b"".join(fragment(record, True) for record in records)
        whole = RecordReceiver().feed(stream)
        receiver = RecordReceiver()
        single: list[bytes] = []
        for index in range(len(stream)):
            single.extend(receiver.feed(stream[index : index + 1]))
        self.assertEqual(whole, records)
        self.assertEqual(single, records)


class LimitTests(SynchronousTestCase):
    """The maximum record size bounds what one connection can make the server buffer."""

    def test_default_limit_fits_a_large_write(self) -> None:
        """The default limit leaves room for a 1 MiB WRITE plus headers."""
        self.assertGreater(DEFAULT_MAX_RECORD, 1024 * 1024)
        self.assertEqual(RecordReceiver().max_record, DEFAULT_MAX_RECORD)

    def test_record_at_limit_accepted(self) -> None:
        """A single-fragment record exactly at the limit is accepted."""
        receiver = RecordReceiver(max_record=100)
        self.assertEqual(receiver.feed(fragment(b"a" * 100, True)), [b"a" * 100])

    def test_over_limit_refused_from_header_alone(self) -> None:
        """An oversized fragment is refused as soon as its header arrives, before its body."""
        receiver = RecordReceiver(max_record=100)
        self.assertRaises(RecordError, receiver.feed, struct.pack(">I", LAST | 101))

    def test_huge_length_refused(self) -> None:
        """A header announcing 2 GiB is refused rather than waited for."""
        receiver = RecordReceiver()
        self.assertRaises(RecordError, receiver.feed, b"\xff\xff\xff\xff")

    def test_fragments_add_up(self) -> None:
        """Fragments that are each small but together exceed the limit are refused."""
        receiver = RecordReceiver(max_record=100)
        self.assertEqual(receiver.feed(fragment(b"a" * 60, False)), [])
        self.assertRaises(RecordError, receiver.feed, fragment(b"b" * 60, True))

    def test_limit_applies_per_record(self) -> None:
        """Completed records do not count against the next one's size."""
        receiver = RecordReceiver(max_record=100)
        for _ in range(5):
            self.assertEqual(
                receiver.feed(fragment(b"a" * 50, False) + fragment(b"b" * 40, True)),
                [b"a" * 50 + b"b" * 40],
            )

    def test_endless_empty_fragments_in_one_chunk(self) -> None:
        """A flood of empty non-final fragments is refused rather than accepted forever."""
        receiver = RecordReceiver(max_record=1000)
        self.assertRaises(RecordError, receiver.feed, fragment(b"", False) * 10_000)

    def test_endless_empty_fragments_bounded(self) -> None:
        """Empty non-final fragments sent one at a time are refused within a bounded count."""
        limit = 1000
        receiver = RecordReceiver(max_record=limit)
        empty = fragment(b"", False)
        with self.assertRaises(RecordError):
            for _ in range(limit // 4 + 2):
                self.assertEqual(receiver.feed(empty), [])
