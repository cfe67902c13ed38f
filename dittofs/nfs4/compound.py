"""Running one COMPOUND (RFC 8881 sections 2.10.6, 15.2 and 16.2), sans-IO but for awaiting.

Operations run in order, each with the compound's current and saved file
handles and current stateid, until one fails; the reply holds a result for
every operation that ran, and the status of the last.  Everything but the
few operations that create or end sessions must follow a SEQUENCE, which
names the session and slot: a request whose sequence id is the slot's last
one is a retry and gets the reply kept for it (or NFS4ERR_RETRY_UNCACHED_REP
when the client did not ask to keep it), which is how v4.1 makes
non-idempotent operations safe to resend.  That replaces v3's
duplicate-request cache.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger

from dittofs import log as dittofs_log
from dittofs.errors import NFSError
from dittofs.nfs4.args import Compound, OpCall, SequenceArgs, StateId
from dittofs.nfs4.const import MINOR_VERSION, SEQ4_STATUS_CB_PATH_DOWN, Op, Stat4
from dittofs.nfs4.errors import NFS4Error
from dittofs.nfs4.state import Session, StateTable
from dittofs.rpc.dispatch import CallContext
from dittofs.rpc.xdr import XdrWriter
from dittofs.vocabulary import Status

log = Logger(observer=dittofs_log.observer)

#: Told that an operation starts (its number); returns what to call, once, with its status.
#: Metrics count operations with it, tracing makes a span of each.
OperationObserver = Callable[[int], Callable[[int], None]]

#: Operations that may come without a SEQUENCE, each alone in its COMPOUND.
SESSIONLESS = frozenset(
    {
        Op.EXCHANGE_ID,
        Op.CREATE_SESSION,
        Op.DESTROY_SESSION,
        Op.DESTROY_CLIENTID,
        Op.BIND_CONN_TO_SESSION,
    }
)


@attrs.define
class CompoundState:
    """What the operations of one COMPOUND share (RFC 8881 section 16.2.3)."""

    context: CallContext
    current: bytes | None = None
    saved: bytes | None = None
    current_stateid: StateId | None = None
    saved_stateid: StateId | None = None
    #: The session the COMPOUND's SEQUENCE named, if it had one.
    session: Session | None = None
    #: Whether the slot keeps the reply for a retry (SEQUENCE's ``cachethis``): then
    #: READ data must be bytes, which outlive the call, never a region of a file.
    kept: bool = True


Handler = Callable[[Any, CompoundState], Awaitable[XdrWriter]]


def _failed(op: int, status: int, body: bytes = b"") -> XdrWriter:
    """A failed operation's result: its status, and what that operation's result still
    carries then (LOCK4denied for DENIED; SETATTR's empty ``attrsset`` for any status)."""
    writer = XdrWriter()
    writer.uint(status)
    writer.raw(body or _FAILURE_BODIES.get(op, b""))
    return writer


async def run_compound(
    compound: Compound,
    context: CallContext,
    handlers: Mapping[Op, Handler],
    table: StateTable,
    observe: OperationObserver | None = None,
) -> XdrWriter:
    """Run *compound* and encode COMPOUND4res, telling *observe* of each operation that runs."""
    if compound.minor_version != MINOR_VERSION:
        return _reply(Stat4.MINOR_VERS_MISMATCH, compound.tag, [])
    state = CompoundState(context)
    ops = compound.ops
    if not ops:
        return _reply(Status.OK, compound.tag, [])
    first = ops[0]
    slot = None
    results: list[tuple[int, XdrWriter]] = []
    if first.op == Op.SEQUENCE and first.error is None:
        done = observe(Op.SEQUENCE) if observe is not None else None
        try:
            session, slot, replay = _sequence(table, first.args, len(ops))
        except NFS4Error as error:
            if done is not None:
                done(error.status)
            failed = _failed(Op.SEQUENCE, error.status)
            return _reply(error.status, compound.tag, [(Op.SEQUENCE, failed)])
        if done is not None:
            done(Status.OK)
        if replay is not None:
            cached = XdrWriter()
            cached.extend(replay)
            return cached
        state.session = session
        state.kept = first.args.cache_this
        results.append((Op.SEQUENCE, _sequence_result(session, first.args)))
        rest = ops[1:]
    elif first.op in SESSIONLESS and len(ops) > 1 and first.error is None:
        return _reply(
            Stat4.NOT_ONLY_OP, compound.tag, [(first.op, _failed(first.op, Stat4.NOT_ONLY_OP))]
        )
    elif first.op not in SESSIONLESS and first.error is None:
        refused = Stat4.OP_NOT_IN_SESSION
        return _reply(refused, compound.tag, [(first.op, _failed(first.op, refused))])
    else:
        rest = ops
    try:
        status = await _run(rest, state, handlers, results, observe)
        reply = _reply(status, compound.tag, results)
    finally:
        if slot is not None:
            slot.busy = False
    if slot is None or state.session is None:
        return reply
    parts = reply.parts()
    limit = state.session.fore.max_response_cached
    kept = None
    if state.kept and sum(map(len, parts)) <= limit:
        kept = [part for part in parts if isinstance(part, bytes)]
        assert len(kept) == len(parts), "a kept reply lends no file region"
    table.keep_reply(slot, kept)
    answer = XdrWriter()
    answer.extend(parts)
    return answer


async def _run(
    ops: list[OpCall],
    state: CompoundState,
    handlers: Mapping[Op, Handler],
    results: list[tuple[int, XdrWriter]],
    observe: OperationObserver | None,
) -> int:
    status: int = Status.OK
    for call in ops:
        done = observe(call.op) if observe is not None else None
        if call.error is not None:
            status = call.error
            results.append((call.op, _failed(call.op, status)))
        elif call.op == Op.SEQUENCE:
            status = Stat4.SEQUENCE_POS
            results.append((call.op, _failed(call.op, status)))
        else:
            status, result = await _operation(call, state, handlers)
            results.append((call.op, result))
        if done is not None:
            done(status)
        if status != Status.OK:
            break
    return status


async def _operation(
    call: OpCall, state: CompoundState, handlers: Mapping[Op, Handler]
) -> tuple[int, XdrWriter]:
    """Run one operation; its status and its whole result (status first)."""
    handler = handlers[Op(call.op)]
    try:
        body = await handler(call.args, state)
    except NFS4Error as error:
        return error.status, _failed(call.op, error.status, error.body)
    except NFSError as error:
        status = error.status
        if status in (Status.IO, Status.SERVERFAULT):
            log.error("{op} failed: {error}", op=Op(call.op).name, error=str(error))
        return status, _failed(call.op, status)
    except Exception:
        log.failure("{op} failed in a store", op=Op(call.op).name)
        return Status.IO, _failed(call.op, Status.IO)
    result = XdrWriter()
    result.uint(Status.OK)
    result.extend(body.parts())
    return Status.OK, result


#: Results that carry something after a failed status: SETATTR's (empty) ``attrsset``.
_FAILURE_BODIES: dict[int, bytes] = {Op.SETATTR: b"\0\0\0\0"}


def _sequence(
    table: StateTable, args: SequenceArgs, operations: int
) -> tuple[Session, Any, list[bytes] | None]:
    """Check a SEQUENCE against its slot (RFC 8881 section 2.10.6.1).

    Returns the session, the slot (now busy) and, for a retry, the reply kept.
    """
    session = table.session(args.sessionid)
    if args.slotid >= len(session.slots):
        raise NFS4Error(Stat4.BADSLOT, f"slot {args.slotid} of {len(session.slots)}")
    if operations > session.fore.max_operations:
        raise NFS4Error(Stat4.TOO_MANY_OPS)
    slot = session.slots[args.slotid]
    if slot.busy:
        # One request at a time per slot (section 2.10.6.1): its retry, or a new one, waits.
        raise NFS4Error(Stat4.DELAY, f"slot {args.slotid} is busy")
    if args.sequenceid == slot.seqid:
        if slot.reply is None:
            raise NFS4Error(Stat4.RETRY_UNCACHED_REP)
        table.renew(session.client)
        return session, slot, slot.reply
    if args.sequenceid != (slot.seqid + 1) & 0xFFFFFFFF:
        raise NFS4Error(Stat4.SEQ_MISORDERED, f"{args.sequenceid} after {slot.seqid}")
    slot.seqid = args.sequenceid
    slot.busy = True
    table.keep_reply(slot, None)
    table.renew(session.client)
    return session, slot, None


def _sequence_result(session: Session, args: SequenceArgs) -> XdrWriter:
    writer = XdrWriter()
    writer.uint(Status.OK)
    writer.fixed_opaque(session.sessionid)
    writer.uint(args.sequenceid)
    writer.uint(args.slotid)
    highest = len(session.slots) - 1
    writer.uint(highest)
    writer.uint(highest)
    flags = 0
    if not any(s.back_channel for s in session.client.sessions.values()):
        flags |= SEQ4_STATUS_CB_PATH_DOWN
    writer.uint(flags)
    return writer


def _reply(status: int, tag: bytes, results: list[tuple[int, XdrWriter]]) -> XdrWriter:
    writer = XdrWriter()
    writer.uint(status)
    writer.string(tag)
    writer.uint(len(results))
    for op, result in results:
        writer.uint(op)
        writer.extend(result.parts())
    return writer
