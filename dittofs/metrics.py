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
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import Interface

from dittofs.exports import ExportTable

#: Latency buckets from 100 µs (a cached GETATTR) to 10 s (a stalled store).
LATENCY_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    *(0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
#: Seconds /ready waits for each store before calling it unready.
READY_TIMEOUT = 5.0


class Metrics:
    """Every DittoFS metric, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
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


def metered(store: Any, interface: type[Interface], kind: str, metrics: Metrics) -> Any:
    """Wrap a store so each of *interface*'s methods records its latency and errors.

    The wrapper provides the same interface, so it can stand wherever the
    store stood; attributes outside the interface pass through untouched.
    """
    from zope.interface import directlyProvides, providedBy

    backend = getattr(store, "name", type(store).__name__)

    class Metered:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    wrapper = Metered()
    for name in interface.names(all=True):
        attribute = getattr(store, name, None)
        if callable(attribute):
            setattr(wrapper, name, _timed(attribute, metrics, kind, backend, name))
    directlyProvides(wrapper, providedBy(store))
    return wrapper


def _timed(
    method: Callable[..., Any], metrics: Metrics, kind: str, backend: str, name: str
) -> Callable[..., Any]:
    histogram = metrics.store_seconds.labels(kind, backend, name)
    errors = metrics.store_errors.labels(kind, backend, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = method(*args, **kwargs)
        except Exception:
            errors.inc()
            raise
        if not isinstance(result, Deferred):
            histogram.observe(time.perf_counter() - started)
            return result

        def done(outcome: Any) -> Any:
            histogram.observe(time.perf_counter() - started)
            if not _is_success(outcome):
                errors.inc()
            return outcome

        return result.addBoth(done)

    return call


def _is_success(outcome: Any) -> bool:
    from twisted.python.failure import Failure

    return not isinstance(outcome, Failure)


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
                export.metadata.root
            )
            checks[f"{path} content ({export.content.name})"] = await self._probe(
                export.content.space
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
            return f"failed: {type(error).__name__}: {error}"
        return "ok"


def web_root(metrics: Metrics, exports: ExportTable, clock: Any) -> Resource:
    """The HTTP tree for the metrics endpoint: /metrics, /health and /ready."""
    root = Resource()
    root.putChild(b"metrics", _Metrics(metrics))
    root.putChild(b"health", _Health())
    root.putChild(b"ready", _Ready(exports, clock))
    return root
