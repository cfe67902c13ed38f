"""The duplicate-request cache: retransmitted non-idempotent calls get the first reply."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dittofs.nfs3.const import NFS_PROGRAM, Proc
from dittofs.rpc.message import AuthFlavor, CallHeader, Credentials
from dittofs.rpc.replay import ReplayCache, call_key
from dittofs.rpc.xdr import XdrWriter
from dittofs.testing import build_server
from dittofs.vocabulary import Status

ROOT = Credentials(AuthFlavor.AUTH_SYS, 0, 0)


def header(xid: int, credentials: Credentials = ROOT) -> CallHeader:
    return CallHeader(xid, NFS_PROGRAM, 3, Proc.REMOVE, credentials, 0)


def remove_call(xid: int, directory: bytes, name: bytes) -> bytes:
    """A REMOVE call record built field by field (AUTH_SYS uid 0, machine 'x')."""
    writer = XdrWriter()
    for value in (xid, 0, 2, NFS_PROGRAM, 3, Proc.REMOVE, AuthFlavor.AUTH_SYS):
        writer.uint(value)
    credential = XdrWriter()
    for value in (0,):
        credential.uint(value)
    credential.string(b"x")
    for value in (0, 0, 0):
        credential.uint(value)
    writer.opaque(credential.getvalue())
    writer.uint(AuthFlavor.AUTH_NONE)
    writer.opaque(b"")
    writer.opaque(directory)
    writer.string(name)
    return writer.getvalue()


class RetransmissionTests(SynchronousTestCase):
    """Through the real dispatcher and NFS program."""

    def test_remove_sent_twice_gets_two_identical_ok_replies(self) -> None:
        """A retransmitted REMOVE is answered from the cache: OK both times, not OK then NOENT."""
        server = build_server()
        self.addCleanup(server.close)
        client = server.client(0, 0)
        root = client.mnt(b"/export")
        client.write_file(root, b"victim", b"data")
        record = remove_call(4242, root, b"victim")
        first = b"".join(self.successResultOf(server.dispatcher.dispatch(record, "127.0.0.1", 700)))
        second = b"".join(
            self.successResultOf(server.dispatcher.dispatch(record, "127.0.0.1", 700))
        )
        self.assertEqual(first, second)
        self.assertEqual(int.from_bytes(first[24:28], "big"), Status.OK)
        self.assertEqual(server.dispatcher.replay_cache.replayed, 1)
        # A new XID is a new call: now the file really is gone.
        third = b"".join(
            self.successResultOf(
                server.dispatcher.dispatch(remove_call(4243, root, b"victim"), "127.0.0.1", 700)
            )
        )
        self.assertEqual(int.from_bytes(third[24:28], "big"), Status.NOENT)

    def test_idempotent_calls_are_not_cached(self) -> None:
        """Reads run every time: only the procedures that change the namespace are kept."""
        server = build_server()
        self.addCleanup(server.close)
        client = server.client(0, 0)
        root = client.mnt(b"/export")
        client.getattr(root).expect_ok()
        client.getattr(root).expect_ok()
        self.assertEqual(len(server.dispatcher.replay_cache), 0)


class ReplayCacheTests(SynchronousTestCase):
    """The cache alone: in-flight waiters, expiry and its bound."""

    def test_retransmission_while_running_waits_for_the_first(self) -> None:
        """A copy that arrives before the first finished gets its reply, and nothing runs twice."""
        cache = ReplayCache()
        key = call_key("h", 1, header(7), b"args")
        running: Deferred[list[bytes]] = Deferred()
        self.assertIsNone(cache.replay(key))
        cache.running(key, running)
        waiter = cache.replay(key)
        assert waiter is not None
        self.assertNoResult(waiter)
        running.callback([b"reply"])
        self.assertEqual(self.successResultOf(waiter), [b"reply"])
        self.assertEqual(self.successResultOf(running), [b"reply"])

    def test_key_separates_clients_credentials_and_arguments(self) -> None:
        """Same XID from another port, user or with other arguments is another call."""
        base = call_key("h", 1, header(7), b"args")
        self.assertNotEqual(base, call_key("h", 2, header(7), b"args"))
        self.assertNotEqual(base, call_key("g", 1, header(7), b"args"))
        self.assertNotEqual(
            base, call_key("h", 1, header(7, Credentials(AuthFlavor.AUTH_SYS, 5, 5)), b"args")
        )
        self.assertNotEqual(base, call_key("h", 1, header(7), b"other"))
        self.assertEqual(base, call_key("h", 1, header(7), b"args"))

    def test_entries_expire(self) -> None:
        """After the window a repeated XID is a new call (clients have long given up by then)."""
        clock = Clock()
        cache = ReplayCache(window=120, clock=clock.seconds)
        key = call_key("h", 1, header(7), b"a")
        done: Deferred[list[bytes]] = Deferred()
        cache.running(key, done)
        done.callback([b"r"])
        clock.advance(119)
        self.assertIsNotNone(cache.replay(key))
        clock.advance(2)
        self.assertIsNone(cache.replay(key))

    def test_bounded(self) -> None:
        """However many calls arrive, the cache keeps at most its capacity, newest first."""
        cache = ReplayCache(capacity=100)
        for xid in range(1000):
            done: Deferred[list[bytes]] = Deferred()
            cache.running(call_key("h", 1, header(xid), b""), done)
            done.callback([b"r"])
        self.assertEqual(len(cache), 100)
        self.assertIsNone(cache.replay(call_key("h", 1, header(0), b"")))
        self.assertIsNotNone(cache.replay(call_key("h", 1, header(999), b"")))

    def test_failure_is_not_kept(self) -> None:
        """A call that failed outright is forgotten, so its retransmission runs again."""
        cache = ReplayCache()
        key = call_key("h", 1, header(7), b"a")
        failed: Deferred[list[bytes]] = Deferred()
        cache.running(key, failed)
        failed.errback(RuntimeError("boom"))
        self.failureResultOf(failed, RuntimeError)
        self.assertIsNone(cache.replay(key))
