"""ONC RPC version 2 call and reply messages (RFC 5531 sections 8-9 and 14).

Pure functions over bytes: :func:`parse_call` decodes a call header and its
credentials, and the ``*_reply`` functions encode every reply shape a server
sends.  Nothing here knows about sockets or Deferreds.
"""

from __future__ import annotations

import enum

import attrs

from dittofs.rpc.xdr import XdrError, XdrReader, XdrWriter

RPC_VERSION = 2

CALL = 0
REPLY = 1

MSG_ACCEPTED = 0
MSG_DENIED = 1


class AcceptStat(enum.IntEnum):
    """``accept_stat``: why an authenticated call did or did not run."""

    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RejectStat(enum.IntEnum):
    """``reject_stat``: why a call was refused before authentication succeeded."""

    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class AuthStat(enum.IntEnum):
    """``auth_stat`` values a server may return in an AUTH_ERROR rejection."""

    AUTH_OK = 0
    AUTH_BADCRED = 1
    AUTH_REJECTEDCRED = 2
    AUTH_BADVERF = 3
    AUTH_REJECTEDVERF = 4
    AUTH_TOOWEAK = 5


class AuthFlavor(enum.IntEnum):
    """Authentication flavours this server recognises."""

    AUTH_NONE = 0
    AUTH_SYS = 1
    AUTH_SHORT = 2
    AUTH_DH = 3
    RPCSEC_GSS = 6


#: RFC 5531: opaque_auth bodies are at most 400 bytes.
MAX_AUTH_BYTES = 400
#: RFC 5531 appendix A: AUTH_SYS machine names are at most 255 bytes.
MAX_MACHINE_NAME = 255
#: RFC 5531 appendix A: at most 16 supplementary group ids.
MAX_GIDS = 16


@attrs.frozen
class Credentials:
    """Who the caller claims to be (AUTH_SYS) or the anonymous caller (AUTH_NONE)."""

    flavor: int
    uid: int | None = None
    gid: int | None = None
    gids: tuple[int, ...] = ()
    machine_name: bytes = b""
    stamp: int = 0


ANONYMOUS = Credentials(flavor=AuthFlavor.AUTH_NONE)


class CallRejected(Exception):
    """The call must not be dispatched; carries the reply to send instead.

    Used for MSG_DENIED replies (RPC version, credentials) and for calls whose
    header is malformed after a readable XID (answered GARBAGE_ARGS).
    """

    def __init__(self, xid: int, reply: XdrWriter, stat: AcceptStat | RejectStat) -> None:
        super().__init__(xid)
        self.xid = xid
        self.reply = reply
        #: The status *reply* carries, for those who observe calls.
        self.stat = stat


@attrs.frozen
class CallHeader:
    """A decoded call header; ``args_offset`` is where the procedure's arguments start."""

    xid: int
    program: int
    version: int
    procedure: int
    credentials: Credentials
    args_offset: int


def _parse_auth_sys(body: memoryview) -> Credentials:
    reader = XdrReader(body)
    stamp = reader.uint()
    machine_name = reader.string(MAX_MACHINE_NAME)
    uid = reader.uint()
    gid = reader.uint()
    gids = tuple(reader.array(XdrReader.uint, MAX_GIDS))
    if reader.remaining:
        raise XdrError("trailing bytes in AUTH_SYS credential")
    return Credentials(AuthFlavor.AUTH_SYS, uid, gid, gids, machine_name, stamp)


def parse_call(record: bytes | memoryview) -> tuple[CallHeader, XdrReader]:
    """Decode a call message header; return it with a reader positioned at the arguments.

    Raises :class:`XdrError` when the record is not a call at all (too short
    for an XID, or a reply: nothing to answer), and :class:`CallRejected` when
    the call must be answered without running: a truncated or oversized header
    (GARBAGE_ARGS), a wrong RPC version, bad or too-weak credentials.
    """
    reader = XdrReader(record)
    xid = reader.uint()
    try:
        message_type = reader.uint()
    except XdrError:
        raise CallRejected(
            xid, accepted_reply(xid, AcceptStat.GARBAGE_ARGS), AcceptStat.GARBAGE_ARGS
        ) from None
    if message_type != CALL:
        raise XdrError("message is not a call")
    try:
        return _parse_call_body(xid, reader)
    except XdrError:
        raise CallRejected(
            xid, accepted_reply(xid, AcceptStat.GARBAGE_ARGS), AcceptStat.GARBAGE_ARGS
        ) from None


def _parse_call_body(xid: int, reader: XdrReader) -> tuple[CallHeader, XdrReader]:
    rpcvers = reader.uint()
    program = reader.uint()
    version = reader.uint()
    procedure = reader.uint()
    cred_flavor = reader.uint()
    cred_body = reader.opaque(MAX_AUTH_BYTES)
    reader.uint()  # verifier flavour: AUTH_NONE and AUTH_SYS calls carry no checked verifier
    reader.opaque(MAX_AUTH_BYTES)
    if rpcvers != RPC_VERSION:
        raise CallRejected(xid, rpc_mismatch_reply(xid), RejectStat.RPC_MISMATCH)
    if cred_flavor == AuthFlavor.AUTH_NONE:
        credentials = ANONYMOUS
    elif cred_flavor == AuthFlavor.AUTH_SYS:
        try:
            credentials = _parse_auth_sys(cred_body)
        except XdrError:
            raise CallRejected(
                xid, auth_error_reply(xid, AuthStat.AUTH_BADCRED), RejectStat.AUTH_ERROR
            ) from None
    else:
        # RPCSEC_GSS, AUTH_DH and unknown flavours: we only offer AUTH_NONE and AUTH_SYS.
        raise CallRejected(xid, auth_error_reply(xid, AuthStat.AUTH_TOOWEAK), RejectStat.AUTH_ERROR)
    header = CallHeader(xid, program, version, procedure, credentials, reader.tell())
    return header, reader


def _reply_header(xid: int, reply_stat: int) -> XdrWriter:
    writer = XdrWriter()
    writer.uint(xid)
    writer.uint(REPLY)
    writer.uint(reply_stat)
    return writer


def accepted_reply(xid: int, stat: AcceptStat = AcceptStat.SUCCESS) -> XdrWriter:
    """Start an accepted reply with a null verifier; procedure results follow for SUCCESS."""
    writer = _reply_header(xid, MSG_ACCEPTED)
    writer.uint(AuthFlavor.AUTH_NONE)
    writer.uint(0)
    writer.uint(stat)
    return writer


def prog_mismatch_reply(xid: int, low: int, high: int) -> XdrWriter:
    """Reply for a known program called with a version outside ``low..high``."""
    writer = accepted_reply(xid, AcceptStat.PROG_MISMATCH)
    writer.uint(low)
    writer.uint(high)
    return writer


def rpc_mismatch_reply(xid: int) -> XdrWriter:
    """Reply for a call whose RPC protocol version is not 2."""
    writer = _reply_header(xid, MSG_DENIED)
    writer.uint(RejectStat.RPC_MISMATCH)
    writer.uint(RPC_VERSION)
    writer.uint(RPC_VERSION)
    return writer


def auth_error_reply(xid: int, stat: AuthStat) -> XdrWriter:
    """Reply rejecting a call's credentials."""
    writer = _reply_header(xid, MSG_DENIED)
    writer.uint(RejectStat.AUTH_ERROR)
    writer.uint(stat)
    return writer
