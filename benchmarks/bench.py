"""DittoFS against nfs-ganesha on loopback: ``python benchmarks/run [--quick] [--rounds N] ...``.

Both servers run at once on 127.0.0.1 and over the same disk: DittoFS with
memory metadata (``--metadata`` picks another) and fs content, ganesha with
its VFS FSAL.  Each workload is run on one, then the other, in an order that
flips every round; the table
gives each server's median over the rounds, the ratio of the medians and the
spread.  Every figure is a rate (MiB/s, files/s, ops/s), so the ratio
DittoFS/ganesha is > 1 exactly when DittoFS was faster.

The client is ``nfsbench`` (``benchmarks/nfsbench.c``, libnfs's raw async
API), an unprivileged AUTH_SYS user (uid/gid 1000 unless ``--uid``/``--gid``),
so neither server's root squashing comes into play.

``--stores memory,sqlite,postgresql,redis`` instead compares DittoFS's
metadata stores (with fs content) on the metadata workload.

``--gateways N`` instead measures S3 gateways sharing one prefix, one to N
of them (:mod:`benchmarks.gateways`).

``--soak SECONDS`` instead runs every workload on DittoFS alone, cycle after
cycle for that long, and reports whether its memory stayed flat
(:mod:`benchmarks.soak`).

Exit status 0 on success; 1 when anything failed (a server did not start or
died, logged a traceback, a client call failed or returned wrong data), with
the servers' log tails on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.client import BenchError, Client, build
from benchmarks.gateways import BASELINE, Bench, run_gateways
from benchmarks.profile import pyspy, summarise
from benchmarks.servers import DittoServer, GaneshaServer
from benchmarks.soak import report, soak, verdict
from benchmarks.stores import STORES, metadata_spec
from benchmarks.tables import markdown_table

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

WORKLOADS = ("seq-write", "seq-read", "rand-read", "rand-write", "meta", "conns")
#: How much DittoFS's RSS may grow over the 1 GiB write+read and still count as flat.
RSS_TOLERANCE = 0.10


@dataclass(frozen=True)
class Sizes:
    """How big each workload is, and how many rounds."""

    name: str
    seq_bytes: int
    seq_block: int
    seq_depth: int
    rand_file: int
    rand_ops: int
    rand_io: int
    rand_depth: int
    files: int
    file_size: int
    meta_depth: int
    clients: int
    client_ops: int
    client_io: int
    client_depth: int
    rounds: int
    client_timeout: float


FULL = Sizes(
    name="full",
    seq_bytes=1 * GiB, seq_block=1 * MiB, seq_depth=8,
    rand_file=256 * MiB, rand_ops=20_000, rand_io=4 * KiB, rand_depth=32,
    files=10_000, file_size=4 * KiB, meta_depth=16,
    clients=32, client_ops=500, client_io=4 * KiB, client_depth=2,
    rounds=5, client_timeout=900,
)  # fmt: skip
QUICK = Sizes(
    name="quick",
    seq_bytes=16 * MiB, seq_block=1 * MiB, seq_depth=8,
    rand_file=16 * MiB, rand_ops=2_000, rand_io=4 * KiB, rand_depth=32,
    files=500, file_size=4 * KiB, meta_depth=16,
    clients=32, client_ops=50, client_io=4 * KiB, client_depth=2,
    rounds=1, client_timeout=90,
)  # fmt: skip


def _size(count: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} B"


@dataclass
class Metric:
    """One row of the table: a rate measured once per round on each server."""

    label: str
    unit: str
    values: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, server: str, value: float, cpu: float | None) -> None:
        """Record one round's rate for *server*, and the CPU cores it kept busy meanwhile."""
        self.values.setdefault(server, []).append(value)
        if cpu is not None:
            self.cpu.setdefault(server, []).append(cpu)


class Results:
    """The metrics, in table order, as they are measured."""

    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}

    def add(
        self, key: str, label: str, unit: str, server: str, value: float, *, cpu: float | None
    ) -> None:
        """Record *value* (and the server's CPU use) for *server* under the row *key*."""
        self.metrics.setdefault(key, Metric(label, unit)).add(server, value, cpu)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _spread(values: Sequence[float]) -> str:
    return f"{_number(min(values))}-{_number(max(values))}"


def comparison_table(results: Results, first: str, second: str) -> str:
    """The main table: medians, ratio of medians (first/second) and min-max spreads."""
    rows = []
    for metric in results.metrics.values():
        ours, theirs = metric.values.get(first, []), metric.values.get(second, [])
        if not ours or not theirs:
            continue
        a, b = statistics.median(ours), statistics.median(theirs)
        rows.append(
            [
                metric.label,
                metric.unit,
                _number(a),
                _number(b),
                f"{a / b:.2f}x" if b else "n/a",
                f"{_spread(ours)} / {_spread(theirs)}",
                " / ".join(
                    f"{statistics.median(metric.cpu[name]):.2f}" if metric.cpu.get(name) else "?"
                    for name in (first, second)
                ),
            ]
        )
    header = [
        "workload",
        "unit",
        f"{first} median",
        f"{second} median",
        f"ratio {first}/{second}",
        f"spread min-max ({first} / {second})",
        "CPU cores busy",
    ]
    return markdown_table(header, rows)


# -- the comparison --------------------------------------------------------------------


@dataclass
class Comparison:
    """Runs the selected workloads on DittoFS and ganesha, alternating, round after round."""

    client: Client
    sizes: Sizes
    only: frozenset[str]
    ditto: DittoServer
    ganesha: GaneshaServer
    results: Results = field(default_factory=Results)
    rss: dict[str, int] = field(default_factory=dict)
    rss_rounds: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _rand_ready: set[str] = field(default_factory=set)

    def run(self) -> None:
        """Every round, every selected workload, both servers."""
        servers: list[Any] = [self.ditto, self.ganesha]
        for number in range(self.sizes.rounds):
            order = servers if number % 2 == 0 else servers[::-1]
            started = time.monotonic()
            if self.only & {"seq-write", "seq-read"}:
                self._sequential(order, number)
            if self.only & {"rand-read", "rand-write"}:
                for server in order:
                    self._random(server)
            if "meta" in self.only:
                for server in order:
                    self._meta(server, f"meta-{number}")
            if "conns" in self.only:
                for server in order:
                    self._conns(server)
            for server in servers:
                server.check()
            print(
                f"  round {number + 1}/{self.sizes.rounds} done in "
                f"{time.monotonic() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    def _measure(self, server: Any, *arguments: object) -> dict[str, Any]:
        """Run one workload; add the CPU cores the server kept busy meanwhile to its result."""
        cpu = server.cpu_seconds()
        started = time.monotonic()
        result = self.client.run(server, *arguments)
        result["cpu_cores"] = (server.cpu_seconds() - cpu) / (time.monotonic() - started)
        return result

    def _record(
        self, key: str, label: str, unit: str, server: Any, *, result: dict[str, Any]
    ) -> None:
        value = _opsps(result) if unit == "ops/s" else _mibps(result)
        self.results.add(key, label, unit, server.label, value, cpu=result["cpu_cores"])

    def _record_meta(self, server: Any, result: dict[str, Any]) -> None:
        if result.get("jukebox"):
            self.notes.append(f"{server.label}: {_jukebox(result)}")
        for key, label, value in meta_rates(result, self.sizes):
            unit = "entries/s" if key == "readdir" else "files/s"
            self.results.add(key, label, unit, server.label, value, cpu=result["cpu_cores"])

    def _sequential(self, order: Sequence[Any], number: int) -> None:
        s = self.sizes
        name = f"seq-{number}"
        if number == 0:
            self.rss["before"] = self.ditto.rss_kib()
        for server in order:
            result = self._measure(server, "seqwrite", name, s.seq_bytes, s.seq_block, s.seq_depth)
            if "seq-write" in self.only:
                label = f"seq write {_size(s.seq_bytes)}, {_size(s.seq_block)} WRITEs + COMMIT"
                self._record("seq-write", label, "MiB/s", server, result=result)
        for server in order:
            if "seq-read" in self.only:
                result = self._measure(
                    server, "seqread", name, s.seq_bytes, s.seq_block, s.seq_depth
                )
                label = f"seq read {_size(s.seq_bytes)}, {_size(s.seq_block)} READs"
                self._record("seq-read", label, "MiB/s", server, result=result)
            self.client.run(server, "remove", name)
        if number == 0:
            self.rss["after"] = self.ditto.rss_kib()
        self.rss_rounds.append(self.ditto.rss_kib())

    def prepare_random_file(self, server: Any) -> None:
        """Write the file the random and many-client workloads use (untimed, once)."""
        if server.label not in self._rand_ready:
            s = self.sizes
            self.client.run(server, "seqwrite", "rand", s.rand_file, s.seq_block, s.seq_depth)
            self._rand_ready.add(server.label)

    def _random(self, server: Any) -> None:
        s = self.sizes
        self.prepare_random_file(server)
        where = f"{_size(s.rand_io)}, {s.rand_depth} in flight, {_size(s.rand_file)} file"
        for key, kind, label in (
            ("rand-read", "randread", f"random read {where}"),
            ("rand-write", "randwrite", f"random write {where}, + COMMIT"),
        ):
            if key in self.only:
                result = self._measure(
                    server, kind, "rand", s.rand_file, s.rand_io, s.rand_depth, s.rand_ops
                )
                self._record(key, label, "ops/s", server, result=result)

    def _meta(self, server: Any, directory: str) -> None:
        s = self.sizes
        result = self._measure(server, "meta", directory, s.files, s.file_size, s.meta_depth)
        self._record_meta(server, result)

    def _conns(self, server: Any) -> None:
        s = self.sizes
        self.prepare_random_file(server)
        result = self._measure(
            server, "conns", "rand", s.rand_file, s.clients, s.client_ops, s.client_io,
            s.client_depth,
        )  # fmt: skip
        label = f"{s.clients} clients GETATTR/READ {_size(s.client_io)}, {s.client_depth} each"
        self._record("conns", label, "ops/s", server, result=result)

    def profile(self, directory: Path) -> list[Path]:
        """Extra, unrecorded runs on DittoFS under py-spy: sequential, random read, metadata."""
        s = self.sizes
        directory.mkdir(parents=True, exist_ok=True)
        self.prepare_random_file(self.ditto)
        runs: list[tuple[str, tuple[object, ...]]] = [
            ("seq-write", ("seqwrite", "profiled", s.seq_bytes, s.seq_block, s.seq_depth)),
            ("seq-read", ("seqread", "profiled", s.seq_bytes, s.seq_block, s.seq_depth)),
            ("rand-read", ("randread", "rand", s.rand_file, s.rand_io, s.rand_depth, s.rand_ops)),
            ("meta", ("meta", "meta-profiled", s.files, s.file_size, s.meta_depth)),
        ]
        written = []
        for name, arguments in runs:
            output = directory / f"dittofs-{name}.txt"
            with pyspy(self.ditto.pid, output):
                self.client.run(self.ditto, *arguments)
            written.append(output)
        self.client.run(self.ditto, "remove", "profiled")
        return written


def _mibps(result: dict[str, Any]) -> float:
    return float(result["bytes"]) / MiB / float(result["seconds"])


def _opsps(result: dict[str, Any]) -> float:
    return float(result["ops"]) / float(result["seconds"])


def meta_rates(result: dict[str, Any], s: Sizes) -> list[tuple[str, str, float]]:
    """The four metadata phases of one ``nfsbench meta`` result, as (key, label, rate)."""
    files = float(result["files"])
    return [
        (
            "create",
            f"create {s.files:,} files (CREATE+WRITE {_size(s.file_size)}+COMMIT)",
            files / result["create_seconds"],
        ),
        ("stat", "LOOKUP+GETATTR each file", files / result["stat_seconds"]),
        (
            "readdir",
            "READDIRPLUS of the directory",
            result["readdir_entries"] / result["readdir_seconds"],
        ),
        ("remove", "REMOVE each file", files / result["remove_seconds"]),
    ]


def _jukebox(result: dict[str, Any]) -> str:
    phases = ", ".join(
        f"{result.get('jukebox_' + phase, 0)} in {phase}" for phase in ("create", "stat", "remove")
    )
    return (
        f"NFS3ERR_JUKEBOX {result['jukebox']} times in one metadata run ({phases}); "
        "each such call was sent again after 50 ms"
    )


def _rss_report(rss: dict[str, int], rounds: list[int], seq_bytes: int) -> str:
    before, after = rss["before"], rss["after"]
    growth = (after - before) / before
    verdict = "within" if abs(growth) <= RSS_TOLERANCE else "NOT within"
    return (
        f"DittoFS RSS: {before / KiB:.1f} MiB before the first {_size(seq_bytes)} write+read, "
        f"{after / KiB:.1f} MiB after it ({growth:+.1%}, {verdict} {RSS_TOLERANCE:.0%}); "
        f"after each round's write+read: {', '.join(f'{kib / KiB:.1f}' for kib in rounds)} MiB"
    )


def _load() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def run_comparison(args: argparse.Namespace, sizes: Sizes, client: Client, work: Path) -> None:
    """Start both servers, run the rounds, print the table (and the profile, if asked)."""
    only = frozenset(args.only or WORKLOADS)
    load_before = _load()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        store = args.metadata or "memory"
        metadata = stack.enter_context(metadata_spec(store, work))
        ditto = DittoServer(
            work / "dittofs", metadata, f"fs:{work / 'dittofs' / 'content'}", workers=args.workers
        )
        ganesha = GaneshaServer(work / "ganesha")
        _SHOW_LOGS.extend([ditto, ganesha])
        stack.enter_context(ditto)
        stack.enter_context(ganesha)
        comparison = Comparison(client, sizes, only, ditto, ganesha)
        comparison.run()
        profiles = comparison.profile(Path(args.profile)) if args.profile else []
        ditto.check()
        ganesha.check()
    elapsed = time.monotonic() - started
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(
        f"\nDittoFS ({store} metadata + fs content{workers}) vs nfs-ganesha "
        f"{_ganesha_version()} (VFS FSAL),"
        f" both on 127.0.0.1 over the same disk; {sizes.name} sizes, {sizes.rounds} round(s),"
        f" {elapsed:.0f}s; {os.cpu_count()} CPUs, load average {load_before} before,"
        f" {_load()} after.\n"
    )
    print(comparison_table(comparison.results, ditto.label, ganesha.label))
    print(
        "\nratio = DittoFS median / ganesha median; every figure is a rate, so > 1 means "
        "DittoFS was faster. spread = min-max over the rounds. CPU cores busy = server CPU "
        "seconds / wall seconds during the workload (median; the metadata rows share one run)."
    )
    if comparison.rss:
        print(_rss_report(comparison.rss, comparison.rss_rounds, sizes.seq_bytes))
    for note in comparison.notes:
        print(f"note: {note}")
    for path in profiles:
        print()
        print(summarise(path))


def _ganesha_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["ganesha.nfsd", "-v"], capture_output=True, text=True, timeout=10, check=False
        )
        for word in result.stdout.split():
            if word.startswith("V") and word[1:2].isdigit():
                return word[1:]
    return "(unknown version)"


# -- metadata stores -------------------------------------------------------------------------


def run_stores(args: argparse.Namespace, sizes: Sizes, client: Client, work: Path) -> None:
    """DittoFS on each metadata store (fs content): the metadata workload, alternating."""
    stores = [store.strip() for store in args.stores.split(",") if store.strip()]
    for store in stores:
        if store not in STORES:
            raise BenchError(f"unknown store {store!r} (choose from {', '.join(STORES)})")
    results = Results()
    jukebox = dict.fromkeys(stores, 0)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        servers = []
        for store in stores:
            spec = stack.enter_context(metadata_spec(store, work))
            directory = work / f"dittofs-{store}"
            server = DittoServer(directory, spec, f"fs:{directory / 'content'}", label=store)
            _SHOW_LOGS.append(server)
            servers.append(stack.enter_context(server))
        for number in range(sizes.rounds):
            # Rotate the order so no store always goes first.
            order = servers[number % len(servers) :] + servers[: number % len(servers)]
            for server in order:
                result = client.run(
                    server, "meta", f"meta-{number}", sizes.files, sizes.file_size,
                    sizes.meta_depth,
                )  # fmt: skip
                jukebox[server.label] += int(result.get("jukebox", 0))
                if result.get("jukebox"):
                    print(f"  {server.label}: {_jukebox(result)}", file=sys.stderr, flush=True)
                for key, label, value in meta_rates(result, sizes):
                    results.add(key, label, "/s", server.label, value, cpu=None)
                server.check()
            print(f"  round {number + 1}/{sizes.rounds} done", file=sys.stderr, flush=True)
    columns = [key for key in ("create", "stat", "readdir", "remove") if key in results.metrics]
    header = ["metadata store", "creates/s", "LOOKUP+GETATTR/s", "READDIRPLUS entries/s"]
    header += ["removes/s", "JUKEBOX retries"]
    rows = []
    for store in stores:
        row = [store]
        for key in columns:
            values = results.metrics[key].values[store]
            median = _number(statistics.median(values))
            row.append(median if len(values) == 1 else f"{median} ({_spread(values)})")
        row.append(str(jukebox[store]))
        rows.append(row)
    print(
        f"\nDittoFS metadata stores (fs content), {sizes.files:,} files of "
        f"{_size(sizes.file_size)}, {sizes.meta_depth} in flight; {sizes.name} sizes, "
        f"{sizes.rounds} round(s), {time.monotonic() - started:.0f}s; "
        f"load average {_load()}.\n"
    )
    print(markdown_table(header, rows))
    print(
        "\nmedian (min-max over the rounds); higher is better. JUKEBOX retries: calls the "
        "store answered NFS3ERR_JUKEBOX (try later), re-sent after 50 ms, over all rounds."
    )


# -- command line ----------------------------------------------------------------------------

_SHOW_LOGS: list[Any] = []


#: Cycles a soak runs at most, whatever its duration: a bound on the loop.
SOAK_MAX_CYCLES = 10_000


def run_soak(args: argparse.Namespace, sizes: Sizes, client: Client, work: Path) -> None:
    """Cycle every workload on DittoFS alone for ``--soak`` seconds; print its memory.

    With ``--workers``, the RSS is the largest worker's and the allocated
    blocks the workers' sum.
    """
    started = time.monotonic()
    store = args.metadata or "memory"
    with contextlib.ExitStack() as stack:
        metadata = stack.enter_context(metadata_spec(store, work))
        ditto = DittoServer(
            work / "dittofs",
            metadata,
            f"fs:{work / 'dittofs' / 'content'}",
            metrics=True,
            workers=args.workers,
        )
        _SHOW_LOGS.append(ditto)
        stack.enter_context(ditto)
        samples = soak(client, ditto, sizes, args.soak, SOAK_MAX_CYCLES)
    workers = f", {args.workers} workers" if args.workers > 1 else ""
    print(
        f"\nDittoFS ({store} metadata + fs content{workers}) soak, {sizes.name} sizes per cycle, "
        f"{len(samples)} cycles in {time.monotonic() - started:.0f}s; {os.cpu_count()} CPUs, "
        f"load average {_load()} after.\n"
    )
    print(report(samples))
    if not verdict(samples)[0]:
        raise BenchError("DittoFS's memory grew during the soak")


def run_gateway_counts(args: argparse.Namespace, sizes: Sizes, client: Client, work: Path) -> None:
    """S3 gateways sharing a prefix (see :mod:`benchmarks.gateways`)."""
    size = min(sizes.seq_bytes, 256 * MiB)  # per client, and up to eight clients
    run_gateways(Bench(args, client, work, _SHOW_LOGS, size, sizes.rounds))


def _workloads(text: str) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    for item in chosen:
        if item not in WORKLOADS:
            raise argparse.ArgumentTypeError(
                f"unknown workload {item!r} (choose from {', '.join(WORKLOADS)})"
            )
    return chosen


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="Benchmark DittoFS against nfs-ganesha on 127.0.0.1 with a libnfs client.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (CI)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 5 full, 1 quick)")
    parser.add_argument(
        "--only", type=_workloads, help=f"comma-separated subset of {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--stores",
        help=f"compare DittoFS metadata stores instead, e.g. {','.join(STORES)}",
    )
    parser.add_argument(
        "--gateways",
        type=int,
        metavar="N",
        help="instead, S3 gateways over one prefix: aggregate rates of 1..N gateways",
    )
    parser.add_argument(
        "--metadata",
        choices=STORES,
        help="DittoFS's metadata store against ganesha (default: memory) or the gateways' "
        "shared one with --gateways (default: postgresql)",
    )
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        metavar="REV",
        help=f"git revision a single gateway is compared with (default: {BASELINE})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="DittoFS worker processes against ganesha (default: 1; not with memory metadata)",
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy DittoFS afterwards, into DIR")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="instead, cycle every workload on DittoFS alone this long and watch its memory",
    )
    parser.add_argument("--uid", type=int, default=1000, help="client AUTH_SYS uid")
    parser.add_argument("--gid", type=int, default=1000, help="client AUTH_SYS gid")
    parser.add_argument("--workdir", help="where scratch directories go (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    if args.rounds is not None and not 1 <= args.rounds <= 100:
        parser.error("--rounds must be between 1 and 100")
    if args.gateways is not None and not 1 <= args.gateways <= 8:
        parser.error("--gateways must be between 1 and 8")
    if args.gateways is not None:
        args.metadata = args.metadata or "postgresql"
        if args.metadata == "memory":
            parser.error("--gateways needs a metadata store they can share, not memory")
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    if args.workers > 1 and (args.metadata or "memory") == "memory":
        parser.error("--workers needs a metadata store they can share: add --metadata sqlite")
    if args.soak is not None and not 0 < args.soak <= 24 * 3600:
        parser.error("--soak must be between 0 and 86400 seconds")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 1 on any failure."""
    args = parse_arguments(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds is not None:
        sizes = replace(sizes, rounds=args.rounds)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    work = Path(tempfile.mkdtemp(prefix="dittofs-bench-", dir=args.workdir))
    runner: Callable[[argparse.Namespace, Sizes, Client, Path], None]
    runner = (
        run_soak if args.soak
        else run_stores if args.stores
        else run_gateway_counts if args.gateways
        else run_comparison
    )  # fmt: skip
    try:
        client = Client(build(), args.uid, args.gid, sizes.client_timeout)
        runner(args, sizes, client, work)
    except BenchError as error:
        print(f"\nbenchmark failed: {error}", file=sys.stderr)
        for server in _SHOW_LOGS:
            print(server.describe_logs(), file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"scratch directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0
