"""SQLite transactions committed in groups, on the store's one connection and thread.

SQLite allows one writer, so the SQLite store runs every transaction on one
connection in one pool thread.  Committed one by one, each change pays for
its own ``BEGIN IMMEDIATE`` and its own commit, which appends every page it
touched to the write-ahead log: sixteen creates in one directory append that
directory's pages sixteen times.

:class:`GroupCommits` offers ``adbapi.ConnectionPool``'s ``runInteraction``
and ``close``.  Interactions that arrive while the thread is busy wait in a
queue, and the thread then runs all that wait (up to :data:`MAX_GROUP`) in
one database transaction, each inside a savepoint of its own:

* an interaction that raises is rolled back to its savepoint, and fails
  alone; the others of its group are unaffected;
* none of the group is answered before the commit: an answer never tells a
  client of a change a crash could still undo;
* a commit that fails fails every interaction of its transaction.

An interaction runs as it would alone: a change still begins the transaction
as the writer (``BEGIN IMMEDIATE``) before it reads anything, unless the
group's transaction already began; a read that comes before any change of
its group runs on its own, outside a transaction, as it would alone.  Under
a synchronous thread pool (tests) every interaction is a group of one.
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python import threadpool
from twisted.python.failure import Failure

#: Interactions one transaction takes at most (one connection's calls in flight are 64).
MAX_GROUP = 64

#: What a queued interaction is: the function, its arguments, and the Deferred to fire.
_Call = tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]


class GroupCommits:
    """One SQLite connection in one thread, committing the interactions queued together."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        reactor: Any = None,
        name: str = "dittofs-sqlite",
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._connect = connect
        self._connection: sqlite3.Connection | None = None
        self._queue: collections.deque[_Call] = collections.deque()
        self._pool = threadpool.ThreadPool(minthreads=0, maxthreads=1, name=name)
        self._pool.start()
        self._shutdown = reactor.addSystemEventTrigger("during", "shutdown", self._stop)
        #: How many transactions committed, and how many interactions they held (for tests).
        self.commits = self.committed = 0

    def runInteraction(self, interaction: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run ``interaction(cursor, *args)`` in a transaction; fire with what it returned."""
        answer: Deferred[Any] = Deferred()
        self._queue.append((interaction, args, answer))
        self._pool.callInThread(self._run_queued)
        return answer

    def close(self) -> None:
        """Finish what is queued, then close the connection."""
        self._reactor.removeSystemEventTrigger(self._shutdown)
        self._stop()

    def _stop(self) -> None:
        self._pool.stop()
        self._discard()

    # -- in the pool's thread ----------------------------------------------------------

    def _run_queued(self) -> None:
        """Run the interactions queued now (those an earlier call took are gone) as one group."""
        group: list[_Call] = []
        while self._queue and len(group) < MAX_GROUP:
            group.append(self._queue.popleft())
        if not group:
            return
        try:
            if self._connection is None:
                self._connection = self._connect()
            outcomes = self._run_group(self._connection, group)
        except Exception:
            # The database cannot be opened (or the connection broke outside any one
            # interaction): the whole group fails, and the next one opens it again.
            outcomes = [Failure()] * len(group)
            self._discard()
        self._reactor.callFromThread(_deliver, group, outcomes)

    def _discard(self) -> None:
        """Close the connection after an error outside any interaction."""
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None

    def _run_group(self, connection: sqlite3.Connection, group: list[_Call]) -> list[Any]:
        """Each interaction's result or Failure, once the group's transaction ended."""
        outcomes: list[Any] = []
        #: The outcomes of the interactions inside the open transaction start here.
        first_in_transaction: int | None = None
        cursor = connection.cursor()
        for interaction, args, _ in group:
            nested = connection.in_transaction
            if nested:
                cursor.execute("SAVEPOINT dittofs_call")
            try:
                outcomes.append(interaction(cursor, *args))
                if nested:
                    cursor.execute("RELEASE SAVEPOINT dittofs_call")
            except Exception:
                outcomes.append(Failure())
                try:
                    if nested:
                        cursor.execute("ROLLBACK TO SAVEPOINT dittofs_call")
                        cursor.execute("RELEASE SAVEPOINT dittofs_call")
                    else:
                        connection.rollback()
                except sqlite3.Error:
                    # SQLite lost the transaction (a full disk, an I/O error): all of it
                    # fails, for the reason this interaction met.
                    _abandon(connection, outcomes, first_in_transaction, outcomes[-1])
                    first_in_transaction = None
                    continue
            if first_in_transaction is None and connection.in_transaction:
                first_in_transaction = len(outcomes) - 1
        if first_in_transaction is not None:
            try:
                connection.commit()
                self.commits += 1
                self.committed += len(outcomes) - first_in_transaction
            except sqlite3.Error:
                _abandon(connection, outcomes, first_in_transaction, Failure())
        cursor.close()
        return outcomes


def _abandon(
    connection: sqlite3.Connection, outcomes: list[Any], start: int | None, failure: Failure
) -> None:
    """Roll the transaction back; every outcome in it (from *start* on) is *failure*."""
    connection.rollback()
    if start is not None:
        for index in range(start, len(outcomes)):
            outcomes[index] = failure


def _deliver(group: list[_Call], outcomes: list[Any]) -> None:
    """Fire each interaction's Deferred with its outcome (in the reactor's thread)."""
    for (_, _, answer), outcome in zip(group, outcomes, strict=True):
        if isinstance(outcome, Failure):
            answer.errback(outcome)
        else:
            answer.callback(outcome)
