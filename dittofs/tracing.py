"""Optional OpenTelemetry tracing: a span per RPC call, and a child span per store call.

Tracing is on only when the ``otel`` extra is installed (``pip install
'dittofs[otel]'``) *and* the standard OpenTelemetry variables ask for traces:
``OTEL_TRACES_EXPORTER`` names an exporter, or ``OTEL_EXPORTER_OTLP_ENDPOINT``
/ ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` says where OTLP spans go.  Everything
else (endpoint, headers, timeouts, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, the sampler, batching) is read by the SDK's own
classes.  Otherwise :func:`from_environment` returns :data:`DISABLED`, whose
:meth:`Tracing.dispatcher` and :meth:`Tracing.store` return the objects they
are given: an untraced server runs no tracing code at all, and OpenTelemetry
is not even imported.

The RPC span is a server span named after the program and procedure
(``NFSv3 GETATTR``, ``MOUNT MNT``) with the RPC semantic conventions'
attributes, the XID, the client's address and the outcome read from the
reply: the accept (or reject) status and, for procedures whose results start
with one, the ``nfsstat3`` or ``mountstat3``.  A store span (``metadata.lookup``,
``content.write``) names the store's kind, backend and operation.

Store methods return Deferreds and may do their work in threads, so the
parent of a store span is passed explicitly, never left to context variables
crossing threads: the traced dispatcher makes the RPC span current while the
real dispatcher starts the procedure's coroutine; Twisted runs every step of a
coroutine (``Deferred.fromCoroutine``) on the reactor thread in a copy of the
context it started in; so when the coroutine calls a store method, the traced
store reads the RPC span's context there and then, gives it to ``start_span``
as the parent, and ends the child span when the method's Deferred fires.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from dittofs import __version__
from dittofs import log as dittofs_log
from dittofs.errors import NFSError
from dittofs.metrics import observed, wrap_methods
from dittofs.mount import MOUNT_PROGRAM, MOUNT_V3, MountProc, MountStat
from dittofs.nfs3.const import NFS_PROGRAM
from dittofs.rpc.dispatch import Parts, RpcDispatcher, RpcProgram
from dittofs.rpc.message import (
    MAX_AUTH_BYTES,
    MSG_ACCEPTED,
    AcceptStat,
    CallRejected,
    RejectStat,
    parse_call,
)
from dittofs.rpc.xdr import XdrError, XdrReader
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

#: Enough of a reply for its status: XID, REPLY, reply_stat, the verifier (at most
#: MAX_AUTH_BYTES of body), accept_stat and the first word of the results.
_REPLY_HEAD = 7 * 4 + MAX_AUTH_BYTES


@attrs.frozen
class _StatusWord:
    """A program's status type (results that start with one), spelled as its RFC does."""

    attribute: str
    prefix: str
    names: type[enum.IntEnum]

    def spell(self, value: int) -> str:
        """``NFS3_OK``, ``NFS3ERR_NOENT``, ``MNT3ERR_ACCES``..."""
        return f"{self.prefix}_OK" if value == 0 else f"{self.prefix}ERR_{self.names(value).name}"

    def is_server_fault(self, value: int) -> bool:
        """The server, not the request, is at fault: a store failed (IO) or worse."""
        return value != 0 and self.names(value).name in ("IO", "SERVERFAULT")


_NFS_STATUS = _StatusWord("dittofs.nfs.status", "NFS3", Status)
_MOUNT_STATUS = _StatusWord("dittofs.mount.status", "MNT3", MountStat)


@attrs.frozen
class _Route:
    """What a call's span is named and starts with, and how to read its results' status."""

    name: str
    attributes: Mapping[str, AttributeValue]
    status: _StatusWord | None = None


#: Calls whose program, version or procedure are not served, or whose header is refused.
_UNROUTED = "ONC RPC"


def _routes(programs: Sequence[RpcProgram]) -> dict[tuple[int, int, int], _Route]:
    """A route for every (program, version, procedure) the dispatcher serves."""
    routes = {}
    for program in programs:
        program_name = getattr(program, "name", str(program.number))
        for version in range(program.low_version, program.high_version + 1):
            # People say NFSv3 but MOUNT, whatever MOUNT's version.
            service = f"NFSv{version}" if program.number == NFS_PROGRAM else program_name.upper()
            for number, procedure in program.procedures(version).items():
                attributes: dict[str, AttributeValue] = {
                    "rpc.system": "onc_rpc",
                    "rpc.service": service,
                    "rpc.method": procedure.name,
                    "onc_rpc.program.name": program_name,
                    "onc_rpc.version": version,
                    "onc_rpc.procedure.name": procedure.name,
                    "onc_rpc.procedure.number": number,
                }
                status = _status_word(program.number, version, number)
                name = f"{service} {procedure.name}"
                routes[program.number, version, number] = _Route(name, attributes, status)
    return routes


def _status_word(program: int, version: int, procedure: int) -> _StatusWord | None:
    """Every NFSv3 result but NULL's starts with an nfsstat3; MOUNT's MNT with a mountstat3."""
    if program == NFS_PROGRAM and procedure != 0:
        return _NFS_STATUS
    if (program, version, procedure) == (MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT):
        return _MOUNT_STATUS
    return None


def _head(parts: Parts, size: int) -> bytearray:
    """The first *size* bytes of a reply (all of a shorter one), without joining the rest."""
    head = bytearray()
    for part in parts:
        head += part[: size - len(head)]
        if len(head) == size:
            break
    return head


class _TracedDispatcher:
    """Stands in for an :class:`RpcDispatcher`; its ``dispatch`` traces each call."""

    def __init__(
        self,
        dispatcher: RpcDispatcher,
        dispatch: Callable[[bytes, str, int], Deferred[Parts] | None],
    ) -> None:
        self._dispatcher = dispatcher
        self.dispatch = dispatch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dispatcher, name)


def _traced_dispatcher(dispatcher: RpcDispatcher, tracer: Tracer) -> _TracedDispatcher:
    from opentelemetry.trace import SpanKind, StatusCode, use_span
    from opentelemetry.trace import Status as SpanStatus

    routes = _routes(dispatcher.programs)

    def dispatch(record: bytes, client_host: str, client_port: int) -> Deferred[Parts] | None:
        try:
            header, _ = parse_call(record)
        except XdrError:
            return dispatcher.dispatch(record, client_host, client_port)  # not a call
        except CallRejected as rejected:
            route, xid = _Route(_UNROUTED, {"rpc.system": "onc_rpc"}), rejected.xid
        else:
            xid = header.xid
            key = (header.program, header.version, header.procedure)
            route = routes.get(key) or _Route(
                _UNROUTED,
                {
                    "rpc.system": "onc_rpc",
                    "dittofs.rpc.program": header.program,
                    "onc_rpc.version": header.version,
                    "onc_rpc.procedure.number": header.procedure,
                },
            )
        span = tracer.start_span(
            route.name,
            kind=SpanKind.SERVER,
            attributes={
                **route.attributes,
                "dittofs.rpc.xid": xid,
                "client.address": client_host,
                "client.port": client_port,
            },
        )
        with use_span(span):
            replied = dispatcher.dispatch(record, client_host, client_port)
        assert replied is not None, "a record that parse_call reads as a call is answered"
        return replied.addCallback(finish, span, route.status)

    def finish(parts: Parts, span: Span, status: _StatusWord | None) -> Parts:
        reader = XdrReader(_head(parts, _REPLY_HEAD))
        reader.uint()  # XID
        reader.uint()  # REPLY
        if reader.uint() != MSG_ACCEPTED:
            span.set_attribute("dittofs.rpc.reject_stat", RejectStat(reader.uint()).name)
        else:
            reader.uint()  # verifier flavour
            reader.opaque(MAX_AUTH_BYTES)
            accepted = AcceptStat(reader.uint())
            span.set_attribute("dittofs.rpc.accept_stat", accepted.name)
            if accepted == AcceptStat.SYSTEM_ERR:
                span.set_status(SpanStatus(StatusCode.ERROR, accepted.name))
            elif accepted == AcceptStat.SUCCESS and status is not None:
                value = reader.uint()
                span.set_attribute(status.attribute, status.spell(value))
                if status.is_server_fault(value):
                    span.set_status(SpanStatus(StatusCode.ERROR, status.spell(value)))
        span.end()
        return parts

    return _TracedDispatcher(dispatcher, dispatch)


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

    Off, :meth:`dispatcher` and :meth:`store` return what they are given, so
    the only cost is the one check each makes while the server is built.
    """

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer = None if provider is None else provider.get_tracer("dittofs", __version__)

    def dispatcher(self, dispatcher: RpcDispatcher) -> RpcDispatcher:
        """*dispatcher*, serving every call inside a server span when tracing is on."""
        if self._tracer is None:
            return dispatcher
        # It stands in for the dispatcher: same dispatch(), other attributes passed through.
        return cast(RpcDispatcher, _traced_dispatcher(dispatcher, self._tracer))

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
