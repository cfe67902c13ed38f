"""Metadata stores for the benchmarks, each in a database space of its own, removed after."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from benchmarks.client import BenchError

STORES = ("memory", "sqlite", "postgresql", "redis")
POSTGRES = os.environ.get("DITTOFS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("DITTOFS_BENCH_REDIS", "redis://127.0.0.1:6379/0")


@contextlib.contextmanager
def metadata_spec(store: str, work: Path) -> Iterator[str]:
    """A ``--metadata`` value for *store*, with its database space made and removed."""
    name = f"dittofs_bench_{secrets.token_hex(4)}"
    if store in ("memory", "sqlite"):
        yield store
    elif store == "postgresql":
        try:
            import psycopg
        except ImportError:
            raise BenchError("--stores postgresql needs psycopg (pip install -e .[test])") from None
        try:
            with psycopg.connect(POSTGRES, autocommit=True, connect_timeout=10) as connection:
                connection.execute(f"CREATE SCHEMA {name}")
        except psycopg.Error as error:
            raise BenchError(f"PostgreSQL at {POSTGRES}: {error}") from None
        try:
            yield f"{POSTGRES}?options=-csearch_path%3D{name}"
        finally:
            with psycopg.connect(POSTGRES, autocommit=True, connect_timeout=10) as connection:
                connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    elif store == "redis":
        try:
            import redis
        except ImportError:
            raise BenchError("--stores redis needs redis-py (pip install -e .[test])") from None
        client = redis.Redis.from_url(REDIS, socket_timeout=10)
        try:
            client.ping()
        except redis.RedisError as error:
            raise BenchError(f"Redis at {REDIS}: {error}") from None
        try:
            yield f"{REDIS}?prefix={name}"
        finally:
            keys = list(client.scan_iter(match=f"dittofs:{name}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
            client.close()
    else:
        raise BenchError(f"unknown store {store!r} (choose from {', '.join(STORES)})")
