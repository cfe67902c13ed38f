"""Tests for :mod:`dittofs.rpc.dispatch`: RFC 5531 routing rules and error replies.

Replies are decoded with the hand-written parser in ``test_message`` so the
assertions are about bytes on the wire.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.logger import LogEvent, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dittofs.exports import Export, ExportTable
from dittofs.mount import MountProgram
from dittofs.nfs3.service import NFSv3Program
from dittofs.rpc.dispatch import NULL_PROCEDURE, CallContext, Procedure, RpcDispatcher
from dittofs.rpc.xdr import XdrReader, XdrWriter
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from tests.unit.test_message import (
    GARBAGE_ARGS,
    MSG_ACCEPTED,
    MSG_DENIED,
    PROC_UNAVAIL,
    PROG_MISMATCH,
    PROG_UNAVAIL,
    SUCCESS,
    SYSTEM_ERR,
    Reply,
    auth_sys,
    build_call,
    parse_reply,
    xdr_opaque,
)

TEST_PROGRAM = 0x20000001
ECHO, BOOM, BOOM_SYNC, WHOAMI, NOT_A_COROUTINE = 1, 2, 3, 4, 5


def _no_args(reader: XdrReader) -> None:
    return None


def _echo_args(reader: XdrReader) -> bytes:
    return reader.string(16)


class FakeProgram:
    """A test program, versions 2 to 4; version 4 lacks ECHO."""

    number = TEST_PROGRAM
    low_version = 2
    high_version = 4

    def __init__(self) -> None:
        self.contexts: list[CallContext] = []
        self.table = {
            0: NULL_PROCEDURE,
            ECHO: Procedure("ECHO", _echo_args, self.echo),
            BOOM: Procedure("BOOM", _no_args, self.boom),
            BOOM_SYNC: Procedure("BOOM_SYNC", _no_args, self.boom_sync),
            WHOAMI: Procedure("WHOAMI", _no_args, self.whoami),
            NOT_A_COROUTINE: Procedure("NOT_A_COROUTINE", _no_args, self.not_a_coroutine),
        }

    def procedures(self, version: int) -> dict[int, Procedure]:
        """Version 4 dropped ECHO, to check tables are per version."""
        if version == 4:
            return {k: v for k, v in self.table.items() if k != ECHO}
        return self.table

    async def echo(self, args: bytes, context: CallContext) -> XdrWriter:
        """Return the argument string."""
        writer = XdrWriter()
        writer.string(args)
        return writer

    async def boom(self, args: None, context: CallContext) -> XdrWriter:
        """Fail the way a bug in a procedure does."""
        raise ZeroDivisionError("boom")

    def boom_sync(self, args: None, context: CallContext) -> Any:
        """Fail before even producing a coroutine."""
        raise ZeroDivisionError("boom before the coroutine")

    async def whoami(self, args: None, context: CallContext) -> XdrWriter:
        """Record the call context."""
        self.contexts.append(context)
        return XdrWriter()

    def not_a_coroutine(self, args: None, context: CallContext) -> Any:
        """A broken procedure that returns a plain value instead of a coroutine."""
        return XdrWriter()


class WellBehavedProgram(FakeProgram):
    """The test program without its deliberately broken procedures."""

    def __init__(self) -> None:
        super().__init__()
        for broken in (BOOM, BOOM_SYNC, NOT_A_COROUTINE):
            del self.table[broken]


def failures(events: list[LogEvent]) -> list[LogEvent]:
    """The logged events that carry a Failure."""
    return [event for event in events if "log_failure" in event]


class DispatcherTests(SynchronousTestCase):
    """The dispatcher applies RFC 5531's rules and turns every outcome into a reply."""

    def setUp(self) -> None:
        self.program = FakeProgram()
        self.dispatcher = RpcDispatcher([self.program])

    def reply_to(self, record: bytes, host: str = "192.0.2.1", port: int = 700) -> Reply:
        """Dispatch *record*; the reply must be ready at once (all test procedures are)."""
        result = self.dispatcher.dispatch(record, host, port)
        self.assertIsInstance(result, Deferred)
        assert result is not None
        parts = self.successResultOf(result)
        for part in parts:
            self.assertIs(type(part), bytes)
        reply = parse_reply(b"".join(parts))
        self.assertEqual(reply.xid, struct.unpack_from(">I", record)[0])
        return reply

    def test_null(self) -> None:
        """Procedure 0 answers SUCCESS with no results."""
        reply = self.reply_to(build_call(1, TEST_PROGRAM, 2, 0))
        self.assertEqual((reply.reply_stat, reply.accept_stat, reply.body), (0, SUCCESS, b""))

    def test_success_carries_results(self) -> None:
        """A procedure's encoded results follow the accepted-reply header."""
        reply = self.reply_to(build_call(2, TEST_PROGRAM, 3, ECHO, args=xdr_opaque(b"hello")))
        self.assertEqual((reply.accept_stat, reply.body), (SUCCESS, xdr_opaque(b"hello")))

    def test_prog_unavail(self) -> None:
        """A program that is not registered gets PROG_UNAVAIL."""
        reply = self.reply_to(build_call(3, TEST_PROGRAM + 1, 2, 0))
        self.assertEqual((reply.reply_stat, reply.accept_stat), (MSG_ACCEPTED, PROG_UNAVAIL))

    def test_prog_mismatch(self) -> None:
        """A version outside the program's range gets PROG_MISMATCH with its low and high."""
        for version in (0, 1, 5, 2**32 - 1):
            with self.subTest(version=version):
                reply = self.reply_to(build_call(4, TEST_PROGRAM, version, 0))
                self.assertEqual((reply.accept_stat, reply.low, reply.high), (PROG_MISMATCH, 2, 4))

    def test_proc_unavail(self) -> None:
        """An unknown procedure, or one the called version lacks, gets PROC_UNAVAIL."""
        reply = self.reply_to(build_call(5, TEST_PROGRAM, 2, 99))
        self.assertEqual(reply.accept_stat, PROC_UNAVAIL)
        reply = self.reply_to(build_call(6, TEST_PROGRAM, 4, ECHO, args=xdr_opaque(b"x")))
        self.assertEqual(reply.accept_stat, PROC_UNAVAIL)

    def test_garbage_args(self) -> None:
        """Arguments the decoder rejects (short, or over a limit) get GARBAGE_ARGS."""
        for args in (b"", b"\0\0\0\x05ab", xdr_opaque(b"x" * 17)):
            with self.subTest(args=args):
                reply = self.reply_to(build_call(7, TEST_PROGRAM, 2, ECHO, args=args))
                self.assertEqual(reply.accept_stat, GARBAGE_ARGS)

    def test_system_err_is_logged(self) -> None:
        """A procedure raising an unexpected exception gets SYSTEM_ERR, and the traceback is
        logged so the bug can be found, while the client keeps its connection."""
        for procedure, name in ((BOOM, "BOOM"), (BOOM_SYNC, "BOOM_SYNC")):
            with self.subTest(procedure=name), capturedLogs() as events:
                reply = self.reply_to(build_call(8, TEST_PROGRAM, 2, procedure))
                self.assertEqual(reply.accept_stat, SYSTEM_ERR)
                logged = failures(list(events))
                self.assertEqual(len(logged), 1)
                self.assertTrue(logged[0]["log_failure"].check(ZeroDivisionError))
                self.assertEqual(logged[0]["procedure"], name)
                self.assertEqual(logged[0]["xid"], 8)
                self.assertEqual(logged[0]["program"], TEST_PROGRAM)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_broken_procedure_is_system_err(self) -> None:
        """A procedure that does not return a coroutine is a server bug: SYSTEM_ERR, logged."""
        with capturedLogs() as events:
            reply = self.reply_to(build_call(9, TEST_PROGRAM, 2, NOT_A_COROUTINE))
        self.assertEqual(reply.accept_stat, SYSTEM_ERR)
        self.assertEqual(len(failures(list(events))), 1)
        self.flushLoggedErrors()

    def test_context(self) -> None:
        """Procedures see the XID, the credentials and the client's address."""
        cred = (1, auth_sys(uid=42, gid=43, gids=(1, 2)))
        self.reply_to(build_call(10, TEST_PROGRAM, 2, WHOAMI, cred=cred), "198.51.100.7", 1023)
        (context,) = self.program.contexts
        self.assertEqual(context.xid, 10)
        self.assertEqual((context.client_host, context.client_port), ("198.51.100.7", 1023))
        self.assertEqual(
            (context.credentials.uid, context.credentials.gid, context.credentials.gids),
            (42, 43, (1, 2)),
        )

    def test_rejected_calls_are_answered(self) -> None:
        """Calls refused by ``parse_call`` (bad credentials, RPC version) still get a reply."""
        reply = self.reply_to(build_call(11, TEST_PROGRAM, 2, 0, cred=(6, b"")))
        self.assertEqual(reply.reply_stat, MSG_DENIED)
        reply = self.reply_to(build_call(12, TEST_PROGRAM, 2, 0, rpcvers=3))
        self.assertEqual(reply.reply_stat, MSG_DENIED)
        reply = self.reply_to(build_call(13, TEST_PROGRAM, 2, 0)[:20])
        self.assertEqual(reply.accept_stat, GARBAGE_ARGS)

    def test_not_a_call_gets_no_reply(self) -> None:
        """A reply message or a record too short for an XID cannot be answered: None."""
        for record in (b"", b"\0\0\1", struct.pack(">III", 1, 1, 0) + b"\0" * 12):
            with self.subTest(record=record):
                self.assertIsNone(self.dispatcher.dispatch(record, "192.0.2.1", 700))

    def test_deferred_result(self) -> None:
        """A procedure that waits gets its reply only when it finishes."""
        waiting: Deferred[None] = Deferred()

        async def slow(args: None, context: CallContext) -> XdrWriter:
            await waiting
            writer = XdrWriter()
            writer.uint(77)
            return writer

        self.program.table[50] = Procedure("SLOW", _no_args, slow)
        result = self.dispatcher.dispatch(build_call(14, TEST_PROGRAM, 2, 50), "h", 1)
        assert result is not None
        self.assertNoResult(result)
        waiting.callback(None)
        reply = parse_reply(b"".join(self.successResultOf(result)))
        self.assertEqual((reply.accept_stat, reply.body), (SUCCESS, struct.pack(">I", 77)))


class DispatcherFuzzTests(SynchronousTestCase):
    """Whatever a client sends, the dispatcher returns None or a well-formed reply.

    The real MOUNT and NFS programs are registered (over memory stores) so that
    argument decoders and procedures are exercised with hostile input too; a
    SYSTEM_ERR would mean a procedure crashed, so none may be logged.
    """

    def setUp(self) -> None:
        export = Export(1, b"/export", MemoryMetadataStore(), MemoryContentStore())
        exports = ExportTable([export])
        self.successResultOf(exports.open())
        self.dispatcher = RpcDispatcher(
            [MountProgram(exports), NFSv3Program(exports), WellBehavedProgram()]
        )

    def check(self, record: bytes) -> None:
        """Dispatch *record* and check the outcome."""
        with capturedLogs() as events:
            result = self.dispatcher.dispatch(record, "192.0.2.9", 800)
        if result is None:
            return
        parts = self.successResultOf(result)
        for part in parts:
            self.assertIs(type(part), bytes)
        reply = parse_reply(b"".join(parts))
        self.assertEqual(reply.xid, struct.unpack_from(">I", record)[0])
        self.assertEqual(failures(list(events)), [])
        self.assertNotEqual(reply.accept_stat, SYSTEM_ERR)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.binary(max_size=200))
    def test_random_bytes(self, record: bytes) -> None:
        """Arbitrary records never make the dispatcher raise."""
        self.check(record)

    @settings(max_examples=400, deadline=None, database=None)
    @given(
        xid=st.integers(0, 2**32 - 1),
        program=st.sampled_from([100005, 100003, TEST_PROGRAM, 100000]),
        version=st.just(3) | st.integers(0, 4),
        procedure=st.integers(0, 23),
        cred=st.sampled_from([(0, b""), (1, auth_sys(uid=0, gid=0)), (1, auth_sys())]),
        args=st.binary(max_size=160)
        | st.lists(st.sampled_from([b"\0\0\0\0", b"\0\0\0\1", b"\0\0\0\x10", b"\xff" * 4])).map(
            b"".join
        ),
    )
    def test_random_arguments(
        self,
        xid: int,
        program: int,
        version: int,
        procedure: int,
        cred: tuple[int, bytes],
        args: bytes,
    ) -> None:
        """Well-formed headers for real procedures with arbitrary argument bytes are answered
        with a well-formed reply, never an exception or SYSTEM_ERR."""
        self.check(build_call(xid, program, version, procedure, args=args, cred=cred))
