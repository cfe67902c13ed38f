"""NFSv3 file handles (``dittofs.nfs3.handle``): layout, round trips and BADHANDLE."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dittofs.errors import NFSError
from dittofs.nfs3.const import NFS3_FHSIZE
from dittofs.nfs3.handle import HANDLE_SIZE, HANDLE_VERSION, FileHandle
from dittofs.vocabulary import Status


class FileHandleTests(SynchronousTestCase):
    """Handles name a file by export, id and generation, never by path."""

    def assertBadHandle(self, data: bytes) -> None:
        """Decoding *data* fails with NFS3ERR_BADHANDLE (not an exception of another kind)."""
        with self.assertRaises(NFSError) as caught:
            FileHandle.decode(data)
        self.assertEqual(caught.exception.status, Status.BADHANDLE)

    def test_layout(self) -> None:
        """16 bytes: version, zero flags, export id, file id, generation, big-endian.

        The layout is a promise to clients holding handles across restarts, so
        it is pinned byte for byte.
        """
        encoded = FileHandle(0x0102, 0x030405060708090A, 0x0B0C0D0E).encode()
        self.assertEqual(HANDLE_SIZE, 16)
        self.assertLessEqual(HANDLE_SIZE, NFS3_FHSIZE)
        self.assertEqual(
            encoded, bytes([HANDLE_VERSION, 0]) + bytes.fromhex("0102030405060708090a0b0c0d0e")
        )

    def test_round_trip(self) -> None:
        """Decoding an encoded handle gives back the same parts, from bytes or a memoryview."""
        handle = FileHandle(3, 12345, 678)
        self.assertEqual(FileHandle.decode(handle.encode()), handle)
        self.assertEqual(FileHandle.decode(memoryview(handle.encode())), handle)

    def test_extremes(self) -> None:
        """The largest export id, file id and generation survive the round trip."""
        handle = FileHandle(2**16 - 1, 2**64 - 1, 2**32 - 1)
        self.assertEqual(FileHandle.decode(handle.encode()), handle)

    @given(st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1))
    def test_round_trip_any(self, export_id: int, fileid: int, generation: int) -> None:
        """Every representable handle round-trips."""
        handle = FileHandle(export_id, fileid, generation)
        self.assertEqual(FileHandle.decode(handle.encode()), handle)

    def test_wrong_sizes(self) -> None:
        """Any length but 16 (empty, short, long, the 64-byte maximum) is BADHANDLE."""
        good = FileHandle(1, 2, 3).encode()
        for data in (b"", good[:-1], good + b"\0", bytes(32), bytes(NFS3_FHSIZE)):
            self.assertBadHandle(data)

    def test_wrong_version(self) -> None:
        """A handle of another format version is BADHANDLE, not misread."""
        good = FileHandle(1, 2, 3).encode()
        for version in (0, HANDLE_VERSION + 1, 255):
            self.assertBadHandle(bytes([version]) + good[1:])

    def test_nonzero_flags(self) -> None:
        """Flags are reserved: a handle with any set is not one of ours."""
        good = FileHandle(1, 2, 3).encode()
        self.assertBadHandle(good[:1] + b"\x01" + good[2:])

    @given(st.binary(max_size=NFS3_FHSIZE))
    def test_random_bytes(self, data: bytes) -> None:
        """Arbitrary bytes either decode to a handle that re-encodes to them, or are BADHANDLE."""
        try:
            handle = FileHandle.decode(data)
        except NFSError as error:
            self.assertEqual(error.status, Status.BADHANDLE)
        else:
            self.assertEqual(handle.encode(), data)
            self.assertEqual(struct.unpack(">BB", data[:2]), (HANDLE_VERSION, 0))
