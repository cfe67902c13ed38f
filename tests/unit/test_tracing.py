"""Tests for :mod:`dittofs.tracing`: spans per RPC and per store call, and no tracing when off.

Calls run through :func:`dittofs.testing.build_server` over traced stores and
a traced dispatcher; spans go to the SDK's ``InMemorySpanExporter`` through a
``SimpleSpanProcessor`` on a private ``TracerProvider`` (the global provider
is never touched), so every assertion is about the spans an exporter would get.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from unittest import mock

from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode, get_current_span
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dittofs import tap, tracing
from dittofs.interfaces import IContentStore, IMetadataStore
from dittofs.metrics import Metrics
from dittofs.mount import MOUNT_PROGRAM, MOUNT_V3, MountProc
from dittofs.nfs3.const import NFS_PROGRAM, NFS_V3, Proc
from dittofs.rpc.message import AcceptStat
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.testing import InProcessServer, RpcCallFailed, TickingClock, build_server
from dittofs.testing import synchronous_result as result_of
from dittofs.tracing import DISABLED, Tracing, _exporter_names, from_environment
from dittofs.vocabulary import Status
from tests.unit import v41
from tests.unit.test_message import build_call, record_mark, split_records, xdr_opaque
from tests.unit.test_tap import MEMORY, parse

#: The attributes every span of a served NFSv3 call from the test client starts with.
NFS = {
    "rpc.system": "onc_rpc",
    "rpc.service": "NFSv3",
    "onc_rpc.program.name": "nfs",
    "onc_rpc.version": 3,
    "client.address": "127.0.0.1",
    "client.port": 700,
}


def private_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    """A provider of our own that hands each span to *exporter* as it ends."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def traced_server(
    metadata: IMetadataStore | None = None, content: IContentStore | None = None
) -> tuple[InProcessServer, InMemorySpanExporter]:
    """An in-process server whose dispatcher and stores are traced into an in-memory exporter."""
    exporter = InMemorySpanExporter()
    traced = Tracing(private_provider(exporter))
    server = build_server(
        traced.store(
            metadata or MemoryMetadataStore(clock=TickingClock()), IMetadataStore, "metadata"
        ),
        traced.store(content or MemoryContentStore(), IContentStore, "content"),
    )
    observer = traced.observer()
    assert observer is not None
    server.dispatcher.observers.append(observer)
    return server, exporter


def rpc_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The server spans, one per call, in the order the calls finished."""
    return [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    """The spans whose parent is *parent*, checked to be in its trace."""
    assert parent.context is not None
    found = [
        span
        for span in exporter.get_finished_spans()
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    ]
    for span in found:
        assert span.context is not None
        assert span.context.trace_id == parent.context.trace_id
    return found


def attributes(item: ReadableSpan | Event) -> dict[str, Any]:
    """The attributes of a span or span event as a plain dict."""
    return dict(item.attributes or {})


def names(spans: list[ReadableSpan]) -> list[str]:
    """The names of *spans*, in order."""
    return [span.name for span in spans]


class FailingContentStore(MemoryContentStore):
    """A content store whose disk is on fire: every write fails with OSError."""

    def write(self, *args: Any, **kwargs: Any) -> Deferred[None]:
        """Fail the way a broken backend does: not an NFSError."""
        return fail(OSError("disk on fire"))


class BrokenLookupStore(MemoryMetadataStore):
    """A metadata store whose lookup fails with an unexpected exception."""

    def lookup(self, directory: int, name: bytes) -> Deferred[Any]:
        """Fail with something no procedure expects."""
        return fail(RuntimeError("lookup broke"))


class HeldMetadataStore(MemoryMetadataStore):
    """A store whose getattr answers only when the test releases it, as a threaded store would.

    The procedure's coroutine then resumes in a later turn, outside the
    dispatcher's call, from the test's own code.
    """

    def __init__(self) -> None:
        super().__init__(clock=TickingClock())
        self.holding = False
        self.held: list[tuple[Deferred[Any], Deferred[Any]]] = []

    def getattr(self, fileid: int) -> Deferred[Any]:
        """Answer now, or (while holding) only when :meth:`release` is called."""
        answer: Deferred[Any] = super().getattr(fileid)
        if not self.holding:
            return answer
        later: Deferred[Any] = Deferred()
        self.held.append((answer, later))
        return later

    def release(self, index: int) -> None:
        """Deliver the answer of the *index*-th held getattr."""
        answer, later = self.held[index]
        answer.chainDeferred(later)


class RpcSpanTests(SynchronousTestCase):
    """One server span per call, named and attributed after the call and its outcome."""

    def setUp(self) -> None:
        self.server, self.exporter = traced_server()
        self.client = self.server.client(uid=1000, gid=1000)

    def test_a_span_per_call_with_its_outcome(self) -> None:
        """MNT, a LOOKUP of a missing name, CREATE, WRITE and GETATTR each make one span."""
        root = self.client.mnt(b"/export")
        self.assertEqual(self.client.lookup(root, b"missing").status, Status.NOENT)
        created = self.client.create(root, b"file").expect_ok()
        assert created.handle is not None
        self.client.write(created.handle, 0, b"hello").expect_ok()
        self.client.getattr(created.handle).expect_ok()

        spans = rpc_spans(self.exporter)
        self.assertEqual(
            names(spans),
            ["MOUNT MNT", "NFSv3 LOOKUP", "NFSv3 CREATE", "NFSv3 WRITE", "NFSv3 GETATTR"],
        )
        mnt, lookup, _create, write, stat = spans
        self.assertEqual(
            attributes(mnt),
            {
                "rpc.system": "onc_rpc",
                "rpc.service": "MOUNT",
                "rpc.method": "MNT",
                "onc_rpc.program.name": "mount",
                "onc_rpc.version": 3,
                "onc_rpc.procedure.name": "MNT",
                "onc_rpc.procedure.number": 1,
                "dittofs.rpc.xid": 1,
                "client.address": "127.0.0.1",
                "client.port": 700,
                "dittofs.rpc.accept_stat": "SUCCESS",
                "dittofs.mount.status": "MNT3_OK",
            },
        )
        self.assertEqual(
            attributes(lookup),
            {
                **NFS,
                "rpc.method": "LOOKUP",
                "onc_rpc.procedure.name": "LOOKUP",
                "onc_rpc.procedure.number": 3,
                "dittofs.rpc.xid": 2,
                "dittofs.rpc.accept_stat": "SUCCESS",
                "dittofs.nfs.status": "NFS3ERR_NOENT",
            },
        )
        self.assertEqual(
            attributes(write),
            {
                **NFS,
                "rpc.method": "WRITE",
                "onc_rpc.procedure.name": "WRITE",
                "onc_rpc.procedure.number": 7,
                "dittofs.rpc.xid": 4,
                "dittofs.rpc.accept_stat": "SUCCESS",
                "dittofs.nfs.status": "NFS3_OK",
            },
        )
        self.assertEqual(attributes(stat)["dittofs.nfs.status"], "NFS3_OK")
        # NOENT is the client's answer, not a server fault; nothing here failed.
        self.assertEqual({span.status.status_code for span in spans}, {StatusCode.UNSET})
        # Each call is its own trace: NFS carries no trace context from the client.
        self.assertEqual(len({span.context.trace_id for span in spans if span.context}), 5)

    def test_null_has_no_status(self) -> None:
        """NULL's empty results have no nfsstat3 to report."""
        self.client.null()
        (span,) = rpc_spans(self.exporter)
        self.assertEqual(span.name, "NFSv3 NULL")
        self.assertEqual(attributes(span)["dittofs.rpc.accept_stat"], "SUCCESS")
        self.assertNotIn("dittofs.nfs.status", attributes(span))

    def test_garbage_arguments(self) -> None:
        """A call whose arguments do not decode reports GARBAGE_ARGS, and no nfsstat3."""
        reply = self.client.call(NFS_PROGRAM, NFS_V3, Proc.GETATTR, b"")
        self.assertEqual((reply.accepted, reply.stat), (True, AcceptStat.GARBAGE_ARGS))
        (span,) = rpc_spans(self.exporter)
        self.assertEqual(span.name, "NFSv3 GETATTR")
        self.assertEqual(attributes(span)["dittofs.rpc.accept_stat"], "GARBAGE_ARGS")
        self.assertNotIn("dittofs.nfs.status", attributes(span))
        self.assertEqual(span.status.status_code, StatusCode.UNSET)

    def test_unknown_program(self) -> None:
        """A program the server does not serve gets a generic span naming the numbers."""
        self.client.call(200000, 1, 4, b"")
        (span,) = rpc_spans(self.exporter)
        self.assertEqual(span.name, "ONC RPC")
        self.assertEqual(
            attributes(span),
            {
                "rpc.system": "onc_rpc",
                "dittofs.rpc.program": 200000,
                "onc_rpc.version": 1,
                "onc_rpc.procedure.number": 4,
                "dittofs.rpc.xid": 1,
                "client.address": "127.0.0.1",
                "client.port": 700,
                "dittofs.rpc.accept_stat": "PROG_UNAVAIL",
            },
        )

    def test_denied_call(self) -> None:
        """A call refused before it is routed (RPC version 3) reports the reject status."""
        record = build_call(9, NFS_PROGRAM, NFS_V3, Proc.NULL, rpcvers=3)
        replied = self.server.dispatcher.dispatch(record, "127.0.0.1", 700)
        assert replied is not None
        result_of(replied)
        (span,) = rpc_spans(self.exporter)
        self.assertEqual(span.name, "ONC RPC")
        self.assertEqual(attributes(span)["dittofs.rpc.xid"], 9)
        self.assertEqual(attributes(span)["dittofs.rpc.reject_stat"], "RPC_MISMATCH")

    def test_not_a_call(self) -> None:
        """A record that is not a call is not answered, and makes no span."""
        self.assertIsNone(self.server.dispatcher.dispatch(b"\0\0\0\1\0\0\0\1", "127.0.0.1", 700))
        self.assertEqual(self.exporter.get_finished_spans(), ())


class StoreSpanTests(SynchronousTestCase):
    """Store calls are child spans of the call that made them."""

    def test_children_of_their_call(self) -> None:
        """Each store span is in its call's trace and has the call's span as parent."""
        server, exporter = traced_server()
        client = server.client(uid=1000, gid=1000)
        root = client.mnt(b"/export")
        created = client.create(root, b"file").expect_ok()
        assert created.handle is not None
        client.write(created.handle, 0, b"hello").expect_ok()
        client.getattr(created.handle).expect_ok()

        _mnt, create, write, stat = rpc_spans(exporter)
        self.assertEqual(names(children(exporter, stat)), ["metadata.getattr"])
        self.assertIn("metadata.create", names(children(exporter, create)))
        (content_write,) = (s for s in children(exporter, write) if s.name == "content.write")
        self.assertEqual(content_write.kind, SpanKind.INTERNAL)
        self.assertEqual(
            attributes(content_write),
            {
                "dittofs.store.kind": "content",
                "dittofs.store.backend": "memory",
                "dittofs.store.operation": "write",
            },
        )
        # Every store span belongs to some call; none is left without a parent.
        store_spans = [s for s in exporter.get_finished_spans() if s.kind != SpanKind.SERVER]
        self.assertEqual(
            len(store_spans), sum(len(children(exporter, s)) for s in rpc_spans(exporter))
        )

    def test_failed_store_call_is_an_error(self) -> None:
        """A lookup that fails with NOENT marks its span as an error, naming the status."""
        server, exporter = traced_server()
        client = server.client(uid=1000, gid=1000)
        client.lookup(server.root_handle(), b"missing")
        (lookup,) = rpc_spans(exporter)
        (failed,) = (s for s in children(exporter, lookup) if s.name == "metadata.lookup")
        self.assertEqual(failed.status.status_code, StatusCode.ERROR)
        self.assertEqual(failed.status.description, "NFS3ERR_NOENT")
        self.assertEqual(attributes(failed)["dittofs.nfs.status"], "NFS3ERR_NOENT")
        self.assertEqual(failed.events, ())  # an answer for the client: no exception recorded
        self.assertEqual(lookup.status.status_code, StatusCode.UNSET)

    def test_store_fault(self) -> None:
        """A backend failure is recorded on the store span, and the call that got IO fails too."""
        server, exporter = traced_server(content=FailingContentStore())
        client = server.client(uid=1000, gid=1000)
        created = client.create(server.root_handle(), b"file").expect_ok()
        assert created.handle is not None
        self.assertEqual(client.write(created.handle, 0, b"hello").status, Status.IO)
        self.flushLoggedErrors(OSError)

        _create, write = rpc_spans(exporter)
        self.assertEqual(attributes(write)["dittofs.nfs.status"], "NFS3ERR_IO")
        self.assertEqual(write.status.status_code, StatusCode.ERROR)
        (failed,) = (s for s in children(exporter, write) if s.name == "content.write")
        self.assertEqual(failed.status.status_code, StatusCode.ERROR)
        self.assertEqual(failed.status.description, "disk on fire")
        (event,) = failed.events
        self.assertEqual(event.name, "exception")
        self.assertEqual(attributes(event)["exception.type"], "OSError")

    def test_system_error(self) -> None:
        """An unexpected exception ends in SYSTEM_ERR: both spans are errors."""
        server, exporter = traced_server(metadata=BrokenLookupStore(clock=TickingClock()))
        client = server.client(uid=1000, gid=1000)
        self.assertRaises(RpcCallFailed, client.mnt, b"/export/below")
        self.flushLoggedErrors(RuntimeError)

        (mnt,) = rpc_spans(exporter)
        self.assertEqual(attributes(mnt)["dittofs.rpc.accept_stat"], "SYSTEM_ERR")
        self.assertNotIn("dittofs.mount.status", attributes(mnt))
        self.assertEqual(mnt.status.status_code, StatusCode.ERROR)
        (failed,) = (s for s in children(exporter, mnt) if s.name == "metadata.lookup")
        self.assertEqual(failed.status.status_code, StatusCode.ERROR)
        self.assertEqual(failed.status.description, "lookup broke")

    def test_no_spans_outside_calls(self) -> None:
        """Opening the stores and calling them outside any RPC (a /ready probe) makes no span."""
        server, exporter = traced_server()
        result_of(server.export.metadata.root())
        self.assertEqual(exporter.get_finished_spans(), ())

    def test_parent_survives_a_later_resumption(self) -> None:
        """Store calls made after the coroutine resumes in a later turn keep their own parent.

        Two LOOKUPs wait on getattr; the second is released first.  The
        lookups that follow each release run outside the dispatcher's call,
        yet each is a child of its own RPC span.
        """
        store = HeldMetadataStore()
        server, exporter = traced_server(metadata=store)
        store.holding = True
        handle = xdr_opaque(server.root_handle())
        replies = [
            server.dispatcher.dispatch(
                build_call(xid, NFS_PROGRAM, NFS_V3, Proc.LOOKUP, args=handle + xdr_opaque(name)),
                "127.0.0.1",
                700,
            )
            for xid, name in ((1, b"first"), (2, b"second"))
        ]
        self.assertIs(get_current_span(), INVALID_SPAN)  # nothing left current by dispatch
        store.holding = False
        store.release(1)
        store.release(0)
        for reply in replies:
            assert reply is not None
            result_of(reply)

        second, first = rpc_spans(exporter)
        self.assertEqual(
            (attributes(first)["dittofs.rpc.xid"], attributes(second)["dittofs.rpc.xid"]),
            (1, 2),
        )
        for span in (first, second):
            self.assertEqual(
                names(children(exporter, span)),
                ["metadata.getattr", "metadata.lookup", "metadata.getattr"],
            )


class DisabledTests(SynchronousTestCase):
    """Off, nothing is wrapped: the server runs the very objects it would without tracing."""

    def without_otel_variables(self) -> Any:
        """A patch of the environment that removes every OTEL_* variable."""
        kept = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
        return mock.patch.dict(os.environ, kept, clear=True)

    def assert_unwrapped(self, chosen: Tracing) -> None:
        """*chosen* observes no call and hands back the stores it is given."""
        metadata = MemoryMetadataStore()
        content = MemoryContentStore()
        self.assertIsNone(chosen.observer())
        self.assertIs(chosen.store(metadata, IMetadataStore, "metadata"), metadata)
        self.assertIs(chosen.store(content, IContentStore, "content"), content)

    def test_no_otel_variables(self) -> None:
        """Without OTEL_* variables tracing is off, though OpenTelemetry is installed."""
        with self.without_otel_variables():
            chosen = from_environment()
        self.assertIs(chosen, DISABLED)
        self.assert_unwrapped(chosen)

    def test_opentelemetry_not_installed(self) -> None:
        """Variables that ask for traces without the extra installed: a warning, and off."""
        hidden = {
            name: None
            for name in [*sys.modules, "opentelemetry"]
            if name == "opentelemetry" or name.startswith("opentelemetry.")
        }
        with (
            mock.patch.dict(os.environ, {"OTEL_TRACES_EXPORTER": "console"}),
            mock.patch.dict(sys.modules, hidden),
            capturedLogs() as events,
        ):
            chosen = from_environment()
        self.assertIs(chosen, DISABLED)
        self.assert_unwrapped(chosen)
        (warning,) = (e for e in events if e["log_level"] == LogLevel.warn)
        self.assertIn("dittofs[otel]", warning["log_format"])

    def test_make_service_off(self) -> None:
        """``makeService`` without OTEL_* variables gives the dispatcher no tracing observer."""
        with self.without_otel_variables():
            service = tap.makeService(parse(MEMORY), reactor=MemoryReactorClock())
        self.assertEqual([type(o) for o in service.factory.dispatcher.observers], [Metrics])
        self.assertIs(service.tracing, DISABLED)

    def test_an_exporter_not_installed(self) -> None:
        """An exporter name nothing provides is reported, and the server runs untraced."""
        with (
            mock.patch.dict(os.environ, {"OTEL_TRACES_EXPORTER": "nonesuch"}),
            capturedLogs() as events,
        ):
            chosen = from_environment()
        self.assertIs(chosen, DISABLED)
        (error,) = (e for e in events if e["log_level"] == LogLevel.error)
        self.assertIn("'nonesuch'", error["error"])


class EnvironmentTests(SynchronousTestCase):
    """The standard variables decide whether, and to which exporters, spans go."""

    def test_exporter_names(self) -> None:
        """Only an exporter name or an OTLP endpoint asks for traces; otlp follows the protocol."""
        endpoint = "http://127.0.0.1:4318"
        cases: list[tuple[dict[str, str], list[str]]] = [
            ({}, []),
            ({"OTEL_SERVICE_NAME": "nfs"}, []),
            ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
            ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, []),
            ({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, ["otlp_proto_http"]),
            ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}, ["otlp_proto_http"]),
            (
                {"OTEL_TRACES_EXPORTER": "otlp, console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
                ["otlp_proto_grpc", "console"],
            ),
            (
                {
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                },
                ["otlp_proto_http"],
            ),
            ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, []),
        ]
        for environ, expected in cases:
            self.assertEqual(_exporter_names(environ), expected, environ)

    def test_unknown_protocol(self) -> None:
        """An OTLP protocol that is neither http/protobuf nor grpc is refused."""
        environ = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}
        self.assertRaises(ValueError, _exporter_names, environ)

    def test_on_when_asked(self) -> None:
        """OTEL_TRACES_EXPORTER turns tracing on, named as OTEL_SERVICE_NAME says."""
        environ = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "nfs-a"}
        with mock.patch.dict(os.environ, environ):
            chosen = from_environment()
        self.addCleanup(chosen.shutdown)
        assert chosen.provider is not None
        self.assertEqual(chosen.provider.resource.attributes["service.name"], "nfs-a")
        self.assertIsNotNone(chosen.observer())

    def test_named_dittofs_by_default(self) -> None:
        """Without OTEL_SERVICE_NAME the service is called dittofs, not unknown_service."""
        with mock.patch.dict(os.environ, {"OTEL_TRACES_EXPORTER": "console"}):
            os.environ.pop("OTEL_SERVICE_NAME", None)
            os.environ.pop("OTEL_RESOURCE_ATTRIBUTES", None)
            chosen = from_environment()
        self.addCleanup(chosen.shutdown)
        assert chosen.provider is not None
        self.assertEqual(chosen.provider.resource.attributes["service.name"], "dittofs")


class Nfs4OperationSpanTests(SynchronousTestCase):
    """Each NFSv4.1 operation is a child span of its COMPOUND's, parent of its store calls."""

    def connect(self, metadata: IMetadataStore) -> tuple[v41.V41Client, InMemorySpanExporter]:
        """A v4.1 client with a session, of a server traced into an exporter (kept empty
        of the session's own spans)."""
        exporter = InMemorySpanExporter()
        traced = Tracing(private_provider(exporter))
        server = build_server(
            traced.store(metadata, IMetadataStore, "metadata"),
            traced.store(MemoryContentStore(), IContentStore, "content"),
        )
        served, _ = v41.with_v41(server, operation_spans=traced.operations())
        observer = traced.observer()
        assert observer is not None
        served.dispatcher.observers.append(observer)
        client = v41.V41Client(served).connect()
        exporter.clear()
        return client, exporter

    def test_operations_under_their_compound(self) -> None:
        """Operations up to the failing one, in order, each with its nfsstat4."""
        client, exporter = self.connect(MemoryMetadataStore(clock=TickingClock()))
        reply = client.call(*client.root_of_export(), v41.lookup(b"missing"), v41.getfh())
        self.assertEqual(reply.status, Status.NOENT)

        (compound,) = rpc_spans(exporter)
        self.assertEqual(compound.name, "NFSv4 COMPOUND")
        operations = children(exporter, compound)
        self.assertEqual(
            names(operations),
            ["NFSv4.1 SEQUENCE", "NFSv4.1 PUTROOTFH", "NFSv4.1 LOOKUP", "NFSv4.1 LOOKUP"],
        )
        self.assertEqual(
            [attributes(span)["dittofs.nfs4.status"] for span in operations],
            ["NFS4_OK", "NFS4_OK", "NFS4_OK", "NFS4ERR_NOENT"],
        )
        self.assertEqual(attributes(operations[3])["dittofs.nfs4.operation"], "LOOKUP")
        # A client's mistake is not the server's fault.
        self.assertEqual(operations[3].status.status_code, StatusCode.UNSET)
        # The store calls of the failing LOOKUP are its own children.
        self.assertIn("metadata.lookup", names(children(exporter, operations[3])))
        self.assertEqual(children(exporter, operations[1]), [])
        self.assertIs(get_current_span(), INVALID_SPAN)

    def test_store_fault(self) -> None:
        """An operation answered NFS4ERR_IO is an error span, as is its store call."""
        client, exporter = self.connect(BrokenLookupStore(clock=TickingClock()))
        failed = client.call(*client.root_of_export(), v41.lookup(b"file"))
        self.assertEqual(failed.status, Status.IO)
        self.flushLoggedErrors(RuntimeError)

        (compound,) = rpc_spans(exporter)
        lookup = children(exporter, compound)[-1]
        self.assertEqual(lookup.name, "NFSv4.1 LOOKUP")
        self.assertEqual(attributes(lookup)["dittofs.nfs4.status"], "NFS4ERR_IO")
        self.assertEqual(lookup.status.status_code, StatusCode.ERROR)
        (store_call,) = (s for s in children(exporter, lookup) if s.name == "metadata.lookup")
        self.assertEqual(store_call.status.status_code, StatusCode.ERROR)


class ServiceTests(SynchronousTestCase):
    """``makeService`` traces the calls it serves and flushes the spans when it stops."""

    def test_spans_flushed_on_stop(self) -> None:
        """Batched spans reach the exporter when the service stops, not before."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        # Never exported on a timer in this test: only the stop can flush them.
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000))
        self.patch(tracing, "from_environment", lambda: Tracing(provider))
        reactor = MemoryReactorClock()
        service = tap.makeService(parse([*MEMORY, "--listen", "tcp:2049"]), reactor=reactor)
        self.assertEqual(
            [type(o) for o in service.factory.dispatcher.observers], [Metrics, tracing._CallSpans]
        )
        service.startService()
        ((_port, factory, _backlog, _interface),) = reactor.tcpServers
        peer = IPv4Address("TCP", "127.0.0.1", 800)
        protocol = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        mnt = build_call(1, MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, args=xdr_opaque(b"/export"))
        protocol.dataReceived(record_mark(mnt))
        self.assertEqual(len(split_records(transport.value())), 1)
        self.assertEqual(exporter.get_finished_spans(), ())

        stopped = service.stopService()
        reactor.advance(1)
        self.successResultOf(stopped)
        (span,) = rpc_spans(exporter)
        self.assertEqual(span.name, "MOUNT MNT")
        self.assertEqual(attributes(span)["client.port"], 800)
        self.assertEqual(names(children(exporter, span)), ["metadata.getattr"])
