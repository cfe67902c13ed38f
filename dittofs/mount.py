"""The MOUNT program, version 3 (RFC 1813 appendix I), and the v1 procedures of the same shape.

MNT turns an export path into the root file handle; DUMP/UMNT/UMNTALL keep
the advisory list of who mounted what; EXPORT lists the exports.  Versions 1
and 2 are answered for NULL, DUMP, UMNT, UMNTALL and EXPORT, whose XDR is
identical across versions (some clients send those as v1); their MNT returns
a 32-byte v2 handle and is not offered.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from dittofs.exports import ExportTable
from dittofs.rpc.dispatch import NULL_PROCEDURE, CallContext, Procedure
from dittofs.rpc.message import AuthFlavor
from dittofs.rpc.xdr import XdrReader, XdrWriter

MOUNT_PROGRAM = 100005
MOUNT_V1 = 1
MOUNT_V3 = 3

MNTPATHLEN = 1024
MNTNAMLEN = 255


class MountStat(enum.IntEnum):
    """``mountstat3``."""

    OK = 0
    PERM = 1
    NOENT = 2
    IO = 5
    ACCES = 13
    NOTDIR = 20
    INVAL = 22
    NAMETOOLONG = 63
    NOTSUPP = 10004
    SERVERFAULT = 10006


class MountProc(enum.IntEnum):
    """MOUNT procedure numbers."""

    NULL = 0
    MNT = 1
    DUMP = 2
    UMNT = 3
    UMNTALL = 4
    EXPORT = 5


@attrs.frozen
class MountEntry:
    """One line of the DUMP list: a client host and the path it mounted."""

    host: bytes
    path: bytes


def decode_dirpath(reader: XdrReader) -> bytes:
    """Decode ``dirpath`` (at most 1024 bytes)."""
    return reader.string(MNTPATHLEN)


def _no_args(reader: XdrReader) -> None:
    return None


class MountProgram:
    """RPC program 100005, versions 1 to 3, over the same exports as the NFS program."""

    number = MOUNT_PROGRAM
    low_version = MOUNT_V1
    high_version = MOUNT_V3

    def __init__(self, exports: ExportTable) -> None:
        self.exports = exports
        self.mounts: set[MountEntry] = set()
        common = {
            MountProc.NULL: NULL_PROCEDURE,
            MountProc.DUMP: Procedure("DUMP", _no_args, self.dump),
            MountProc.UMNT: Procedure("UMNT", decode_dirpath, self.umnt),
            MountProc.UMNTALL: Procedure("UMNTALL", _no_args, self.umntall),
            MountProc.EXPORT: Procedure("EXPORT", _no_args, self.export),
        }
        self._v1: dict[int, Procedure] = {int(k): v for k, v in common.items()}
        self._v3 = {**self._v1, int(MountProc.MNT): Procedure("MNT", decode_dirpath, self.mnt)}

    def procedures(self, version: int) -> Mapping[int, Procedure]:
        """See :class:`~dittofs.rpc.dispatch.RpcProgram`."""
        return self._v3 if version == MOUNT_V3 else self._v1

    async def mnt(self, path: bytes, context: CallContext) -> XdrWriter:
        """MOUNTPROC3_MNT: the root handle of an export, with AUTH_SYS and AUTH_NONE offered."""
        writer = XdrWriter()
        export = self.exports.by_path(path)
        if export is None or export.root is None:
            writer.uint(MountStat.NOENT)
            return writer
        self.mounts.add(MountEntry(context.client_host.encode(), export.path))
        writer.uint(MountStat.OK)
        writer.opaque(export.handle(export.root))
        writer.array([AuthFlavor.AUTH_SYS, AuthFlavor.AUTH_NONE], XdrWriter.uint)
        return writer

    async def dump(self, args: None, context: CallContext) -> XdrWriter:
        """MOUNTPROC3_DUMP: the (advisory) list of mounts, as a linked list."""
        writer = XdrWriter()
        for entry in sorted(self.mounts, key=attrs.astuple):
            writer.boolean(True)
            writer.string(entry.host[:MNTNAMLEN])
            writer.string(entry.path)
        writer.boolean(False)
        return writer

    async def umnt(self, path: bytes, context: CallContext) -> XdrWriter:
        """MOUNTPROC3_UMNT: forget one mount of this client (the path matched as MNT does)."""
        export = self.exports.by_path(path)
        mounted = export.path if export is not None else path
        self.mounts.discard(MountEntry(context.client_host.encode(), mounted))
        return XdrWriter()

    async def umntall(self, args: None, context: CallContext) -> XdrWriter:
        """MOUNTPROC3_UMNTALL: forget every mount of this client."""
        host = context.client_host.encode()
        self.mounts = {entry for entry in self.mounts if entry.host != host}
        return XdrWriter()

    async def export(self, args: None, context: CallContext) -> XdrWriter:
        """MOUNTPROC3_EXPORT: every export, with an empty group list (no restriction yet)."""
        writer = XdrWriter()
        for export in self.exports:
            writer.boolean(True)
            writer.string(export.path)
            writer.boolean(False)  # no groups
        writer.boolean(False)
        return writer
