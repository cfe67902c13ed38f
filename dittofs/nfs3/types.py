"""XDR codecs for the NFSv3 data types shared by many procedures (RFC 1813 section 2.5).

``fattr3``, ``post_op_attr``, ``pre_op_attr``/``wcc_data``, ``sattr3``,
``nfstime3`` and ``post_op_fh3``, each in both directions: the server encodes
attributes and decodes ``sattr3``; a client (:mod:`dittofs.testing`) does the
reverse, with the decoded forms :class:`Fattr` and :class:`Wcc`.  Each pair
round-trips (``tests/unit/test_nfs3_types.py``).  Times are nanoseconds since
the epoch on our side and (seconds, nanoseconds) on the wire.
"""

from __future__ import annotations

import struct
import time

import attrs

from dittofs.model import Attributes, SetAttributes, WccAttributes
from dittofs.nfs3.const import NFS3_FHSIZE, TimeHow
from dittofs.rpc.xdr import XdrError, XdrReader, XdrWriter
from dittofs.vocabulary import FileType

_NS = 1_000_000_000
_UINT32_MAX = 0xFFFFFFFF

# type, mode, nlink, uid, gid, size, used, rdev(2), fsid, fileid, 3 x (seconds, nanoseconds)
_FATTR3 = struct.Struct(">IIIIIQQIIQQIIIIII")
_PRE_OP = struct.Struct(">QIIII")

_TIME_HOWS = frozenset(int(how) for how in TimeHow)
_FILE_TYPES = frozenset(int(kind) for kind in FileType)

#: An ``atime`` or ``mtime`` for :func:`encode_sattr3` that asks for ``SET_TO_SERVER_TIME``.
SERVER_TIME = -1


def _seconds(ns: int) -> tuple[int, int]:
    seconds, nanoseconds = divmod(ns, _NS)
    return seconds & _UINT32_MAX, nanoseconds


def encode_fattr3(writer: XdrWriter, attributes: Attributes, fsid: int) -> None:
    """Encode ``fattr3``."""
    a = attributes
    writer.raw(
        _FATTR3.pack(
            a.type,
            a.mode,
            a.nlink,
            a.uid,
            a.gid,
            a.size,
            a.used,
            a.rdev[0],
            a.rdev[1],
            fsid,
            a.fileid,
            *_seconds(a.atime),
            *_seconds(a.mtime),
            *_seconds(a.ctime),
        )
    )


def encode_post_op_attr(writer: XdrWriter, attributes: Attributes | None, fsid: int) -> None:
    """Encode ``post_op_attr``: attributes if known."""
    if attributes is None:
        writer.boolean(False)
    else:
        writer.boolean(True)
        encode_fattr3(writer, attributes, fsid)


def encode_wcc_data(writer: XdrWriter, wcc: WccAttributes | None, fsid: int) -> None:
    """Encode ``wcc_data``: size/mtime/ctime before, full attributes after."""
    if wcc is None:
        writer.boolean(False)
        writer.boolean(False)
        return
    before = wcc.before
    if before is None:
        writer.boolean(False)
    else:
        writer.boolean(True)
        writer.raw(_PRE_OP.pack(before.size, *_seconds(before.mtime), *_seconds(before.ctime)))
    encode_post_op_attr(writer, wcc.after, fsid)


def encode_post_op_fh3(writer: XdrWriter, handle: bytes | None) -> None:
    """Encode ``post_op_fh3``."""
    if handle is None:
        writer.boolean(False)
    else:
        writer.boolean(True)
        writer.opaque(handle)


def decode_nfstime3(reader: XdrReader) -> int:
    """Decode ``nfstime3`` into nanoseconds; nanoseconds beyond a second are malformed."""
    seconds = reader.uint()
    nanoseconds = reader.uint()
    if nanoseconds >= _NS:
        raise XdrError(f"nfstime3 nanoseconds {nanoseconds} out of range")
    return seconds * _NS + nanoseconds


def encode_nfstime3(writer: XdrWriter, ns: int) -> None:
    """Encode ``nfstime3``."""
    seconds, nanoseconds = _seconds(ns)
    writer.uint(seconds)
    writer.uint(nanoseconds)


def _decode_set_time(reader: XdrReader, now: int) -> tuple[int | None, bool]:
    how = reader.enum(_TIME_HOWS)
    if how == TimeHow.SET_TO_CLIENT_TIME:
        return decode_nfstime3(reader), True
    if how == TimeHow.SET_TO_SERVER_TIME:
        return now, False
    return None, False


def decode_sattr3_with_time_source(reader: XdrReader) -> tuple[SetAttributes, bool]:
    """Decode ``sattr3``, and say whether a time was set to a client-given value.

    POSIX lets anyone with write access set times to "now", but only the
    owner set them to a chosen value, so SETATTR needs to know which.
    """
    mode = reader.uint() if reader.boolean() else None
    uid = reader.uint() if reader.boolean() else None
    gid = reader.uint() if reader.boolean() else None
    size = reader.uhyper() if reader.boolean() else None
    now = time.time_ns()
    atime, client_atime = _decode_set_time(reader, now)
    mtime, client_mtime = _decode_set_time(reader, now)
    changes = SetAttributes(mode=mode, uid=uid, gid=gid, size=size, atime=atime, mtime=mtime)
    return changes, client_atime or client_mtime


def decode_sattr3(reader: XdrReader) -> SetAttributes:
    """Decode ``sattr3``; "set to server time" becomes the current time now."""
    return decode_sattr3_with_time_source(reader)[0]


# -- a client's side: sattr3 out, attributes in -------------------------------------


@attrs.frozen
class Fattr:
    """A decoded ``fattr3``; times are nanoseconds since the epoch."""

    type: FileType
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    fsid: int
    fileid: int
    atime: int
    mtime: int
    ctime: int


@attrs.frozen
class PreOpAttr:
    """A decoded ``wcc_attr``: what the client had cached before a change."""

    size: int
    mtime: int
    ctime: int


@attrs.frozen
class Wcc:
    """A decoded ``wcc_data``: either half may be absent."""

    before: PreOpAttr | None
    after: Fattr | None


def _encode_set_time(writer: XdrWriter, value: int | None) -> None:
    if value is None:
        writer.uint(TimeHow.DONT_CHANGE)
    elif value == SERVER_TIME:
        writer.uint(TimeHow.SET_TO_SERVER_TIME)
    else:
        writer.uint(TimeHow.SET_TO_CLIENT_TIME)
        encode_nfstime3(writer, value)


def encode_sattr3(writer: XdrWriter, changes: SetAttributes) -> None:
    """Encode ``sattr3``; an ``atime``/``mtime`` of :data:`SERVER_TIME` asks for server time."""
    for value in (changes.mode, changes.uid, changes.gid):
        writer.boolean(value is not None)
        if value is not None:
            writer.uint(value)
    writer.boolean(changes.size is not None)
    if changes.size is not None:
        writer.uhyper(changes.size)
    _encode_set_time(writer, changes.atime)
    _encode_set_time(writer, changes.mtime)


def decode_fattr3(reader: XdrReader) -> Fattr:
    """Decode ``fattr3``."""
    return Fattr(
        type=FileType(reader.enum(_FILE_TYPES)),
        mode=reader.uint(),
        nlink=reader.uint(),
        uid=reader.uint(),
        gid=reader.uint(),
        size=reader.uhyper(),
        used=reader.uhyper(),
        rdev=(reader.uint(), reader.uint()),
        fsid=reader.uhyper(),
        fileid=reader.uhyper(),
        atime=decode_nfstime3(reader),
        mtime=decode_nfstime3(reader),
        ctime=decode_nfstime3(reader),
    )


def decode_post_op_attr(reader: XdrReader) -> Fattr | None:
    """Decode ``post_op_attr``."""
    return decode_fattr3(reader) if reader.boolean() else None


def decode_wcc_data(reader: XdrReader) -> Wcc:
    """Decode ``wcc_data``."""
    before = None
    if reader.boolean():
        size = reader.uhyper()
        before = PreOpAttr(size, mtime=decode_nfstime3(reader), ctime=decode_nfstime3(reader))
    return Wcc(before, decode_post_op_attr(reader))


def decode_post_op_fh3(reader: XdrReader) -> bytes | None:
    """Decode ``post_op_fh3``."""
    return bytes(reader.opaque(NFS3_FHSIZE)) if reader.boolean() else None
