"""The Twisted side of ONC RPC over TCP: it moves bytes and Deferreds, nothing more.

Records are framed by :class:`~dittofs.rpc.record.RecordReceiver` and served
by an :class:`~dittofs.rpc.dispatch.RpcDispatcher`.  Calls on one connection
run concurrently and their replies go out as they complete (clients match
them by XID).  When a connection has ``max_in_flight`` calls running, further
records wait in a queue and the transport stops reading (``pauseProducing``),
so a client that pipelines without limit cannot make the server buffer
without limit.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from dittofs import log as dittofs_log
from dittofs.rpc.dispatch import Parts, RpcDispatcher
from dittofs.rpc.record import DEFAULT_MAX_RECORD, RecordError, RecordReceiver, record_header

log = Logger(observer=dittofs_log.observer)

#: Calls one connection may have running before the server stops reading from it.
DEFAULT_MAX_IN_FLIGHT = 64


class RpcServerProtocol(Protocol):
    """One client connection speaking RPC record-marked calls."""

    factory: RpcServerFactory

    def __init__(self) -> None:
        self._receiver: RecordReceiver | None = None
        self._in_flight = 0
        self._waiting: deque[bytes] = deque()
        self._paused = False
        self._draining = False
        self._closed = False
        self.client_host = ""
        self.client_port = 0

    def connectionMade(self) -> None:
        """Set up framing for this connection and note who the client is."""
        self._receiver = RecordReceiver(self.factory.max_record)
        peer: IAddress = self.transport.getPeer()  # type: ignore[union-attr]
        self.client_host = getattr(peer, "host", "")
        self.client_port = getattr(peer, "port", 0)
        log.debug("Connection from {host}:{port}", host=self.client_host, port=self.client_port)

    def dataReceived(self, data: bytes) -> None:
        """Frame incoming bytes into records and start or queue each call."""
        assert self._receiver is not None
        try:
            records = self._receiver.feed(data)
        except RecordError as error:
            self._closed = True
            log.warn(
                "Closing connection from {host}:{port}: {error}",
                host=self.client_host,
                port=self.client_port,
                error=str(error),
            )
            self._waiting.clear()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._waiting.extend(records)
        self._start_waiting_calls()

    def _start_waiting_calls(self) -> None:
        # A call answered synchronously finishes inside _start_call and calls back
        # here; the loop already running picks up the next record instead, so a
        # chunk of thousands of pipelined calls never recurses.
        if self._draining or self._closed:
            return
        self._draining = True
        try:
            limit = self.factory.max_in_flight
            while self._waiting and self._in_flight < limit and not self._closed:
                self._start_call(self._waiting.popleft())
        finally:
            self._draining = False
        if self._waiting and not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]
        elif not self._waiting and self._paused:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def _start_call(self, record: bytes) -> None:
        reply = self.factory.dispatcher.dispatch(record, self.client_host, self.client_port)
        if reply is None:
            log.debug(
                "Ignoring a record that is not an RPC call from {host}", host=self.client_host
            )
            return
        self._in_flight += 1
        reply.addCallback(self._send_reply)
        reply.addErrback(self._reply_failed)
        reply.addBoth(self._call_finished)

    def _send_reply(self, parts: Parts) -> None:
        if self._closed:
            return
        size = sum(len(part) for part in parts)
        self.transport.writeSequence([record_header(size), *parts])  # type: ignore[union-attr]

    def _reply_failed(self, reason: Failure) -> None:
        log.failure("Could not send an RPC reply", reason)

    def _call_finished(self, _: object) -> None:
        self._in_flight -= 1
        self._start_waiting_calls()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget queued calls; replies of calls still running are dropped."""
        self._closed = True
        self._waiting.clear()
        log.debug(
            "Connection from {host}:{port} closed", host=self.client_host, port=self.client_port
        )


class RpcServerFactory(Factory):
    """Builds connections that share one dispatcher (and so one set of stores)."""

    protocol = RpcServerProtocol  # type: ignore[assignment]

    def __init__(
        self,
        dispatcher: RpcDispatcher,
        max_record: int = DEFAULT_MAX_RECORD,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.dispatcher = dispatcher
        self.max_record = max_record
        self.max_in_flight = max_in_flight
