"""The HTTP endpoints beside the NFS port: ``/metrics``, ``/health`` and ``/ready``.

:func:`web_root` builds the ``twisted.web`` tree served on the ``--metrics``
endpoint: ``/metrics`` (Prometheus text format, from
:class:`~dittofs.metrics.Metrics`), ``/health`` (the process is serving) and
``/ready`` (every configured store answers).  :func:`workers_root` is what
the supervisor of several workers serves instead: every worker's metrics
summed, and whether every worker serves and is ready.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.web import http
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from dittofs.exports import ExportTable
from dittofs.interfaces import IReadinessProbe
from dittofs.log import redact
from dittofs.metrics import Metrics, sum_expositions

#: Seconds /ready waits for each store before calling it unready.
READY_TIMEOUT = 5.0


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


class _Answered(Resource):
    """A page answered by a coroutine (it waits on stores or workers), not at once."""

    isLeaf = True

    def render_GET(self, request: Request) -> object:
        Deferred.fromCoroutine(self._answer(request))
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> None:
        raise NotImplementedError


def _failed(error: Exception) -> str:
    """A check that failed, as /ready shows it (passwords hidden)."""
    return redact(f"failed: {type(error).__name__}: {error}")


def _answer_readiness(request: Request, checks: Mapping[str, Any]) -> None:
    """Finish a /ready answer: 200 and ``ready`` when every check is ``ok``, else 503."""
    ready = all(check == "ok" for check in checks.values())
    request.setResponseCode(200 if ready else 503)
    request.setHeader(b"content-type", b"application/json")
    body = {"status": "ready" if ready else "unready", "checks": checks}
    request.write(json.dumps(body).encode())
    request.finish()


class _Ready(_Answered):
    def __init__(self, exports: ExportTable, clock: Any) -> None:
        super().__init__()
        self._exports = exports
        self._clock = clock

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
        _answer_readiness(request, checks)

    async def _probe(self, call: Callable[[], Deferred[Any]]) -> str:
        try:
            probe = call()
            probe.addTimeout(READY_TIMEOUT, self._clock)
            await probe
        except Exception as error:
            return _failed(error)
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


# -- a supervisor of workers (dittofs.workers) -------------------------------------------


class _Workers(Protocol):
    """What the supervisor's endpoints need of it (:class:`dittofs.workers.Supervisor`)."""

    count: int
    restarts: int

    @property
    def workers(self) -> Mapping[int, Any]:
        """Index -> worker, each with ``ready`` (it serves) and ``pid``."""

    def metrics_socket(self, index: int) -> Path:
        """Where worker *index* serves its own endpoints."""


@implementer(IAgentEndpointFactory)
class _UnixSocket:
    """Every request goes to one UNIX socket, whatever its URL says."""

    def __init__(self, reactor: Any, path: Path) -> None:
        self._reactor = reactor
        self._path = path

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(self._reactor, str(self._path))


class _Asker:
    """GETs pages from the workers' UNIX sockets, over one persistent connection each.

    Kept open, the connections are not made anew (and logged) on each scrape.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._agents: dict[Path, Agent] = {}

    async def ask(self, path: Path, page: bytes) -> tuple[int, bytes]:
        """GET *page* from the worker endpoint on UNIX socket *path*: status code and body."""
        agent = self._agents.get(path)
        if agent is None:
            endpoints = _UnixSocket(self._reactor, path)
            agent = self._agents[path] = Agent.usingEndpointFactory(
                self._reactor, endpoints, pool=self._pool
            )
        # The pool keeps connections by host: one name per worker.
        url = b"http://" + path.stem.encode() + page
        asked: Deferred[Any] = agent.request(b"GET", url)
        asked.addTimeout(READY_TIMEOUT, self._reactor)
        response = await asked
        body: Deferred[bytes] = readBody(response)
        body.addTimeout(READY_TIMEOUT, self._reactor)
        return response.code, await body


class _FromWorkers(_Answered):
    """A page of the supervisor's, answered by asking its workers."""

    def __init__(self, supervisor: _Workers, asker: _Asker) -> None:
        super().__init__()
        self._supervisor = supervisor
        self._asker = asker


class _SummedMetrics(_FromWorkers):
    async def _answer(self, request: Request) -> None:
        supervisor = self._supervisor
        serving = [index for index, worker in supervisor.workers.items() if worker.ready]
        own = (
            "# HELP dittofs_workers Worker processes serving\n"
            "# TYPE dittofs_workers gauge\n"
            f"dittofs_workers {len(serving)}\n"
            "# HELP dittofs_worker_restarts Workers started again after they ended\n"
            "# TYPE dittofs_worker_restarts counter\n"
            f"dittofs_worker_restarts_total {supervisor.restarts}\n"
        )
        texts = [own]
        for index in serving:
            try:
                code, body = await self._asker.ask(supervisor.metrics_socket(index), b"/metrics")
            except Exception:  # it ended meanwhile: the next scrape has its successor
                continue
            if code == 200:
                texts.append(body.decode())
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        request.write(sum_expositions(texts))
        request.finish()


class _WorkersHealth(Resource):
    isLeaf = True

    def __init__(self, supervisor: _Workers) -> None:
        super().__init__()
        self._supervisor = supervisor

    def render_GET(self, request: Request) -> bytes:
        checks = {
            f"worker {index}": "ok" if worker.ready else "starting"
            for index, worker in sorted(self._supervisor.workers.items())
        }
        serving = len(checks) == self._supervisor.count and all(
            check == "ok" for check in checks.values()
        )
        request.setResponseCode(200 if serving else 503)
        request.setHeader(b"content-type", b"application/json")
        status = "serving" if serving else "degraded"
        return json.dumps({"status": status, "checks": checks}).encode()


class _WorkersReady(_FromWorkers):
    async def _answer(self, request: Request) -> None:
        checks: dict[str, Any] = {}
        for index in range(self._supervisor.count):
            worker = self._supervisor.workers.get(index)
            if worker is None or not worker.ready:
                checks[f"worker {index}"] = "starting"
                continue
            try:
                socket_path = self._supervisor.metrics_socket(index)
                code, body = await self._asker.ask(socket_path, b"/ready")
                said = json.loads(body)
            except Exception as error:
                checks[f"worker {index}"] = _failed(error)
                continue
            checks[f"worker {index}"] = "ok" if code == 200 else said.get("checks", said)
        _answer_readiness(request, checks)


def workers_root(supervisor: _Workers, reactor: Any) -> Resource:
    """The HTTP tree a supervisor serves: every worker's /metrics summed, /health, /ready."""
    asker = _Asker(reactor)
    root = Resource()
    root.putChild(b"metrics", _SummedMetrics(supervisor, asker))
    root.putChild(b"health", _WorkersHealth(supervisor))
    root.putChild(b"ready", _WorkersReady(supervisor, asker))
    return root


class UnloggedSite(Site):
    """A site whose requests are not logged: a worker's, which only its supervisor asks."""

    def log(self, request: http.Request) -> None:
        """Nothing: a line per scrape per worker would drown the log."""
