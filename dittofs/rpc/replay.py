"""The duplicate-request cache: a retransmitted non-idempotent call gets the first reply.

NFS clients retransmit a call when its reply is late (a slow store, a lost
connection).  Running a REMOVE or a GUARDED CREATE twice would answer the
retransmission NOENT or EXIST although the operation succeeded, so replies
to such calls are kept for a while, keyed by everything that identifies the
call: client address and port, XID, program, version, procedure, and a
digest of the credential and the arguments.  A retransmission that arrives
while the first call is still running waits for the same outcome instead of
running it again.

The cache is bounded in entries and in age, so it cannot grow with traffic.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred, succeed

from dittofs.rpc.message import CallHeader
from dittofs.rpc.xdr import Part

Parts = list[Part]
CallKey = tuple[str, int, int, int, int, int, bytes]

DEFAULT_CAPACITY = 8192
#: Seconds a reply stays replayable: longer than any client's retransmission schedule.
DEFAULT_WINDOW = 120.0


def call_key(host: str, port: int, header: CallHeader, arguments: bytes | memoryview) -> CallKey:
    """The identity of a call: who sent it from where (as knfsd, the port included), its
    XID and procedure, and a 16-byte digest of its credential and arguments."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(header.credentials).encode())
    digest.update(arguments)
    return (
        host,
        port,
        header.xid,
        header.program,
        header.version,
        header.procedure,
        digest.digest(),
    )


@attrs.define
class _Entry:
    created: float
    reply: Parts | None = None
    waiting: list[Deferred[Parts]] = attrs.field(factory=list)


class ReplayCache:
    """Remembers replies of non-idempotent calls for :data:`DEFAULT_WINDOW` seconds."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        window: float = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.window = window
        self._clock = clock
        self._entries: OrderedDict[CallKey, _Entry] = OrderedDict()
        self.replayed = 0

    def __len__(self) -> int:
        return len(self._entries)

    def replay(self, key: CallKey) -> Deferred[Parts] | None:
        """The reply to a call seen before (possibly still running), or None for a new call."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry.created > self.window:
            del self._entries[key]
            return None
        self.replayed += 1
        if entry.reply is not None:
            return succeed(list(entry.reply))
        waiter: Deferred[Parts] = Deferred()
        entry.waiting.append(waiter)
        return waiter

    def running(self, key: CallKey, outcome: Deferred[Parts]) -> None:
        """Note a new call; its reply is kept once *outcome* fires (a failure is not kept)."""
        self._expire()
        entry = _Entry(self._clock())
        self._entries[key] = entry
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

        def keep(reply: Parts) -> Parts:
            entry.reply = reply
            for waiter in entry.waiting:
                waiter.callback(list(reply))
            entry.waiting.clear()
            return reply

        def forget(reason: object) -> object:
            if self._entries.get(key) is entry:
                del self._entries[key]
            for waiter in entry.waiting:
                waiter.errback(reason)  # type: ignore[arg-type]
            entry.waiting.clear()
            return reason

        outcome.addCallbacks(keep, forget)

    def _expire(self) -> None:
        limit = self._clock() - self.window
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.created >= limit:
                break
            del self._entries[key]
