"""The pieces of ``--workers`` that need no process: the seat, the sockets, the summed metrics,
the relayed log.

The processes themselves (start, restart, signals, the duplicate-request
cache across a reconnect) are tested end to end in ``tests/e2e/test_workers.py``.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.logger import (
    LogEvent,
    Logger,
    LogLevel,
    eventAsText,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dittofs.log import JsonLinesObserver
from dittofs.metrics import sum_expositions
from dittofs.workers import Seat, _Worker, bind, listen_family, relay


def _exposition(calls: float, open_connections: float, latency: float) -> str:
    """One process's /metrics with a counter, a gauge and a histogram."""
    registry = CollectorRegistry()
    Counter("calls", "Calls", ["procedure"], registry=registry).labels("LOOKUP").inc(calls)
    Gauge("connections_open", "Open", registry=registry).set(open_connections)
    Histogram("seconds", "Latency", buckets=(0.1, 1.0), registry=registry).observe(latency)
    return generate_latest(registry).decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class SumExpositionsTests(SynchronousTestCase):
    """Several workers' /metrics add up to one exposition Prometheus can read."""

    def test_counters_gauges_and_histograms_add_up(self) -> None:
        """Each sample is the sum over the processes; creation times keep the earliest."""
        one, two = _exposition(3, 1, 0.05), _exposition(4, 2, 0.5)
        summed = _samples(sum_expositions([one, two]).decode())
        self.assertEqual(summed["calls_total", (("procedure", "LOOKUP"),)], 7)
        self.assertEqual(summed["connections_open", ()], 3)
        self.assertEqual(summed["seconds_count", ()], 2)
        self.assertEqual(summed["seconds_bucket", (("le", "0.1"),)], 1)
        self.assertEqual(summed["seconds_bucket", (("le", "1.0"),)], 2)
        self.assertAlmostEqual(summed["seconds_sum", ()], 0.55)
        created = [
            _samples(text)["calls_created", (("procedure", "LOOKUP"),)] for text in (one, two)
        ]
        self.assertEqual(summed["calls_created", (("procedure", "LOOKUP"),)], min(created))

    def test_one_process_passes_through(self) -> None:
        """Summing one exposition gives back the same samples."""
        one = _exposition(3, 1, 0.05)
        self.assertEqual(_samples(sum_expositions([one]).decode()), _samples(one))


class SeatTests(SynchronousTestCase):
    """What the supervisor tells a worker survives the environment."""

    def test_round_trip(self) -> None:
        """Encoded and decoded, a seat is the same seat."""
        seat = Seat(1, socket.AF_INET6, b"\x00\x01verifier"[:8], "/run/w-1.sock", 4242)
        self.assertEqual(Seat.decode(seat.encode()), seat)


class BindTests(SynchronousTestCase):
    """The supervisor's sockets."""

    def test_several_sockets_share_one_port(self) -> None:
        """N sockets listen on one port (an ephemeral one here), all with SO_REUSEPORT."""
        sockets, family = bind("tcp:0:interface=127.0.0.1", 3, reactor)
        self.addCleanup(lambda: [each.close() for each in sockets])
        self.assertEqual(family, socket.AF_INET)
        ports = {each.getsockname()[1] for each in sockets}
        self.assertEqual(len(sockets), 3)
        self.assertEqual(len(ports), 1)
        for each in sockets:
            self.assertEqual(each.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT), 1)

    def test_a_port_in_use_is_refused_not_shared(self) -> None:
        """A port another server listens on is EADDRINUSE, even if it too used SO_REUSEPORT."""
        sockets, _ = bind("tcp:0:interface=127.0.0.1", 2, reactor)
        self.addCleanup(lambda: [each.close() for each in sockets])
        port = sockets[0].getsockname()[1]
        with self.assertRaises(OSError):
            bind(f"tcp:{port}:interface=127.0.0.1", 2, reactor)

    def test_only_tcp_endpoints(self) -> None:
        """A UNIX socket cannot be spread over processes by the kernel: ValueError."""
        self.assertEqual(listen_family(r"tcp6:0:interface=\:\:1", reactor), socket.AF_INET6)
        with self.assertRaises(ValueError):
            listen_family("unix:/tmp/dittofs-test.sock", reactor)


class RelayTests(SynchronousTestCase):
    """A worker's JSON log line is logged by the supervisor as the worker would have."""

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def _worker_line(self, emit: Callable[[Logger], None]) -> bytes:
        """What a worker's :class:`JsonLinesObserver` writes for the event *emit* logs."""
        out = io.StringIO()
        logger = Logger(namespace="dittofs.rpc.dispatch", observer=JsonLinesObserver(out))
        emit(logger)
        return out.getvalue().encode()

    def test_fields_level_and_formatted_text_survive(self) -> None:
        """Fields, level and namespace are the worker's, and ``{ms:.3f}`` is still 3 places."""
        line = self._worker_line(
            lambda logger: logger.debug("xid {xid} in {ms:.3f} ms", xid=7, ms=0.123456)
        )
        relay(line.rstrip(b"\n"), 1)
        [event] = self.events
        self.assertEqual((event["xid"], event["ms"]), (7, 0.123456))
        self.assertEqual(event["log_level"], LogLevel.debug)
        self.assertEqual(event["log_namespace"], "dittofs.rpc.dispatch")
        self.assertEqual(event["worker"], 1)
        self.assertEqual(
            eventAsText(event, includeTimestamp=False),
            "[dittofs.rpc.dispatch#debug] xid 7 in 0.123 ms",
        )

    def test_a_failure_keeps_its_message(self) -> None:
        """A traceback relayed names the error's message, which ``eventFromJSON`` drops."""
        failure = Failure(ValueError("the disk is on fire"))
        line = self._worker_line(lambda logger: logger.failure("it failed", failure))
        relay(line.rstrip(b"\n"), 1)
        [event] = self.events
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        self.assertIn("it failed", text)
        self.assertIn("ValueError: the disk is on fire", text)

    def test_other_output_is_logged_as_it_is(self) -> None:
        """A line that is not a JSON event (a print, say) is one event with that line."""
        relay(b"something printed", 1)
        [event] = self.events
        self.assertEqual(
            eventAsText(event, includeTimestamp=False, includeSystem=False), "something printed"
        )

    def test_a_line_in_two_reads_and_standard_error(self) -> None:
        """A JSON line split across reads is one event; a line on standard error is a warning."""
        worker = _Worker(supervisor=None, index=3)  # type: ignore[arg-type]
        line = self._worker_line(lambda logger: logger.info("serving {n}", n=5))
        worker.childDataReceived(1, line[:10])
        self.assertEqual(self.events, [])
        worker.childDataReceived(1, line[10:])
        worker.childDataReceived(2, b"usage: dittofs [options]\n")
        [event, complaint] = self.events
        self.assertEqual((event["n"], event["worker"]), (5, 3))
        self.assertEqual(complaint["log_level"], LogLevel.warn)
        self.assertEqual(
            eventAsText(complaint, includeTimestamp=False, includeSystem=False),
            "Worker 3: usage: dittofs [options]",
        )
