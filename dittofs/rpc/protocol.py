"""The Twisted side of ONC RPC over TCP: it moves bytes and Deferreds, nothing more.

Records are framed by :class:`~dittofs.rpc.record.RecordReceiver` and served
by an :class:`~dittofs.rpc.dispatch.RpcDispatcher`.  Calls on one connection
run concurrently and their replies go out as they complete (clients match
them by XID).

Every resource a client can make the server hold is bounded (see
:class:`Limits`): calls in flight per connection (beyond it records queue and
reading stops), the size of a record, connections in all and per client
address, how long a connection may sit idle, and how long a record may take
to arrive (a client trickling bytes, "slow loris", is cut off).  A client
that does not read its replies fills the transport's buffer; the protocol is
registered as its producer, so reading from that client stops too and the
buffer cannot grow without bound.  Limits hit are logged once per client and
reason per minute, not per packet.

A reply whose data is still in a file (a READ's :class:`~dittofs.rpc.xdr.Region`)
is written by a thread with ``sendfile`` (:mod:`dittofs.rpc.sendfile`); while
one is, the connection holds its other replies and hands them to the same
thread after it, so that records never interleave.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    IWriteDescriptor,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dittofs import log as dittofs_log
from dittofs.rpc.dispatch import Parts, RpcDispatcher
from dittofs.rpc.record import DEFAULT_MAX_RECORD, RecordError, RecordReceiver, record_header
from dittofs.rpc.sendfile import RecordSender, regions_of
from dittofs.rpc.xdr import Part, as_bytes

log = Logger(observer=dittofs_log.observer)

#: Calls one connection may have running before the server stops reading from it.
DEFAULT_MAX_IN_FLIGHT = 64

#: Replies at least this large skip Twisted's buffer when it is empty (see _send_now).
DIRECT_SEND_BYTES = 64 * 1024

#: Bytes of replies a connection holds while a thread sends, before it stops reading calls.
HELD_BYTES = 8 * 1024 * 1024
#: File regions (open descriptors) it holds so, before it stops reading calls.
HELD_REGIONS = 16


@attrs.frozen
class Limits:
    """What one server allows its clients; all of it configurable."""

    max_record: int = DEFAULT_MAX_RECORD
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_connections: int = 4096
    max_connections_per_client: int = 256
    #: Seconds a connection with no calls may stay open (Linux reconnects at need).
    idle_timeout: float = 900.0
    #: Seconds a started record may take to arrive completely.
    record_deadline: float = 60.0


class LogLimiter:
    """Say "log it" at most once a minute for each (client, reason)."""

    def __init__(self, clock: Callable[[], float], interval: float = 60.0, size: int = 10_000):
        self._clock = clock
        self._interval = interval
        self._size = size
        self._last: dict[tuple[str, str], float] = {}

    def allows(self, client: str, reason: str) -> bool:
        """True if this client's *reason* was not logged within the interval."""
        now = self._clock()
        key = (client, reason)
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        if len(self._last) >= self._size:
            self._last = {k: t for k, t in self._last.items() if now - t < self._interval}
        self._last[key] = now
        return True


@implementer(IPushProducer)
class RpcServerProtocol(Protocol):
    """One client connection speaking RPC record-marked calls."""

    factory: RpcServerFactory

    def __init__(self) -> None:
        self._receiver: RecordReceiver | None = None
        self._in_flight = 0
        self._waiting: deque[bytes] = deque()
        self._reading_paused = False
        self._write_blocked = False
        self._draining = False
        self._closed = False
        self._idle: IDelayedCall | None = None
        self._deadline: IDelayedCall | None = None
        #: While a thread writes replies (see _send_in_thread): the records it will write next.
        self._held: list[list[Part]] | None = None
        self._held_bytes = 0
        self._held_regions = 0
        self._held_paused = False
        self._sender: RecordSender | None = None
        #: While the sender waits for room in the socket: what stops the wait.
        self._stop_waiting_for_room: Callable[[], None] | None = None
        self.client_host = ""
        self.client_port = 0

    # -- connection life ---------------------------------------------------------------

    def connectionMade(self) -> None:
        """Set up framing, flow control and the idle timer; note who the client is."""
        limits = self.factory.limits
        self._receiver = RecordReceiver(limits.max_record)
        peer: IAddress = self.transport.getPeer()  # type: ignore[union-attr]
        self.client_host = getattr(peer, "host", "")
        self.client_port = getattr(peer, "port", 0)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        # Replies are whole records: Nagle's algorithm would only hold small ones back
        # waiting for an ACK (random 4 KiB READs ran 6x slower with it).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._idle = self.factory.clock.callLater(limits.idle_timeout, self._idle_expired)
        self.factory.connection_made(self)
        log.info("Connection from {host}:{port}", host=self.client_host, port=self.client_port)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget queued calls and timers; replies of calls still running are dropped."""
        self._closed = True
        self._waiting.clear()
        for timer in (self._idle, self._deadline):
            if timer is not None and timer.active():
                timer.cancel()
        if self._stop_waiting_for_room is not None:  # no room will come: drop what is unsent
            self._stop_waiting_for_room()
            self._sender_stopped(None)
        self.factory.connection_lost(self)
        log.info(
            "Connection from {host}:{port} closed", host=self.client_host, port=self.client_port
        )

    def _close(self, reason: str, detail: str) -> None:
        """Close for a broken limit, logging it once per client and reason per minute."""
        self._closed = True
        self._waiting.clear()
        if self.factory.log_limiter.allows(self.client_host, reason):
            log.warn(
                "Closing connection from {host}:{port}: {detail}",
                host=self.client_host,
                port=self.client_port,
                detail=detail,
            )
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _idle_expired(self) -> None:
        if self._in_flight or self._waiting:
            self._idle = self.factory.clock.callLater(
                self.factory.limits.idle_timeout, self._idle_expired
            )
            return
        log.debug("Closing idle connection from {host}", host=self.client_host)
        self._closed = True
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.factory.limits.idle_timeout)

    # -- bytes in ------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Frame incoming bytes into records and start or queue each call."""
        assert self._receiver is not None
        if self._closed:
            return
        self._touch()
        try:
            records = self._receiver.feed(data)
        except RecordError as error:
            self._close("record", str(error))
            return
        self._watch_record_deadline()
        self._waiting.extend(records)
        self._start_waiting_calls()

    def _watch_record_deadline(self) -> None:
        assert self._receiver is not None
        if not self._receiver.partial:
            if self._deadline is not None and self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        elif self._deadline is None:
            deadline = self.factory.limits.record_deadline
            self._deadline = self.factory.clock.callLater(
                deadline, self._close, "slow", f"a record took longer than {deadline:g} s to arrive"
            )

    def _start_waiting_calls(self) -> None:
        # A call answered synchronously finishes inside _start_call and calls back
        # here; the loop already running picks up the next record instead, so a
        # chunk of thousands of pipelined calls never recurses.
        if self._draining or self._closed:
            return
        self._draining = True
        try:
            limit = self.factory.limits.max_in_flight
            while (
                self._waiting
                and self._in_flight < limit
                and not self._write_blocked
                and not self._closed
            ):
                self._start_call(self._waiting.popleft())
        finally:
            self._draining = False
        self._update_reading()

    def _update_reading(self) -> None:
        """Read from the client only while calls can start and replies can be written."""
        if self._closed:
            return
        pause = bool(self._waiting) or self._write_blocked
        if pause and not self._reading_paused:
            self._reading_paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]
        elif not pause and self._reading_paused:
            self._reading_paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    # -- calls and replies ---------------------------------------------------------------

    def _start_call(self, record: bytes) -> None:
        reply = self.factory.dispatcher.dispatch(record, self.client_host, self.client_port)
        if reply is None:
            log.debug(
                "Ignoring a record that is not an RPC call from {host}", host=self.client_host
            )
            return
        self._in_flight += 1
        self.factory.call_started()
        reply.addCallback(self._send_reply)
        reply.addErrback(self._reply_failed)
        reply.addBoth(self._call_finished)

    def _send_reply(self, parts: Parts) -> Deferred[None] | None:
        """Send or hold a reply; a Deferred while its regions are read in a thread
        (the call counts as running until then, so at most ``max_in_flight`` wait so)."""
        if self._closed:
            _close_regions([parts])
            return None
        size = sum(len(part) for part in parts)
        record: list[Part] = [record_header(size), *parts]
        if self._held is not None:
            self._hold(record, size)
        elif not regions_of([parts]):
            self._send_bytes([part for part in record if isinstance(part, bytes)], size)
        elif self._write_buffer_empty():
            self._send_in_thread([record])
        else:
            return self._send_read(record)
        return None

    def _send_bytes(self, record: list[bytes], size: int) -> None:
        if size >= DIRECT_SEND_BYTES and self._write_buffer_empty():
            record = self._send_now(record)
        if record:
            self.transport.writeSequence(record)  # type: ignore[union-attr]

    def _send_in_thread(self, records: list[list[Part]]) -> None:
        """Let a thread write *records* (see :mod:`dittofs.rpc.sendfile`), holding the rest.

        Twisted's buffer is empty, and stays so: every reply that is ready
        meanwhile is held, and goes to the sender next.
        """
        try:
            fd = os.dup(self.transport.socket.fileno())  # type: ignore[union-attr]
        except OSError:  # out of descriptors: read the regions instead
            for record in records:
                self._send_read(record)  # held replies: their calls have finished
            return
        self._held, self._held_bytes, self._held_regions = [], 0, 0
        self._sender = RecordSender(fd, records)
        self._run_sender()

    def _run_sender(self) -> None:
        """The socket has room: let a thread write on."""
        self._stop_waiting_for_room = None
        assert self._sender is not None
        sending = self.factory.in_thread(self._sender.send)
        sending.addBoth(self._sender_stopped)

    def _sender_stopped(self, result: object) -> None:
        sender = self._sender
        assert sender is not None
        if result is False and not self._closed:  # the socket is full: wait for room
            self._stop_waiting_for_room = self.factory.when_writable(sender.fd, self._run_sender)
            return
        self._sender = None
        os.close(sender.fd)
        held, self._held = self._held or [], None
        if isinstance(result, Failure) or self._closed:
            sender.close()
            _close_regions(held)
            if not self._closed:
                log.info(
                    "Dropping the connection from {host}:{port}: {error}",
                    host=self.client_host,
                    port=self.client_port,
                    error=result.getErrorMessage() if isinstance(result, Failure) else "",
                )
                self._closed = True
                self.transport.abortConnection()  # type: ignore[union-attr]
        elif held:
            self._send_in_thread(held)  # holding again before any call can answer
        if self._held_paused:
            self._held_paused = False
            self.resumeProducing()

    def _hold(self, record: list[Part], size: int) -> None:
        """Keep a reply for the sender; past :data:`HELD_BYTES` or :data:`HELD_REGIONS`,
        stop reading calls."""
        assert self._held is not None
        self._held.append(record)
        self._held_bytes += size
        self._held_regions += len(regions_of([record]))
        too_much = self._held_bytes > HELD_BYTES or self._held_regions > HELD_REGIONS
        if too_much and not self._held_paused:
            self._held_paused = True
            self.pauseProducing()

    def _send_read(self, record: list[Part]) -> Deferred[None]:
        """Twisted's buffer holds replies: read the regions in a thread, then queue the bytes."""

        def read() -> list[bytes]:
            try:
                return [as_bytes(part) for part in record[1:]]
            finally:
                _close_regions([record])

        read_out = self.factory.in_thread(read)
        read_out.addCallback(self._send_reply)
        return read_out.addErrback(self._reply_failed)

    def _write_buffer_empty(self) -> bool:
        """Whether the TCP transport has nothing queued (False for any other transport)."""
        transport = self.transport
        queued = getattr(transport, "_tempDataLen", None)
        if queued is None or not hasattr(transport, "socket"):
            return False
        return not queued and transport.offset == len(transport.dataBuffer)  # type: ignore[union-attr]

    def _send_now(self, record: list[bytes]) -> list[bytes]:
        """Hand a large reply's parts to the kernel as they are; return what it did not take.

        Twisted's buffer would first join the parts into one new ``bytes`` (a
        copy of a whole 1 MiB READ); ``sendmsg`` gathers them in place.  Only
        an unsent tail is copied, into the transport's buffer as usual.
        """
        try:
            sent = self.transport.socket.sendmsg(record)  # type: ignore[union-attr]
        except OSError:  # EAGAIN: queue it all; any other error the transport meets too
            return record
        unsent: list[bytes] = []
        for part in record:
            if sent >= len(part):
                sent -= len(part)
            else:
                unsent.append(part[sent:] if sent else part)
                sent = 0
        return unsent

    def _reply_failed(self, reason: Failure) -> None:
        log.failure("Could not send an RPC reply", reason)

    def _call_finished(self, _: object) -> None:
        self._in_flight -= 1
        self.factory.call_finished()
        self._touch()
        self._start_waiting_calls()

    # -- IPushProducer: the transport's write buffer is full or drained again ------------

    def pauseProducing(self) -> None:
        """The client is not reading its replies: stop reading (and so starting) calls."""
        self._write_blocked = True
        self._update_reading()

    def resumeProducing(self) -> None:
        """The replies drained: serve what is queued and read again."""
        self._write_blocked = False
        self._start_waiting_calls()

    def stopProducing(self) -> None:
        """The connection is going away; connectionLost does the cleaning up."""


class RpcServerFactory(Factory):
    """Builds connections that share one dispatcher (and so one set of stores).

    It counts connections (in all and per client address) and calls in
    flight, so it can refuse connections over the limits and, when the
    server stops, wait for running calls before the stores are closed.  The
    dispatcher's observers hear of each connection opened, closed or refused.
    """

    protocol = RpcServerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        dispatcher: RpcDispatcher,
        max_record: int = DEFAULT_MAX_RECORD,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        *,
        limits: Limits | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        if limits is None:
            limits = Limits(max_record=max_record, max_in_flight=max_in_flight)
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        assert clock is not None
        self.dispatcher = dispatcher
        self.limits = limits
        self.clock = clock
        self.log_limiter = LogLimiter(clock.seconds)
        self.connections: set[RpcServerProtocol] = set()
        self.per_client: Counter[str] = Counter()
        self.in_flight = 0
        self._idle_waiters: list[Deferred[None]] = []

    def in_thread(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run blocking *function* (writing replies) in the reactor's thread pool.

        A clock that is not a reactor with threads (a test's) runs it at once.
        """
        pool = getattr(self.clock, "getThreadPool", None)
        if pool is None:
            return maybeDeferred(function, *args)
        return deferToThreadPool(self.clock, pool(), function, *args)  # type: ignore[arg-type]

    def when_writable(self, fd: int, then: Callable[[], None]) -> Callable[[], None]:
        """Call *then* once, when socket *fd* can take more bytes (or has failed, so that
        writing says why); return what cancels the wait."""
        reactor: Any = self.clock
        waiter = _RoomInSocket(fd, reactor, then)
        reactor.addWriter(waiter)
        return lambda: reactor.removeWriter(waiter)

    def buildProtocol(self, addr: IAddress) -> RpcServerProtocol | None:  # type: ignore[override]
        """Refuse a connection over the global or per-client limit (Twisted then closes it)."""
        host = getattr(addr, "host", "")
        if len(self.connections) >= self.limits.max_connections:
            reason, detail = "connections", f"{self.limits.max_connections} connections open"
        elif self.per_client[host] >= self.limits.max_connections_per_client:
            reason = "client-connections"
            detail = f"{self.limits.max_connections_per_client} connections from this client"
        else:
            return super().buildProtocol(addr)  # type: ignore[return-value]
        for observer in self.dispatcher.observers:
            observer.connection_refused(host, reason)
        if self.log_limiter.allows(host, reason):
            log.warn("Refusing a connection from {host}: {detail}", host=host, detail=detail)
        return None

    def connection_made(self, protocol: RpcServerProtocol) -> None:
        """Count a new connection."""
        self.connections.add(protocol)
        self.per_client[protocol.client_host] += 1
        for observer in self.dispatcher.observers:
            observer.connection_opened(protocol.client_host)

    def connection_lost(self, protocol: RpcServerProtocol) -> None:
        """Forget a closed connection."""
        if protocol in self.connections:
            self.connections.discard(protocol)
            for observer in self.dispatcher.observers:
                observer.connection_closed(protocol.client_host)
            self.per_client[protocol.client_host] -= 1
            if self.per_client[protocol.client_host] <= 0:
                del self.per_client[protocol.client_host]

    def call_started(self) -> None:
        """Count a call in flight."""
        self.in_flight += 1

    def call_finished(self) -> None:
        """Uncount a call; wake whoever waits for the server to be idle."""
        self.in_flight -= 1
        if self.in_flight == 0:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """Fire when no call is running, or after *timeout* seconds, whichever comes first."""
        if self.in_flight == 0:
            done: Deferred[None] = Deferred()
            done.callback(None)
            return done
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        timer = self.clock.callLater(timeout, self._give_up, waiter)

        def stop_timer(result: None) -> None:
            if timer.active():
                timer.cancel()

        return waiter.addCallback(stop_timer)

    def _give_up(self, waiter: Deferred[None]) -> None:
        if waiter in self._idle_waiters:
            self._idle_waiters.remove(waiter)
            log.warn(
                "Stopping with {count} calls still running after the shutdown timeout",
                count=self.in_flight,
            )
            waiter.callback(None)

    def close_all(self, grace: float = 1.0) -> Deferred[None]:
        """Close every connection (after a shutdown has let calls finish).

        Each gets *grace* seconds to flush its replies; a client that keeps
        the connection busy after that is cut off, so it cannot hold the
        shutdown open.
        """
        for protocol in list(self.connections):
            protocol._closed = True
            protocol.transport.loseConnection()  # type: ignore[union-attr]
        done: Deferred[None] = Deferred()

        def abort_stragglers() -> None:
            for protocol in list(self.connections):
                abort = getattr(protocol.transport, "abortConnection", None)
                if abort is not None:
                    abort()
            done.callback(None)

        if self.connections:
            self.clock.callLater(grace, abort_stragglers)
        else:
            done.callback(None)
        return done


@implementer(IWriteDescriptor)
class _RoomInSocket:
    """Told by the reactor that a socket can take more bytes (or failed): calls *then*."""

    def __init__(self, fd: int, reactor: Any, then: Callable[[], None]) -> None:
        self._fd = fd
        self._reactor = reactor
        self._then: Callable[[], None] | None = then

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "RecordSender"

    def doWrite(self) -> None:
        self._reactor.removeWriter(self)
        self._call()

    def connectionLost(self, reason: Failure) -> None:
        self._call()  # the next write tells the sender what went wrong

    def _call(self) -> None:
        then, self._then = self._then, None
        if then is not None:
            then()


def _close_regions(records: list[list[Part]] | list[Parts]) -> None:
    """Give back the descriptors of regions that will not be sent."""
    for region in regions_of(records):
        region.close()
