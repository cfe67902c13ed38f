"""The HTTP endpoints beside the NFS port: ``/metrics``, ``/health`` and ``/ready``.

:func:`web_root` builds the ``twisted.web`` tree served on the ``--metrics``
endpoint: ``/metrics`` (Prometheus text format, from
:class:`~dittofs.metrics.Metrics`), ``/health`` (the process is serving) and
``/ready`` (every configured store answers).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from dittofs.exports import ExportTable
from dittofs.interfaces import IReadinessProbe
from dittofs.log import redact
from dittofs.metrics import Metrics

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
