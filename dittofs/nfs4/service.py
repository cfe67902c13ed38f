"""The NFS version 4.1 program (RFC 8881): NULL and COMPOUND, one method per operation.

Every operation reads like its RFC 8881 section, over the same export table,
stores and POSIX rules (:mod:`dittofs.filesystem`) as NFSv3, so a file keeps
its handle and its semantics whichever version asks.  The operations live in
three layers of one class: those on handles, names and data
(:mod:`dittofs.nfs4.files`), those on opens and locks
(:mod:`dittofs.nfs4.opens`), and here the client and session operations and
the program itself.  State is kept by :class:`~dittofs.nfs4.state.StateTable`;
the COMPOUND loop and the slot replay cache are :mod:`dittofs.nfs4.compound`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from dittofs import log as dittofs_log
from dittofs.errors import NFSError
from dittofs.exports import ExportTable
from dittofs.metrics import Metrics
from dittofs.nfs4 import args as a
from dittofs.nfs4.compound import CompoundState, Handler, run_compound
from dittofs.nfs4.const import (
    CDFC4_BACK,
    CDFC4_BACK_OR_BOTH,
    CDFC4_FORE,
    CDFC4_FORE_OR_BOTH,
    CDFS4_BACK,
    CDFS4_BOTH,
    CDFS4_FORE,
    CREATE_SESSION4_FLAG_CONN_BACK_CHAN,
    EXCHGID4_FLAG_CONFIRMED_R,
    EXCHGID4_FLAG_UPD_CONFIRMED_REC_A,
    EXCHGID4_FLAG_USE_NON_PNFS,
    NFS_V4,
    SP4_NONE,
    Op,
    Stat4,
)
from dittofs.nfs4.files import MAX_IO
from dittofs.nfs4.opens import StateOperations
from dittofs.nfs4.pseudo import PseudoFS
from dittofs.nfs4.record import ClientRecord
from dittofs.nfs4.state import (
    StateTable,
)
from dittofs.rpc.dispatch import NULL_PROCEDURE, CallContext, Procedure
from dittofs.rpc.xdr import XdrWriter
from dittofs.vocabulary import Status

log = Logger(observer=dittofs_log.observer)

NFS_PROGRAM = 100003
#: What a session's fore channel allows at most: a 1 MiB WRITE or READ and its headers.
MAX_REQUEST = MAX_IO + 8192
MAX_CACHED_RESPONSE = 64 * 1024
DEFAULT_LEASE = 90


class NFSv41Program(StateOperations):
    """RPC program 100003 version 4, minor version 1, over an :class:`ExportTable`."""

    number = NFS_PROGRAM
    low_version = NFS_V4
    high_version = NFS_V4

    name = "nfs"

    def __init__(
        self,
        exports: ExportTable,
        write_verifier: bytes,
        metrics: Metrics | None = None,
        *,
        lease_time: int = DEFAULT_LEASE,
        clock: Callable[[], float] = time.monotonic,
        server_owner: bytes | None = None,
        record: Path | None = None,
        operation_spans: Callable[[str], Callable[[str], None]] | None = None,
    ) -> None:
        """*record* is the file that remembers the clients across restarts
        (:mod:`dittofs.nfs4.record`); without one, no client can reclaim.

        *operation_spans*, when tracing is on, is told each operation's name as it
        starts and returns what ends its span, told the status's name
        (:meth:`dittofs.tracing.Tracing.operations`).
        """
        self.exports = exports
        self.metrics = metrics if metrics is not None else Metrics()
        self.write_verifier = write_verifier
        self.pseudo = PseudoFS(exports)
        self._spans = operation_spans
        previous: frozenset[bytes] = frozenset()
        recorded = None
        if record is not None:
            clients = ClientRecord(record)
            previous, recorded = clients.load(), clients.save
            if previous:
                log.info(
                    "NFSv4.1: {count} clients of the last start may reclaim their opens and"
                    " locks for {seconds} s; new ones wait (NFS4ERR_GRACE) meanwhile",
                    count=len(previous),
                    seconds=lease_time,
                )
        self.state = StateTable(lease_time, clock, previous=previous, recorded=recorded)
        #: Names this server to clients (the same for every worker of one host).
        self.server_owner = server_owner or b"dittofs@" + socket.gethostname().encode()
        self._handlers = self._build_handlers()
        compound = Procedure("COMPOUND", a.decode_compound, self.compound)
        self._table = {0: NULL_PROCEDURE, 1: compound}

    def procedures(self, version: int) -> Mapping[int, Procedure]:
        """See :class:`~dittofs.rpc.dispatch.RpcProgram`."""
        return self._table

    async def compound(self, compound: a.Compound, context: CallContext) -> XdrWriter:
        """RFC 8881 section 16.2: run the operations of one COMPOUND."""
        return await run_compound(compound, context, self._handlers, self.state, self._observe)

    def _observe(self, op: int) -> Callable[[int], None]:
        """One operation of a COMPOUND starts: trace it if asked; when it ends, count
        (and at DEBUG, log) it by its name and status."""
        name = Op(op).name if op in _OPS else str(op)
        end_span = self._spans(name) if self._spans is not None else None

        def done(status: int) -> None:
            status_name = _status_name(status)
            if end_span is not None:
                end_span(status_name)
            self.metrics.labelled(self.metrics.nfs4_operations, name, status_name).inc()
            if dittofs_log.switches.debugging:
                log.debug("NFSv4.1 {operation}: {status}", operation=name, status=status_name)

        return done

    def _build_handlers(self) -> dict[Op, Handler]:
        not_supported = self._not_supported
        handlers: dict[Op, Handler] = {
            Op.ACCESS: self.access,
            Op.CLOSE: self.close,
            Op.COMMIT: self.commit,
            Op.CREATE: self.create,
            Op.DELEGPURGE: not_supported,
            Op.DELEGRETURN: self.delegreturn,
            Op.GETATTR: self.getattr,
            Op.GETFH: self.getfh,
            Op.LINK: self.link,
            Op.LOCK: self.lock,
            Op.LOCKT: self.lockt,
            Op.LOCKU: self.locku,
            Op.LOOKUP: self.lookup,
            Op.LOOKUPP: self.lookupp,
            Op.NVERIFY: self.nverify,
            Op.OPEN: self.open,
            Op.OPENATTR: not_supported,
            Op.OPEN_DOWNGRADE: self.open_downgrade,
            Op.PUTFH: self.putfh,
            Op.PUTPUBFH: self.putrootfh,
            Op.PUTROOTFH: self.putrootfh,
            Op.READ: self.read,
            Op.READDIR: self.readdir,
            Op.READLINK: self.readlink,
            Op.REMOVE: self.remove,
            Op.RENAME: self.rename,
            Op.RESTOREFH: self.restorefh,
            Op.SAVEFH: self.savefh,
            Op.SECINFO: self.secinfo,
            Op.SETATTR: self.setattr,
            Op.VERIFY: self.verify,
            Op.WRITE: self.write,
            Op.BIND_CONN_TO_SESSION: self.bind_conn_to_session,
            Op.EXCHANGE_ID: self.exchange_id,
            Op.CREATE_SESSION: self.create_session,
            Op.DESTROY_SESSION: self.destroy_session,
            Op.FREE_STATEID: self.free_stateid,
            Op.SECINFO_NO_NAME: self.secinfo_no_name,
            Op.TEST_STATEID: self.test_stateid,
            Op.DESTROY_CLIENTID: self.destroy_clientid,
            Op.RECLAIM_COMPLETE: self.reclaim_complete,
        }
        assert set(handlers) == set(a.DECODERS) - {Op.SEQUENCE}  # SEQUENCE: the compound loop
        return handlers

    async def _not_supported(self, args: Any, c: CompoundState) -> XdrWriter:
        raise NFSError(Status.NOTSUPP)

    # -- 18.35-18.37, 18.34, 18.46, 18.50, 18.51: clients and sessions ----

    async def exchange_id(self, args: a.ExchangeIdArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.35: a client introduces itself; no pNFS, no state protection."""
        if args.flags & ~(EXCHGID4_FLAG_UPD_CONFIRMED_REC_A | 0x0007_0103):
            raise NFSError(Status.INVAL, "unknown EXCHANGE_ID flags")
        if args.state_protect != SP4_NONE:
            # Only SP4_NONE is offered: AUTH_SYS has no principal to bind state to.
            raise NFSError(Status.NOTSUPP, "state protection is not offered")
        update = bool(args.flags & EXCHGID4_FLAG_UPD_CONFIRMED_REC_A)
        client = self.state.exchange_id(args.owner, args.verifier, update)
        writer = XdrWriter()
        writer.uhyper(client.clientid)
        writer.uint(client.create_seq)
        flags = EXCHGID4_FLAG_USE_NON_PNFS
        if client.confirmed:
            flags |= EXCHGID4_FLAG_CONFIRMED_R
        writer.uint(flags)
        writer.uint(SP4_NONE)
        writer.uhyper(0)  # so_minor_id
        writer.opaque(self.server_owner)  # so_major_id
        writer.opaque(self.server_owner)  # server scope
        writer.uint(0)  # no implementation id
        return writer

    async def create_session(self, args: a.CreateSessionArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.36: a session with a slot table; the back channel is never called."""
        fore = a.ChannelAttrs(
            0,
            min(args.fore.max_request, MAX_REQUEST),
            min(args.fore.max_response, MAX_REQUEST),
            min(args.fore.max_response_cached, MAX_CACHED_RESPONSE),
            min(args.fore.max_operations, a.MAX_OPERATIONS),
            max(1, min(args.fore.max_requests, 64)),
        )
        if fore.max_request < 1024 or fore.max_response < 1024 or fore.max_operations < 2:
            raise NFSError(Status.TOOSMALL, "channel attributes too small")
        back_channel = bool(args.flags & CREATE_SESSION4_FLAG_CONN_BACK_CHAN)
        session, _ = self.state.create_session(
            args.clientid, args.sequence, fore, args.back, back_channel
        )
        writer = XdrWriter()
        writer.fixed_opaque(session.sessionid)
        writer.uint(args.sequence)
        writer.uint(CREATE_SESSION4_FLAG_CONN_BACK_CHAN if session.back_channel else 0)
        for channel in (session.fore, session.back):
            writer.uint(channel.header_pad)
            writer.uint(channel.max_request)
            writer.uint(channel.max_response)
            writer.uint(channel.max_response_cached)
            writer.uint(channel.max_operations)
            writer.uint(channel.max_requests)
            writer.uint(0)  # no RDMA
        return writer

    async def destroy_session(self, sessionid: bytes, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.37."""
        self.state.destroy_session(sessionid)
        return XdrWriter()

    async def bind_conn_to_session(self, args: a.BindConnArgs, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.34: any connection may serve a session; a back channel is noted."""
        directions = {
            CDFC4_FORE: CDFS4_FORE,
            CDFC4_BACK: CDFS4_BACK,
            CDFC4_FORE_OR_BOTH: CDFS4_BOTH,
            CDFC4_BACK_OR_BOTH: CDFS4_BOTH,
        }
        if args.direction not in directions:
            raise NFSError(Status.INVAL, f"channel direction {args.direction}")
        session = self.state.session(args.sessionid)
        bound = directions[args.direction]
        session.back_channel = session.back_channel or bool(bound & CDFS4_BACK)
        writer = XdrWriter()
        writer.fixed_opaque(session.sessionid)
        writer.uint(bound)
        writer.boolean(False)
        return writer

    async def destroy_clientid(self, clientid: int, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.50."""
        self.state.destroy_client(clientid)
        return XdrWriter()

    async def reclaim_complete(self, one_fs: bool, c: CompoundState) -> XdrWriter:
        """RFC 8881 18.51: the client has reclaimed what it will (for one file system: noted)."""
        session = self._session(c)
        if not one_fs:
            self.state.reclaim_complete(session.client)
        return XdrWriter()


_OPS = frozenset(int(op) for op in Op)


def _status_name(status: int) -> str:
    for kind in (Status, Stat4):
        try:
            return kind(status).name
        except ValueError:
            continue
    return str(status)
