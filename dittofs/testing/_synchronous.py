"""Running Deferreds and thread pools without a reactor.

A store whose Deferreds fire before they are returned (the memory stores, or
a threaded store given :class:`SynchronousThreadPool` and
:class:`SynchronousReactorThreads`) can be driven from a
``SynchronousTestCase`` with :func:`synchronous_result`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from zope.interface import implementer


class NotSynchronousError(AssertionError):
    """A Deferred that the harness needed at once had not fired.

    The harness drives the server without a reactor, so every store it uses
    must fire its Deferreds before returning them (see :class:`SynchronousThreadPool`).
    """


def synchronous_result(deferred: Deferred[Any]) -> Any:
    """Return the result of an already-fired Deferred, or raise its exception.

    Raises :class:`NotSynchronousError` if it has not fired yet.
    """
    outcome: list[object] = []
    deferred.addBoth(outcome.append)
    if not outcome:
        raise NotSynchronousError(f"{deferred!r} has not fired; is a store waiting on a reactor?")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


class TickingClock:
    """A clock for stores under test: every reading is *step* ns later than the last.

    ``MemoryMetadataStore(clock=TickingClock())`` makes "the ctime changed"
    a strict, deterministic comparison rather than a race with the real clock.
    """

    def __init__(self, start: int | None = None, step: int = 1_000) -> None:
        self.now = time.time_ns() if start is None else start
        self.step = step

    def __call__(self) -> int:
        """Return the next time, in nanoseconds since the epoch."""
        self.now += self.step
        return self.now


class SynchronousThreadPool:
    """A stand-in for :class:`twisted.python.threadpool.ThreadPool` that runs work inline.

    Together with :class:`SynchronousReactorThreads`, ``deferToThreadPool``
    returns an already-fired Deferred, so a store that does blocking work in
    a pool can be tested with ``SynchronousTestCase`` (the idea of tahoe-lafs'
    synchronous ``cputhreadpool`` mode).  The constructor accepts (and
    ignores) ``ThreadPool``'s arguments so it can replace the class.
    """

    def __init__(self, minthreads: int = 0, maxthreads: int = 1, name: str | None = None) -> None:
        self.name = name
        self.started = False
        self.calls = 0

    def start(self) -> None:
        """Nothing to start; recorded for tests that check the store's lifecycle."""
        self.started = True

    def stop(self) -> None:
        """Nothing to stop."""
        self.started = False

    def callInThread(self, func: Callable[..., object], *args: Any, **kw: Any) -> None:
        """Run *func* now, in the calling thread."""
        self.calls += 1
        func(*args, **kw)

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object],
        func: Callable[..., object],
        *args: Any,
        **kw: Any,
    ) -> None:
        """Run *func* now and report its outcome the way ``ThreadPool`` does."""
        self.calls += 1
        try:
            result = func(*args, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


@implementer(IReactorFromThreads)
class SynchronousReactorThreads:
    """An ``IReactorFromThreads`` whose ``callFromThread`` calls at once."""

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call *callable* now: with :class:`SynchronousThreadPool` there is no other thread."""
        callable(*args, **kwargs)
