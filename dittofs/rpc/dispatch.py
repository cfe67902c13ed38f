"""Routing decoded RPC calls to program procedures, and turning outcomes into replies.

A program (MOUNT, NFS) is a table of :class:`Procedure` entries keyed by
version and procedure number.  Each procedure decodes its arguments
synchronously (so undecodable arguments become GARBAGE_ARGS before anything
runs) and then executes asynchronously.  :class:`RpcDispatcher` implements the
RFC 5531 rules for unknown programs, versions and procedures, and maps an
unexpected exception to SYSTEM_ERR with a logged traceback, so one bad call
never costs a client its connection.  It tells the observers it is given
(:mod:`dittofs.rpc.observe`) when each call starts and how it ended.
"""

from __future__ import annotations

import contextvars
import enum
import inspect
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from dittofs import log as dittofs_log
from dittofs.rpc.message import (
    AcceptStat,
    CallHeader,
    CallRejected,
    Credentials,
    RejectStat,
    accepted_reply,
    parse_call,
    prog_mismatch_reply,
)
from dittofs.rpc.observe import Call, Outcome, RpcObserver
from dittofs.rpc.replay import ReplayCache, call_key
from dittofs.rpc.xdr import Part, XdrError, XdrReader, XdrWriter

Parts = list[Part]
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
    #: The enumeration whose value starts the results (``nfsstat3``...), if one does.
    status: type[enum.IntEnum] | None = None


class RpcProgram(Protocol):
    """An RPC program: its number, the versions it serves and their procedures."""

    number: int
    low_version: int
    high_version: int

    def procedures(self, version: int) -> Mapping[int, Procedure]:
        """Return the procedure table for *version* (within low..high)."""


class _Versions:
    """Several programs of one number, each serving its own versions (NFS 3 and 4)."""

    def __init__(self, programs: Sequence[RpcProgram]) -> None:
        self._programs = programs
        self.number = programs[0].number
        self.name = getattr(programs[0], "name", str(self.number))
        self.low_version = min(program.low_version for program in programs)
        self.high_version = max(program.high_version for program in programs)

    def procedures(self, version: int) -> Mapping[int, Procedure]:
        for program in self._programs:
            if program.low_version <= version <= program.high_version:
                return program.procedures(version)
        return {}


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
        observers: Iterable[RpcObserver] = (),
    ) -> None:
        by_number: dict[int, list[RpcProgram]] = {}
        for program in programs:
            by_number.setdefault(program.number, []).append(program)
        self._programs = {
            number: found[0] if len(found) == 1 else _Versions(found)
            for number, found in by_number.items()
        }
        self.replay_cache = replay_cache if replay_cache is not None else ReplayCache()
        #: Told of every call; the connection factory tells them of connections too.
        self.observers = list(observers)

    @property
    def programs(self) -> Sequence[RpcProgram]:
        """The programs served (those of one number, several versions, as one)."""
        return tuple(self._programs.values())

    def dispatch(self, record: bytes, client_host: str, client_port: int) -> Deferred[Parts] | None:
        """Serve one call record; return a Deferred of the reply's parts, or None.

        None means the record is not a call that can be answered (no XID, or a
        reply message); the caller logs it and carries on.
        """
        arrived = time.perf_counter()
        try:
            header, reader = parse_call(record)
        except XdrError:
            return None
        except CallRejected as rejected:
            call = Call(rejected.xid, client_host, client_port)
            return self._answered(call, arrived, rejected.stat, rejected.reply)
        xid = header.xid
        program = self._programs.get(header.program)
        if program is None:
            call = self._call(header, client_host, client_port)
            return self._answered(call, arrived, AcceptStat.PROG_UNAVAIL)
        program_name = getattr(program, "name", str(program.number))
        if not program.low_version <= header.version <= program.high_version:
            call = self._call(header, client_host, client_port, program_name)
            reply = prog_mismatch_reply(xid, program.low_version, program.high_version)
            return self._answered(call, arrived, AcceptStat.PROG_MISMATCH, reply)
        procedure = program.procedures(header.version).get(header.procedure)
        if procedure is None:
            call = self._call(header, client_host, client_port, program_name)
            return self._answered(call, arrived, AcceptStat.PROC_UNAVAIL)
        call = self._call(header, client_host, client_port, program_name, procedure.name)
        try:
            args = procedure.decode(reader)
        except XdrError:
            return self._answered(call, arrived, AcceptStat.GARBAGE_ARGS)
        key = None
        if procedure.replayable:
            arguments = memoryview(record)[header.args_offset :]
            key = call_key(client_host, client_port, header, arguments)
            replayed = self.replay_cache.replay(key)
            if replayed is not None:
                return replayed
        context = CallContext(xid, header.credentials, client_host, client_port)
        # The observers and the procedure's first step share a context of the call's own.
        finishers, outcome = contextvars.copy_context().run(
            self._start, call, procedure, args, context
        )

        def success(results: XdrWriter) -> Parts:
            parts = accepted_reply(xid).parts()
            parts.extend(results.parts())
            first = results.first_uint()
            status = None
            if procedure.status is not None and first is not None:
                status = procedure.status(first)
            seconds = time.perf_counter() - arrived
            if dittofs_log.switches.debugging:
                log.debug(
                    "{host} xid {xid} {program} {procedure}: status {status} in {ms:.3f} ms",
                    host=client_host,
                    xid=xid,
                    program=program_name,
                    procedure=procedure.name,
                    status=first,
                    ms=seconds * 1000,
                )
            _finish(finishers, Outcome(AcceptStat.SUCCESS, seconds, status))
            return parts

        def failure(reason: Failure) -> Parts:
            parts = self._system_error(reason, header.program, procedure, xid)
            seconds = time.perf_counter() - arrived
            _finish(finishers, Outcome(AcceptStat.SYSTEM_ERR, seconds))
            return parts

        replied = outcome.addCallbacks(success, failure)
        if key is not None:
            self.replay_cache.running(key, replied)
        return replied

    @staticmethod
    def _call(
        header: CallHeader,
        client_host: str,
        client_port: int,
        program_name: str | None = None,
        procedure_name: str | None = None,
    ) -> Call:
        """The call *header* asks for, with the names of what serves it (None where nothing)."""
        return Call(
            header.xid,
            client_host,
            client_port,
            header.program,
            header.version,
            header.procedure,
            program_name,
            procedure_name,
        )

    def _start(
        self, call: Call, procedure: Procedure, args: Any, context: CallContext
    ) -> tuple[list[Callable[[Outcome], None]], Deferred[XdrWriter]]:
        """Tell the observers, then run the procedure to its first wait."""
        finishers = self._observe(call)
        try:
            return finishers, _started(procedure.run(args, context))
        except Exception:
            return finishers, fail()

    def _answered(
        self,
        call: Call,
        arrived: float,
        stat: AcceptStat | RejectStat,
        reply: XdrWriter | None = None,
    ) -> Deferred[Parts]:
        """Answer at once, without running a procedure: *reply*, or an accepted *stat*."""
        if reply is None:
            assert isinstance(stat, AcceptStat)
            reply = accepted_reply(call.xid, stat)
        parts = reply.parts()
        if self.observers:
            finishers = contextvars.copy_context().run(self._observe, call)
            seconds = time.perf_counter() - arrived
            _finish(finishers, Outcome(stat, seconds))
        return succeed(parts)

    def _observe(self, call: Call) -> list[Callable[[Outcome], None]]:
        return [observer.call_started(call) for observer in self.observers]

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


def _finish(finishers: list[Callable[[Outcome], None]], outcome: Outcome) -> None:
    for finish in finishers:
        finish(outcome)
