"""Decoders for the arguments of every NFSv3 procedure (RFC 1813 section 3.3).

Each decoder is synchronous and pure: it either returns an argument value or
raises :class:`~dittofs.rpc.xdr.XdrError`, which the dispatcher answers with
GARBAGE_ARGS before the procedure runs.  File handles and names are kept as
raw bytes here; whether a handle is valid or a name acceptable is an NFS
status (BADHANDLE, NAMETOOLONG ...) decided by the procedure, not a decoding
error.
"""

from __future__ import annotations

import attrs

from dittofs.model import SetAttributes
from dittofs.nfs3.const import (
    NFS3_COOKIEVERFSIZE,
    NFS3_CREATEVERFSIZE,
    NFS3_FHSIZE,
    PATH_MAX,
    StableHow,
)
from dittofs.nfs3.types import decode_nfstime3, decode_sattr3, decode_sattr3_with_time_source
from dittofs.rpc.xdr import XdrReader
from dittofs.vocabulary import CreateMode, FileType

_FILE_TYPES = frozenset(int(t) for t in FileType)
_STABLE_HOWS = frozenset(int(s) for s in StableHow)
_CREATE_MODES = frozenset(int(m) for m in CreateMode)

#: Largest WRITE payload we decode; FSINFO advertises the same as wtmax.
MAX_IO = 1024 * 1024


def decode_fh(reader: XdrReader) -> bytes:
    """Decode ``nfs_fh3`` as raw bytes (at most 64)."""
    return bytes(reader.opaque(NFS3_FHSIZE))


def decode_name(reader: XdrReader) -> bytes:
    """Decode ``filename3``; its length is judged later (NAMETOOLONG is a status)."""
    return reader.string(PATH_MAX)


@attrs.frozen
class HandleArgs:
    """Arguments that are just a file handle (GETATTR, READLINK, FSSTAT, FSINFO, PATHCONF)."""

    fh: bytes


@attrs.frozen
class DirOpArgs:
    """``diropargs3``: a directory handle and a name in it."""

    dir: bytes
    name: bytes


@attrs.frozen
class SetAttrArgs:
    """SETATTR3args; ``guard_ctime`` is set when the client asked for a ctime check.

    ``client_times`` says a time is set to a value the client chose (not "now").
    """

    fh: bytes
    attributes: SetAttributes
    guard_ctime: int | None
    client_times: bool = False


@attrs.frozen
class AccessArgs:
    """ACCESS3args."""

    fh: bytes
    access: int


@attrs.frozen
class ReadArgs:
    """READ3args (and COMMIT3args, which has the same shape)."""

    fh: bytes
    offset: int
    count: int


@attrs.frozen
class WriteArgs:
    """WRITE3args; ``data`` is a zero-copy slice of the received record."""

    fh: bytes
    offset: int
    count: int
    stable: StableHow
    data: memoryview


@attrs.frozen
class CreateArgs:
    """CREATE3args: the how-union flattened into mode, attributes and verifier."""

    where: DirOpArgs
    mode: CreateMode
    attributes: SetAttributes
    verifier: bytes


@attrs.frozen
class MkdirArgs:
    """MKDIR3args."""

    where: DirOpArgs
    attributes: SetAttributes


@attrs.frozen
class SymlinkArgs:
    """SYMLINK3args."""

    where: DirOpArgs
    attributes: SetAttributes
    target: bytes


@attrs.frozen
class MknodArgs:
    """MKNOD3args: the ``mknoddata3`` union flattened."""

    where: DirOpArgs
    type: FileType
    attributes: SetAttributes
    rdev: tuple[int, int]


@attrs.frozen
class RenameArgs:
    """RENAME3args."""

    source: DirOpArgs
    target: DirOpArgs


@attrs.frozen
class LinkArgs:
    """LINK3args."""

    fh: bytes
    link: DirOpArgs


@attrs.frozen
class ReaddirArgs:
    """READDIR3args and READDIRPLUS3args (``dircount`` is None for READDIR)."""

    dir: bytes
    cookie: int
    verifier: bytes
    dircount: int | None
    maxcount: int


def decode_handle_args(reader: XdrReader) -> HandleArgs:
    """Decode arguments that consist of one ``nfs_fh3``."""
    return HandleArgs(decode_fh(reader))


def decode_diropargs(reader: XdrReader) -> DirOpArgs:
    """Decode ``diropargs3`` (LOOKUP, REMOVE, RMDIR)."""
    return DirOpArgs(decode_fh(reader), decode_name(reader))


def decode_setattr(reader: XdrReader) -> SetAttrArgs:
    """Decode SETATTR3args."""
    fh = decode_fh(reader)
    attributes, client_times = decode_sattr3_with_time_source(reader)
    guard = decode_nfstime3(reader) if reader.boolean() else None
    return SetAttrArgs(fh, attributes, guard, client_times)


def decode_access(reader: XdrReader) -> AccessArgs:
    """Decode ACCESS3args."""
    return AccessArgs(decode_fh(reader), reader.uint())


def decode_read(reader: XdrReader) -> ReadArgs:
    """Decode READ3args or COMMIT3args."""
    return ReadArgs(decode_fh(reader), reader.uhyper(), reader.uint())


def decode_write(reader: XdrReader) -> WriteArgs:
    """Decode WRITE3args."""
    fh = decode_fh(reader)
    offset = reader.uhyper()
    count = reader.uint()
    stable = StableHow(reader.enum(_STABLE_HOWS))
    data = reader.opaque(MAX_IO)
    return WriteArgs(fh, offset, count, stable, data)


def decode_create(reader: XdrReader) -> CreateArgs:
    """Decode CREATE3args."""
    where = decode_diropargs(reader)
    mode = CreateMode(reader.enum(_CREATE_MODES))
    if mode == CreateMode.EXCLUSIVE:
        verifier = bytes(reader.fixed_opaque(NFS3_CREATEVERFSIZE))
        return CreateArgs(where, mode, SetAttributes(), verifier)
    return CreateArgs(where, mode, decode_sattr3(reader), b"")


def decode_mkdir(reader: XdrReader) -> MkdirArgs:
    """Decode MKDIR3args."""
    return MkdirArgs(decode_diropargs(reader), decode_sattr3(reader))


def decode_symlink(reader: XdrReader) -> SymlinkArgs:
    """Decode SYMLINK3args."""
    where = decode_diropargs(reader)
    attributes = decode_sattr3(reader)
    return SymlinkArgs(where, attributes, reader.string(PATH_MAX))


def decode_mknod(reader: XdrReader) -> MknodArgs:
    """Decode MKNOD3args."""
    where = decode_diropargs(reader)
    file_type = FileType(reader.enum(_FILE_TYPES))
    attributes = SetAttributes()
    rdev = (0, 0)
    if file_type in (FileType.CHR, FileType.BLK):
        attributes = decode_sattr3(reader)
        rdev = (reader.uint(), reader.uint())
    elif file_type in (FileType.SOCK, FileType.FIFO):
        attributes = decode_sattr3(reader)
    return MknodArgs(where, file_type, attributes, rdev)


def decode_rename(reader: XdrReader) -> RenameArgs:
    """Decode RENAME3args."""
    return RenameArgs(decode_diropargs(reader), decode_diropargs(reader))


def decode_link(reader: XdrReader) -> LinkArgs:
    """Decode LINK3args."""
    return LinkArgs(decode_fh(reader), decode_diropargs(reader))


def decode_readdir(reader: XdrReader) -> ReaddirArgs:
    """Decode READDIR3args."""
    fh = decode_fh(reader)
    cookie = reader.uhyper()
    verifier = bytes(reader.fixed_opaque(NFS3_COOKIEVERFSIZE))
    return ReaddirArgs(fh, cookie, verifier, None, reader.uint())


def decode_readdirplus(reader: XdrReader) -> ReaddirArgs:
    """Decode READDIRPLUS3args."""
    fh = decode_fh(reader)
    cookie = reader.uhyper()
    verifier = bytes(reader.fixed_opaque(NFS3_COOKIEVERFSIZE))
    dircount = reader.uint()
    return ReaddirArgs(fh, cookie, verifier, dircount, reader.uint())
