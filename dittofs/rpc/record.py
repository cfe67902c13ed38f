"""ONC RPC record marking over a byte stream (RFC 5531 section 11).

A record is one or more fragments, each preceded by a four-byte header whose
top bit marks the last fragment and whose low 31 bits give the fragment's
length.  :class:`RecordReceiver` reassembles records from arbitrary chunks of
a stream.  Its buffer is a ``bytearray`` consumed by offset and compacted only
when the dead prefix is large, so feeding it byte by byte stays linear-time
(quadratic re-buffering is a denial-of-service bug).
"""

from __future__ import annotations

import struct

_HEADER = struct.Struct(">I")
_LAST_FRAGMENT = 0x80000000
_LENGTH_MASK = 0x7FFFFFFF

#: Large enough for a 1 MiB WRITE with its RPC and NFS headers.
DEFAULT_MAX_RECORD = 1024 * 1024 + 64 * 1024


class RecordError(Exception):
    """The stream cannot be framed any more; the connection must be closed."""


class RecordReceiver:
    """Reassemble RPC records from stream data, enforcing a maximum record size."""

    __slots__ = ("_buffer", "_fragments", "_offset", "_record_size", "max_record")

    def __init__(self, max_record: int = DEFAULT_MAX_RECORD) -> None:
        self.max_record = max_record
        self._buffer = bytearray()
        self._offset = 0
        self._fragments: list[bytes] = []
        self._record_size = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a complete record."""
        return len(self._buffer) - self._offset + self._record_size

    @property
    def partial(self) -> bool:
        """True while part of a record has been received and the rest is awaited."""
        return self.buffered > 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add stream bytes; return every record completed by them, in order.

        Raises :class:`RecordError` for a record larger than ``max_record``;
        fragment headers count towards that size, so a stream of empty
        non-final fragments is caught by the same bound.

        When nothing is buffered (the usual case: a chunk starts at a record
        boundary) records are cut straight from *data*, so each byte is copied
        once; only an unfinished tail is kept in the buffer.
        """
        if self._offset == len(self._buffer):
            records, consumed = self._parse(data, 0)
            if consumed < len(data):
                self._buffer = bytearray(memoryview(data)[consumed:])
                self._offset = 0
            else:
                self._buffer.clear()
                self._offset = 0
            return records
        self._buffer += data
        records, self._offset = self._parse(self._buffer, self._offset)
        buf = self._buffer
        if self._offset == len(buf):
            buf.clear()
            self._offset = 0
        elif self._offset > 65536 and self._offset * 2 > len(buf):
            del buf[: self._offset]
            self._offset = 0
        return records

    def _parse(self, source: bytes | bytearray, position: int) -> tuple[list[bytes], int]:
        """Cut complete fragments from *source* at *position*; return records and new position."""
        records: list[bytes] = []
        end = len(source)
        with memoryview(source) as view:
            while end - position >= 4:
                (header,) = _HEADER.unpack_from(view, position)
                length = header & _LENGTH_MASK
                if self._record_size + length > self.max_record:
                    raise RecordError(
                        f"record of at least {self._record_size + length} bytes exceeds "
                        f"the limit of {self.max_record}"
                    )
                if end - position < 4 + length:
                    break
                start = position + 4
                position = start + length
                fragment = bytes(view[start:position])
                if header & _LAST_FRAGMENT:
                    if self._fragments:
                        self._fragments.append(fragment)
                        fragment = b"".join(self._fragments)
                        self._fragments = []
                    self._record_size = 0
                    records.append(fragment)
                else:
                    self._fragments.append(fragment)
                    # Count the header too, so endless empty fragments are bounded as well.
                    self._record_size += 4 + length
        return records, position


def record_header(length: int) -> bytes:
    """Return the record mark for a single-fragment record of *length* bytes."""
    if length > _LENGTH_MASK:
        raise ValueError(f"record of {length} bytes is too long for one fragment")
    return _HEADER.pack(_LAST_FRAGMENT | length)
