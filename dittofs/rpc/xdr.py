"""XDR (RFC 4506) encoding and decoding over memory buffers.

The reader works on a ``memoryview`` so that large opaque payloads (WRITE
data) are handed on as zero-copy slices; every read is bounds-checked and the
only exception it raises is :class:`XdrError`, which the RPC layer turns into
``GARBAGE_ARGS``.  The writer collects small fields in a ``bytearray`` and
keeps large payloads (READ data) as separate parts, so a reply can go out with
``writeSequence`` without joining megabytes of file data; a payload may even
stay in its file (a :class:`Region`) until the kernel sends it.

The stdlib ``xdrlib`` is deliberately not used: it was removed in Python 3.13
and copies every opaque it decodes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class Region(Protocol):
    """Payload bytes still in a file: *len* bytes from :attr:`offset` of :meth:`fileno`.

    Sent by the connection with ``sendfile`` (:mod:`dittofs.rpc.sendfile`),
    which then closes it.  The file may end early: the rest is zeros.
    """

    offset: int

    def __len__(self) -> int: ...

    def fileno(self) -> int:
        """The descriptor of the file."""

    def read(self) -> bytes:
        """The bytes (blocking), zeros past the file's end."""

    def close(self) -> None:
        """Give the descriptor back."""


#: One part of an encoded message: bytes, or bytes still in a file.
Part = bytes | Region

_UINT = struct.Struct(">I")
_INT = struct.Struct(">i")
_UHYPER = struct.Struct(">Q")
_HYPER = struct.Struct(">q")

_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")

#: Opaque payloads at least this large are kept as their own output part
#: instead of being copied into the writer's buffer.
ZERO_COPY_THRESHOLD = 4096


class XdrError(ValueError):
    """The bytes do not decode as the expected XDR type (short, oversized or invalid)."""


def padding(length: int) -> bytes:
    """Return the zero bytes that round *length* up to a multiple of four."""
    return _PADDING[length & 3]


class XdrReader:
    """Decode XDR items sequentially from a buffer, without copying opaques."""

    __slots__ = ("_buf", "_end", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._buf = memoryview(data)
        self._pos = 0
        self._end = len(self._buf)

    def tell(self) -> int:
        """Offset of the next byte to be decoded."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Number of bytes not yet consumed."""
        return self._end - self._pos

    def _take(self, size: int) -> int:
        start = self._pos
        end = start + size
        if end > self._end:
            raise XdrError(f"need {size} bytes at offset {start}, only {self._end - start} left")
        self._pos = end
        return start

    def uint(self) -> int:
        """Decode an unsigned 32-bit integer."""
        return _UINT.unpack_from(self._buf, self._take(4))[0]  # type: ignore[no-any-return]

    def int32(self) -> int:
        """Decode a signed 32-bit integer."""
        return _INT.unpack_from(self._buf, self._take(4))[0]  # type: ignore[no-any-return]

    def uhyper(self) -> int:
        """Decode an unsigned 64-bit integer."""
        return _UHYPER.unpack_from(self._buf, self._take(8))[0]  # type: ignore[no-any-return]

    def hyper(self) -> int:
        """Decode a signed 64-bit integer."""
        return _HYPER.unpack_from(self._buf, self._take(8))[0]  # type: ignore[no-any-return]

    def boolean(self) -> bool:
        """Decode a boolean; anything but 0 or 1 is malformed."""
        value = self.uint()
        if value > 1:
            raise XdrError(f"boolean value {value} is neither 0 nor 1")
        return value == 1

    def enum(self, valid: frozenset[int] | range) -> int:
        """Decode an enum, rejecting values outside *valid*."""
        value = self.int32()
        if value not in valid:
            raise XdrError(f"enum value {value} not allowed")
        return value

    def fixed_opaque(self, size: int) -> memoryview:
        """Decode fixed-length opaque data of *size* bytes (a slice, not a copy)."""
        start = self._take((size + 3) & ~3)
        return self._buf[start : start + size]

    def opaque(self, max_size: int) -> memoryview:
        """Decode variable-length opaque data no longer than *max_size* bytes."""
        size = self.uint()
        if size > max_size:
            raise XdrError(f"opaque of {size} bytes exceeds limit {max_size}")
        return self.fixed_opaque(size)

    def string(self, max_size: int) -> bytes:
        """Decode a variable-length string as raw bytes (names are bytes in NFS)."""
        return bytes(self.opaque(max_size))

    def optional(self, decode: Callable[[XdrReader], T]) -> T | None:
        """Decode an XDR optional-data (``*T``) or a discriminated "present" union."""
        return decode(self) if self.boolean() else None

    def array(self, decode: Callable[[XdrReader], T], max_count: int) -> list[T]:
        """Decode a counted array of at most *max_count* items."""
        count = self.uint()
        if count > max_count:
            raise XdrError(f"array of {count} items exceeds limit {max_count}")
        return [decode(self) for _ in range(count)]


class XdrWriter:
    """Encode XDR items into a list of byte parts suitable for ``writeSequence``."""

    __slots__ = ("_buf", "_parts", "_size")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._parts: list[Part] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size + len(self._buf)

    def uint(self, value: int) -> None:
        """Encode an unsigned 32-bit integer."""
        self._buf += _UINT.pack(value)

    def int32(self, value: int) -> None:
        """Encode a signed 32-bit integer."""
        self._buf += _INT.pack(value)

    def uhyper(self, value: int) -> None:
        """Encode an unsigned 64-bit integer."""
        self._buf += _UHYPER.pack(value)

    def hyper(self, value: int) -> None:
        """Encode a signed 64-bit integer."""
        self._buf += _HYPER.pack(value)

    def boolean(self, value: bool) -> None:
        """Encode a boolean."""
        self._buf += _UINT.pack(1 if value else 0)

    def raw(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes that are already XDR-encoded (and already padded)."""
        self._buf += data

    def fixed_opaque(self, data: bytes | bytearray | memoryview | Region) -> None:
        """Encode fixed-length opaque data, padded to four bytes."""
        size = len(data)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            self._flush()
            self._parts.append(data)  # a Region: stays in its file until sent
            self._size += size
        elif size >= ZERO_COPY_THRESHOLD:
            self._flush()
            # Transports take only bytes: a bytes payload (READ data) goes out uncopied.
            self._parts.append(data if isinstance(data, bytes) else bytes(data))
            self._size += size
        else:
            self._buf += data
        self._buf += _PADDING[size & 3]

    def opaque(self, data: bytes | bytearray | memoryview | Region) -> None:
        """Encode variable-length opaque data (length, bytes, padding)."""
        self._buf += _UINT.pack(len(data))
        self.fixed_opaque(data)

    string = opaque

    def optional(self, value: T | None, encode: Callable[[XdrWriter, T], None]) -> None:
        """Encode an XDR optional-data: a presence flag, then the value."""
        if value is None:
            self._buf += b"\0\0\0\0"
        else:
            self._buf += b"\0\0\0\1"
            encode(self, value)

    def array(self, items: Sequence[T], encode: Callable[[XdrWriter, T], None]) -> None:
        """Encode a counted array."""
        self._buf += _UINT.pack(len(items))
        for item in items:
            encode(self, item)

    def extend(self, parts: Sequence[Part]) -> None:
        """Append parts already encoded (another writer's :meth:`parts`), uncopied."""
        self._flush()
        self._parts.extend(parts)
        self._size += sum(len(part) for part in parts)

    def first_uint(self) -> int | None:
        """The first 32-bit word written (a procedure's status), without joining parts."""
        head = self._parts[0] if self._parts else self._buf
        if not isinstance(head, (bytes, bytearray)) or len(head) < 4:
            return None
        return int(_UINT.unpack_from(head)[0])

    def _flush(self) -> None:
        if self._buf:
            self._parts.append(bytes(self._buf))
            self._size += len(self._buf)
            self._buf = bytearray()

    def parts(self) -> list[Part]:
        """Return the encoded output as a list of parts (the writer is then spent)."""
        self._flush()
        return self._parts

    def getvalue(self) -> bytes:
        """Return the encoded output joined into one ``bytes`` (for tests and small replies)."""
        return b"".join(as_bytes(part) for part in self.parts())


def as_bytes(part: Part) -> bytes:
    """A part's bytes: a region is read (blocking; for tests and small replies) and closed."""
    if isinstance(part, bytes):
        return part
    try:
        return part.read()
    finally:
        part.close()
