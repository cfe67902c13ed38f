"""A bounded mixed workload on DittoFS alone, watching its memory (``benchmarks/run --soak S``).

Each cycle runs every workload of the comparison once at the chosen sizes
(sequential write + COMMIT, read back and remove; random writes and reads;
create/stat/list/remove of many files; many connections) and then reads the
server's resident set (``VmRSS``) and the interpreter's allocated memory
blocks (``dittofs_python_allocated_blocks`` from its metrics endpoint, which
grows with any leaked Python object, whatever its size); with several
workers, both are the largest worker's.

The first third of the cycles (at least two) is warm-up: the allocator's
arenas, the thread pools, caches and the memory store's containers reach
their working size there.  Memory counts as flat when no later sample is
more than :data:`TOLERANCE` above the warm-up's peak: a leak grows with the
work done, so it shows as later samples climbing past it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.client import BenchError, Client
from benchmarks.servers import DittoServer

if TYPE_CHECKING:
    from benchmarks.bench import Sizes

#: How far above the warm-up peak a later sample may go and still count as flat.
TOLERANCE = 0.10
#: The random-access file every cycle reads and writes, written once.
RANDOM_FILE = "rand"


@dataclass(frozen=True)
class Sample:
    """The server's memory after one cycle."""

    cycle: int
    seconds: float
    rss_kib: int
    blocks: int


def allocated_blocks(server: DittoServer) -> int:
    """``dittofs_python_allocated_blocks`` of the server, or of its largest worker.

    Not the workers' sum: the kernel hands each connection to one worker,
    so which worker's bounded structures (its duplicate-request cache, its
    metadata cache) are full changes from cycle to cycle, and the sum with
    it, by as much as one worker's whole working set.
    """
    counts = []
    for text in server.metrics_texts():
        for line in text.splitlines():
            if line.startswith("dittofs_python_allocated_blocks "):
                counts.append(int(float(line.split()[1])))
                break
        else:
            raise BenchError("no dittofs_python_allocated_blocks in DittoFS's /metrics")
    return max(counts)


def soak(
    client: Client, server: DittoServer, sizes: Sizes, seconds: float, max_cycles: int
) -> list[Sample]:
    """Run cycles until *seconds* have passed or *max_cycles* are done; sample after each."""
    s = sizes
    client.run(server, "seqwrite", RANDOM_FILE, s.rand_file, s.seq_block, s.seq_depth)
    started = time.monotonic()
    samples: list[Sample] = []
    for cycle in range(1, max_cycles + 1):
        workloads: list[tuple[Any, ...]] = [
            ("seqwrite", "soak-seq", s.seq_bytes, s.seq_block, s.seq_depth),
            ("seqread", "soak-seq", s.seq_bytes, s.seq_block, s.seq_depth),
            ("remove", "soak-seq"),
            ("randwrite", RANDOM_FILE, s.rand_file, s.rand_io, s.rand_depth, s.rand_ops),
            ("randread", RANDOM_FILE, s.rand_file, s.rand_io, s.rand_depth, s.rand_ops),
            ("meta", "soak-meta", s.files, s.file_size, s.meta_depth),
            ("conns", RANDOM_FILE, s.rand_file, s.clients, s.client_ops, s.client_io,
             s.client_depth),
        ]  # fmt: skip
        for arguments in workloads:
            client.run(server, *arguments)
        server.check()
        elapsed = time.monotonic() - started
        samples.append(Sample(cycle, elapsed, server.rss_kib(), allocated_blocks(server)))
        if elapsed >= seconds:
            break
    return samples


def warm_up_cycles(count: int) -> int:
    """How many of *count* cycles are warm-up: a third, at least two."""
    return max(2, count // 3)


def verdict(samples: Sequence[Sample]) -> tuple[bool, str]:
    """Whether memory stayed flat after warm-up, and a sentence saying so with the figures."""
    if len(samples) < 4:
        return False, f"only {len(samples)} cycles ran; at least 4 are needed to judge"
    warm = warm_up_cycles(len(samples))
    early, late = samples[:warm], samples[warm:]
    findings = []
    flat = True
    for name, unit, value in (
        ("RSS", "MiB", lambda sample: sample.rss_kib / 1024),
        ("allocated blocks", "", lambda sample: float(sample.blocks)),
    ):
        peak, later = max(map(value, early)), max(map(value, late))
        ok = later <= peak * (1 + TOLERANCE)
        flat = flat and ok
        findings.append(
            f"{name} peak {peak:,.1f}{unit} in the {warm} warm-up cycles, "
            f"{later:,.1f}{unit} at most in the {len(late)} after "
            f"({(later / peak - 1) * 100:+.1f}%, {'within' if ok else 'NOT within'} "
            f"{TOLERANCE:.0%})"
        )
    return flat, "; ".join(findings)


def report(samples: Sequence[Sample]) -> str:
    """A table of the samples and the verdict."""
    lines = [
        "| cycle | seconds | RSS MiB | allocated blocks |",
        "|------:|--------:|--------:|-----------------:|",
    ]
    lines += [
        f"| {sample.cycle} | {sample.seconds:.0f} | {sample.rss_kib / 1024:.1f} | "
        f"{sample.blocks:,} |"
        for sample in samples
    ]
    flat, sentence = verdict(samples)
    lines.append(f"\nmemory {'flat' if flat else 'GREW'}: {sentence}")
    return "\n".join(lines)
