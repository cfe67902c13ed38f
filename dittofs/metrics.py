"""Prometheus metrics: one registry per server, fed as an observer of calls and stores.

:class:`Metrics` owns its own ``CollectorRegistry`` (so tests and embedding
programs get fresh counters).  It is an :class:`~dittofs.rpc.observe.RpcObserver`
of the dispatcher (connections, calls, replies and their status), the NFS
program counts the bytes it reads and writes into it, and :func:`metered`
stores record their latency and errors.  The HTTP endpoint that serves it is
:mod:`dittofs.web`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from twisted.python.failure import Failure
from zope.interface import Interface

from dittofs.interfaces import ICacheStatistics, IMetadataCache
from dittofs.observed import observed, wrap_methods
from dittofs.rpc.message import AcceptStat
from dittofs.rpc.observe import Call, Outcome
from dittofs.vocabulary import Status

#: Latency buckets from 100 µs (a cached GETATTR) to 10 s (a stalled store).
LATENCY_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    *(0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class _Export(Protocol):
    """What the cache figures need of an export."""

    path: bytes
    metadata: Any
    content: Any


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
        self.nfs4_operations = Counter(
            "dittofs_nfs4_operations",
            "NFSv4.1 operations by operation and nfsstat4",
            ["operation", "status"],
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

    def watch_caches(self, exports: Iterable[_Export]) -> None:
        """Report the caches of every export's stores (content, metadata), read at each scrape."""
        self.registry.register(_CacheCollector(exports))

    # The dispatcher's and the connection factory's observer (RpcObserver).

    def connection_opened(self, client_host: str) -> None:
        """Count a connection accepted and open."""
        self.connections.inc()
        self.connections_open.inc()

    def connection_closed(self, client_host: str) -> None:
        """Count a connection no longer open."""
        self.connections_open.dec()

    def connection_refused(self, client_host: str, reason: str) -> None:
        """Count a connection refused by the limit *reason*."""
        self.labelled(self.connections_refused, reason).inc()

    def call_started(self, call: Call) -> Callable[[Outcome], None]:
        """Count a call of a served procedure in flight; its reply and status when it ends."""
        if call.procedure_name is None:
            # Not served (or not even readable): only its reply is counted.
            refused = call.program is None
            return lambda outcome: self._replied("REJECTED" if refused else outcome.stat.name)
        labels = (call.program_name or str(call.program), call.procedure_name)
        self.labelled(self.calls, *labels).inc()
        self.calls_in_flight.inc()

        def finish(outcome: Outcome) -> None:
            self.calls_in_flight.dec()
            self._replied(outcome.stat.name)
            if outcome.stat is AcceptStat.SUCCESS:
                self.labelled(self.call_seconds, *labels).observe(outcome.seconds)
            if isinstance(outcome.status, Status):
                self.labelled(self.nfs_replies, labels[1], outcome.status.name).inc()

        return finish

    def _replied(self, stat: str) -> None:
        self.labelled(self.rpc_replies, stat).inc()


class _CacheCollector:
    """Cache figures taken from the stores when scraped, so reads and writes pay nothing."""

    def __init__(self, exports: Iterable[_Export]) -> None:
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
        yield from self._metadata_caches()

    def _metadata_caches(self) -> Iterator[Metric]:
        """The metadata cache of every export that has one."""
        entries = GaugeMetricFamily(
            "dittofs_metadata_cache_entries",
            "Entries the metadata cache keeps, by map",
            labels=["export", "map"],
        )
        following = GaugeMetricFamily(
            "dittofs_metadata_cache_following",
            "1 while the metadata cache hears every change (0: it serves nothing)",
            labels=["export"],
        )
        hits = CounterMetricFamily(
            "dittofs_metadata_cache_hits",
            "GETATTR, LOOKUP and READLINK answered by the metadata cache",
            labels=["export"],
        )
        misses = CounterMetricFamily(
            "dittofs_metadata_cache_misses",
            "GETATTR, LOOKUP and READLINK the metadata cache passed to the store",
            labels=["export"],
        )
        for export in self._exports:
            if not IMetadataCache.providedBy(export.metadata):
                continue
            figures = export.metadata.statistics()
            path = export.path.decode()
            for kind, count in figures.entries.items():
                entries.add_metric([path, kind], count)
            following.add_metric([path], int(figures.following))
            hits.add_metric([path], figures.hits)
            misses.add_metric([path], figures.misses)
        yield from (entries, following, hits, misses)


def metered(store: Any, interface: type[Interface], kind: str, metrics: Metrics) -> Any:
    """Wrap a store so each of *interface*'s methods records its latency and errors."""
    backend = getattr(store, "name", type(store).__name__)
    return wrap_methods(
        store, interface, lambda name, method: _timed(method, metrics, kind, backend, name)
    )


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


#: Samples several processes each report for themselves, where a sum means nothing:
#: of creation and start times the earliest is kept, of the descriptor limit the smallest.
_SMALLEST = frozenset({"process_start_time_seconds", "process_max_fds"})


def sum_expositions(texts: Iterable[str]) -> bytes:
    """Several processes' ``/metrics`` as one: each sample summed over the processes.

    Counters, histograms and gauges such as open connections or resident
    memory add up; creation and start times keep the earliest, and the
    file descriptor limit the smallest.
    """
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                known = values.get(key)
                if known is None:
                    values[key] = sample.value
                elif sample.name.endswith("_created") or sample.name in _SMALLEST:
                    values[key] = min(known, sample.value)
                else:
                    values[key] = known + sample.value
    for (family_name, sample_name, labels), value in values.items():
        families[family_name].add_sample(sample_name, dict(labels), value)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _Fixed:
    """A collector that reports families already gathered."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        """The families, as gathered."""
        return iter(self._families)
