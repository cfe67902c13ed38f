"""Change feeds: how a store shared with other hosts tells every gateway what changed.

A store providing :class:`~dittofs.interfaces.IChangeFeed` commits each
change together with a *notice*: the writing process's origin and the keys
(file ids, :func:`~dittofs.stores.metadata.generations.entry_key` values) of
what it wrote.  This module holds what PostgreSQL and Redis share of it:

* :class:`Noting`, a namespace transaction that notes the keys it writes;
* :func:`notice` and :func:`keys_of`, the notice's text;
* :class:`Follower`, the thread that listens on the store's channel, hands
  every other process's notice on, and reconnects after a broken
  connection, saying when notices may have been missed;
* :class:`Feeding`, the store's side of :class:`~dittofs.interfaces.IChangeFeed`
  (its table, its follower, its origin), which leaves each store only the
  listening itself.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from dittofs import log as dittofs_log
from dittofs.stores.metadata.generations import entry_key, host_tables
from dittofs.stores.metadata.namespace import Namespace, Transaction

log = Logger(observer=dittofs_log.observer)

#: How often (seconds) a listening thread looks whether it is to stop.
POLL = 0.5
#: Waits between attempts to listen again after the channel broke (seconds).
MIN_RETRY = 0.1
MAX_RETRY = 5.0

#: A notice's longest text; PostgreSQL refuses payloads of 8,000 bytes or more.
#: A change writes a handful of keys; one that wrote more says "every key".
MAX_NOTICE = 7000
EVERYTHING = "*"


def new_origin() -> str:
    """A process's name in its notices, so that it does not hear its own."""
    return secrets.token_hex(8)


class Noting:
    """A namespace :class:`~dittofs.stores.metadata.namespace.Transaction` noting what it writes.

    Every primitive passes to *transaction*; ``keys`` collects the file ids
    of inodes written or deleted and the entry keys of entries added or
    dropped, which is everything a metadata cache may keep of them.
    """

    def __init__(self, transaction: Transaction) -> None:
        self.transaction = transaction
        self.keys: set[int] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transaction, name)

    def write(self, fileid: int, **fields: int) -> None:
        self.keys.add(fileid)
        self.transaction.write(fileid, **fields)

    def add_entry(self, directory: int, name: bytes, fileid: int) -> None:
        self.keys.add(entry_key(directory, name))
        self.transaction.add_entry(directory, name, fileid)

    def drop_entry(self, directory: int, name: bytes) -> None:
        self.keys.add(entry_key(directory, name))
        self.transaction.drop_entry(directory, name)

    def delete(self, fileid: int) -> None:
        self.keys.add(fileid)
        self.transaction.delete(fileid)


def notice(origin: str, keys: set[int]) -> str:
    """The text that tells other processes *origin* changed *keys*."""
    text = " ".join([origin, *map(str, keys)])
    return text if len(text) <= MAX_NOTICE else f"{origin} {EVERYTHING}"


def keys_of(text: str, origin: str) -> list[int] | None:
    """The keys a notice names; [] if it is *origin*'s own; None if it names every key."""
    sender, _, rest = text.partition(" ")
    if sender == origin:
        return []
    if rest == EVERYTHING:
        return None
    return [int(key) for key in rest.split()]


#: Opens the channel, listens, then yields each notice's text as it comes, and
#: None once listening has begun and again every :data:`POLL` seconds of quiet;
#: raises when the connection breaks.  Closing it closes the connection.
Listen = Callable[[], Generator[str | None]]


class Follower:
    """The thread that follows one store's channel for one listener.

    *changed* gets each other process's keys (None: every key), *following*
    True once the channel is heard and False when it broke; both are called
    on this thread, and neither once it has seen :meth:`stop`.
    """

    def __init__(
        self,
        name: str,
        listen: Listen,
        origin: str,
        *,
        changed: Callable[[list[int] | None], None],
        following: Callable[[bool], None],
    ) -> None:
        self._listen = listen
        self._origin = origin
        self._changed = changed
        self._following = following
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start listening (in the background: :meth:`IChangeFeed.follow` does not wait)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: the thread closes its connection within :data:`POLL` seconds.

        Nothing waits for it (a join would hold the reactor); it calls
        nothing after it has seen the stop.
        """
        self._stopping.set()

    def _run(self) -> None:
        retry = MIN_RETRY
        while not self._stopping.is_set():
            heard = False
            messages = self._listen()
            try:
                for text in messages:
                    if self._stopping.is_set():
                        return
                    if not heard:
                        heard = True
                        retry = MIN_RETRY
                        self._following(True)
                    if text is not None:
                        keys = keys_of(text, self._origin)
                        if keys is None or keys:
                            self._changed(keys)
            except Exception as error:  # any broken channel is listened to again
                if not self._stopping.is_set():
                    log.warn("change feed: {error}; listening again", error=error)
            finally:
                if heard and not self._stopping.is_set():
                    self._following(False)
                with contextlib.suppress(Exception):  # a broken connection may fail to close
                    messages.close()
            self._stopping.wait(retry)
            retry = min(retry * 2, MAX_RETRY)


class Feeding:
    """What the PostgreSQL and Redis stores share of :class:`~dittofs.interfaces.IChangeFeed`.

    A store mixes it in, has a ``name`` and a ``_namespace`` (whose
    generation names the filesystem), sends its notices under ``_origin``
    (set to :func:`new_origin` until :meth:`follow` names the table), and
    supplies ``_listen``; its ``close`` calls :meth:`_stop_following`.
    """

    name: str
    _namespace: Namespace
    _origin: str
    _follower: Follower | None = None

    def change_table(self) -> Path:
        """See :meth:`IChangeFeed.change_table`: one per filesystem (its generation) and user."""
        return host_tables() / f"{self.name}-{self._namespace.generation}.changes"

    def follow(
        self,
        changed: Callable[[list[int] | None], None],
        following: Callable[[bool], None],
        origin: str,
    ) -> None:
        """See :meth:`IChangeFeed.follow`: on a connection and a thread of its own."""
        self._origin = origin
        self._follower = Follower(
            f"dittofs-{self.name}-feed",
            self._listen,
            origin,
            changed=changed,
            following=following,
        )
        self._follower.start()

    def _stop_following(self) -> None:
        if self._follower is not None:
            self._follower.stop()

    def _listen(self) -> Generator[str | None]:
        """The store's :data:`Listen`."""
        raise NotImplementedError
