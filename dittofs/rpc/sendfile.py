"""Writing whole reply records from a thread: bytes with ``writev``, file regions with ``sendfile``.

A large READ's data can stay in its file (a :class:`~dittofs.rpc.xdr.Region`)
until the kernel copies it to the socket, which saves reading it into a fresh
Python buffer and copying that again into the socket: the cost of every
1 MiB READ.  Reading the file may wait on the disk, so this runs in a
thread, never on the reactor.  The connection hands a thread whole records
and writes nothing itself until the thread is done
(:class:`~dittofs.rpc.protocol.RpcServerProtocol`), so records never
interleave; over TCP their order does not matter, since clients match
replies by XID.

The socket stays non-blocking, as Twisted keeps it: when the kernel's
buffer is full the thread waits for room with ``poll``, up to a deadline, so
a client that stops reading cannot hold a thread for ever.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence

from dittofs.rpc.xdr import Part, Region

#: How long a client may leave a reply unread before its connection is given up.
SEND_TIMEOUT = 120.0


def regions_of(records: Sequence[Sequence[Part]]) -> list[Region]:
    """The regions among *records*' parts."""
    return [part for record in records for part in record if not isinstance(part, bytes)]


def send_records(fd: int, records: Sequence[Sequence[Part]], timeout: float = SEND_TIMEOUT) -> None:
    """Write *records* whole to the socket *fd*, then close their regions.

    Raises OSError when the socket fails (the client went away) and
    TimeoutError when it takes nothing for *timeout* seconds; a record may
    then be cut short, so the caller must drop the connection.  The regions
    are closed whatever happens.
    """
    try:
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(fd, select.POLLOUT)

        def wait() -> None:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError(f"the client read no reply for {timeout:g} s")

        pending: list[bytes] = []
        for record in records:
            for part in record:
                if isinstance(part, bytes):
                    pending.append(part)
                else:
                    _write(fd, pending, wait)
                    pending = []
                    _send_region(fd, part, wait)
        _write(fd, pending, wait)
    finally:
        for region in regions_of(records):
            region.close()


def _write(fd: int, parts: list[bytes], wait: Callable[[], None]) -> None:
    views = [memoryview(part) for part in parts if part]
    while views:
        try:
            sent = os.writev(fd, views[:512])  # well under any IOV_MAX
        except BlockingIOError:
            wait()
            continue
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]


def _send_region(fd: int, region: Region, wait: Callable[[], None]) -> None:
    offset, left = region.offset, len(region)
    while left:
        try:
            sent = os.sendfile(fd, region.fileno(), offset, left)
        except BlockingIOError:
            wait()
            continue
        if sent == 0:  # the file ends early (cut meanwhile, or sparse past its content)
            break
        offset += sent
        left -= sent
    if left:
        _write(fd, [bytes(left)], wait)
