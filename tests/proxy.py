"""A loopback TCP relay whose link a test can cut and restore, to play a service outage.

A store is pointed at the relay instead of the service (PostgreSQL, S3);
:meth:`CuttableProxy.cut` closes the listening socket and every relayed
connection, so new connections are refused as from a dead host, and
:meth:`CuttableProxy.restore` listens again on the same port, as a restarted
service or a healed partition looks from the gateway.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.e2e.server import free_port


class CuttableProxy:
    """Relays 127.0.0.1:<port> to 127.0.0.1:<target_port> while not cut (listening at once)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def endpoint(self) -> str:
        """The relay as an http URL (for an S3 endpoint)."""
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        """Listen (again) and relay each connection to the target."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones (cutting twice is fine)."""
        with self._lock:
            listener, self._listener = self._listener, None
            doomed, self._sockets = self._sockets, []
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(100_000):
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), 5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for _ in range(10_000_000):
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
