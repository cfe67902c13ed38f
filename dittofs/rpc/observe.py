"""What the RPC layer tells the observers it is given: connections, and each call's start and end.

Metrics and tracing are observers (:mod:`dittofs.metrics`,
:mod:`dittofs.tracing`); the RPC layer knows neither.  The connection
factory reports connections opened, closed and refused; the dispatcher
reports every call it answers when the call starts and once more, with its
:class:`Outcome`, when the reply is ready.  A retransmission answered from the
replay cache is not a new call and is not reported.

:meth:`RpcObserver.call_started` runs inside a context of the call's own, in
which the procedure then starts: context variables an observer sets there (a
current tracing span) are seen by the code the call runs, through every later
step of its coroutine, and by nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

import attrs

from dittofs.rpc.message import AcceptStat, RejectStat


@attrs.frozen
class Call:
    """A call as it starts.

    ``program``, ``version`` and ``procedure`` are the numbers the header
    asks for, ``None`` when the header itself was refused (an RPC version
    other than 2, credentials not accepted, a header cut short).  The names
    are those of the program and procedure that serve the call, ``None`` when
    nothing here serves it.
    """

    xid: int
    client_host: str
    client_port: int
    program: int | None = None
    version: int | None = None
    procedure: int | None = None
    program_name: str | None = None
    procedure_name: str | None = None


@attrs.frozen
class Outcome:
    """How a call ended: the reply's RPC status and, for results that start with one, its status.

    ``stat`` is a :class:`RejectStat` for a denied call, otherwise the
    :class:`AcceptStat`.  ``status`` is the first word of a successful
    call's results, as the member of the procedure's status enumeration
    (an ``nfsstat3``, a ``mountstat3``), for procedures that declare one.
    """

    stat: AcceptStat | RejectStat
    #: From the call's arrival at the dispatcher to its reply being ready.
    seconds: float
    status: enum.IntEnum | None = None


class RpcObserver(Protocol):
    """Something told about connections and calls: metrics, tracing."""

    def connection_opened(self, client_host: str) -> None:
        """A client connected."""

    def connection_closed(self, client_host: str) -> None:
        """A connection that was opened has closed."""

    def connection_refused(self, client_host: str, reason: str) -> None:
        """A connection was refused by a limit; *reason* names the limit."""

    def call_started(self, call: Call) -> Callable[[Outcome], None]:
        """A call starts; return what to call, exactly once, with its outcome."""
