"""Prometheus metrics, and the HTTP endpoints that serve them and the health checks.

:class:`Metrics` owns its own ``CollectorRegistry`` (so tests and embedding
programs get fresh counters) and is handed to the dispatcher, the NFS
program, the connection factory and the store wrappers, which record into
it.  :func:`web_root` builds the ``twisted.web`` tree served on the
``--metrics`` endpoint: ``/metrics`` (Prometheus text format), ``/health``
(the process is serving) and ``/ready`` (every configured store answers).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import Interface

from dittofs.exports import ExportTable
from dittofs.interfaces import ICacheStatistics, IReadinessProbe
from dittofs.log import redact

#: Latency buckets from 100 µs (a cached GETATTR) to 10 s (a stalled store).
LATENCY_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    *(0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
#: Seconds /ready waits for each store before calling it unready.
READY_TIMEOUT = 5.0

#: What :func:`observed` carries from the start of a call to its end.
_State = TypeVar("_State")


class Metrics:
    """Every DittoFS metric, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.calls = Counter(
            "dittofs_rpc_calls",
            "RPC calls by program and procedure",
            ["program", "procedure"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "dittofs_rpc_call_duration_seconds",
            "Time from receiving a call to its reply being ready",
            ["program", "procedure"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rpc_replies = Counter(
            "dittofs_rpc_replies", "RPC replies by accept or reject status", ["status"], registry=r
        )
        self.nfs_replies = Counter(
            "dittofs_nfs_replies",
            "NFSv3 replies by procedure and nfsstat3",
            ["procedure", "status"],
            registry=r,
        )
        self.read_bytes = Counter("dittofs_read_bytes", "File bytes returned by READ", registry=r)
        self.written_bytes = Counter(
            "dittofs_written_bytes", "File bytes accepted by WRITE", registry=r
        )
        self.connections_open = Gauge(
            "dittofs_connections_open", "Client connections open", registry=r
        )
        self.connections = Counter("dittofs_connections", "Client connections accepted", registry=r)
        self.connections_refused = Counter(
            "dittofs_connections_refused", "Connections refused by a limit", ["reason"], registry=r
        )
        self.calls_in_flight = Gauge("dittofs_calls_in_flight", "Calls being served", registry=r)
        # Memory, for leak hunting: the process's RSS (and CPU, fds) as Prometheus
        # names them, and the interpreter's allocated blocks, which grow with any
        # leaked Python object whatever its size and cost nothing to read.
        ProcessCollector(registry=r)
        Gauge(
            "dittofs_python_allocated_blocks",
            "Memory blocks the Python interpreter has allocated (sys.getallocatedblocks)",
            registry=r,
        ).set_function(sys.getallocatedblocks)
        self.store_seconds = Histogram(
            "dittofs_store_operation_duration_seconds",
            "Store operation latency",
            ["kind", "backend", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "dittofs_store_errors",
            "Store operations that failed (NFS errors included)",
            ["kind", "backend", "operation"],
            registry=r,
        )

    def labelled(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: per call, the lookup (argument
        checks and a lock) cost more than the increment it serves."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def watch_caches(self, exports: ExportTable) -> None:
        """Report the cache of every export whose content store has one, read at each scrape."""
        self.registry.register(_CacheCollector(exports))


class _CacheCollector:
    """Cache figures taken from the stores when scraped, so reads and writes pay nothing."""

    def __init__(self, exports: ExportTable) -> None:
        self._exports = exports

    def collect(self) -> Iterator[Metric]:
        labels = ["export"]
        gauges = {
            "used_bytes": GaugeMetricFamily(
                "dittofs_cache_used_bytes", "Bytes in the local cache", labels=labels
            ),
            "capacity_bytes": GaugeMetricFamily(
                "dittofs_cache_capacity_bytes", "The local cache's size bound", labels=labels
            ),
            "pending_upload_bytes": GaugeMetricFamily(
                "dittofs_cache_pending_upload_bytes",
                "Bytes written to the cache and not yet uploaded",
                labels=labels,
            ),
            "pending_upload_files": GaugeMetricFamily(
                "dittofs_cache_pending_upload_files",
                "Files with changes not yet uploaded",
                labels=labels,
            ),
        }
        counters = {
            "hits": CounterMetricFamily(
                "dittofs_cache_hits", "Block reads served by the local cache", labels=labels
            ),
            "misses": CounterMetricFamily(
                "dittofs_cache_misses", "Block reads that fetched the block", labels=labels
            ),
        }
        for export in self._exports:
            if not ICacheStatistics.providedBy(export.content):
                continue
            figures = export.content.cache_statistics()
            path = [export.path.decode()]
            for field, gauge in gauges.items():
                gauge.add_metric(path, getattr(figures, field))
            for field, counter in counters.items():
                counter.add_metric(path, getattr(figures, field))
        yield from gauges.values()
        yield from counters.values()


def metered(store: Any, interface: type[Interface], kind: str, metrics: Metrics) -> Any:
    """Wrap a store so each of *interface*'s methods records its latency and errors."""
    backend = getattr(store, "name", type(store).__name__)
    return wrap_methods(
        store, interface, lambda name, method: _timed(method, metrics, kind, backend, name)
    )


def wrap_methods(
    store: Any,
    interface: type[Interface],
    wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]],
) -> Any:
    """A stand-in for *store* whose *interface* methods are ``wrap(name, method)``.

    The stand-in provides whatever the store provides, so it can stand wherever
    the store stood; attributes outside the interface pass through untouched.
    Metrics (:func:`metered`) and tracing (:mod:`dittofs.tracing`) wrap stores
    this way.
    """
    from zope.interface import directlyProvides, providedBy

    class Wrapped:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    wrapper = Wrapped()
    for name in interface.names(all=True):
        attribute = getattr(store, name, None)
        if callable(attribute):
            setattr(wrapper, name, wrap(name, attribute))
    directlyProvides(wrapper, providedBy(store))
    return wrapper


def _timed(
    method: Callable[..., Any], metrics: Metrics, kind: str, backend: str, name: str
) -> Callable[..., Any]:
    histogram = metrics.store_seconds.labels(kind, backend, name)
    errors = metrics.store_errors.labels(kind, backend, name)

    def finish(started: float, failure: Failure | None) -> None:
        histogram.observe(time.perf_counter() - started)
        if failure is not None:
            errors.inc()

    return observed(method, time.perf_counter, finish)


def observed(
    method: Callable[..., Any],
    start: Callable[[], _State],
    finish: Callable[[_State, Failure | None], None],
) -> Callable[..., Any]:
    """Wrap *method*: ``start()`` runs before each call, ``finish`` once the call is over.

    A store method may raise, return a value or return a Deferred; whichever it
    does, ``finish(state, failure)`` runs exactly once, when the outcome is
    known, with what ``start`` returned (a start time, a span) and the failure,
    or None on success.  The outcome itself passes through unchanged.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        state = start()
        try:
            result = method(*args, **kwargs)
        except Exception:
            finish(state, Failure())
            raise
        if not isinstance(result, Deferred):
            finish(state, None)
            return result

        def done(outcome: Any) -> Any:
            finish(state, outcome if isinstance(outcome, Failure) else None)
            return outcome

        return result.addBoth(done)

    return call


class _Metrics(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self._metrics.registry)


class _Health(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"status": "serving", "checks": {"process": "ok"}}).encode()


class _Ready(Resource):
    isLeaf = True

    def __init__(self, exports: ExportTable, clock: Any) -> None:
        super().__init__()
        self._exports = exports
        self._clock = clock

    def render_GET(self, request: Request) -> object:
        Deferred.fromCoroutine(self._answer(request))
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> None:
        checks: dict[str, str] = {}
        for export in self._exports:
            path = export.path.decode()
            checks[f"{path} metadata ({export.metadata.name})"] = await self._probe(
                _probe_of(export.metadata, export.metadata.root)
            )
            checks[f"{path} content ({export.content.name})"] = await self._probe(
                _probe_of(export.content, export.content.space)
            )
        ready = all(result == "ok" for result in checks.values())
        request.setResponseCode(200 if ready else 503)
        request.setHeader(b"content-type", b"application/json")
        body = {"status": "ready" if ready else "unready", "checks": checks}
        request.write(json.dumps(body).encode())
        request.finish()

    async def _probe(self, call: Callable[[], Deferred[Any]]) -> str:
        try:
            probe = call()
            probe.addTimeout(READY_TIMEOUT, self._clock)
            await probe
        except Exception as error:
            return redact(f"failed: {type(error).__name__}: {error}")
        return "ok"


def _probe_of(store: Any, ordinary: Callable[[], Deferred[Any]]) -> Callable[[], Deferred[Any]]:
    """The store's own readiness probe if it has one, else an *ordinary* call that needs it."""
    return store.probe if IReadinessProbe.providedBy(store) else ordinary


def web_root(metrics: Metrics, exports: ExportTable, clock: Any) -> Resource:
    """The HTTP tree for the metrics endpoint: /metrics, /health and /ready."""
    root = Resource()
    root.putChild(b"metrics", _Metrics(metrics))
    root.putChild(b"health", _Health())
    root.putChild(b"ready", _Ready(exports, clock))
    return root
