"""Tests for :mod:`dittofs.rpc.xdr`: every codec round-trips, and decoding is bounds-checked.

Expected encodings are written out with :mod:`struct` here, so a symmetric bug
in the reader and the writer cannot make a round-trip test pass on its own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dittofs.rpc.xdr import ZERO_COPY_THRESHOLD, XdrError, XdrReader, XdrWriter, padding

FAST = settings(max_examples=150, deadline=None, database=None)

UINT = st.integers(0, 2**32 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
UHYPER = st.integers(0, 2**64 - 1)
HYPER = st.integers(-(2**63), 2**63 - 1)
SMALL_BYTES = st.binary(max_size=64)


def xdr_opaque(data: bytes) -> bytes:
    """Reference encoding of a variable-length opaque: length, bytes, zero padding."""
    return struct.pack(">I", len(data)) + data + b"\0" * (-len(data) % 4)


class PaddingTests(SynchronousTestCase):
    """``padding`` rounds lengths up to the four-byte XDR unit."""

    def test_padding_rounds_up_to_four(self) -> None:
        """Every length gets exactly the zero bytes that make it a multiple of four."""
        for length in range(0, 20):
            pad = padding(length)
            self.assertEqual(pad, b"\0" * pad.count(b"\0"))
            self.assertEqual((length + len(pad)) % 4, 0)
            self.assertLess(len(pad), 4)


class RoundTripTests(SynchronousTestCase):
    """Each writer method's output decodes back to the value with the matching reader method.

    A codec that does not round-trip corrupts file handles, names and data on
    the wire, so each type is checked over its whole value range.
    """

    def _round_trip(
        self, write: Callable[[XdrWriter], None], read: Callable[[XdrReader], Any], size: int
    ) -> Any:
        writer = XdrWriter()
        write(writer)
        encoded = writer.getvalue()
        self.assertEqual(len(encoded), size)
        self.assertEqual(len(encoded) % 4, 0)
        reader = XdrReader(encoded)
        value = read(reader)
        self.assertEqual(reader.remaining, 0)
        return value

    @FAST
    @given(UINT)
    def test_uint(self, value: int) -> None:
        """Unsigned 32-bit integers round-trip and are big-endian on the wire."""
        writer = XdrWriter()
        writer.uint(value)
        self.assertEqual(writer.getvalue(), struct.pack(">I", value))
        self.assertEqual(self._round_trip(lambda w: w.uint(value), XdrReader.uint, 4), value)

    @FAST
    @given(INT32)
    def test_int32(self, value: int) -> None:
        """Signed 32-bit integers round-trip in two's complement."""
        writer = XdrWriter()
        writer.int32(value)
        self.assertEqual(writer.getvalue(), struct.pack(">i", value))
        self.assertEqual(self._round_trip(lambda w: w.int32(value), XdrReader.int32, 4), value)

    @FAST
    @given(UHYPER)
    def test_uhyper(self, value: int) -> None:
        """Unsigned 64-bit integers (file sizes, offsets) round-trip."""
        writer = XdrWriter()
        writer.uhyper(value)
        self.assertEqual(writer.getvalue(), struct.pack(">Q", value))
        self.assertEqual(self._round_trip(lambda w: w.uhyper(value), XdrReader.uhyper, 8), value)

    @FAST
    @given(HYPER)
    def test_hyper(self, value: int) -> None:
        """Signed 64-bit integers round-trip."""
        writer = XdrWriter()
        writer.hyper(value)
        self.assertEqual(writer.getvalue(), struct.pack(">q", value))
        self.assertEqual(self._round_trip(lambda w: w.hyper(value), XdrReader.hyper, 8), value)

    @FAST
    @given(st.booleans())
    def test_boolean(self, value: bool) -> None:
        """Booleans are the integers 0 and 1 and decode back to ``bool``."""
        writer = XdrWriter()
        writer.boolean(value)
        self.assertEqual(writer.getvalue(), struct.pack(">I", int(value)))
        decoded = self._round_trip(lambda w: w.boolean(value), XdrReader.boolean, 4)
        self.assertIs(decoded, value)

    @FAST
    @given(SMALL_BYTES)
    def test_fixed_opaque(self, data: bytes) -> None:
        """Fixed-length opaques are the bytes plus zero padding, without a length word."""
        size = len(data) + (-len(data) % 4)
        writer = XdrWriter()
        writer.fixed_opaque(data)
        self.assertEqual(writer.getvalue(), data + b"\0" * (-len(data) % 4))
        decoded = self._round_trip(
            lambda w: w.fixed_opaque(data), lambda r: r.fixed_opaque(len(data)), size
        )
        self.assertEqual(bytes(decoded), data)

    @FAST
    @given(SMALL_BYTES)
    def test_opaque(self, data: bytes) -> None:
        """Variable-length opaques carry their length and padding, and decode exactly."""
        writer = XdrWriter()
        writer.opaque(data)
        self.assertEqual(writer.getvalue(), xdr_opaque(data))
        decoded = self._round_trip(
            lambda w: w.opaque(data), lambda r: r.opaque(len(data)), len(xdr_opaque(data))
        )
        self.assertEqual(bytes(decoded), data)

    @FAST
    @given(SMALL_BYTES)
    def test_string(self, data: bytes) -> None:
        """Strings (NFS names) are opaques that decode to ``bytes``, not text."""
        writer = XdrWriter()
        writer.string(data)
        self.assertEqual(writer.getvalue(), xdr_opaque(data))
        decoded = self._round_trip(
            lambda w: w.string(data), lambda r: r.string(64), len(xdr_opaque(data))
        )
        self.assertIsInstance(decoded, bytes)
        self.assertEqual(decoded, data)

    @FAST
    @given(st.none() | UINT)
    def test_optional(self, value: int | None) -> None:
        """Optional data is a presence flag followed by the value when present."""
        writer = XdrWriter()
        writer.optional(value, XdrWriter.uint)
        expected = b"\0\0\0\0" if value is None else struct.pack(">II", 1, value)
        self.assertEqual(writer.getvalue(), expected)
        decoded = self._round_trip(
            lambda w: w.optional(value, XdrWriter.uint),
            lambda r: r.optional(XdrReader.uint),
            len(expected),
        )
        self.assertEqual(decoded, value)

    @FAST
    @given(st.lists(UINT, max_size=20))
    def test_array(self, values: list[int]) -> None:
        """Counted arrays are a count followed by the items."""
        writer = XdrWriter()
        writer.array(values, XdrWriter.uint)
        expected = struct.pack(f">I{len(values)}I", len(values), *values)
        self.assertEqual(writer.getvalue(), expected)
        decoded = self._round_trip(
            lambda w: w.array(values, XdrWriter.uint),
            lambda r: r.array(XdrReader.uint, 20),
            len(expected),
        )
        self.assertEqual(decoded, values)

    @FAST
    @given(st.lists(st.lists(SMALL_BYTES, max_size=4), max_size=5))
    def test_nested_array_of_strings(self, values: list[list[bytes]]) -> None:
        """Arrays nest with variable-length items (as READDIR entries and group lists do)."""

        def write_inner(writer: XdrWriter, items: list[bytes]) -> None:
            writer.array(items, XdrWriter.string)

        writer = XdrWriter()
        writer.array(values, write_inner)
        reader = XdrReader(writer.getvalue())
        decoded = reader.array(lambda r: r.array(lambda r2: r2.string(64), 4), 5)
        self.assertEqual(decoded, values)
        self.assertEqual(reader.remaining, 0)

    @FAST
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("uint"), UINT),
                st.tuples(st.just("int32"), INT32),
                st.tuples(st.just("uhyper"), UHYPER),
                st.tuples(st.just("hyper"), HYPER),
                st.tuples(st.just("boolean"), st.booleans()),
                st.tuples(st.just("opaque"), SMALL_BYTES),
            ),
            max_size=30,
        )
    )
    def test_mixed_sequence(self, items: list[tuple[str, Any]]) -> None:
        """A sequence of mixed items decodes in order; padding never shifts later items."""
        writer = XdrWriter()
        for kind, value in items:
            getattr(writer, kind)(value)
        size = len(writer)
        encoded = writer.getvalue()
        self.assertEqual(len(encoded), size)
        self.assertEqual(len(encoded) % 4, 0)
        reader = XdrReader(encoded)
        for kind, value in items:
            if kind == "opaque":
                self.assertEqual(bytes(reader.opaque(64)), value)
            else:
                self.assertEqual(getattr(reader, kind)(), value)
        self.assertEqual(reader.remaining, 0)


class ReaderTests(SynchronousTestCase):
    """The reader is bounds-checked, enforces limits and raises only :class:`XdrError`."""

    def test_short_reads(self) -> None:
        """Reading past the end of the buffer is an XdrError for every fixed-size type."""
        for method, size in [
            (XdrReader.uint, 4),
            (XdrReader.int32, 4),
            (XdrReader.uhyper, 8),
            (XdrReader.hyper, 8),
            (XdrReader.boolean, 4),
        ]:
            for length in range(size):
                with self.subTest(method=method.__name__, length=length):
                    self.assertRaises(XdrError, method, XdrReader(b"\0" * length))

    def test_xdr_error_is_value_error(self) -> None:
        """XdrError is a ValueError, so generic input-validation handlers also catch it."""
        self.assertTrue(issubclass(XdrError, ValueError))

    def test_opaque_longer_than_buffer(self) -> None:
        """An opaque whose length word promises more bytes than remain is rejected."""
        reader = XdrReader(struct.pack(">I", 8) + b"abcd")
        self.assertRaises(XdrError, reader.opaque, 100)

    def test_opaque_missing_padding(self) -> None:
        """The padding after an opaque is part of the item: a buffer ending before it is short."""
        reader = XdrReader(struct.pack(">I", 3) + b"abc")
        self.assertRaises(XdrError, reader.opaque, 100)

    def test_opaque_limit(self) -> None:
        """An opaque longer than ``max_size`` is rejected even if its bytes are all there."""
        data = xdr_opaque(b"x" * 9)
        self.assertRaises(XdrError, XdrReader(data).opaque, 8)
        self.assertRaises(XdrError, XdrReader(data).string, 8)
        self.assertEqual(bytes(XdrReader(data).opaque(9)), b"x" * 9)

    def test_opaque_limit_checked_before_reading(self) -> None:
        """A huge length word is refused from the length alone, not by trying to read it."""
        reader = XdrReader(struct.pack(">I", 2**32 - 1))
        with self.assertRaises(XdrError) as caught:
            reader.opaque(1024)
        self.assertIn("limit", str(caught.exception))

    def test_array_limit(self) -> None:
        """An array with more than ``max_count`` items is rejected before decoding any item."""
        calls: list[int] = []

        def decode(reader: XdrReader) -> int:
            calls.append(1)
            return reader.uint()

        data = struct.pack(">I3I", 3, 1, 2, 3)
        self.assertRaises(XdrError, XdrReader(data).array, decode, 2)
        self.assertEqual(calls, [])
        self.assertEqual(XdrReader(data).array(decode, 3), [1, 2, 3])

    def test_array_of_empty_items_with_huge_count(self) -> None:
        """A huge count is refused by the limit even when items take no bytes at all."""
        data = struct.pack(">I", 2**32 - 1)
        self.assertRaises(XdrError, XdrReader(data).array, lambda r: None, 16)

    def test_boolean_rejects_other_values(self) -> None:
        """Only 0 and 1 are booleans; anything else is malformed, not "true"."""
        for value in (2, 0x80000000, 2**32 - 1):
            self.assertRaises(XdrError, XdrReader(struct.pack(">I", value)).boolean)

    def test_enum(self) -> None:
        """Enums accept only the listed values and are decoded as signed integers."""
        self.assertEqual(XdrReader(struct.pack(">i", 2)).enum(frozenset({1, 2})), 2)
        self.assertEqual(XdrReader(struct.pack(">i", -1)).enum(frozenset({-1})), -1)
        self.assertRaises(XdrError, XdrReader(struct.pack(">i", 3)).enum, frozenset({1, 2}))
        self.assertRaises(XdrError, XdrReader(struct.pack(">i", 5)).enum, range(5))

    def test_optional_rejects_bad_flag(self) -> None:
        """An optional's presence flag is a boolean: 2 is malformed, not "present"."""
        reader = XdrReader(struct.pack(">II", 2, 7))
        self.assertRaises(XdrError, reader.optional, XdrReader.uint)

    def test_opaque_is_zero_copy(self) -> None:
        """Decoded opaques are views of the received buffer, so WRITE data is never copied."""
        data = xdr_opaque(b"payload!")
        view = XdrReader(data).opaque(100)
        self.assertIsInstance(view, memoryview)
        self.assertIs(view.obj, data)
        self.assertEqual(bytes(view), b"payload!")

    def test_tell_and_remaining(self) -> None:
        """``tell`` and ``remaining`` track consumption, padding included."""
        reader = XdrReader(xdr_opaque(b"a") + struct.pack(">I", 5))
        self.assertEqual((reader.tell(), reader.remaining), (0, 12))
        reader.opaque(4)
        self.assertEqual((reader.tell(), reader.remaining), (8, 4))
        self.assertEqual(reader.uint(), 5)
        self.assertEqual((reader.tell(), reader.remaining), (12, 0))

    def test_reads_from_memoryview_and_bytearray(self) -> None:
        """The reader accepts any buffer the record layer may hand it."""
        raw = struct.pack(">I", 42)
        for buffer in (bytearray(raw), memoryview(raw), memoryview(b"\0\0" + raw)[2:]):
            self.assertEqual(XdrReader(buffer).uint(), 42)

    @settings(max_examples=300, deadline=None, database=None)
    @given(
        st.binary(max_size=96),
        st.lists(st.integers(0, 11), min_size=1, max_size=20),
        st.integers(0, 40),
    )
    def test_random_bytes_raise_only_xdr_error(
        self, data: bytes, operations: list[int], size: int
    ) -> None:
        """Decoding arbitrary bytes with any reader method returns or raises XdrError only.

        Any other exception (struct.error, IndexError, MemoryError) would escape
        the RPC layer's GARBAGE_ARGS handling and drop the client's connection.
        """
        methods: list[Callable[[XdrReader], Any]] = [
            XdrReader.uint,
            XdrReader.int32,
            XdrReader.uhyper,
            XdrReader.hyper,
            XdrReader.boolean,
            lambda r: r.enum(range(0, 8)),
            lambda r: r.fixed_opaque(size),
            lambda r: r.opaque(size),
            lambda r: r.string(size),
            lambda r: r.optional(XdrReader.hyper),
            lambda r: r.array(XdrReader.uint, size),
            lambda r: r.array(lambda r2: r2.string(size), 1000),
        ]
        reader = XdrReader(data)
        for operation in operations:
            before = reader.tell()
            try:
                methods[operation](reader)
            except XdrError:
                break
            self.assertGreaterEqual(reader.tell(), before)
            self.assertGreaterEqual(reader.remaining, 0)
            self.assertLessEqual(reader.tell(), len(data))


class WriterPartsTests(SynchronousTestCase):
    """Large opaques become their own output part so READ data is never joined or copied."""

    def test_small_output_is_one_part(self) -> None:
        """Small items share one part (one write for a small reply)."""
        writer = XdrWriter()
        writer.uint(1)
        writer.opaque(b"x" * (ZERO_COPY_THRESHOLD - 1))
        writer.uint(2)
        parts = writer.parts()
        self.assertEqual(len(parts), 1)
        self.assertEqual(
            parts[0],
            struct.pack(">I", 1)
            + xdr_opaque(b"x" * (ZERO_COPY_THRESHOLD - 1))
            + struct.pack(">I", 2),
        )

    def test_large_opaque_is_its_own_part(self) -> None:
        """An opaque at the threshold is a separate part, passed on uncopied when it is bytes."""
        payload = b"y" * (ZERO_COPY_THRESHOLD + 1)
        writer = XdrWriter()
        writer.uint(7)
        writer.opaque(payload)
        writer.uint(8)
        self.assertEqual(len(writer), 4 + 4 + len(payload) + 3 + 4)
        parts = writer.parts()
        self.assertEqual(
            parts, [struct.pack(">II", 7, len(payload)), payload, b"\0\0\0" + struct.pack(">I", 8)]
        )
        self.assertIs(parts[1], payload)

    def test_large_opaque_at_start_and_end(self) -> None:
        """No empty parts are produced around a large opaque at either end of the output."""
        payload = b"z" * ZERO_COPY_THRESHOLD
        writer = XdrWriter()
        writer.fixed_opaque(payload)
        parts = writer.parts()
        self.assertEqual(parts, [payload])

    def test_non_bytes_payloads_become_bytes(self) -> None:
        """Transports accept only bytes, so bytearray and memoryview payloads are converted."""
        for payload in (
            bytearray(b"q" * ZERO_COPY_THRESHOLD),
            memoryview(b"r" * (ZERO_COPY_THRESHOLD + 2)),
        ):
            writer = XdrWriter()
            writer.opaque(payload)
            parts = writer.parts()
            for part in parts:
                self.assertIs(type(part), bytes)
            self.assertEqual(b"".join(parts), xdr_opaque(bytes(payload)))

    def test_raw(self) -> None:
        """``raw`` appends pre-encoded bytes unchanged."""
        writer = XdrWriter()
        writer.raw(b"\0\0\0\1")
        writer.uint(2)
        self.assertEqual(writer.getvalue(), struct.pack(">II", 1, 2))

    @settings(max_examples=60, deadline=None, database=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["uint", "opaque", "fixed_opaque"]),
                st.integers(0, 3 * ZERO_COPY_THRESHOLD),
                st.sampled_from([bytes, bytearray, memoryview]),
            ),
            max_size=8,
        )
    )
    def test_parts_are_bytes_and_join_to_encoding(self, items: list[tuple[str, int, type]]) -> None:
        """Whatever is written, parts are all ``bytes``, join to the XDR encoding, and every
        payload of at least the threshold is exactly one part."""
        writer = XdrWriter()
        expected = b""
        large: list[bytes] = []
        for index, (kind, size, buffer_type) in enumerate(items):
            if kind == "uint":
                writer.uint(size)
                expected += struct.pack(">I", size)
                continue
            content = bytes([index % 251 + 1]) * size
            getattr(writer, kind)(buffer_type(content))
            if kind == "opaque":
                expected += xdr_opaque(content)
            else:
                expected += content + b"\0" * (-size % 4)
            if size >= ZERO_COPY_THRESHOLD:
                large.append(content)
        self.assertEqual(len(writer), len(expected))
        parts = writer.parts()
        for part in parts:
            self.assertIs(type(part), bytes)
            self.assertTrue(part)
        self.assertEqual(b"".join(parts), expected)
        for content in large:
            self.assertIn(content, parts)
