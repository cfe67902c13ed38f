"""Tests for :mod:`dittofs.rpc.protocol`: RPC over a stream transport, with backpressure.

The protocol runs over ``StringTransport``; a test program whose procedures
wait on Deferreds the test controls makes completion order and the number of
calls in flight explicit.
"""

from __future__ import annotations

import gc
import itertools
import os
import socket
import struct
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dittofs.model import FileRegion
from dittofs.rpc.dispatch import NULL_PROCEDURE, CallContext, Procedure, RpcDispatcher
from dittofs.rpc.protocol import (
    DEFAULT_MAX_IN_FLIGHT,
    HELD_BYTES,
    HELD_REGIONS,
    Limits,
    LogLimiter,
    RpcServerFactory,
    RpcServerProtocol,
)
from dittofs.rpc.record import DEFAULT_MAX_RECORD
from dittofs.rpc.xdr import XdrReader, XdrWriter
from tests.unit.test_message import (
    SUCCESS,
    Reply,
    build_call,
    parse_reply,
    record_mark,
    split_records,
    xdr_opaque,
)

TEST_PROGRAM = 0x20000002
ECHO, WAIT, WHOAMI, BULK, REGION = 1, 2, 3, 4, 5
#: What BULK answers: large enough to go to the socket directly.
BULK_DATA = bytes(range(256)) * 1024
PEER = IPv4Address("TCP", "192.0.2.5", 901)


def _no_args(reader: XdrReader) -> None:
    return None


class ControlledProgram:
    """NULL, ECHO (answers at once), WAIT (answers when the test fires its Deferred), WHOAMI,
    BULK (256 KiB, like a large READ), REGION (BULK_DATA left in a file, as the fs store lends
    a large READ's data)."""

    number = TEST_PROGRAM
    low_version = 1
    high_version = 1

    def __init__(self) -> None:
        self.pending: list[Deferred[None]] = []
        self.contexts: list[CallContext] = []
        self.table = {
            0: NULL_PROCEDURE,
            ECHO: Procedure("ECHO", lambda reader: reader.string(64), self.echo),
            WAIT: Procedure("WAIT", _no_args, self.wait),
            WHOAMI: Procedure("WHOAMI", _no_args, self.whoami),
            BULK: Procedure("BULK", _no_args, self.bulk),
            REGION: Procedure("REGION", _no_args, self.region),
        }
        #: The file REGION answers from, and every region it lent.
        self.file: Path | None = None
        self.regions: list[FileRegion] = []

    def procedures(self, version: int) -> dict[int, Procedure]:
        """One table for the one version."""
        return self.table

    async def echo(self, args: bytes, context: CallContext) -> XdrWriter:
        """Return the argument at once."""
        writer = XdrWriter()
        writer.string(args)
        return writer

    async def wait(self, args: None, context: CallContext) -> XdrWriter:
        """Finish only when the test fires this call's Deferred."""
        waiting: Deferred[None] = Deferred()
        self.pending.append(waiting)
        await waiting
        writer = XdrWriter()
        writer.uint(context.xid)
        return writer

    async def whoami(self, args: None, context: CallContext) -> XdrWriter:
        """Record the call's context."""
        self.contexts.append(context)
        return XdrWriter()

    async def bulk(self, args: None, context: CallContext) -> XdrWriter:
        """Answer BULK_DATA as one uncopied part."""
        writer = XdrWriter()
        writer.opaque(BULK_DATA)
        return writer

    async def region(self, args: None, context: CallContext) -> XdrWriter:
        """Answer BULK_DATA as a region of :attr:`file`."""
        assert self.file is not None
        region = FileRegion(os.open(self.file, os.O_RDONLY), 0, len(BULK_DATA))
        self.regions.append(region)
        writer = XdrWriter()
        writer.opaque(region)
        return writer


def call(xid: int, procedure: int, args: bytes = b"") -> bytes:
    """A record-marked call to the test program."""
    return record_mark(build_call(xid, TEST_PROGRAM, 1, procedure, args=args))


def failures(events: list[LogEvent]) -> list[LogEvent]:
    """Logged events carrying a Failure."""
    return [event for event in events if "log_failure" in event]


class ProtocolTestCase(SynchronousTestCase):
    """Builds a connected protocol over a StringTransport."""

    def connect(
        self,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_record: int = DEFAULT_MAX_RECORD,
        lenient: bool = False,
        limits: Limits | None = None,
    ) -> None:
        """Connect a new protocol from a factory with the given limits.

        A *lenient* transport tolerates ``resumeProducing`` after
        ``loseConnection``, as real TCP transports do.  Timers run on
        ``self.clock``.
        """
        self.program = ControlledProgram()
        self.clock = Clock()
        self.factory = RpcServerFactory(
            RpcDispatcher([self.program]),
            limits=limits or Limits(max_record=max_record, max_in_flight=max_in_flight),
            clock=self.clock,
        )
        self.protocol, self.transport = self.open_connection(lenient)

    def open_connection(
        self, lenient: bool = False, peer: IPv4Address = PEER
    ) -> tuple[RpcServerProtocol, StringTransport]:
        """One more connection to the same factory."""
        protocol = self.factory.buildProtocol(peer)
        assert isinstance(protocol, RpcServerProtocol)
        transport = StringTransport(peerAddress=peer, lenient=lenient)
        protocol.makeConnection(transport)
        return protocol, transport

    def replies(self) -> list[Reply]:
        """Parse and clear everything written so far."""
        output = self.transport.value()
        self.transport.clear()
        return [parse_reply(message) for message in split_records(output)]


class CallReplyTests(ProtocolTestCase):
    """Calls get record-marked replies, as many and as soon as possible."""

    def setUp(self) -> None:
        self.connect()

    def test_call_gets_record_marked_reply(self) -> None:
        """A call is answered with one record-marked reply carrying its results."""
        self.protocol.dataReceived(call(1, ECHO, xdr_opaque(b"hi")))
        (reply,) = self.replies()
        self.assertEqual(
            (reply.xid, reply.accept_stat, reply.body), (1, SUCCESS, xdr_opaque(b"hi"))
        )
        self.assertFalse(self.transport.disconnecting)

    def test_two_calls_in_one_chunk(self) -> None:
        """Pipelined calls arriving in one chunk are both answered."""
        self.protocol.dataReceived(call(1, ECHO, xdr_opaque(b"a")) + call(2, 0))
        self.assertEqual([reply.xid for reply in self.replies()], [1, 2])

    def test_call_split_across_chunks(self) -> None:
        """A call arriving a byte at a time is answered once, after its last byte."""
        data = call(3, ECHO, xdr_opaque(b"split"))
        for index in range(len(data) - 1):
            self.protocol.dataReceived(data[index : index + 1])
        self.assertEqual(self.transport.value(), b"")
        self.protocol.dataReceived(data[-1:])
        (reply,) = self.replies()
        self.assertEqual((reply.xid, reply.body), (3, xdr_opaque(b"split")))

    def test_multi_fragment_call(self) -> None:
        """A call sent as several fragments is reassembled and answered."""
        message = build_call(4, TEST_PROGRAM, 1, ECHO, args=xdr_opaque(b"frag"))
        data = struct.pack(">I", 10) + message[:10] + record_mark(message[10:])
        self.protocol.dataReceived(data)
        (reply,) = self.replies()
        self.assertEqual((reply.xid, reply.body), (4, xdr_opaque(b"frag")))

    def test_out_of_order_replies(self) -> None:
        """A slow call does not hold back a later fast one: replies go out as calls finish."""
        self.protocol.dataReceived(call(10, WAIT) + call(11, ECHO, xdr_opaque(b"fast")))
        self.assertEqual([reply.xid for reply in self.replies()], [11])
        self.program.pending[0].callback(None)
        (reply,) = self.replies()
        self.assertEqual((reply.xid, reply.body), (10, struct.pack(">I", 10)))

    def test_client_address_reaches_procedures(self) -> None:
        """Procedures learn the peer's address (MOUNT records it in its DUMP list)."""
        self.protocol.dataReceived(call(5, WHOAMI))
        (context,) = self.program.contexts
        self.assertEqual((context.client_host, context.client_port), ("192.0.2.5", 901))

    def test_non_call_is_ignored(self) -> None:
        """A record that is not a call gets no reply and does not cost the connection."""
        reply_message = struct.pack(">6I", 7, 1, 0, 0, 0, 0)
        self.protocol.dataReceived(record_mark(reply_message) + record_mark(b"\0\0") + call(8, 0))
        self.assertEqual([reply.xid for reply in self.replies()], [8])
        self.assertFalse(self.transport.disconnecting)

    def test_many_pipelined_calls_in_one_chunk(self) -> None:
        """Hundreds of small calls arriving in one chunk (one 64 KiB read) are all answered.

        Calls that complete at once must not start the next queued call from
        inside their own completion callback, or the stack grows with every
        call and replies are lost to RecursionError.
        """
        count = 1000
        data = b"".join(call(xid, 0) for xid in range(count))
        with capturedLogs() as events:
            try:
                self.protocol.dataReceived(data)
            finally:
                gc.collect()
        logged = sorted({event["log_failure"].type.__name__ for event in failures(list(events))})
        self.flushLoggedErrors()
        xids = [reply.xid for reply in self.replies()]
        self.assertEqual(
            len(xids), count, f"{count - len(xids)} calls unanswered; errors logged: {logged}"
        )
        self.assertEqual(xids, list(range(count)))
        self.assertEqual(logged, [])


class ChunkingTests(ProtocolTestCase):
    """However TCP chunks the stream, every call is answered exactly once, in order."""

    @settings(max_examples=75, deadline=None, database=None)
    @given(
        st.lists(st.binary(max_size=64), min_size=1, max_size=8),
        st.lists(st.integers(0, 1000), max_size=20),
    )
    def test_any_chunking(self, payloads: list[bytes], cuts: list[int]) -> None:
        """Pipelined ECHO calls split at arbitrary points get their own results back."""
        self.connect(max_in_flight=3)
        stream = b"".join(
            call(xid, ECHO, xdr_opaque(payload)) for xid, payload in enumerate(payloads)
        )
        points = sorted({cut for cut in cuts if 0 < cut < len(stream)})
        bounds = [0, *points, len(stream)]
        for start, end in itertools.pairwise(bounds):
            self.protocol.dataReceived(stream[start:end])
        replies = self.replies()
        self.assertEqual([reply.xid for reply in replies], list(range(len(payloads))))
        self.assertEqual([reply.body for reply in replies], [xdr_opaque(p) for p in payloads])
        self.assertEqual(self.transport.producerState, "producing")


class TakingSocket:
    """A non-blocking socket stand-in whose send buffer takes only *room* more bytes."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent = bytearray()
        self.calls = 0

    def sendmsg(self, buffers: list[bytes]) -> int:
        """Take what fits, as the kernel does; nothing fits is EAGAIN."""
        self.calls += 1
        data = b"".join(buffers)[: self.room]
        if not data:
            raise BlockingIOError
        self.sent += data
        self.room -= len(data)
        return len(data)


class SocketTransport(StringTransport):
    """A StringTransport with the buffer attributes and socket of Twisted's TCP transport."""

    def __init__(self, sock: TakingSocket) -> None:
        super().__init__(peerAddress=PEER)
        self.socket = sock
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0


class DirectSendTests(ProtocolTestCase):
    """Large replies go to the socket as they are while nothing is queued before them."""

    def open_over(self, sock: TakingSocket) -> SocketTransport:
        self.connect()
        transport = SocketTransport(sock)
        self.protocol = self.factory.buildProtocol(PEER)  # type: ignore[assignment]
        self.protocol.makeConnection(transport)
        return transport

    def test_every_split_of_the_reply_arrives_whole_and_in_order(self) -> None:
        """Whatever the socket takes, it and then the transport's buffer carry the exact reply."""
        for room in (0, 1, 4, 5, 100, 4096, 200_000, 10**9):
            with self.subTest(room=room):
                sock = TakingSocket(room)
                transport = self.open_over(sock)
                self.protocol.dataReceived(call(7, BULK) + call(8, BULK))
                stream = bytes(sock.sent) + transport.value()
                replies = [parse_reply(message) for message in split_records(stream)]
                self.assertEqual([reply.xid for reply in replies], [7, 8])
                self.assertEqual([reply.body for reply in replies], [xdr_opaque(BULK_DATA)] * 2)
                self.assertGreaterEqual(sock.calls, 1)

    def test_nothing_skips_queued_data(self) -> None:
        """With bytes already queued in the transport, the reply queues behind them."""
        sock = TakingSocket(10**9)
        transport = self.open_over(sock)
        transport._tempDataLen = 1
        self.protocol.dataReceived(call(9, BULK))
        self.assertEqual(sock.calls, 0)
        (reply,) = [parse_reply(message) for message in split_records(transport.value())]
        self.assertEqual(reply.body, xdr_opaque(BULK_DATA))

    def test_small_replies_take_the_usual_path(self) -> None:
        """Small replies are not worth a system call of their own."""
        sock = TakingSocket(10**9)
        transport = self.open_over(sock)
        self.protocol.dataReceived(call(10, ECHO, xdr_opaque(b"small")))
        self.assertEqual(sock.calls, 0)
        self.assertEqual(len(split_records(transport.value())), 1)


class RegionSendTests(ProtocolTestCase):
    """Replies whose data is still in a file go out whole, from a thread, never interleaved."""

    def setUp(self) -> None:
        self.connect()
        self.program.file = Path(self.mktemp())
        self.program.file.write_bytes(BULK_DATA)
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.theirs.setblocking(False)
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        self.transport = SocketTransport(self.ours)  # type: ignore[arg-type]
        self.protocol = self.factory.buildProtocol(PEER)  # type: ignore[assignment]
        self.protocol.makeConnection(self.transport)
        self.received = b""
        #: Thread work the test runs itself: (function, args, its Deferred).
        self.threads: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []
        #: Waits for room in the socket: what to call when there is.
        self.waiting: list[Any] = []

        def in_thread(function: Any, *args: Any) -> Deferred[Any]:
            done: Deferred[Any] = Deferred()
            self.threads.append((function, args, done))
            return done

        def when_writable(fd: int, then: Any) -> Any:
            self.waiting.append(then)
            return lambda: self.waiting.remove(then)

        self.factory.in_thread = in_thread  # type: ignore[method-assign]
        self.factory.when_writable = when_writable  # type: ignore[method-assign]

    def run_thread(self) -> None:
        """Run the oldest thread work now, as the pool would."""
        function, args, done = self.threads.pop(0)
        try:
            result = function(*args)
        except Exception as error:
            done.errback(Failure(error))
        else:
            done.callback(result)

    def drain(self) -> None:
        """Read what the socket holds for the client."""
        while True:
            try:
                chunk = self.theirs.recv(1 << 20)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.received += chunk

    def pump(self) -> None:
        """Run thread work, and read to make room whenever a sender waits, until all is sent."""
        for _ in range(10_000):
            if self.threads:
                self.run_thread()
            elif self.waiting:
                self.drain()
                self.waiting.pop(0)()
            else:
                self.drain()
                return
        self.fail("the sender never finished")

    def stream(self) -> list[Reply]:
        return [parse_reply(message) for message in split_records(self.received)]

    def test_region_reply_arrives_whole(self) -> None:
        """The record mark, the header, the file's bytes and the padding, once; then closed."""
        self.protocol.dataReceived(call(1, REGION))
        self.assertEqual(self.transport.value(), b"")
        self.pump()
        (reply,) = self.stream()
        self.assertEqual((reply.xid, reply.body), (1, xdr_opaque(BULK_DATA)))
        self.assertEqual([region.fd for region in self.program.regions], [-1])

    def test_replies_ready_meanwhile_are_held_then_sent_after(self) -> None:
        """Nothing is written beside the sender; what was held goes to the sender next."""
        self.protocol.dataReceived(call(1, REGION))
        self.protocol.dataReceived(call(2, ECHO, xdr_opaque(b"small")) + call(3, REGION))
        self.assertEqual(self.transport.value(), b"")
        self.pump()
        self.assertEqual([reply.xid for reply in self.stream()], [1, 2, 3])
        self.assertEqual(self.transport.value(), b"")
        # Afterwards replies take the usual path again.
        self.protocol.dataReceived(call(4, ECHO, xdr_opaque(b"again")))
        self.assertEqual(len(split_records(self.transport.value())), 1)

    def test_a_client_that_does_not_read_holds_no_thread(self) -> None:
        """A full socket ends the thread's work; the rest waits for room on the reactor."""
        self.protocol.dataReceived(call(1, REGION) + call(2, REGION))
        while self.threads:
            self.run_thread()
        self.assertEqual(len(self.waiting), 1)
        self.pump()
        self.assertEqual(sorted(reply.xid for reply in self.stream()), [1, 2])

    def test_too_much_held_stops_reading(self) -> None:
        """Past HELD_BYTES of held replies, no more calls are read until the sender takes them."""
        self.protocol.dataReceived(call(1, REGION))
        count = HELD_BYTES // len(BULK_DATA) + 1
        self.protocol.dataReceived(b"".join(call(10 + n, BULK) for n in range(count)))
        self.assertEqual(self.transport.producerState, "paused")
        self.pump()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.stream()), count + 1)

    def test_too_many_held_regions_stop_reading(self) -> None:
        """Past HELD_REGIONS held regions (open descriptors), reading stops too."""
        self.protocol.dataReceived(call(1, REGION))
        more = b"".join(call(10 + n, REGION) for n in range(HELD_REGIONS + 1))
        self.assertLess((HELD_REGIONS + 1) * len(BULK_DATA), HELD_BYTES)
        self.protocol.dataReceived(more)
        self.assertEqual(self.transport.producerState, "paused")
        self.pump()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.stream()), HELD_REGIONS + 2)
        self.assertEqual({region.fd for region in self.program.regions}, {-1})

    def test_failed_send_drops_the_connection(self) -> None:
        """A client gone mid-record: the connection is aborted, held regions are closed."""
        self.protocol.dataReceived(call(1, REGION))
        self.protocol.dataReceived(call(2, REGION))
        self.theirs.close()
        with capturedLogs():
            self.run_thread()
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual([region.fd for region in self.program.regions], [-1, -1])

    def test_lost_while_waiting_for_room(self) -> None:
        """The connection goes while the sender waits: the wait stops, regions are closed."""
        self.protocol.dataReceived(call(1, REGION) + call(2, REGION) + call(3, REGION))
        while self.threads:
            self.run_thread()
        self.assertEqual(len(self.waiting), 1)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.waiting, [])
        self.assertEqual([region.fd for region in self.program.regions], [-1, -1, -1])

    def test_queued_bytes_first_then_the_region_read(self) -> None:
        """With Twisted's buffer not empty, the region is read in a thread and queued after it."""
        self.transport._tempDataLen = 1
        self.protocol.dataReceived(call(1, REGION))
        # The call counts as running until its bytes are queued, so max_in_flight
        # bounds how many regions wait for a thread so.
        self.assertEqual(self.factory.in_flight, 1)
        self.run_thread()
        self.assertEqual(self.factory.in_flight, 0)
        (reply,) = [parse_reply(message) for message in split_records(self.transport.value())]
        self.assertEqual(reply.body, xdr_opaque(BULK_DATA))
        self.assertEqual(self.program.regions[0].fd, -1)

    def test_lost_connection_closes_regions(self) -> None:
        """A reply ready after the connection went is never sent; its region is closed."""
        self.protocol.connectionLost(Failure(ConnectionDone()))
        assert self.program.file is not None
        late = FileRegion(os.open(self.program.file, os.O_RDONLY), 0, 10)
        self.protocol._send_reply([late])
        self.assertEqual(late.fd, -1)


class BackpressureTests(ProtocolTestCase):
    """With ``max_in_flight`` calls running, reading stops and further calls wait."""

    def setUp(self) -> None:
        self.connect(max_in_flight=2)

    def test_pause_and_resume(self) -> None:
        """The transport is paused while calls wait for a slot, and resumed when none wait."""
        self.protocol.dataReceived(call(1, WAIT) + call(2, WAIT) + call(3, WAIT))
        self.assertEqual(len(self.program.pending), 2)
        self.assertEqual(self.transport.producerState, "paused")

        # Data arriving while paused (already in flight on the network) waits its turn too.
        self.protocol.dataReceived(call(4, ECHO, xdr_opaque(b"late")))
        self.assertEqual(self.replies(), [])

        self.program.pending[0].callback(None)
        self.assertEqual([reply.xid for reply in self.replies()], [1])
        self.assertEqual(len(self.program.pending), 3)
        self.assertEqual(self.transport.producerState, "paused")

        self.program.pending[1].callback(None)
        self.assertEqual([reply.xid for reply in self.replies()], [2, 4])
        self.assertEqual(self.transport.producerState, "producing")

        self.program.pending[2].callback(None)
        self.assertEqual([reply.xid for reply in self.replies()], [3])
        self.assertEqual(self.transport.producerState, "producing")

    def test_not_paused_at_limit_without_waiting_calls(self) -> None:
        """Exactly ``max_in_flight`` calls running, none waiting, does not pause reading."""
        self.protocol.dataReceived(call(1, WAIT) + call(2, WAIT))
        self.assertEqual(len(self.program.pending), 2)
        self.assertEqual(self.transport.producerState, "producing")

    def test_queued_calls_dropped_on_connection_lost(self) -> None:
        """Calls still waiting for a slot when the connection goes are never started."""
        self.protocol.dataReceived(call(1, WAIT) + call(2, WAIT) + call(3, WAIT))
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.program.pending[0].callback(None)
        self.program.pending[1].callback(None)
        self.assertEqual(len(self.program.pending), 2)
        self.assertEqual(self.transport.value(), b"")


class ConnectionErrorTests(ProtocolTestCase):
    """Framing errors close the connection; lost connections drop late replies quietly."""

    def test_over_large_record_closes_connection(self) -> None:
        """A record over ``max_record`` closes the connection, is logged, and gets no reply."""
        self.connect(max_record=100)
        with capturedLogs() as events:
            self.protocol.dataReceived(struct.pack(">I", 0x80000000 | 101) + b"\0" * 101)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")
        warnings = [event for event in events if event["log_level"] >= LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["host"], "192.0.2.5")

    def test_over_large_record_after_good_calls(self) -> None:
        """Calls before the oversized record are answered; queued ones are dropped."""
        self.connect(max_record=100, max_in_flight=1, lenient=True)
        with capturedLogs():
            self.protocol.dataReceived(
                call(1, ECHO, xdr_opaque(b"ok")) + call(2, WAIT) + call(3, 0)
            )
            self.protocol.dataReceived(struct.pack(">I", 0x80000000 | 5000))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual([reply.xid for reply in self.replies()], [1])
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.program.pending[0].callback(None)
        self.assertEqual(self.transport.value(), b"")

    def test_reply_after_connection_lost_is_dropped(self) -> None:
        """A call finishing after its client left writes nothing and logs no error."""
        self.connect()
        self.protocol.dataReceived(call(1, WAIT))
        self.protocol.connectionLost(Failure(ConnectionDone()))
        with capturedLogs() as events:
            self.program.pending[0].callback(None)
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(failures(list(events)), [])


class LimitTests(ProtocolTestCase):
    """Every resource a client can make the server hold is bounded."""

    def test_connection_limits(self) -> None:
        """Beyond the global or per-client limit connections are refused (and logged once)."""
        self.connect(limits=Limits(max_connections=3, max_connections_per_client=2))
        self.open_connection()
        with capturedLogs() as events:
            self.assertIsNone(self.factory.buildProtocol(PEER))
            self.assertIsNone(self.factory.buildProtocol(PEER))
        self.assertEqual(len([e for e in events if "Refusing" in e.get("log_format", "")]), 1)
        other = IPv4Address("TCP", "192.0.2.6", 902)
        self.open_connection(peer=other)
        self.assertIsNone(self.factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 903)))
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.factory.buildProtocol(PEER))

    def test_idle_connection_is_closed(self) -> None:
        """A connection with no calls for the idle timeout is closed; activity keeps it open."""
        self.connect(limits=Limits(idle_timeout=100))
        self.clock.advance(60)
        self.protocol.dataReceived(call(1, ECHO, xdr_opaque(b"hi")))
        self.clock.advance(60)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(41)
        self.assertTrue(self.transport.disconnecting)

    def test_busy_connection_is_not_idle(self) -> None:
        """A call still running keeps its connection open past the idle timeout."""
        self.connect(limits=Limits(idle_timeout=10))
        self.protocol.dataReceived(call(1, WAIT))
        self.clock.advance(30)
        self.assertFalse(self.transport.disconnecting)
        self.program.pending[0].callback(None)
        self.clock.advance(11)
        self.assertTrue(self.transport.disconnecting)

    def test_slow_loris_is_cut_off(self) -> None:
        """A record trickling in slower than the deadline closes the connection."""
        self.connect(limits=Limits(record_deadline=30))
        record = call(1, ECHO, xdr_opaque(b"x" * 100))
        for index in range(20):
            self.protocol.dataReceived(record[index : index + 1])
            self.clock.advance(1)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(10)
        self.assertTrue(self.transport.disconnecting)

    def test_complete_records_reset_the_deadline(self) -> None:
        """Only a record that is started and not finished is timed."""
        self.connect(limits=Limits(record_deadline=30))
        for xid in range(5):
            self.protocol.dataReceived(call(xid, ECHO, xdr_opaque(b"ok")))
            self.clock.advance(20)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(len(self.replies()), 5)

    def test_client_that_does_not_read_stops_being_read(self) -> None:
        """When the transport's buffer is full, reading stops and calls wait; then resume."""
        self.connect()
        self.protocol.pauseProducing()  # what the transport does when its buffer fills
        self.assertEqual(self.transport.producerState, "paused")
        self.protocol.dataReceived(call(1, ECHO, xdr_opaque(b"a")))
        self.assertEqual(self.replies(), [])
        self.protocol.resumeProducing()
        self.assertEqual(len(self.replies()), 1)
        self.assertEqual(self.transport.producerState, "producing")

    def test_drain_waits_for_calls(self) -> None:
        """Shutdown waits for running calls, and gives up after its timeout."""
        self.connect()
        self.protocol.dataReceived(call(1, WAIT))
        drained = self.factory.drain(30)
        self.assertNoResult(drained)
        self.program.pending[0].callback(None)
        self.successResultOf(drained)
        self.protocol.dataReceived(call(2, WAIT))
        stuck = self.factory.drain(30)
        self.clock.advance(31)
        self.successResultOf(stuck)


class LogLimiterTests(SynchronousTestCase):
    """Limits hit are logged once per client and reason per minute, not per packet."""

    def test_once_a_minute(self) -> None:
        """A second report of the same client and reason within a minute is dropped."""
        clock = Clock()
        limiter = LogLimiter(clock.seconds)
        self.assertTrue(limiter.allows("a", "slow"))
        self.assertFalse(limiter.allows("a", "slow"))
        self.assertTrue(limiter.allows("a", "record"))
        self.assertTrue(limiter.allows("b", "slow"))
        clock.advance(61)
        self.assertTrue(limiter.allows("a", "slow"))

    def test_bounded(self) -> None:
        """Many clients cannot make the limiter's memory grow without bound."""
        clock = Clock()
        limiter = LogLimiter(clock.seconds, size=100)
        for index in range(1000):
            limiter.allows(f"client{index}", "slow")
            clock.advance(1)
        self.assertLessEqual(len(limiter._last), 100)
