"""Tests for :mod:`dittofs.rpc.sendfile` and the file regions the fs content store lends.

The sender writes to one end of a real non-blocking socket pair, as it
writes to a client's socket, and the other end reads what arrived; regions
are regions of real files.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dittofs.interfaces import IFileRegions
from dittofs.metrics import Metrics, metered
from dittofs.model import FileRegion
from dittofs.rpc.sendfile import RecordSender
from dittofs.rpc.xdr import Part, XdrWriter, as_bytes
from dittofs.stores.content.fs import NOWAIT_READ_BYTES
from dittofs.testing import synchronous_result
from tests.unit.test_content_conformance import make_fs_store


def receive(sock: socket.socket, size: int, timeout: float = 10.0) -> bytes:
    """Read exactly *size* bytes (or what came before the peer closed)."""
    sock.settimeout(timeout)
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(1 << 20, size - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class RecordSenderTests(SynchronousTestCase):
    """Whole records, bytes and regions in order, through a real socket."""

    def setUp(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def region(self, data: bytes, offset: int, length: int) -> FileRegion:
        """A region of a new file holding *data*."""
        path = self.directory / f"file-{len(os.listdir(self.directory))}"
        path.write_bytes(data)
        return FileRegion(os.open(path, os.O_RDONLY), offset, length)

    def drain(self) -> bytes:
        """Everything the socket holds for the other end now."""
        self.theirs.setblocking(False)
        chunks = []
        while True:
            try:
                chunk = self.theirs.recv(1 << 20)
            except BlockingIOError:
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def test_bytes_and_regions_in_order_as_room_comes(self) -> None:
        """A full socket stops the sender; each send goes on where the last stopped, and
        every part arrives once, in order; each region is closed once sent."""
        data = os.urandom(3 << 20)
        first = self.region(data, 1000, 2 << 20)
        second = self.region(b"abcdefgh", 2, 4)
        records: list[list[Part]] = [
            [b"head-1", first, b"tail-1"],
            [b"head-2", b"more", second],
            [b"only bytes"],
        ]
        pieces = [b"head-1", data[1000 : 1000 + (2 << 20)], b"tail-1", b"head-2more", b"cdef"]
        expected = b"".join([*pieces, b"only bytes"])
        sender = RecordSender(self.ours.fileno(), records)
        received = b""
        stops = 0
        while not sender.send():
            stops += 1
            self.assertLess(stops, 10_000)
            received += self.drain()
        received += self.drain()
        self.assertGreater(stops, 0)  # more than a socket pair's buffer: it had to wait
        self.assertEqual(received, expected)
        self.assertEqual((first.fd, second.fd), (-1, -1))

    def test_file_shorter_than_the_region(self) -> None:
        """Bytes the file no longer has are sent as zeros, so the record keeps its length."""
        region = self.region(b"12345", 2, 10)
        self.assertTrue(RecordSender(self.ours.fileno(), [[b"<", region, b">"]]).send())
        self.assertEqual(self.drain(), b"<345" + bytes(7) + b">")
        self.assertEqual(region.fd, -1)

    def test_client_gone(self) -> None:
        """A closed peer is an OSError; closing the sender gives back what it did not send."""
        self.theirs.close()
        region = self.region(bytes(1 << 20), 0, 1 << 20)
        sender = RecordSender(self.ours.fileno(), [[b"x", region]])
        self.assertRaises(OSError, sender.send)
        sender.close()
        self.assertEqual(region.fd, -1)


class WriterTests(SynchronousTestCase):
    """The XDR writer keeps a region as a part of its own, padded like any opaque."""

    def test_region_in_an_opaque(self) -> None:
        path = Path(self.mktemp())
        path.write_bytes(b"0123456789")
        region = FileRegion(os.open(path, os.O_RDONLY), 3, 5)
        writer = XdrWriter()
        writer.uint(7)
        writer.opaque(region)
        self.assertEqual(len(writer), 4 + 4 + 5 + 3)
        parts = writer.parts()
        self.assertIn(region, parts)
        self.assertEqual(writer.first_uint(), 7)
        self.assertEqual(
            b"".join(as_bytes(part) for part in parts), b"\0\0\0\7\0\0\0\x0534567\0\0\0"
        )
        self.assertEqual(region.fd, -1)


class FilesystemRegionTests(SynchronousTestCase):
    """The fs store lends regions of files it has open, for reads too large to read at once."""

    def setUp(self) -> None:
        self.store, _ = make_fs_store(self)
        synchronous_result(self.store.open())
        self.addCleanup(lambda: synchronous_result(self.store.close()))

    def test_provides(self) -> None:
        self.assertTrue(verifyObject(IFileRegions, self.store))

    def test_metered_as_part_of_the_content_contract(self) -> None:
        """Metrics wrapping the store's contract time read_lent too (tap wraps IFileRegions)."""
        metrics = Metrics()
        wrapped = metered(self.store, IFileRegions, "content", metrics)
        self.assertTrue(verifyObject(IFileRegions, wrapped))
        synchronous_result(wrapped.write(3, 0, b"x" * 10, False))
        self.assertEqual(synchronous_result(wrapped.read_lent(3, 0, 10)), b"x" * 10)
        labels = {"kind": "content", "backend": "fs", "operation": "read_lent"}
        counted = metrics.registry.get_sample_value(
            "dittofs_store_operation_duration_seconds_count", labels
        )
        self.assertEqual(counted, 1.0)

    def test_regions_of_open_files_only(self) -> None:
        """Not open, or small enough to read on the reactor: bytes; else a region of the file."""
        data = os.urandom(NOWAIT_READ_BYTES * 3)
        synchronous_result(self.store.write(9, 0, data, stable=False))
        small = synchronous_result(self.store.read_lent(9, 5, NOWAIT_READ_BYTES))
        self.assertEqual(small, data[5 : 5 + NOWAIT_READ_BYTES])
        region = synchronous_result(self.store.read_lent(9, 100, NOWAIT_READ_BYTES * 2))
        assert isinstance(region, FileRegion)
        self.addCleanup(region.close)
        self.assertEqual(region.read(), data[100 : 100 + NOWAIT_READ_BYTES * 2])
        # The region has a descriptor of its own: the store may close its file.
        self.store._files.forget(9)
        self.assertEqual(len(region.read()), NOWAIT_READ_BYTES * 2)
        # A file not open is read: the store opens it in its pool.
        whole = synchronous_result(self.store.read_lent(9, 0, len(data)))
        self.assertEqual(whole, data)
