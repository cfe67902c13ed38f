"""Routing decoded RPC calls to program procedures, and turning outcomes into replies.

A program (MOUNT, NFS) is a table of :class:`Procedure` entries keyed by
version and procedure number.  Each procedure decodes its arguments
synchronously (so undecodable arguments become GARBAGE_ARGS before anything
runs) and then executes asynchronously.  :class:`RpcDispatcher` implements the
RFC 5531 rules for unknown programs, versions and procedures, and maps an
unexpected exception to SYSTEM_ERR with a logged traceback, so one bad call
never costs a client its connection.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from dittofs import log as dittofs_log
from dittofs.metrics import Metrics
from dittofs.rpc.message import (
    AcceptStat,
    CallRejected,
    Credentials,
    accepted_reply,
    parse_call,
    prog_mismatch_reply,
)
from dittofs.rpc.replay import ReplayCache, call_key
from dittofs.rpc.xdr import XdrError, XdrReader, XdrWriter

Parts = list[bytes]
T = TypeVar("T")

log = Logger(observer=dittofs_log.observer)


@attrs.frozen
class CallContext:
    """What a procedure knows about the call it is serving."""

    xid: int
    credentials: Credentials
    client_host: str
    client_port: int


@attrs.frozen
class Procedure:
    """One RPC procedure: a synchronous argument decoder and an asynchronous body.

    ``run`` returns the XDR-encoded results that follow the accepted-reply
    header.
    """

    name: str
    decode: Callable[[XdrReader], Any]
    run: Callable[[Any, CallContext], Coroutine[Any, Any, XdrWriter]]
    #: Non-idempotent procedures set this: a retransmission replays the first reply.
    replayable: bool = False


class RpcProgram(Protocol):
    """An RPC program: its number, the versions it serves and their procedures."""

    number: int
    low_version: int
    high_version: int

    def procedures(self, version: int) -> Mapping[int, Procedure]:
        """Return the procedure table for *version* (within low..high)."""


def _no_args(reader: XdrReader) -> None:
    return None


async def _null(args: None, context: CallContext) -> XdrWriter:
    return XdrWriter()


#: Procedure 0 of every program: no arguments, no results (RFC 5531 section 12.1).
NULL_PROCEDURE = Procedure("NULL", _no_args, _null)


def _started(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Run *coroutine* until it first waits; a Deferred of its result.

    Awaiting a Deferred that has already fired returns at once, so a call on
    stores that answer immediately (memory, a cached read) finishes in this
    first step and skips the bookkeeping of ``Deferred.fromCoroutine``; a
    call that does wait is handed to it, which resumes the coroutine where it
    stopped.
    """
    if not inspect.iscoroutine(coroutine):
        raise TypeError(f"a procedure returned {coroutine!r}, not a coroutine")
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return succeed(finished.value)
    except Exception:
        return fail()
    return Deferred.fromCoroutine(coroutine)


class RpcDispatcher:
    """Dispatch RPC call records to the programs registered with it."""

    def __init__(
        self,
        programs: Sequence[RpcProgram],
        replay_cache: ReplayCache | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._programs = {program.number: program for program in programs}
        self.replay_cache = replay_cache if replay_cache is not None else ReplayCache()
        self.metrics = metrics if metrics is not None else Metrics()

    @property
    def programs(self) -> Sequence[RpcProgram]:
        """The programs served, so that tracing can name calls after their procedures."""
        return tuple(self._programs.values())

    def _answered(self, status: str, reply: XdrWriter) -> Deferred[Parts]:
        self.metrics.rpc_replies.labels(status).inc()
        return succeed(reply.parts())

    def dispatch(self, record: bytes, client_host: str, client_port: int) -> Deferred[Parts] | None:
        """Serve one call record; return a Deferred of the reply's parts, or None.

        None means the record is not a call that can be answered (no XID, or a
        reply message); the caller logs it and carries on.
        """
        try:
            header, reader = parse_call(record)
        except XdrError:
            return None
        except CallRejected as rejected:
            return self._answered("REJECTED", rejected.reply)
        xid = header.xid
        program = self._programs.get(header.program)
        if program is None:
            return self._answered("PROG_UNAVAIL", accepted_reply(xid, AcceptStat.PROG_UNAVAIL))
        if not program.low_version <= header.version <= program.high_version:
            reply = prog_mismatch_reply(xid, program.low_version, program.high_version)
            return self._answered("PROG_MISMATCH", reply)
        procedure = program.procedures(header.version).get(header.procedure)
        if procedure is None:
            return self._answered("PROC_UNAVAIL", accepted_reply(xid, AcceptStat.PROC_UNAVAIL))
        try:
            args = procedure.decode(reader)
        except XdrError:
            return self._answered("GARBAGE_ARGS", accepted_reply(xid, AcceptStat.GARBAGE_ARGS))
        key = None
        if procedure.replayable:
            arguments = memoryview(record)[header.args_offset :]
            key = call_key(client_host, client_port, header, arguments)
            replayed = self.replay_cache.replay(key)
            if replayed is not None:
                return replayed
        context = CallContext(xid, header.credentials, client_host, client_port)
        labels = (getattr(program, "name", str(program.number)), procedure.name)
        metrics = self.metrics
        metrics.labelled(metrics.calls, *labels).inc()
        started = time.perf_counter()
        try:
            outcome = _started(procedure.run(args, context))
        except Exception:
            self.metrics.rpc_replies.labels("SYSTEM_ERR").inc()
            return succeed(self._system_error(Failure(), header.program, procedure, xid))

        def success(results: XdrWriter) -> Parts:
            elapsed = time.perf_counter() - started
            metrics.labelled(metrics.call_seconds, *labels).observe(elapsed)
            if dittofs_log.switches.debugging:
                log.debug(
                    "{host} xid {xid} {program} {procedure}: status {status} in {ms:.3f} ms",
                    host=client_host,
                    xid=xid,
                    program=labels[0],
                    procedure=labels[1],
                    status=results.first_uint(),
                    ms=elapsed * 1000,
                )
            metrics.labelled(metrics.rpc_replies, "SUCCESS").inc()
            parts = accepted_reply(xid).parts()
            parts.extend(results.parts())
            return parts

        def failure(reason: Failure) -> Parts:
            self.metrics.rpc_replies.labels("SYSTEM_ERR").inc()
            return self._system_error(reason, header.program, procedure, xid)

        replied = outcome.addCallbacks(success, failure)
        if key is not None:
            self.replay_cache.running(key, replied)
        return replied

    @staticmethod
    def _system_error(reason: Failure, program: int, procedure: Procedure, xid: int) -> Parts:
        log.failure(
            "Unexpected error in program {program} procedure {procedure} (xid {xid})",
            reason,
            program=program,
            procedure=procedure.name,
            xid=xid,
        )
        return accepted_reply(xid, AcceptStat.SYSTEM_ERR).parts()
