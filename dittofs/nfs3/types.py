"""XDR codecs for the NFSv3 data types shared by many procedures (RFC 1813 section 2.5).

``fattr3``, ``post_op_attr``, ``pre_op_attr``/``wcc_data``, ``sattr3``,
``nfstime3`` and ``post_op_fh3``.  Times are nanoseconds since the epoch on
our side and (seconds, nanoseconds) on the wire.
"""

from __future__ import annotations

import struct
import time

from dittofs.model import Attributes, SetAttributes, WccAttributes
from dittofs.nfs3.const import TimeHow
from dittofs.rpc.xdr import XdrError, XdrReader, XdrWriter

_NS = 1_000_000_000
_UINT32_MAX = 0xFFFFFFFF

# type, mode, nlink, uid, gid, size, used, rdev(2), fsid, fileid, 3 x (seconds, nanoseconds)
_FATTR3 = struct.Struct(">IIIIIQQIIQQIIIIII")
_PRE_OP = struct.Struct(">QIIII")

_TIME_HOWS = frozenset(int(how) for how in TimeHow)


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
