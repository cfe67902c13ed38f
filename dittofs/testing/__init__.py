"""Helpers for testing code against an in-process DittoFS, without a reactor or sockets.

:func:`build_server` puts an :class:`~dittofs.exports.ExportTable`, the NFSv3
and MOUNT programs and an :class:`~dittofs.rpc.dispatch.RpcDispatcher` over
the stores you give it (in-memory ones by default).  :class:`NFSClient` then
encodes real RPC call records, hands them to the dispatcher and decodes the
replies into plain values, so a test sees exactly what a client on the wire
would see.  Stores whose Deferreds fire synchronously (the memory stores, or
a threaded store given :class:`SynchronousThreadPool` and
:class:`SynchronousReactorThreads`) need no reactor at all, which suits
``twisted.trial.unittest.SynchronousTestCase``::

    from dittofs.testing import build_server
    from dittofs.vocabulary import Status

    server = build_server()
    client = server.client(uid=1000, gid=1000)
    root = client.mnt(b"/export")
    created = client.create(root, b"hello.txt").expect_ok()
    client.write(created.handle, 0, b"hello").expect_ok()
    assert client.read(created.handle, 0, 100).data == b"hello"
    assert client.lookup(root, b"missing").status == Status.NOENT

A store of your own is checked with :mod:`dittofs.testing.conformance`: mix
its suite into a ``SynchronousTestCase`` and say how to make the store.

The same helpers serve the project's own tests; see ``docs/testing.md``.
"""

from __future__ import annotations

from dittofs.nfs3.types import (
    SERVER_TIME,
    Fattr,
    PreOpAttr,
    Wcc,
    decode_fattr3,
    decode_post_op_attr,
    decode_post_op_fh3,
    decode_wcc_data,
    encode_sattr3,
)
from dittofs.testing._client import (
    InProcessServer,
    NFSClient,
    build_server,
    serve_exports,
)
from dittofs.testing._replies import (
    AccessReply,
    CommitReply,
    CreateReply,
    DirEntryReply,
    FsinfoReply,
    FsstatReply,
    GetattrReply,
    LinkReply,
    LookupReply,
    PathconfReply,
    ReaddirReply,
    ReadlinkReply,
    ReadReply,
    RenameReply,
    Reply,
    RpcCallFailed,
    RpcReply,
    WccReply,
    WriteReply,
)
from dittofs.testing._synchronous import (
    NotSynchronousError,
    SynchronousReactorThreads,
    SynchronousThreadPool,
    TickingClock,
    synchronous_result,
)

__all__ = [
    "SERVER_TIME",
    "AccessReply",
    "CommitReply",
    "CreateReply",
    "DirEntryReply",
    "Fattr",
    "FsinfoReply",
    "FsstatReply",
    "GetattrReply",
    "InProcessServer",
    "LinkReply",
    "LookupReply",
    "NFSClient",
    "NotSynchronousError",
    "PathconfReply",
    "PreOpAttr",
    "ReadReply",
    "ReaddirReply",
    "ReadlinkReply",
    "RenameReply",
    "Reply",
    "RpcCallFailed",
    "RpcReply",
    "SynchronousReactorThreads",
    "SynchronousThreadPool",
    "TickingClock",
    "Wcc",
    "WccReply",
    "WriteReply",
    "build_server",
    "decode_fattr3",
    "decode_post_op_attr",
    "decode_post_op_fh3",
    "decode_wcc_data",
    "encode_sattr3",
    "serve_exports",
    "synchronous_result",
]
