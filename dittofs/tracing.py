"""Optional OpenTelemetry tracing: a span per RPC call, and a child span per store call.

Tracing is on only when the ``otel`` extra is installed (``pip install
'dittofs[otel]'``) *and* the standard OpenTelemetry variables ask for traces:
``OTEL_TRACES_EXPORTER`` names an exporter, or ``OTEL_EXPORTER_OTLP_ENDPOINT``
/ ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` says where OTLP spans go.  Everything
else (endpoint, headers, timeouts, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, the sampler, batching) is read by the SDK's own
classes.  Otherwise :func:`from_environment` returns :data:`DISABLED`, which
has no :meth:`Tracing.observer` and whose :meth:`Tracing.store` returns the
store it is given: an untraced server runs no tracing code at all, and
OpenTelemetry is not even imported.

The RPC span is a server span, made by an observer of the dispatcher
(:mod:`dittofs.rpc.observe`), named after the program and procedure
(``NFSv3 GETATTR``, ``MOUNT MNT``) with the RPC semantic conventions'
attributes, the XID, the client's address and the call's outcome: the accept
(or reject) status and, for procedures whose results start with one, the
``nfsstat3`` or ``mountstat3``.  Each operation of an NFSv4.1 COMPOUND is a
child span of its call's (``NFSv4.1 OPEN``), with the operation's ``nfsstat4``,
and the store calls it makes are its children.  A store span (``metadata.lookup``,
``content.write``) names the store's kind, backend and operation.

Store methods return Deferreds and may do their work in threads, so the
parent of a store span is passed explicitly, never left to context variables
crossing threads: the observer makes the RPC span current in the context of
the call's own in which the dispatcher starts the procedure's coroutine;
Twisted runs every step of a
coroutine (``Deferred.fromCoroutine``) on the reactor thread in a copy of the
context it started in; so when the coroutine calls a store method, the traced
store reads the RPC span's context there and then, gives it to ``start_span``
as the parent, and ends the child span when the method's Deferred fires.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from dittofs import __version__
from dittofs import log as dittofs_log
from dittofs.errors import NFSError
from dittofs.mount import MountStat
from dittofs.nfs3.const import NFS_PROGRAM
from dittofs.observed import observed, wrap_methods
from dittofs.rpc.message import AcceptStat, RejectStat
from dittofs.rpc.observe import Call, Outcome, RpcObserver
from dittofs.vocabulary import Status

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

log = Logger(observer=dittofs_log.observer)

_Store = TypeVar("_Store")

#: The exporter (its ``opentelemetry_traces_exporter`` entry point) for each OTLP
#: protocol.  The specification's default is http/protobuf, which the extra installs.
_OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}


@attrs.frozen
class _StatusWord:
    """A program's status type (results that start with one), spelled as its RFC does."""

    attribute: str
    prefix: str

    def spell(self, value: enum.IntEnum) -> str:
        """``NFS3_OK``, ``NFS3ERR_NOENT``, ``MNT3ERR_ACCES``..."""
        return f"{self.prefix}_OK" if value == 0 else f"{self.prefix}ERR_{value.name}"

    def is_server_fault(self, value: enum.IntEnum) -> bool:
        """The server, not the request, is at fault: a store failed (IO) or worse."""
        return value.name in ("IO", "SERVERFAULT")


_NFS_STATUS = _StatusWord("dittofs.nfs.status", "NFS3")
_STATUS_WORDS: dict[type[enum.IntEnum], _StatusWord] = {
    Status: _NFS_STATUS,
    MountStat: _StatusWord("dittofs.mount.status", "MNT3"),
}

#: The name of a span for a call that nothing here serves, or whose header is refused.
_UNROUTED = "ONC RPC"


def _route(call: Call) -> tuple[str, dict[str, AttributeValue]]:
    """The name of *call*'s span and the attributes it starts with."""
    attributes: dict[str, AttributeValue] = {"rpc.system": "onc_rpc"}
    if call.program is None or call.version is None or call.procedure is None:
        return _UNROUTED, attributes
    if call.procedure_name is None or call.program_name is None:
        attributes["dittofs.rpc.program"] = call.program
        attributes["onc_rpc.version"] = call.version
        attributes["onc_rpc.procedure.number"] = call.procedure
        return _UNROUTED, attributes
    # People say NFSv3 but MOUNT, whatever MOUNT's version.
    program = call.program_name
    service = f"NFSv{call.version}" if call.program == NFS_PROGRAM else program.upper()
    attributes.update(
        {
            "rpc.service": service,
            "rpc.method": call.procedure_name,
            "onc_rpc.program.name": call.program_name,
            "onc_rpc.version": call.version,
            "onc_rpc.procedure.name": call.procedure_name,
            "onc_rpc.procedure.number": call.procedure,
        }
    )
    return f"{service} {call.procedure_name}", attributes


class _CallSpans:
    """The dispatcher's observer that makes a server span of each call."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def connection_opened(self, client_host: str) -> None:
        """Connections are not traced."""

    def connection_closed(self, client_host: str) -> None:
        """Connections are not traced."""

    def connection_refused(self, client_host: str, reason: str) -> None:
        """Connections are not traced."""

    def call_started(self, call: Call) -> Callable[[Outcome], None]:
        """Start the call's span and make it current in the call's own context."""
        from opentelemetry.context import attach
        from opentelemetry.trace import SpanKind, set_span_in_context

        name, attributes = _route(call)
        attributes["dittofs.rpc.xid"] = call.xid
        attributes["client.address"] = call.client_host
        attributes["client.port"] = call.client_port
        span = self._tracer.start_span(name, kind=SpanKind.SERVER, attributes=attributes)
        # The dispatcher discards this context once the procedure has started, so
        # nothing needs detaching: only the call's own coroutine keeps seeing the span.
        attach(set_span_in_context(span))
        return lambda outcome: _end(span, outcome)


def _end(span: Span, outcome: Outcome) -> None:
    """Record how the call ended on its span, and end it."""
    from opentelemetry.trace import Status as SpanStatus
    from opentelemetry.trace import StatusCode

    if isinstance(outcome.stat, RejectStat):
        span.set_attribute("dittofs.rpc.reject_stat", outcome.stat.name)
    else:
        span.set_attribute("dittofs.rpc.accept_stat", outcome.stat.name)
        if outcome.stat is AcceptStat.SYSTEM_ERR:
            span.set_status(SpanStatus(StatusCode.ERROR, outcome.stat.name))
        elif outcome.status is not None:
            word = _STATUS_WORDS[type(outcome.status)]
            span.set_attribute(word.attribute, word.spell(outcome.status))
            if word.is_server_fault(outcome.status):
                span.set_status(SpanStatus(StatusCode.ERROR, word.spell(outcome.status)))
    span.end()


def _operation_spans(tracer: Tracer) -> Callable[[str], Callable[[str], None]]:
    """What starts the span of an NFSv4.1 operation, current while the operation runs."""
    from opentelemetry.context import attach, detach
    from opentelemetry.trace import Status as SpanStatus
    from opentelemetry.trace import StatusCode, set_span_in_context

    def start(operation: str) -> Callable[[str], None]:
        # The COMPOUND's coroutine runs every step in the call's own context, where
        # the call's span is current: it is the parent, and this span is current
        # for the operation's store calls until the operation ends, in that context.
        span = tracer.start_span(
            f"NFSv4.1 {operation}", attributes={"dittofs.nfs4.operation": operation}
        )
        token = attach(set_span_in_context(span))

        def end(status: str) -> None:
            detach(token)
            spelled = "NFS4_OK" if status == "OK" else f"NFS4ERR_{status}"
            span.set_attribute("dittofs.nfs4.status", spelled)
            if status in ("IO", "SERVERFAULT"):
                span.set_status(SpanStatus(StatusCode.ERROR, spelled))
            span.end()

        return end

    return start


def _traced_store(store: Any, interface: type[Interface], kind: str, tracer: Tracer) -> Any:
    from opentelemetry.context import get_current
    from opentelemetry.trace import Status as SpanStatus
    from opentelemetry.trace import StatusCode, get_current_span

    def finish(span: Span | None, failure: Failure | None) -> None:
        if span is None:
            return
        if failure is not None:
            error = cast(BaseException, failure.value)  # Twisted types it Optional; it is set
            if isinstance(error, NFSError):  # an answer for the client, not a fault
                span.set_attribute(_NFS_STATUS.attribute, _NFS_STATUS.spell(error.status))
            else:
                span.record_exception(error)
            span.set_status(SpanStatus(StatusCode.ERROR, str(error)))
        span.end()

    def wrap(operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
        name = f"{kind}.{operation}"
        attributes = {
            "dittofs.store.kind": kind,
            "dittofs.store.backend": store.name,
            "dittofs.store.operation": operation,
        }

        def start() -> Span | None:
            parent = get_current()  # the RPC span's context, in the coroutine serving the call
            if not get_current_span(parent).get_span_context().is_valid:
                return None  # not serving a call: opening the stores, a /ready probe
            return tracer.start_span(name, context=parent, attributes=attributes)

        return observed(method, start, finish)

    return wrap_methods(store, interface, wrap)


class Tracing:
    """Spans for RPC calls and the store calls they make; or, without a provider, none.

    Off, :meth:`observer` is None and :meth:`store` returns what it is given,
    so the only cost is the one check each makes while the server is built.
    """

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer = None if provider is None else provider.get_tracer("dittofs", __version__)

    def observer(self) -> RpcObserver | None:
        """An observer for the dispatcher that serves every call in a server span; off, None."""
        if self._tracer is None:
            return None
        return _CallSpans(self._tracer)

    def operations(self) -> Callable[[str], Callable[[str], None]] | None:
        """What makes a span of each NFSv4.1 operation (told its name, and at its end
        its status's name), a child of its COMPOUND's; off, None."""
        if self._tracer is None:
            return None
        return _operation_spans(self._tracer)

    def store(self, store: _Store, interface: type[Interface], kind: str) -> _Store:
        """*store*, each of whose *interface* methods makes a span when tracing is on.

        *kind* (``metadata`` or ``content``) starts the span names.  Calls made
        outside any RPC span (opening the stores, ``/ready`` probes) make none.
        """
        if self._tracer is None:
            return store
        traced: _Store = _traced_store(store, interface, kind, self._tracer)
        return traced

    def shutdown(self) -> None:
        """Export the spans still queued and stop exporting.

        Blocks until the exporters are done, at most their timeouts; called
        last when the service stops.
        """
        if self.provider is not None:
            self.provider.shutdown()


#: Tracing that is off.
DISABLED = Tracing()


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters *environ*'s standard variables ask for: none unless they ask.

    Raises ValueError for an OTLP protocol that is neither http/protobuf nor grpc.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    asked = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not asked and any(environ.get(variable) for variable in endpoints):
        asked = "otlp"  # the specification's default exporter, told where to send
    if not asked or asked.lower() == "none":
        return []
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    names = [name.strip() for name in asked.split(",")]
    if "otlp" in names and protocol not in _OTLP_EXPORTERS:
        raise ValueError(f"unknown OTLP protocol {protocol!r}; use http/protobuf or grpc")
    return [_OTLP_EXPORTERS[protocol] if name == "otlp" else name for name in names]


def _provider(exporter_names: list[str]) -> TracerProvider:
    """A tracer provider that batches spans to the named exporters, as the SDK configures them.

    Raises ImportError without the SDK, ValueError for an exporter not installed.
    """
    from opentelemetry.sdk.resources import (
        SERVICE_NAME,
        SERVICE_VERSION,
        OTELResourceDetector,
        Resource,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Our name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES give another.
    ours = Resource.create({SERVICE_NAME: "dittofs", SERVICE_VERSION: __version__})
    provider = TracerProvider(resource=ours.merge(OTELResourceDetector().detect()))
    for name in exporter_names:
        found = next(iter(entry_points(group="opentelemetry_traces_exporter", name=name)), None)
        if found is None:
            raise ValueError(f"no OpenTelemetry span exporter {name!r} is installed")
        provider.add_span_processor(BatchSpanProcessor(found.load()()))
    return provider


def from_environment() -> Tracing:
    """Tracing as the process's ``OTEL_*`` variables ask for, or :data:`DISABLED`.

    Without the ``otel`` extra, or with a variable it cannot honour, the
    problem is logged and the server runs untraced.
    """
    try:
        names = _exporter_names(os.environ)
        if not names:
            return DISABLED
        provider = _provider(names)
    except ImportError as error:
        log.warn(
            "Not tracing, although OTEL_* variables ask for traces: {error}"
            " (pip install 'dittofs[otel]')",
            error=str(error),
        )
        return DISABLED
    except ValueError as error:
        log.error("Not tracing: {error}", error=str(error))
        return DISABLED
    log.info("Tracing calls; spans go to {exporters}", exporters=", ".join(names))
    return Tracing(provider)
