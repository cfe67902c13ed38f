"""Writing whole reply records from a thread: bytes with ``writev``, file regions with ``sendfile``.

A large READ's data can stay in its file (a :class:`~dittofs.rpc.xdr.Region`)
until the kernel copies it to the socket, which saves reading it into a fresh
Python buffer and copying that again into the socket: the cost of every
1 MiB READ.  Reading the file may wait on the disk, so the writing runs in a
thread, never on the reactor.  The connection hands a :class:`RecordSender`
whole records and writes nothing itself until the sender is done
(:class:`~dittofs.rpc.protocol.RpcServerProtocol`), so records never
interleave; over TCP their order does not matter, since clients match
replies by XID.

The socket stays non-blocking, as Twisted keeps it.  When the kernel's
buffer is full, :meth:`RecordSender.send` returns and the connection waits
for room on the reactor, so a client that stops reading holds no thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dittofs.rpc.xdr import Part, Region

#: Parts one ``writev`` may gather, well under any system's IOV_MAX.
_GATHER = 512


def regions_of(records: Sequence[Sequence[Part]]) -> list[Region]:
    """The regions among *records*' parts."""
    return [part for record in records for part in record if not isinstance(part, bytes)]


class RecordSender:
    """Writes *records* whole to the non-blocking socket *fd*, as far as it takes them."""

    def __init__(self, fd: int, records: Sequence[Sequence[Part]]) -> None:
        self.fd = fd
        self._parts: list[Part] = [part for record in records for part in record if len(part)]
        self._next = 0  # the first part not wholly sent
        self._done = 0  # bytes of that part already sent

    def send(self) -> bool:
        """Write on until every record is sent (True) or the socket is full (False).

        Blocking only while the kernel reads a region's file.  Raises OSError
        when the socket fails (the client went away); a record may then be
        cut short, so the caller must drop the connection.  Each region is
        closed once sent.
        """
        parts = self._parts
        while self._next < len(parts):
            part = parts[self._next]
            try:
                if isinstance(part, bytes):
                    self._write(parts)
                else:
                    self._sendfile(part)
            except BlockingIOError:
                return False
        return True

    def close(self) -> None:
        """Give back the regions not sent (the connection is going away)."""
        for part in self._parts[self._next :]:
            if not isinstance(part, bytes):
                part.close()

    def _write(self, parts: list[Part]) -> None:
        """``writev`` the run of bytes parts that starts at the next part."""
        views: list[memoryview] = []
        for part in parts[self._next : self._next + _GATHER]:
            if not isinstance(part, bytes):
                break
            views.append(memoryview(part))
        views[0] = views[0][self._done :]
        sent = os.writev(self.fd, views)
        for view in views:
            if sent < len(view):
                self._done += sent
                return
            sent -= len(view)
            self._next += 1
            self._done = 0

    def _sendfile(self, region: Region) -> None:
        """``sendfile`` the rest of *region*; zeros for what its file no longer has."""
        length = len(region)
        while self._done < length:
            left = length - self._done
            sent = os.sendfile(self.fd, region.fileno(), region.offset + self._done, left)
            if sent == 0:  # the file ends early (cut meanwhile, or sparse past its content)
                self._parts[self._next] = bytes(left)  # sent next, as bytes
                self._done = 0
                region.close()
                return
            self._done += sent
        region.close()
        self._next += 1
        self._done = 0
