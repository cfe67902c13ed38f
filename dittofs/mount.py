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

from dittofs.access import EXECUTE, require
from dittofs.errors import NFSError
from dittofs.exports import Export, ExportTable
from dittofs.model import Attributes
from dittofs.policy import FLAVOURS
from dittofs.rpc.dispatch import NULL_PROCEDURE, CallContext, Procedure
from dittofs.rpc.xdr import XdrReader, XdrWriter
from dittofs.vocabulary import FileType, Status

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


_MOUNT_STATUS = {
    Status.NOENT: MountStat.NOENT,
    Status.NOTDIR: MountStat.NOTDIR,
    Status.ACCES: MountStat.ACCES,
    Status.PERM: MountStat.PERM,
    Status.NAMETOOLONG: MountStat.NAMETOOLONG,
}


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

    name = "mount"
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
        self._v3 = {
            **self._v1,
            int(MountProc.MNT): Procedure("MNT", decode_dirpath, self.mnt, status=MountStat),
        }

    def procedures(self, version: int) -> Mapping[int, Procedure]:
        """See :class:`~dittofs.rpc.dispatch.RpcProgram`."""
        return self._v3 if version == MOUNT_V3 else self._v1

    async def mnt(self, path: bytes, context: CallContext) -> XdrWriter:
        """MOUNTPROC3_MNT: the handle of an export, or of a directory inside one.

        The client must be admitted by the export's policy (MNT3ERR_ACCES
        otherwise).  A path below an export is walked one name at a time with
        the same search permission an NFS LOOKUP needs, so mounting
        ``/export/a/b`` reaches no further than ``cd`` would.
        """
        writer = XdrWriter()
        found = self.exports.containing(path)
        if found is None:
            writer.uint(MountStat.NOENT)
            return writer
        export, rest = found
        if export.root is None:
            writer.uint(MountStat.NOENT)
            return writer
        if not export.policy.admits(context.client_host, context.client_port):
            writer.uint(MountStat.ACCES)
            return writer
        try:
            directory = await self._walk(export, rest, context)
        except NFSError as error:
            writer.uint(_MOUNT_STATUS.get(error.status, MountStat.IO))
            return writer
        self.mounts.add(MountEntry(context.client_host.encode(), path.rstrip(b"/") or b"/"))
        writer.uint(MountStat.OK)
        writer.opaque(export.handle(directory))
        writer.array(FLAVOURS, XdrWriter.uint)
        return writer

    async def _walk(self, export: Export, names: list[bytes], context: CallContext) -> Attributes:
        assert export.root is not None
        caller = export.policy.identity(context.credentials)
        directory: Attributes = await export.metadata.getattr(export.root.fileid)
        for name in names:
            if len(name) > MNTNAMLEN:
                raise NFSError(Status.NAMETOOLONG)
            require(directory, caller, EXECUTE)
            directory = await export.metadata.lookup(directory.fileid, name)
            if directory.type != FileType.DIR:
                raise NFSError(Status.NOTDIR)
        return directory

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
        self.mounts.discard(MountEntry(context.client_host.encode(), path.rstrip(b"/") or b"/"))
        return XdrWriter()

    async def umntall(self, args: None, context: CallContext) -> XdrWriter:
        """MOUNTPROC3_UMNTALL: forget every mount of this client."""
        host = context.client_host.encode()
        self.mounts = {entry for entry in self.mounts if entry.host != host}
        return XdrWriter()

    async def export(self, args: None, context: CallContext) -> XdrWriter:
        """MOUNTPROC3_EXPORT: the exports this client may mount, each with its client list."""
        writer = XdrWriter()
        for export in self.exports:
            if not export.policy.admits(context.client_host, context.client_port):
                continue
            writer.boolean(True)
            writer.string(export.path)
            for network in export.policy.clients:
                writer.boolean(True)
                writer.string(str(network).encode())
            writer.boolean(False)
        writer.boolean(False)
        return writer
