"""Decoding COMPOUND4args (RFC 5662) into plain values, sans-IO.

:func:`decode_compound` reads the tag, the minor version and the operations.
Each operation's arguments are decoded up front by the decoder of its number
in :data:`DECODERS`; an operation whose arguments do not decode ends the list
with an :class:`OpCall` whose ``error`` says why (NFS4ERR_BADXDR, or
NFS4ERR_OP_ILLEGAL for a number no minor version defines), so the operations
before it still run and the reply says which one failed, as RFC 8881 section
15.2 asks.  Only a COMPOUND whose header itself is malformed is GARBAGE_ARGS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from dittofs.nfs4.const import (
    EXCLUSIVE4,
    EXCLUSIVE4_1,
    GUARDED4,
    NFS4_FHSIZE,
    NFS4_OPAQUE_LIMIT,
    NFS4_SESSIONID_SIZE,
    NFS4_VERIFIER_SIZE,
    OPEN4_CREATE,
    OPEN4_NOCREATE,
    SP4_MACH_CRED,
    SP4_NONE,
    SP4_SSV,
    UNCHECKED4,
    Claim,
    LockType,
    Op,
    Stat4,
)
from dittofs.rpc.xdr import XdrError, XdrReader
from dittofs.vocabulary import FileType, Status

#: The most operations one COMPOUND may carry (also the session's ca_maxoperations).
MAX_OPERATIONS = 64
#: Longest name component and symlink target we decode.
MAX_NAME = 1024
MAX_LINK = 4096
#: Most words in a bitmap4, and most bytes of an fattr4's values.
MAX_BITMAP_WORDS = 8
MAX_ATTR_BYTES = 64 * 1024
#: Largest WRITE payload decoded (the session's ca_maxrequestsize bounds it further).
MAX_WRITE = 1024 * 1024
MAX_STATEIDS = 1024


@attrs.frozen
class StateId:
    """``stateid4``: a sequence number and twelve opaque bytes naming the state."""

    seqid: int
    other: bytes


@attrs.frozen
class Fattr:
    """``fattr4`` as sent: the attribute numbers present and their encoded values."""

    mask: frozenset[int]
    values: bytes


@attrs.frozen
class OpCall:
    """One operation of a COMPOUND: its number and decoded arguments, or why not."""

    op: int
    args: Any = None
    #: Set when the operation cannot run: its arguments did not decode, or it is
    #: not served (NOTSUPP) or not an operation at all (OP_ILLEGAL).
    error: Status | Stat4 | None = None


@attrs.frozen
class Compound:
    """COMPOUND4args."""

    tag: bytes
    minor_version: int
    ops: list[OpCall]


# -- small types --------------------------------------------------------------------


def stateid(reader: XdrReader) -> StateId:
    """Decode a ``stateid4``."""
    return StateId(reader.uint(), bytes(reader.fixed_opaque(12)))


def bitmap(reader: XdrReader) -> frozenset[int]:
    """Decode a ``bitmap4`` into the set of bit numbers it has set."""
    words = reader.array(XdrReader.uint, MAX_BITMAP_WORDS)
    return frozenset(
        index * 32 + bit for index, word in enumerate(words) for bit in range(32) if word >> bit & 1
    )


def fattr(reader: XdrReader) -> Fattr:
    """Decode an ``fattr4`` (its values are parsed later, knowing what they are for)."""
    mask = bitmap(reader)
    return Fattr(mask, bytes(reader.opaque(MAX_ATTR_BYTES)))


def component(reader: XdrReader) -> bytes:
    """Decode a ``component4`` (a name; checked for content by the operation)."""
    return reader.string(MAX_NAME)


def verifier(reader: XdrReader) -> bytes:
    """Decode a ``verifier4``."""
    return bytes(reader.fixed_opaque(NFS4_VERIFIER_SIZE))


def sessionid(reader: XdrReader) -> bytes:
    """Decode a ``sessionid4``."""
    return bytes(reader.fixed_opaque(NFS4_SESSIONID_SIZE))


def _owner(reader: XdrReader) -> tuple[int, bytes]:
    """``open_owner4``/``lock_owner4``: a client id and the client's opaque name."""
    return reader.uhyper(), bytes(reader.opaque(NFS4_OPAQUE_LIMIT))


def _nothing(reader: XdrReader) -> None:
    return None


# -- session and client operations (RFC 8881 section 18.35 ff.) ----------------------------


@attrs.frozen
class ExchangeIdArgs:
    """EXCHANGE_ID4args (section 18.35)."""

    verifier: bytes
    owner: bytes
    flags: int
    state_protect: int


def _state_protect_ops(reader: XdrReader) -> None:
    bitmap(reader)
    bitmap(reader)


def exchange_id(reader: XdrReader) -> ExchangeIdArgs:
    """Decode EXCHANGE_ID4args; the implementation id is read and dropped."""
    verf = verifier(reader)
    owner = bytes(reader.opaque(NFS4_OPAQUE_LIMIT))
    flags = reader.uint()
    how = reader.enum(frozenset({SP4_NONE, SP4_MACH_CRED, SP4_SSV}))
    if how == SP4_MACH_CRED:
        _state_protect_ops(reader)
    elif how == SP4_SSV:
        _state_protect_ops(reader)
        reader.array(lambda r: r.opaque(NFS4_OPAQUE_LIMIT), 16)
        reader.array(lambda r: r.opaque(NFS4_OPAQUE_LIMIT), 16)
        reader.uint()
        reader.uint()
    reader.array(_impl_id, 1)
    return ExchangeIdArgs(verf, owner, flags, how)


def _impl_id(reader: XdrReader) -> None:
    reader.opaque(NFS4_OPAQUE_LIMIT)
    reader.opaque(NFS4_OPAQUE_LIMIT)
    reader.hyper()
    reader.uint()


@attrs.frozen
class ChannelAttrs:
    """``channel_attrs4``."""

    header_pad: int
    max_request: int
    max_response: int
    max_response_cached: int
    max_operations: int
    max_requests: int


def channel_attrs(reader: XdrReader) -> ChannelAttrs:
    """Decode a ``channel_attrs4`` (an RDMA ird, if any, is dropped)."""
    values = [reader.uint() for _ in range(6)]
    reader.array(XdrReader.uint, 1)
    return ChannelAttrs(*values)


@attrs.frozen
class CreateSessionArgs:
    """CREATE_SESSION4args (section 18.36)."""

    clientid: int
    sequence: int
    flags: int
    fore: ChannelAttrs
    back: ChannelAttrs
    cb_program: int


def _callback_sec_parms(reader: XdrReader) -> None:
    flavor = reader.uint()
    if flavor == 1:  # AUTH_SYS
        reader.uint()
        reader.opaque(255)
        reader.uint()
        reader.uint()
        reader.array(XdrReader.uint, 16)
    elif flavor == 6:  # RPCSEC_GSS
        reader.uint()
        reader.opaque(NFS4_OPAQUE_LIMIT)
        reader.opaque(NFS4_OPAQUE_LIMIT)
    elif flavor != 0:
        raise XdrError(f"callback security flavor {flavor}")


def create_session(reader: XdrReader) -> CreateSessionArgs:
    """Decode CREATE_SESSION4args; the callback security is read and dropped."""
    clientid, sequence, flags = reader.uhyper(), reader.uint(), reader.uint()
    fore, back = channel_attrs(reader), channel_attrs(reader)
    program = reader.uint()
    reader.array(_callback_sec_parms, 16)
    return CreateSessionArgs(clientid, sequence, flags, fore, back, program)


@attrs.frozen
class SequenceArgs:
    """SEQUENCE4args (section 18.46)."""

    sessionid: bytes
    sequenceid: int
    slotid: int
    highest_slotid: int
    cache_this: bool


def sequence(reader: XdrReader) -> SequenceArgs:
    """Decode SEQUENCE4args."""
    return SequenceArgs(
        sessionid(reader), reader.uint(), reader.uint(), reader.uint(), reader.boolean()
    )


@attrs.frozen
class BindConnArgs:
    """BIND_CONN_TO_SESSION4args (section 18.34)."""

    sessionid: bytes
    direction: int
    rdma: bool


def bind_conn_to_session(reader: XdrReader) -> BindConnArgs:
    """Decode BIND_CONN_TO_SESSION4args."""
    return BindConnArgs(sessionid(reader), reader.uint(), reader.boolean())


# -- file handles and the namespace ----------------------------------------------------


@attrs.frozen
class CreateArgs:
    """CREATE4args (section 18.4): a directory, symlink, device, socket or FIFO."""

    type: int
    name: bytes
    attributes: Fattr
    link: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def create(reader: XdrReader) -> CreateArgs:
    """Decode CREATE4args; a type CREATE cannot make is left for the operation to refuse."""
    kind = reader.uint()
    link, rdev = b"", (0, 0)
    if kind == FileType.LNK:
        link = reader.string(MAX_LINK)
    elif kind in (FileType.BLK, FileType.CHR):
        rdev = (reader.uint(), reader.uint())
    return CreateArgs(kind, component(reader), fattr(reader), link, rdev)


@attrs.frozen
class ReaddirArgs:
    """READDIR4args (section 18.23)."""

    cookie: int
    verifier: bytes
    dircount: int
    maxcount: int
    attributes: frozenset[int]


def readdir(reader: XdrReader) -> ReaddirArgs:
    """Decode READDIR4args."""
    return ReaddirArgs(
        reader.uhyper(), verifier(reader), reader.uint(), reader.uint(), bitmap(reader)
    )


@attrs.frozen
class RenameArgs:
    """RENAME4args (section 18.26): the saved directory's old name to the current's new."""

    old: bytes
    new: bytes


# -- opens, I/O and locks -------------------------------------------------------------------


@attrs.frozen
class OpenArgs:
    """OPEN4args (section 18.16), with the unions flattened."""

    seqid: int
    share_access: int
    share_deny: int
    owner: tuple[int, bytes]
    create: bool
    how: int = UNCHECKED4
    attributes: Fattr | None = None
    verifier: bytes = b""
    claim: Claim = Claim.NULL
    name: bytes = b""
    delegate_type: int = 0


def open_(reader: XdrReader) -> OpenArgs:
    """Decode OPEN4args."""
    seqid, access, deny = reader.uint(), reader.uint(), reader.uint()
    owner = _owner(reader)
    opentype = reader.enum(frozenset({OPEN4_NOCREATE, OPEN4_CREATE}))
    how, attributes, verf = UNCHECKED4, None, b""
    if opentype == OPEN4_CREATE:
        how = reader.enum(frozenset({UNCHECKED4, GUARDED4, EXCLUSIVE4, EXCLUSIVE4_1}))
        if how in (UNCHECKED4, GUARDED4):
            attributes = fattr(reader)
        elif how == EXCLUSIVE4:
            verf = verifier(reader)
        else:
            verf = verifier(reader)
            attributes = fattr(reader)
    claim = Claim(reader.enum(frozenset(int(c) for c in Claim)))
    name, delegate_type = b"", 0
    if claim in (Claim.NULL, Claim.DELEGATE_PREV):
        name = component(reader)
    elif claim == Claim.PREVIOUS:
        delegate_type = reader.uint()
    elif claim == Claim.DELEGATE_CUR:
        stateid(reader)
        name = component(reader)
    elif claim == Claim.DELEG_CUR_FH:
        stateid(reader)
    return OpenArgs(
        seqid,
        access,
        deny,
        owner,
        opentype == OPEN4_CREATE,
        how,
        attributes,
        verf,
        claim,
        name,
        delegate_type,
    )


@attrs.frozen
class CloseArgs:
    """CLOSE4args (section 18.2)."""

    seqid: int
    stateid: StateId


@attrs.frozen
class DowngradeArgs:
    """OPEN_DOWNGRADE4args (section 18.18)."""

    stateid: StateId
    seqid: int
    share_access: int
    share_deny: int


@attrs.frozen
class ReadArgs:
    """READ4args (section 18.22)."""

    stateid: StateId
    offset: int
    count: int


@attrs.frozen
class WriteArgs:
    """WRITE4args (section 18.32)."""

    stateid: StateId
    offset: int
    stable: int
    data: memoryview


def write(reader: XdrReader) -> WriteArgs:
    """Decode WRITE4args (the data stays a view of the record)."""
    return WriteArgs(
        stateid(reader), reader.uhyper(), reader.enum(range(3)), reader.opaque(MAX_WRITE)
    )


@attrs.frozen
class SetattrArgs:
    """SETATTR4args (section 18.30)."""

    stateid: StateId
    attributes: Fattr


@attrs.frozen
class LockArgs:
    """LOCK4args (section 18.10), with ``locker4`` flattened."""

    type: LockType
    reclaim: bool
    offset: int
    length: int
    new_owner: bool
    #: For a new lock owner: the open stateid; else the lock stateid.
    stateid: StateId
    owner: tuple[int, bytes] = (0, b"")


def _lock_type(reader: XdrReader) -> LockType:
    return LockType(reader.enum(frozenset(int(t) for t in LockType)))


def lock(reader: XdrReader) -> LockArgs:
    """Decode LOCK4args (the seqids, which 4.1 ignores, are read and dropped)."""
    kind, reclaim, offset, length = (
        _lock_type(reader),
        reader.boolean(),
        reader.uhyper(),
        reader.uhyper(),
    )
    if reader.boolean():
        reader.uint()
        open_state = stateid(reader)
        reader.uint()
        return LockArgs(kind, reclaim, offset, length, True, open_state, _owner(reader))
    lock_state = stateid(reader)
    reader.uint()
    return LockArgs(kind, reclaim, offset, length, False, lock_state)


@attrs.frozen
class LocktArgs:
    """LOCKT4args (section 18.11)."""

    type: LockType
    offset: int
    length: int
    owner: tuple[int, bytes]


@attrs.frozen
class LockuArgs:
    """LOCKU4args (section 18.12)."""

    type: LockType
    stateid: StateId
    offset: int
    length: int


def locku(reader: XdrReader) -> LockuArgs:
    """Decode LOCKU4args."""
    kind = _lock_type(reader)
    reader.uint()
    return LockuArgs(kind, stateid(reader), reader.uhyper(), reader.uhyper())


#: Each operation's argument decoder.  Operations absent here are not served:
#: the 4.0-only ones answer NFS4ERR_NOTSUPP, pNFS and delegations too.
DECODERS: dict[Op, Callable[[XdrReader], Any]] = {
    Op.ACCESS: XdrReader.uint,
    Op.CLOSE: lambda r: CloseArgs(r.uint(), stateid(r)),
    Op.COMMIT: lambda r: (r.uhyper(), r.uint()),
    Op.CREATE: create,
    Op.DELEGPURGE: XdrReader.uhyper,
    Op.DELEGRETURN: stateid,
    Op.GETATTR: bitmap,
    Op.GETFH: _nothing,
    Op.LINK: component,
    Op.LOCK: lock,
    Op.LOCKT: lambda r: LocktArgs(_lock_type(r), r.uhyper(), r.uhyper(), _owner(r)),
    Op.LOCKU: locku,
    Op.LOOKUP: component,
    Op.LOOKUPP: _nothing,
    Op.NVERIFY: fattr,
    Op.OPEN: open_,
    Op.OPENATTR: XdrReader.boolean,
    Op.OPEN_DOWNGRADE: lambda r: DowngradeArgs(stateid(r), r.uint(), r.uint(), r.uint()),
    Op.PUTFH: lambda r: bytes(r.opaque(NFS4_FHSIZE)),
    Op.PUTPUBFH: _nothing,
    Op.PUTROOTFH: _nothing,
    Op.READ: lambda r: ReadArgs(stateid(r), r.uhyper(), r.uint()),
    Op.READDIR: readdir,
    Op.READLINK: _nothing,
    Op.REMOVE: component,
    Op.RENAME: lambda r: RenameArgs(component(r), component(r)),
    Op.RESTOREFH: _nothing,
    Op.SAVEFH: _nothing,
    Op.SECINFO: component,
    Op.SETATTR: lambda r: SetattrArgs(stateid(r), fattr(r)),
    Op.VERIFY: fattr,
    Op.WRITE: write,
    Op.BIND_CONN_TO_SESSION: bind_conn_to_session,
    Op.EXCHANGE_ID: exchange_id,
    Op.CREATE_SESSION: create_session,
    Op.DESTROY_SESSION: sessionid,
    Op.FREE_STATEID: stateid,
    Op.SECINFO_NO_NAME: lambda r: r.enum(range(2)),
    Op.SEQUENCE: sequence,
    Op.TEST_STATEID: lambda r: r.array(stateid, MAX_STATEIDS),
    Op.DESTROY_CLIENTID: XdrReader.uhyper,
    Op.RECLAIM_COMPLETE: XdrReader.boolean,
}

#: Operations of minor version 1 that this server does not do; their arguments are not
#: decoded, the COMPOUND stops there with NFS4ERR_NOTSUPP (RFC 8881 section 15.2).
NOT_SUPPORTED = frozenset(Op) - frozenset(DECODERS) - {Op.ILLEGAL}
#: Operations of minor version 0 only: in a 4.1 COMPOUND they are NFS4ERR_NOTSUPP too.
_MINOR_0_ONLY = frozenset(
    {Op.OPEN_CONFIRM, Op.RENEW, Op.SETCLIENTID, Op.SETCLIENTID_CONFIRM, Op.RELEASE_LOCKOWNER}
)
assert _MINOR_0_ONLY <= NOT_SUPPORTED
_KNOWN = frozenset(int(op) for op in Op) - {Op.ILLEGAL}


def decode_compound(reader: XdrReader) -> Compound:
    """Decode COMPOUND4args; XdrError only for a malformed header (GARBAGE_ARGS)."""
    tag = reader.string(NFS4_OPAQUE_LIMIT)
    minor_version = reader.uint()
    count = reader.uint()
    ops: list[OpCall] = []
    for index in range(count):
        try:
            number = reader.uint()
        except XdrError:
            ops.append(OpCall(Op.ILLEGAL, None, Stat4.BADXDR))
            break
        if number not in _KNOWN:
            ops.append(OpCall(Op.ILLEGAL, None, Stat4.OP_ILLEGAL))
            break
        if index == 0 and count > MAX_OPERATIONS:
            # More than a session allows: the first operation says so (section 18.46.3).
            ops.append(OpCall(number, None, Stat4.TOO_MANY_OPS))
            break
        decode = DECODERS.get(Op(number))
        if decode is None:
            ops.append(OpCall(number, None, Status.NOTSUPP))
            break
        try:
            ops.append(OpCall(number, decode(reader)))
        except (XdrError, ValueError):
            ops.append(OpCall(number, None, Stat4.BADXDR))
            break
    return Compound(tag, minor_version, ops)
