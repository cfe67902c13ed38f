"""NFSv3 file handles: opaque to clients, never a path.

Layout (16 bytes, big-endian): format version (1 byte), flags (1 byte, zero),
export id (2 bytes), file id (8 bytes), generation (4 bytes).  The layout is
the same whatever store backs an export, so a handle names the same file
after a restart or a change of backend that keeps file ids.
"""

from __future__ import annotations

import struct

import attrs

from dittofs.errors import NFSError
from dittofs.vocabulary import Status

HANDLE_VERSION = 1
_LAYOUT = struct.Struct(">BBHQI")
HANDLE_SIZE = _LAYOUT.size


@attrs.frozen
class FileHandle:
    """The decoded parts of a file handle."""

    export_id: int
    fileid: int
    generation: int

    def encode(self) -> bytes:
        """Return the handle's wire bytes."""
        return _LAYOUT.pack(HANDLE_VERSION, 0, self.export_id, self.fileid, self.generation)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> FileHandle:
        """Parse a handle; NFS3ERR_BADHANDLE for anything this server never issued."""
        if len(data) != HANDLE_SIZE:
            raise NFSError(Status.BADHANDLE, f"handle of {len(data)} bytes")
        version, flags, export_id, fileid, generation = _LAYOUT.unpack(data)
        if version != HANDLE_VERSION or flags != 0:
            raise NFSError(Status.BADHANDLE, f"handle format {version}/{flags}")
        return cls(export_id, fileid, generation)
