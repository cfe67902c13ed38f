"""Worker processes: one listening endpoint served by N processes (``--workers N``).

CPython runs one thread of Python at a time, so one DittoFS process keeps at
most one core busy.  With ``--workers N`` the process started becomes a
*supervisor* that serves no call: it binds N sockets to the ``--listen``
address, each with ``SO_REUSEPORT``, and starts N workers, the same program,
each handed one of the sockets (and its :class:`Seat` in :data:`WORKER_ENV`).
The kernel gives each new connection to one socket by a hash of its
addresses and ports, so:

* a client that reconnects from the same port (the Linux client does, so
  that its retransmissions find the server's duplicate-request cache)
  reaches the same worker, and that worker's cache;
* the supervisor keeps every socket open, so a worker that dies leaves the
  set of sockets unchanged: the connections hashed to its socket wait in the
  socket's backlog until the supervisor has started it again.

Before it binds anything the supervisor opens every store once and closes
it again, so a store that cannot open is one line and exit status 1 while
the port still refuses connections, as with one process.  Each worker then
opens the stores itself; they must be ones several processes
can share (SQLite, PostgreSQL, Redis; fs content), and the metadata cache
stays coherent between them through its change table.  Every worker of one
start answers WRITE and COMMIT with the write verifier the supervisor chose.
SIGTERM and SIGHUP reach every worker.  A worker writes its log to the
supervisor as JSON lines, and the supervisor logs each event where and how
it logs its own.  With ``--metrics`` the supervisor
serves the endpoint and sums what each worker reports on a UNIX socket of
its own (:func:`dittofs.web.workers_root`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import (
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
    ReactorNotRunning,
)
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.server import Site

from dittofs import log as dittofs_log
from dittofs import runner
from dittofs.web import workers_root

log = Logger(observer=dittofs_log.observer)

#: The environment variable that tells a process it is a worker, and its seat.
WORKER_ENV = "DITTOFS_WORKER"
#: A worker's listening socket and the pipe on which it says it serves (or why not).
LISTEN_FD = 3
STATUS_FD = 4
#: Seconds before a worker that died is started again, growing while it keeps
#: dying within :data:`SETTLED` seconds of its start.
RESTART_DELAYS = (0.2, 1.0, 2.0, 5.0, 10.0)
SETTLED = 10.0
#: Seconds beyond the shutdown timeout that workers get to stop before SIGKILL.
STOP_MARGIN = 10.0


@attrs.frozen
class Seat:
    """What a worker is told by its supervisor."""

    index: int
    #: The address family of the listening socket on :data:`LISTEN_FD`.
    family: int
    #: The write verifier every worker of this start answers with.
    verifier: bytes
    #: The UNIX socket to serve /metrics, /health and /ready on, when the supervisor has one.
    metrics: str | None
    #: The supervisor's process id: a worker whose parent is no longer it stops.
    supervisor: int

    def encode(self) -> str:
        """The seat as the worker's environment carries it."""
        fields = attrs.asdict(self)
        fields["verifier"] = self.verifier.hex()
        return json.dumps(fields)

    @classmethod
    def decode(cls, text: str) -> Seat:
        """The seat :meth:`encode` wrote."""
        fields = json.loads(text)
        fields["verifier"] = bytes.fromhex(fields["verifier"])
        return cls(**fields)

    def endpoint(self, reactor: Any) -> IStreamServerEndpoint:
        """The endpoint of the socket the supervisor bound for this worker."""
        return endpoints.AdoptedStreamServerEndpoint(reactor, LISTEN_FD, self.family)

    def watch_supervisor(self, reactor: Any) -> LoopingCall:
        """Stop this worker once its supervisor has gone (killed, say), checking every second."""

        def orphaned() -> None:
            if os.getppid() == self.supervisor:
                return
            log.warn("Worker {index}: the supervisor has gone; stopping", index=self.index)
            call.stop()
            with contextlib.suppress(ReactorNotRunning):
                reactor.stop()

        call = LoopingCall(orphaned)
        call.clock = reactor
        reactor.callWhenRunning(call.start, 1.0, now=False)
        return call


class StartFailed(Exception):
    """The supervisor's check of the stores failed; the message is the line to log."""


def seat_from_environment() -> Seat | None:
    """This process's seat if a supervisor started it, else None (taken out of the environment,
    so that no program this one runs believes it is a worker too)."""
    text = os.environ.pop(WORKER_ENV, None)
    return None if text is None else Seat.decode(text)


def _tcp_endpoint(description: str, reactor: Any) -> tuple[Any, int]:
    """The ``tcp:``/``tcp6:`` endpoint *description* names, and its address family.

    ValueError for any other kind of endpoint: the kernel spreads
    connections over several sockets only for TCP.
    """
    endpoint = endpoints.serverFromString(reactor, description)
    family = {
        endpoints.TCP4ServerEndpoint: socket.AF_INET,
        endpoints.TCP6ServerEndpoint: socket.AF_INET6,
    }.get(type(endpoint))
    if family is None:
        raise ValueError("several workers need a tcp: or tcp6: endpoint to listen on")
    return endpoint, family


def listen_family(description: str, reactor: Any) -> int:
    """The address family of the ``tcp:``/``tcp6:`` endpoint *description* (else ValueError)."""
    return _tcp_endpoint(description, reactor)[1]


def bind(description: str, count: int, reactor: Any) -> tuple[list[socket.socket], int]:
    """*count* sockets listening on the ``tcp``/``tcp6`` endpoint *description*, and their family.

    The address is first bound alone, without ``SO_REUSEPORT``, so that a
    port some other server (another DittoFS supervisor too) already uses is
    refused rather than shared.
    """
    endpoint, family = _tcp_endpoint(description, reactor)
    interface = endpoint._interface or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    port = endpoint._port
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((interface, port))
        port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            listener = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((interface, port))
            listener.listen(endpoint._backlog)
    except OSError:
        for listener in sockets:
            listener.close()
        raise
    return sockets, family


def relay(line: bytes, worker: int) -> None:
    """Log one line of a worker's log as the supervisor logs its own events.

    The line is a JSON event (:class:`dittofs.log.JsonLinesObserver`): its
    fields, level, namespace and time are the worker's.  Its message is the
    ``text`` the worker wrote, traceback included: formatted again from JSON
    it would lose each field's format (``{ms:.3f}``) and a failure's message.
    Anything else the worker printed is logged as it is.  Each event gains
    ``worker``, the worker's index.
    """
    text = line.decode("utf-8", "replace")
    if not text.strip():
        return
    try:
        event = eventFromJSON(text)
    except Exception:  # not JSON, or JSON Twisted cannot make an event of
        event = None
    if not isinstance(event, dict):
        log.info("{line}", line=text, worker=worker)
        return
    event["worker"] = worker
    if "text" in event:
        event.pop("log_failure", None)
        event.pop("log_flattened", None)
        event["log_format"] = "{text}"
    globalLogPublisher(event)


class _Worker(ProcessProtocol):
    """One worker process, as its supervisor sees it."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = time.monotonic()
        self.ready = False
        self.status = b""
        #: The line begun on the worker's standard output (its log) and standard error.
        self._partial = {1: b"", 2: b""}
        #: The worker's process id (still known once it has ended, for the log).
        self.pid: int | None = None
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        """The process has started: remember its id."""
        assert self.transport is not None
        self.pid = self.transport.pid

    @property
    def running(self) -> bool:
        """True from its start until it has ended."""
        return self.pid is not None and not self.ended.called

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """The worker's log (its standard output), and its status pipe: ``0`` once it
        serves, ``1 why`` when it cannot."""
        if childFD in self._partial:
            *lines, self._partial[childFD] = (self._partial[childFD] + data).split(b"\n")
            for line in lines:
                self._line(childFD, line)
            return
        if childFD != STATUS_FD or self.ready:
            return
        self.status += data
        if self.status.startswith(b"0"):
            self.ready = True
            self.supervisor.worker_ready(self)

    def _line(self, childFD: int, line: bytes) -> None:
        """One whole line of the worker's log, or of its standard error (written before
        its log started, say), which is a warning naming the worker."""
        if childFD == 1:
            relay(line, self.index)
        elif line.strip():
            text = line.decode("utf-8", "replace")
            log.warn("Worker {index}: {line}", index=self.index, line=text, worker=self.index)

    def signal(self, name: str) -> None:
        """Send signal *name* (``TERM``, ``HUP``, ``KILL``) if the worker still runs."""
        if self.running:
            try:
                self.transport.signalProcess(name)  # type: ignore[union-attr]
            except ProcessExitedAlready:  # it ended, and Twisted has not said so yet
                log.debug("worker {index} has already exited", index=self.index)

    def processEnded(self, reason: Failure) -> None:
        """Tell the supervisor how the worker ended."""
        for childFD, rest in self._partial.items():
            if rest:
                self._line(childFD, rest)
        self.supervisor.worker_ended(self, reason)
        self.ended.callback(None)

    def why(self, reason: Failure) -> str:
        """How the worker ended, in words: its own message, or its exit status or signal."""
        if self.status.startswith(b"1 "):
            return self.status[2:].decode("ascii", "replace")
        error = reason.value
        if isinstance(error, ProcessDone):
            return "it exited with status 0"
        if isinstance(error, ProcessTerminated):
            if error.signal is not None:
                return f"it was killed by {signal.Signals(error.signal).name}"
            return f"it exited with status {error.exitCode}"
        return str(error)


class Supervisor(Service):
    """Binds the endpoint, starts the workers, keeps them running, and stops them.

    Like the single-process service it answers twistd's status pipe only once
    every worker serves, and a worker that cannot start (a store that does
    not open) is one CRITICAL line and exit status 1.  A worker that dies
    later is logged and started again on its socket.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        count: int,
        listen: str,
        metrics: str | None,
        command: Sequence[str],
        runner_options: MutableMapping[str, Any] | None,
        shutdown_timeout: float,
        check: Callable[[], Deferred[None]],
    ) -> None:
        self._reactor = reactor
        self._check = check
        self.count = count
        self.listen = listen
        self.metrics = metrics
        self._command = list(command)
        self._runner = runner_options
        self._shutdown_timeout = shutdown_timeout
        self.workers: dict[int, _Worker] = {}
        self.restarts = 0
        self._sockets: list[socket.socket] = []
        self._family: int = socket.AF_INET
        self._verifier = os.urandom(8)
        self._rundir = Path(tempfile.mkdtemp(prefix="dittofs-workers-"))
        self._status_pipe: int | None = None
        self._serving = False
        self._stopping = False
        self._deaths: dict[int, int] = {}
        self._metrics_port: IListeningPort | None = None

    # -- starting ----------------------------------------------------------------------

    def startService(self) -> None:
        """Check that the stores open, bind the endpoint (and the metrics endpoint), then
        start every worker."""
        Service.startService(self)
        self._status_pipe = runner.take_status_pipe(self._runner)
        self._reactor.callWhenRunning(self._take_signals)

        def not_opened(reason: Failure) -> None:
            if reason.check(StartFailed):
                self._failed(str(reason.value))
                return
            log.failure("The stores' check failed", reason, level=LogLevel.debug)
            self._failed(f"Could not check the stores: {reason.getErrorMessage()}")

        self._check().addCallbacks(lambda _: self._bind(), not_opened)

    def _bind(self) -> None:
        if not self.running or self._stopping:  # stopped while the stores were opening
            return
        try:
            self._sockets, self._family = bind(self.listen, self.count, self._reactor)
        except (OSError, ValueError) as error:
            self._failed(f"Could not listen on {self.listen}: {dittofs_log.error_line(error)}")
            return
        if self.metrics is None:
            self._start_all()
            return
        site = Site(workers_root(self, self._reactor))
        listening = endpoints.serverFromString(self._reactor, self.metrics).listen(site)

        def listened(port: IListeningPort) -> None:
            self._metrics_port = port
            self._start_all()

        def not_listened(reason: Failure) -> None:
            error = reason.value
            assert error is not None
            self._failed(f"Could not listen on {self.metrics}: {dittofs_log.error_line(error)}")

        listening.addCallbacks(listened, not_listened)

    def _start_all(self) -> None:
        if self.running and not self._stopping:
            for index in range(self.count):
                self._start(index)

    def metrics_socket(self, index: int) -> Path:
        """Where worker *index* serves its own /metrics, /health and /ready."""
        return self._rundir / f"worker-{index}.sock"

    def _start(self, index: int) -> None:
        if not self.running or self._stopping:
            return
        socket_path = self.metrics_socket(index)
        socket_path.unlink(missing_ok=True)  # left by the worker this one replaces
        seat = Seat(
            index,
            self._family,
            self._verifier,
            str(socket_path) if self.metrics is not None else None,
            os.getpid(),
        )
        environment = {**os.environ, WORKER_ENV: seat.encode()}
        worker = _Worker(self, index)
        self.workers[index] = worker
        with open(os.devnull, "rb") as nothing:
            self._reactor.spawnProcess(
                worker,
                sys.executable,
                [sys.executable, *self._command],
                env=environment,
                childFDs={
                    0: nothing.fileno(),
                    1: "r",
                    2: "r",
                    LISTEN_FD: self._sockets[index].fileno(),
                    STATUS_FD: "r",
                },
            )

    def worker_ready(self, worker: _Worker) -> None:
        """A worker serves: once all do, the server has started."""
        if self._stopping:  # it was left to finish starting: now it can stop
            worker.signal("TERM")
            return
        if self._serving:
            log.info("Worker {index} serves again (pid {pid})", index=worker.index, pid=worker.pid)
            return
        if all(each.ready for each in self.workers.values()) and len(self.workers) == self.count:
            self._serving = True
            pids = ", ".join(str(each.pid) for each in self.workers.values())
            metrics = f" (metrics on {self.metrics})" if self.metrics else ""
            log.info(
                "DittoFS listens on {listen}{metrics} with {count} workers (pids {pids})",
                listen=self.listen,
                metrics=metrics,
                count=self.count,
                pids=pids,
            )
            runner.answer_status_pipe(self._status_pipe, None)

    def worker_ended(self, worker: _Worker, reason: Failure) -> None:
        """A worker ended: expected while stopping; before serving a failure; else a restart."""
        why = worker.why(reason)
        if self._stopping:
            return
        if not self._serving:
            self._failed(f"Worker {worker.index} could not start: {why}")
            return
        quick = time.monotonic() - worker.started < SETTLED
        deaths = self._deaths.get(worker.index, 0) + 1 if quick else 1
        self._deaths[worker.index] = deaths
        delay = RESTART_DELAYS[min(deaths, len(RESTART_DELAYS)) - 1]
        self.restarts += 1
        log.warn(
            "Worker {index} (pid {pid}) ended: {why}; starting it again in {delay:g} s",
            index=worker.index,
            pid=worker.pid,
            why=why,
            delay=delay,
        )
        self._reactor.callLater(delay, self._start, worker.index)

    # -- signals, failure and stopping -------------------------------------------------

    def _take_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        handler = self._stop if signum == signal.SIGTERM else self._reload
        self._reactor.callFromThread(handler)

    def _reload(self) -> None:
        """SIGHUP: every worker re-reads the configuration itself."""
        log.info("SIGHUP: passing it to {count} workers", count=len(self.workers))
        for worker in self.workers.values():
            worker.signal("HUP")

    def _stop(self) -> None:
        """SIGTERM: stop the workers gracefully; when a stop is under way, leave at once."""
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            log.warn("SIGTERM while stopping: stopping the workers now, then exiting with status 1")
            for worker in self.workers.values():
                worker.signal("TERM")  # a second SIGTERM: each leaves at once
            runner.exit_failed(self._runner)
            return
        log.info("SIGTERM: stopping {count} workers", count=len(self.workers))

    def _failed(self, line: str) -> None:
        """Say what failed in one line, stop the workers that started, then exit with status 1."""
        if self._stopping:
            return
        self._stopping = True
        log.critical("{line}", line=line)
        runner.answer_status_pipe(self._status_pipe, dittofs_log.redact(line))
        self._status_pipe = None
        exit_failed = functools.partial(runner.exit_failed, self._runner)
        self._reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        self._reactor.callWhenRunning(self._reactor.stop)

    def stopService(self) -> Deferred[None]:
        """Stop every worker (SIGTERM; SIGKILL after the shutdown timeout), then unbind.

        A worker still starting is signalled once it serves (or not at all,
        when it fails to): a SIGTERM in the middle of its start, or of its own
        failure, would race its own shutdown.
        """
        Service.stopService(self)
        self._stopping = True
        running = [worker for worker in self.workers.values() if worker.running]
        for worker in running:
            if worker.ready:
                worker.signal("TERM")

        def kill() -> None:
            for worker in running:
                if worker.running:
                    log.warn("Worker {index} did not stop: killing it", index=worker.index)
                    worker.signal("KILL")

        deadline = self._reactor.callLater(self._shutdown_timeout + STOP_MARGIN, kill)

        async def stop() -> None:
            await DeferredList([worker.ended for worker in running], consumeErrors=True)
            if deadline.active():
                deadline.cancel()
            if self._metrics_port is not None:
                await maybeDeferred(self._metrics_port.stopListening)
            for listener in self._sockets:
                listener.close()
            shutil.rmtree(self._rundir, ignore_errors=True)
            log.info("DittoFS stopped")

        return Deferred.fromCoroutine(stop())
