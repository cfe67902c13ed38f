"""PostgreSQL going away and coming back: clients hear JUKEBOX (retry later), never IO.

The store talks to the real local PostgreSQL through a loopback TCP proxy
that the test can cut (closing every connection and refusing new ones) and
restore, which is what a database restart or a network partition looks like
from the gateway.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from dittofs.errors import NFSError
from dittofs.nfs3.const import Status
from dittofs.stores import sql_metadata
from tests.unit import backends


class CuttableProxy:
    """Forward 127.0.0.1:<port> to PostgreSQL until cut; restore to listen again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        assert self._listener is not None
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()


class PostgresOutageTests(SynchronousTestCase):
    """A gateway rides out a database outage without answering NFS3ERR_IO."""

    def setUp(self) -> None:
        super().setUp()
        self.proxy = CuttableProxy(("127.0.0.1", 5432))
        self.proxy.start()
        self.addCleanup(self.proxy.cut)
        self.store = backends.postgres_store(self, host=f"127.0.0.1 port={self.proxy.port}")
        self.successResultOf(self.store.open())
        self.addCleanup(self.store.close)
        self.root = self.successResultOf(self.store.root())

    def assertJukebox(self) -> None:
        failure = self.failureResultOf(self.store.getattr(self.root.fileid), NFSError)
        self.assertEqual(failure.value.status, Status.JUKEBOX)

    def test_outage_is_jukebox_then_recovers(self) -> None:
        """While the database is unreachable calls get JUKEBOX; once it is back they work again."""
        self.proxy.cut()
        self.assertJukebox()
        # Within the back-off the store does not even try the database.
        self.assertJukebox()
        self.flushLoggedErrors()
        self.proxy.start()
        time.sleep(sql_metadata.MIN_BACKOFF * 2)
        attributes = self.successResultOf(self.store.getattr(self.root.fileid))
        self.assertEqual(attributes.fileid, self.root.fileid)

    def test_backoff_grows_and_is_bounded(self) -> None:
        """Failures double the back-off up to a maximum, so a dead database is not hammered."""
        self.proxy.cut()
        backoffs = []
        for _ in range(8):
            self.store._retry_at = 0.0  # let each call reach the (unreachable) database
            self.assertJukebox()
            backoffs.append(self.store._backoff)
        self.flushLoggedErrors()
        self.assertEqual(backoffs[:3], [0.1, 0.2, 0.4])
        self.assertEqual(backoffs[-1], sql_metadata.MAX_BACKOFF)
