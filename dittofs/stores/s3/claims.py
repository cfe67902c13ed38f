"""Who serves an S3 prefix: a claim object per gateway, which the others see.

Gateways with ``durability=remote`` share a prefix: what they acknowledge is
in S3 and named by the block map before they answer.  A gateway with
``durability=local`` acknowledges data only its own cache holds, which no
other gateway can read, so it needs the prefix to itself: its claim is
*exclusive*, and it refuses to start beside any other gateway, as any other
refuses beside it.

    prefix/dittofs-gateways/<gateway id>  {"host": .., "pid": .., "cache_dir": .., "exclusive": ..}

The gateway id is kept in the cache directory, so a gateway restarted on its
own cache (after a crash, with its journal to upload) takes its own claim
back at once.  A claim is live while its object is younger than :data:`TTL`
seconds; the holder rewrites it every :data:`RENEW_EVERY` seconds from a
thread of its own and deletes it when it closes.

Taking a claim writes one's own object first and then lists the folder, so
two gateways starting together both see the other and both refuse: never
both serve.  Ages are compared on S3's clock alone (the other object's
``LastModified`` against one's own, just written), so gateways' clocks may
disagree.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

import attrs

from dittofs.stores.s3.objects import (
    ListedObject,
    ObjectStore,
    S3Failure,
    S3NotFound,
    S3Unavailable,
)
from dittofs.stores.s3.settings import S3Settings

#: Seconds after its last renewal that a claim stops counting (a gateway gone for good).
TTL = 30.0
#: Seconds between renewals.
RENEW_EVERY = 10.0


@attrs.frozen
class Holder:
    """Another gateway's live claim, as found in the bucket."""

    gateway: str
    description: str
    age: float


class PrefixInUse(Exception):
    """Another gateway holds the prefix, and one of the two needs it alone."""

    def __init__(self, settings: S3Settings, holder: Holder, ttl: float) -> None:
        super().__init__(
            f"s3://{settings.bucket}/{settings.prefix} is in use by another gateway "
            f"({holder.description}, seen {holder.age:.0f}s ago); with durability=local a "
            "gateway needs its prefix alone (what it acknowledges only its cache holds): use "
            f"durability=remote on every gateway, or stop the other and start again "
            f"{ttl:.0f}s after it stopped"
        )
        self.holder = holder


def live_others(
    listed: Iterable[ListedObject], folder: str, gateway: str, ttl: float
) -> list[tuple[str, float]]:
    """The other gateways whose claims are live, as (key, age), judged by S3's clock.

    *listed* must contain this gateway's own claim, just written: its
    ``LastModified`` is "now" on S3's clock.
    """
    claims = {item.key[len(folder) :]: item.modified for item in listed}
    now: datetime | None = claims.get(gateway)
    if now is None:
        return []  # S3 lists what it has stored; without our own write there is no "now"
    return [
        (folder + other, max(0.0, (now - modified).total_seconds()))
        for other, modified in sorted(claims.items())
        if other != gateway and (now - modified).total_seconds() < ttl
    ]


class Claim:
    """This gateway's claim on its prefix: taken at open, renewed, released at close."""

    def __init__(
        self,
        s3: ObjectStore,
        settings: S3Settings,
        gateway: str,
        report: Callable[[str, str], None],
        *,
        exclusive: bool = True,
        ttl: float = TTL,
        renew_every: float = RENEW_EVERY,
    ) -> None:
        self._s3 = s3
        self._settings = settings
        self.gateway = gateway
        self._report = report
        self.exclusive = exclusive
        self._ttl = ttl
        self._renew_every = renew_every
        self._folder = f"{settings.prefix}dittofs-gateways/"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: False while S3 could not be asked (an outage at open): taken when it answers.
        self.checked = False
        #: Other gateways already reported as serving this prefix too.
        self._reported: set[str] = set()

    @property
    def key(self) -> str:
        """This gateway's claim object."""
        return self._folder + self.gateway

    def _body(self) -> bytes:
        cache = self._settings.cache_dir
        return json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "cache_dir": str(cache),
                "exclusive": self.exclusive,
            }
        ).encode()

    def take(self) -> None:
        """Claim the prefix, or raise :class:`PrefixInUse` (blocking).

        :class:`~dittofs.stores.s3.objects.S3Unavailable` leaves the claim
        unchecked; the renewing thread takes it once S3 answers.
        """
        self._s3.put(self.key, self._body())
        for key, age in self._conflicts():
            self._s3.delete([self.key])
            raise PrefixInUse(self._settings, Holder(key, self._describe(key), age), self._ttl)
        self.checked = True

    def _conflicts(self) -> list[tuple[str, float]]:
        """Live claims of others that cannot share the prefix with this one."""
        others = live_others(self._s3.list(self._folder), self._folder, self.gateway, self._ttl)
        return [
            (key, age) for key, age in others if self.exclusive or self._body_of(key)["exclusive"]
        ]

    def _body_of(self, key: str) -> dict[str, object]:
        """A claim's record; one unreadable (or gone) counts as exclusive."""
        try:
            body = json.loads(self._s3.get(key))
        except (S3NotFound, ValueError):
            body = None
        if not isinstance(body, dict):
            return {"exclusive": True}
        return {"exclusive": True, **body}

    def _describe(self, key: str) -> str:
        body = self._body_of(key)
        if {"host", "pid", "cache_dir"} <= set(body):
            return f"host {body['host']}, pid {body['pid']}, cache {body['cache_dir']}"
        return f"gateway {key[len(self._folder) :]}"

    def start(self) -> None:
        """Renew the claim every ``renew_every`` seconds until :meth:`release`."""
        self._thread = threading.Thread(target=self._renew, name="dittofs-s3-claim", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        seen: set[str] = set()
        for _ in range(2**62):
            if self._stop.wait(self._renew_every):
                return
            try:
                if not self.checked:
                    self.take()
                    continue
                self._s3.put(self.key, self._body())
                seen = self._watch(seen)
            except PrefixInUse as error:
                self._report(
                    "critical",
                    f"{error}; this gateway, started while S3 was unreachable, serves it too",
                )
                return
            except (S3Unavailable, S3Failure):
                continue  # the store logs the outage; renewal resumes with S3

    def _watch(self, seen: set[str]) -> set[str]:
        """Report another gateway whose claim is live at two renewals running; return the live.

        Two gateways can both hold the prefix only after an outage longer than
        the TTL hid one's claim from the other's start.  A gateway that starts
        and refuses leaves its claim for a moment: seen once, it is no news.
        """
        live = {
            key
            for key, _ in live_others(
                self._s3.list(self._folder), self._folder, self.gateway, self._ttl
            )
        }
        for key in sorted(live & seen - self._reported):
            self._reported.add(key)
            self._report(
                "critical",
                f"another gateway ({self._describe(key)}) also serves "
                f"s3://{self._settings.bucket}/{self._settings.prefix}, and one of the two "
                "has durability=local: data one acknowledges the other cannot read; stop one",
            )
        return live

    def release(self) -> None:
        """Stop renewing and delete the claim, so another gateway may start at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.checked:
            with contextlib.suppress(S3Unavailable, S3Failure):  # else it expires after TTL
                self._s3.delete([self.key])
