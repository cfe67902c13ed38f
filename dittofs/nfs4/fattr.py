"""``fattr4`` (RFC 8881 section 5): attribute bitmaps, encoding and settable values.

The server encodes the attributes a client asks for from an :class:`Object`,
which holds everything any supported attribute needs (a file's
:class:`~dittofs.model.Attributes`, its handle and file system, and the file
system's figures when asked for).  Owners and groups travel as numeric
strings, as the Linux client sends them with AUTH_SYS; a name that is not a
number is NFS4ERR_BADOWNER.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from dittofs import filesystem as fs
from dittofs.errors import NFSError
from dittofs.model import Attributes, FileCounts, SetAttributes, SpaceUsage
from dittofs.nfs4.args import Fattr
from dittofs.nfs4.const import (
    ACL4_SUPPORT_NONE,
    FH4_PERSISTENT,
    SET_TO_CLIENT_TIME4,
    SET_TO_SERVER_TIME4,
    Attr,
    Stat4,
)
from dittofs.nfs4.errors import NFS4Error
from dittofs.rpc.xdr import XdrError, XdrReader, XdrWriter
from dittofs.vocabulary import Status

MAX_LINKS = 2**32 - 1
_NS = 1_000_000_000


@attrs.frozen
class Object:
    """What the attributes of one file (or pseudo-file-system directory) come from."""

    attributes: Attributes
    fsid: tuple[int, int]
    handle: bytes
    #: The file id of the directory this one is mounted on (its own, if none).
    mounted_on_fileid: int
    lease_time: int
    max_io: int
    counts: FileCounts | None = None
    space: SpaceUsage | None = None


def _time(writer: XdrWriter, ns: int) -> None:
    seconds, nanos = divmod(ns, _NS)
    writer.hyper(seconds)
    writer.uint(nanos)


def _bitmap_words(bits: Iterable[int]) -> list[int]:
    words: list[int] = []
    for bit in bits:
        index = bit // 32
        while len(words) <= index:
            words.append(0)
        words[index] |= 1 << (bit % 32)
    return words


def encode_bitmap(writer: XdrWriter, bits: Iterable[int]) -> None:
    """Encode a ``bitmap4`` with the given bit numbers set."""
    writer.array(_bitmap_words(bits), XdrWriter.uint)


def _space(obj: Object) -> SpaceUsage:
    if obj.space is None:
        raise NFSError(Status.SERVERFAULT, "space figures were not fetched")
    return obj.space


def _counts(obj: Object) -> FileCounts:
    if obj.counts is None:
        raise NFSError(Status.SERVERFAULT, "file counts were not fetched")
    return obj.counts


def _supported_attrs(writer: XdrWriter, obj: Object) -> None:
    encode_bitmap(writer, SUPPORTED)


def _exclusive_create_attrs(writer: XdrWriter, obj: Object) -> None:
    encode_bitmap(writer, EXCLUSIVE_CREATE_ATTRS)


def _fsid(writer: XdrWriter, obj: Object) -> None:
    writer.uhyper(obj.fsid[0])
    writer.uhyper(obj.fsid[1])


def _rawdev(writer: XdrWriter, obj: Object) -> None:
    writer.uint(obj.attributes.rdev[0])
    writer.uint(obj.attributes.rdev[1])


Encoder = Callable[[XdrWriter, Object], None]

#: How each supported attribute is encoded; their numbers are ``supported_attrs``.
ENCODERS: dict[int, Encoder] = {
    Attr.SUPPORTED_ATTRS: _supported_attrs,
    Attr.TYPE: lambda w, o: w.uint(o.attributes.type),
    Attr.FH_EXPIRE_TYPE: lambda w, o: w.uint(FH4_PERSISTENT),
    # ctime in nanoseconds moves with every change of the file, data or attributes.
    Attr.CHANGE: lambda w, o: w.uhyper(o.attributes.ctime & (2**64 - 1)),
    Attr.SIZE: lambda w, o: w.uhyper(o.attributes.size),
    Attr.LINK_SUPPORT: lambda w, o: w.boolean(True),
    Attr.SYMLINK_SUPPORT: lambda w, o: w.boolean(True),
    Attr.NAMED_ATTR: lambda w, o: w.boolean(False),
    Attr.FSID: _fsid,
    Attr.UNIQUE_HANDLES: lambda w, o: w.boolean(True),
    Attr.LEASE_TIME: lambda w, o: w.uint(o.lease_time),
    Attr.RDATTR_ERROR: lambda w, o: w.uint(Status.OK),
    Attr.ACLSUPPORT: lambda w, o: w.uint(ACL4_SUPPORT_NONE),
    Attr.CANSETTIME: lambda w, o: w.boolean(True),
    Attr.CASE_INSENSITIVE: lambda w, o: w.boolean(False),
    Attr.CASE_PRESERVING: lambda w, o: w.boolean(True),
    Attr.CHOWN_RESTRICTED: lambda w, o: w.boolean(True),
    Attr.FILEHANDLE: lambda w, o: w.opaque(o.handle),
    Attr.FILEID: lambda w, o: w.uhyper(o.attributes.fileid),
    Attr.FILES_AVAIL: lambda w, o: w.uhyper(_counts(o).free_files),
    Attr.FILES_FREE: lambda w, o: w.uhyper(_counts(o).free_files),
    Attr.FILES_TOTAL: lambda w, o: w.uhyper(_counts(o).files + _counts(o).free_files),
    Attr.HOMOGENEOUS: lambda w, o: w.boolean(True),
    Attr.MAXFILESIZE: lambda w, o: w.uhyper(fs.MAX_FILE_SIZE),
    Attr.MAXLINK: lambda w, o: w.uint(MAX_LINKS),
    Attr.MAXNAME: lambda w, o: w.uint(fs.NAME_MAX),
    Attr.MAXREAD: lambda w, o: w.uhyper(o.max_io),
    Attr.MAXWRITE: lambda w, o: w.uhyper(o.max_io),
    Attr.MODE: lambda w, o: w.uint(o.attributes.mode & 0o7777),
    Attr.NO_TRUNC: lambda w, o: w.boolean(True),
    Attr.NUMLINKS: lambda w, o: w.uint(o.attributes.nlink),
    Attr.OWNER: lambda w, o: w.string(str(o.attributes.uid).encode()),
    Attr.OWNER_GROUP: lambda w, o: w.string(str(o.attributes.gid).encode()),
    Attr.RAWDEV: _rawdev,
    Attr.SPACE_AVAIL: lambda w, o: w.uhyper(_space(o).free_bytes),
    Attr.SPACE_FREE: lambda w, o: w.uhyper(_space(o).free_bytes),
    Attr.SPACE_TOTAL: lambda w, o: w.uhyper(_space(o).total_bytes),
    Attr.SPACE_USED: lambda w, o: w.uhyper(o.attributes.used),
    Attr.TIME_ACCESS: lambda w, o: _time(w, o.attributes.atime),
    Attr.TIME_DELTA: lambda w, o: _time(w, 1),
    Attr.TIME_METADATA: lambda w, o: _time(w, o.attributes.ctime),
    Attr.TIME_MODIFY: lambda w, o: _time(w, o.attributes.mtime),
    Attr.MOUNTED_ON_FILEID: lambda w, o: w.uhyper(o.mounted_on_fileid),
    Attr.SUPPATTR_EXCLCREAT: _exclusive_create_attrs,
}

#: Attributes SETATTR (and OPEN/CREATE's ``createattrs``) may set.
SETTABLE = frozenset(
    {
        Attr.SIZE,
        Attr.MODE,
        Attr.OWNER,
        Attr.OWNER_GROUP,
        Attr.TIME_ACCESS_SET,
        Attr.TIME_MODIFY_SET,
    }
)
#: What the server supports: everything it encodes, and the write-only time setters.
SUPPORTED = frozenset(ENCODERS) | SETTABLE
#: What an EXCLUSIVE4_1 create may set beside its verifier (not the times, which hold it).
EXCLUSIVE_CREATE_ATTRS = frozenset({Attr.SIZE, Attr.MODE, Attr.OWNER, Attr.OWNER_GROUP})
#: Attributes whose values need the file system's figures (FSSTAT's, in v3).
NEEDS_COUNTS = frozenset({Attr.FILES_AVAIL, Attr.FILES_FREE, Attr.FILES_TOTAL})
NEEDS_SPACE = frozenset({Attr.SPACE_AVAIL, Attr.SPACE_FREE, Attr.SPACE_TOTAL})


def encode_fattr(writer: XdrWriter, requested: frozenset[int], obj: Object) -> None:
    """Encode the ``fattr4`` of *obj* for the attributes asked for that are supported.

    Attributes asked for but not supported are left out of the returned mask,
    as RFC 8881 section 18.7.3 says; the write-only ``*_set`` ones are too.
    """
    bits = sorted(bit for bit in requested if bit in ENCODERS)
    values = XdrWriter()
    for bit in bits:
        ENCODERS[bit](values, obj)
    encode_bitmap(writer, bits)
    writer.opaque(values.getvalue())


def attribute_values(requested: frozenset[int], obj: Object) -> bytes:
    """The encoded values of *requested* for *obj* (what VERIFY compares)."""
    values = XdrWriter()
    for bit in sorted(requested):
        ENCODERS[bit](values, obj)
    return values.getvalue()


def _owner_id(reader: XdrReader) -> int:
    text = reader.string(1024)
    if not text.isdigit() or len(text) > 10 or int(text) > 2**32 - 1:
        raise NFS4Error(Stat4.BADOWNER, f"owner {text!r} is not a number")
    return int(text)


def _set_time(reader: XdrReader) -> int | None:
    """A ``settime4``: the client's time, or None for the server's."""
    how = reader.enum(frozenset({SET_TO_SERVER_TIME4, SET_TO_CLIENT_TIME4}))
    if how == SET_TO_SERVER_TIME4:
        return None
    seconds, nanos = reader.hyper(), reader.uint()
    if nanos >= _NS:
        raise NFSError(Status.INVAL, "nanoseconds out of range")
    return seconds * _NS + nanos


def decode_settable(
    fattr: Fattr, now: int, allowed: frozenset[int] = SETTABLE
) -> tuple[SetAttributes, bool]:
    """The changes an ``fattr4`` asks for (SETATTR, OPEN and CREATE's attributes), and
    whether a time is set to one the client gives (which only the owner may do).

    NFS4ERR_ATTRNOTSUPP for an attribute the server does not support, INVAL
    for one it supports but no one may set (RFC 8881 section 18.30.4), and
    BADXDR for values that do not decode.
    """
    for bit in fattr.mask:
        if bit not in SUPPORTED:
            raise NFS4Error(Stat4.ATTRNOTSUPP, f"attribute {bit}")
        if bit not in allowed:
            raise NFSError(Status.INVAL, f"attribute {bit} cannot be set")
    reader = XdrReader(fattr.values)
    fields: dict[str, int] = {}
    client_times = False
    try:
        for bit in sorted(fattr.mask):
            if bit == Attr.SIZE:
                fields["size"] = reader.uhyper()
            elif bit == Attr.MODE:
                fields["mode"] = reader.uint() & 0o7777
            elif bit == Attr.OWNER:
                fields["uid"] = _owner_id(reader)
            elif bit == Attr.OWNER_GROUP:
                fields["gid"] = _owner_id(reader)
            elif bit in (Attr.TIME_ACCESS_SET, Attr.TIME_MODIFY_SET):
                given = _set_time(reader)
                client_times = client_times or given is not None
                field = "atime" if bit == Attr.TIME_ACCESS_SET else "mtime"
                fields[field] = now if given is None else given
    except XdrError as error:
        raise NFS4Error(Stat4.BADXDR, str(error)) from error
    if reader.remaining:
        raise NFS4Error(Stat4.BADXDR, "attribute values are longer than their mask")
    return SetAttributes(**fields), client_times


def set_mask(asked: frozenset[int]) -> list[int]:
    """The ``attrsset`` bitmap of a SETATTR or create: what was asked, and so done."""
    return sorted(bit for bit in asked if bit in SETTABLE)
