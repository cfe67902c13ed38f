"""Tests for :mod:`dittofs.mount`: the MOUNT program (RFC 1813 appendix I) on the wire.

Calls go through an :class:`~dittofs.rpc.dispatch.RpcDispatcher` and results
are decoded here with :mod:`struct`, so the tests pin the XDR clients parse.
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from dittofs.exports import Export, ExportTable
from dittofs.mount import MountProgram
from dittofs.policy import AccessPolicy, parse_clients
from dittofs.rpc.dispatch import RpcDispatcher
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from tests.unit.test_message import (
    GARBAGE_ARGS,
    PROC_UNAVAIL,
    PROG_MISMATCH,
    SUCCESS,
    Reply,
    build_call,
    parse_reply,
    xdr_opaque,
)

MOUNT_PROGRAM = 100005
NULL, MNT, DUMP, UMNT, UMNTALL, EXPORT = range(6)
MNT3_OK = 0
MNT3ERR_NOENT = 2
AUTH_NONE, AUTH_SYS = 0, 1
HOST = "192.0.2.10"
OTHER_HOST = "192.0.2.11"
#: The test clients' network, admitted by every export in these tests.
CLIENTS = AccessPolicy(clients=parse_clients(["192.0.2.0/24"]))


class Cursor:
    """A minimal XDR reader for decoding MOUNT results in tests."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def uint(self) -> int:
        """Read an unsigned 32-bit integer."""
        (value,) = struct.unpack_from(">I", self.data, self.offset)
        self.offset += 4
        return value

    def opaque(self) -> bytes:
        """Read a variable-length opaque and its padding."""
        length = self.uint()
        value = self.data[self.offset : self.offset + length]
        if len(value) != length:
            raise AssertionError("opaque runs past the end of the results")
        self.offset += length + (-length % 4)
        return value

    def end(self) -> None:
        """Assert every byte was consumed."""
        if self.offset != len(self.data):
            raise AssertionError(f"{len(self.data) - self.offset} unexpected trailing bytes")


class MountTests(SynchronousTestCase):
    """MNT, DUMP, UMNT, UMNTALL and EXPORT over one export on memory stores."""

    def setUp(self) -> None:
        self.export = Export(1, b"/export", MemoryMetadataStore(), MemoryContentStore(), CLIENTS)
        self.exports = ExportTable([self.export])
        self.successResultOf(self.exports.open())
        self.program = MountProgram(self.exports)
        self.dispatcher = RpcDispatcher([self.program])
        self.xid = 0

    def call(self, procedure: int, args: bytes = b"", version: int = 3, host: str = HOST) -> Reply:
        """Make a MOUNT call from *host* and return the parsed reply."""
        self.xid += 1
        record = build_call(self.xid, MOUNT_PROGRAM, version, procedure, args=args)
        result = self.dispatcher.dispatch(record, host, 1001)
        assert result is not None
        reply = parse_reply(b"".join(self.successResultOf(result)))
        self.assertEqual(reply.xid, self.xid)
        return reply

    def mnt(self, path: bytes, host: str = HOST) -> Cursor:
        """Call MNT and return a cursor on its successful results."""
        reply = self.call(MNT, xdr_opaque(path), host=host)
        self.assertEqual(reply.accept_stat, SUCCESS)
        return Cursor(reply.body)

    def dump(self, version: int = 3) -> list[tuple[bytes, bytes]]:
        """Call DUMP and decode the mount list."""
        reply = self.call(DUMP, version=version)
        self.assertEqual(reply.accept_stat, SUCCESS)
        cursor = Cursor(reply.body)
        entries = []
        while cursor.uint():
            entries.append((cursor.opaque(), cursor.opaque()))
        cursor.end()
        return entries

    def test_null(self) -> None:
        """NULL answers with no results, as clients ping MOUNT before mounting."""
        reply = self.call(NULL)
        self.assertEqual((reply.accept_stat, reply.body), (SUCCESS, b""))

    def test_mnt(self) -> None:
        """MNT of the export path returns OK, the root handle and the offered flavours."""
        cursor = self.mnt(b"/export")
        self.assertEqual(cursor.uint(), MNT3_OK)
        handle = cursor.opaque()
        assert self.export.root is not None
        self.assertEqual(handle, self.export.handle(self.export.root))
        self.assertTrue(0 < len(handle) <= 64)
        count = cursor.uint()
        flavours = [cursor.uint() for _ in range(count)]
        cursor.end()
        self.assertEqual(sorted(flavours), [AUTH_NONE, AUTH_SYS])

    def test_mnt_trailing_slash(self) -> None:
        """``/export/`` names the same export as ``/export``."""
        cursor = self.mnt(b"/export/")
        self.assertEqual(cursor.uint(), MNT3_OK)

    def test_mnt_unknown_path(self) -> None:
        """MNT of a path that is not exported is MNT3ERR_NOENT with nothing after it."""
        for path in (b"/nope", b"/export/sub", b"/", b""):
            with self.subTest(path=path):
                cursor = self.mnt(path)
                self.assertEqual(cursor.uint(), MNT3ERR_NOENT)
                cursor.end()
        self.assertEqual(self.dump(), [])

    def test_mnt_path_too_long(self) -> None:
        """A dirpath over MNTPATHLEN (1024) is malformed: GARBAGE_ARGS."""
        reply = self.call(MNT, xdr_opaque(b"/" + b"x" * 1024))
        self.assertEqual(reply.accept_stat, GARBAGE_ARGS)

    def test_dump_lists_mounts(self) -> None:
        """DUMP lists each client host with the path it mounted."""
        self.assertEqual(self.dump(), [])
        self.mnt(b"/export")
        self.mnt(b"/export", host=OTHER_HOST)
        self.mnt(b"/export")  # mounting twice is listed once
        self.assertEqual(
            sorted(self.dump()),
            [(HOST.encode(), b"/export"), (OTHER_HOST.encode(), b"/export")],
        )

    def test_umnt(self) -> None:
        """UMNT removes the calling client's entry only."""
        self.mnt(b"/export")
        self.mnt(b"/export", host=OTHER_HOST)
        reply = self.call(UMNT, xdr_opaque(b"/export"))
        self.assertEqual((reply.accept_stat, reply.body), (SUCCESS, b""))
        self.assertEqual(self.dump(), [(OTHER_HOST.encode(), b"/export")])

    def test_umnt_with_path_as_mounted(self) -> None:
        """UMNT with the same path string the client mounted (``/export/``) removes it."""
        self.mnt(b"/export/")
        self.call(UMNT, xdr_opaque(b"/export/"))
        self.assertEqual(self.dump(), [])

    def test_umntall(self) -> None:
        """UMNTALL removes every entry of the calling client, and nobody else's."""
        self.mnt(b"/export")
        self.mnt(b"/export", host=OTHER_HOST)
        reply = self.call(UMNTALL)
        self.assertEqual((reply.accept_stat, reply.body), (SUCCESS, b""))
        self.assertEqual(self.dump(), [(OTHER_HOST.encode(), b"/export")])
        self.call(UMNTALL, host=OTHER_HOST)
        self.assertEqual(self.dump(), [])

    def test_export(self) -> None:
        """EXPORT lists the export path with its client list as the groups."""
        reply = self.call(EXPORT)
        self.assertEqual(reply.accept_stat, SUCCESS)
        cursor = Cursor(reply.body)
        exports = []
        while cursor.uint():
            path = cursor.opaque()
            groups = []
            while cursor.uint():
                groups.append(cursor.opaque())
            exports.append((path, groups))
        cursor.end()
        self.assertEqual(exports, [(b"/export", [b"192.0.2.0/24"])])

    def test_export_lists_every_export(self) -> None:
        """With several exports, EXPORT lists them all."""
        second = Export(2, b"/second", MemoryMetadataStore(), MemoryContentStore(), CLIENTS)
        exports = ExportTable([self.export, second])
        dispatcher = RpcDispatcher([MountProgram(exports)])
        result = dispatcher.dispatch(build_call(1, MOUNT_PROGRAM, 3, EXPORT), HOST, 1)
        assert result is not None
        cursor = Cursor(parse_reply(b"".join(self.successResultOf(result))).body)
        paths = []
        while cursor.uint():
            paths.append(cursor.opaque())
            self.assertEqual(cursor.uint(), 1)
            self.assertEqual(cursor.opaque(), b"192.0.2.0/24")
            self.assertEqual(cursor.uint(), 0)
        cursor.end()
        self.assertEqual(sorted(paths), [b"/export", b"/second"])

    def test_v1_has_no_mnt(self) -> None:
        """MOUNT v1 answers the procedures whose XDR is shared, but not MNT (v2 handles)."""
        reply = self.call(MNT, xdr_opaque(b"/export"), version=1)
        self.assertEqual(reply.accept_stat, PROC_UNAVAIL)
        self.assertEqual(self.call(NULL, version=1).accept_stat, SUCCESS)
        self.assertEqual(self.call(EXPORT, version=1).accept_stat, SUCCESS)
        self.mnt(b"/export")
        self.assertEqual(self.dump(version=1), [(HOST.encode(), b"/export")])
        self.assertEqual(self.call(UMNTALL, version=1).accept_stat, SUCCESS)
        self.assertEqual(self.dump(), [])

    def test_versions(self) -> None:
        """MOUNT serves versions 1 to 3; others get PROG_MISMATCH 1..3."""
        reply = self.call(NULL, version=4)
        self.assertEqual((reply.accept_stat, reply.low, reply.high), (PROG_MISMATCH, 1, 3))
