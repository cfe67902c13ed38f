"""How soon a change through one host's cache reaches another's: ``python -m benchmarks.notices``.

Two metadata caches over one PostgreSQL schema or Redis prefix, each with a
change table of its own (as on two hosts), each following the store's change
feed.  Each of :data:`CHANGES` SETATTRs is answered through the first; the
time from its answer until the second's table moves is the delay a client
moving between gateways could see.  With ``--busy`` the measuring thread
spins instead of sleeping (the reactor thread, as a busy gateway's would), so
the listening thread must win Python's interpreter lock to deliver.

Needs the PostgreSQL (127.0.0.1:5432, database ``test``) and Redis
(127.0.0.1:6379) the tests use.  The stores run as in a gateway: calls on
their thread pools, notices on their listening threads.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from dittofs.model import NewNode, SetAttributes
from dittofs.stores.metadata.cache import CachedMetadataStore
from dittofs.stores.metadata.postgres import PostgresMetadataStore
from dittofs.stores.metadata.redis import RedisMetadataStore
from dittofs.vocabulary import FileType

POSTGRES = "host=127.0.0.1 port=5432 dbname=test user=postgres"
REDIS = "redis://127.0.0.1:6379/0"
CHANGES = 1000
#: Longest wait for one notice before the run is called failed (seconds).
GIVE_UP = 5.0


async def measure(reactor: Any, kind: str, busy: bool, where: str, tables: Path) -> list[float]:
    """The delays, in milliseconds, of :data:`CHANGES` changes on *kind* under *where*."""
    if kind == "postgresql":
        conninfo = f"{POSTGRES} options='-c search_path={where}'"
        stores: list[Any] = [PostgresMetadataStore(conninfo, reactor) for _ in range(2)]
    else:
        stores = [RedisMetadataStore(f"{REDIS}?prefix={where}", reactor) for _ in range(2)]
    here, there = (
        CachedMetadataStore(store, tables / f"host{n}.changes") for n, store in enumerate(stores)
    )
    for cache in (here, there):
        await cache.open()
    try:
        deadline = time.monotonic() + GIVE_UP
        while not (here.generations.live and there.generations.live):
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind}: the caches did not follow the feed")
            await deferLater(reactor, 0.01)
        root = (await here.root()).fileid
        new = NewNode(FileType.REG, 0o600, 0, 0)
        fileid = (await here.create(root, b"f", new)).node.fileid
        delays = []
        for n in range(CHANGES):
            before = there.generations.slot(fileid)
            await here.setattr(fileid, SetAttributes(mode=0o600 | n % 64), None)
            answered = time.perf_counter()
            while there.generations.slot(fileid) == before:
                if time.perf_counter() - answered > GIVE_UP:
                    raise SystemExit(f"{kind}: a notice took more than {GIVE_UP} s")
                if not busy:
                    await deferLater(reactor, 0.00005)
            delays.append((time.perf_counter() - answered) * 1000)
        return delays
    finally:
        for cache in (here, there):
            await cache.close()


def main() -> None:
    """Measure each store, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", action="store_true", help="spin while waiting, holding the GIL")
    arguments = parser.parse_args()

    async def both(reactor: Any) -> None:
        for kind in ("postgresql", "redis"):
            where = f"dittofs_notices_{secrets.token_hex(4)}"
            with tempfile.TemporaryDirectory() as tables:
                if kind == "postgresql":
                    with psycopg.connect(POSTGRES, autocommit=True) as connection:
                        connection.execute(f"CREATE SCHEMA {where}")
                try:
                    delays = sorted(
                        await measure(reactor, kind, arguments.busy, where, Path(tables))
                    )
                finally:
                    _drop(kind, where)
            print(
                f"{kind}: {CHANGES} changes; notice heard after the answer: median "
                f"{statistics.median(delays):.2f} ms, 99th percentile "
                f"{delays[int(CHANGES * 0.99) - 1]:.2f} ms, slowest {delays[-1]:.2f} ms"
                f"{' (reactor thread busy)' if arguments.busy else ''}"
            )

    task.react(lambda reactor: Deferred.fromCoroutine(both(reactor)))


def _drop(kind: str, where: str) -> None:
    """Remove the schema or the keys the run made."""
    if kind == "postgresql":
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {where} CASCADE")
        return
    client = redis.Redis.from_url(REDIS)
    try:
        keys = list(client.scan_iter(match=f"dittofs:{where}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


if __name__ == "__main__":
    main()
