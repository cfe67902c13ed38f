"""Long-running structured fuzzer for DittoFS's RPC, MOUNT and NFSv3 code (not a CI test).

It runs the generators of ``tests/unit/test_fuzz.py`` (one copy of them)
with plain :mod:`random` instead of hypothesis, as fast as one process can,
against memory-store servers in this process: most cases dispatch one
(possibly damaged) call, one in ten feeds a random record-marking stream
through the real protocol object.  Each case has its own seed, so any
failure can be replayed alone::

    python fuzz/run.py --cases 1000000 --seconds 600
    python fuzz/run.py --replay 123456789

The server is rebuilt every ``--rebuild-every`` cases so the files the fuzzer
creates do not pile up; RSS and the number of live objects (``gc``) are
printed after a warm-up and at the end, each right after a rebuild and a
full collection, so growth between them is a leak rather than data.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.logger import globalLogBeginner

from tests.unit.test_fuzz import fuzz_case, good_call_answered, populated_server


def signature(error: BaseException) -> str:
    """What kind of failure this is: the server's own exception and where it was raised,
    when the fuzzer caught a logged failure, else the fuzzer's assertion."""
    text = str(error)
    marker = "Failure "
    if marker in text:
        return text[text.index(marker) + len(marker) :].split(">", 1)[0][:100]
    return f"{type(error).__name__}: {text[:100]}"


def rss_kib() -> int:
    """Resident set size of this process, from /proc (KiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def live_objects() -> int:
    """Objects the garbage collector tracks, after a full collection."""
    gc.collect()
    return len(gc.get_objects())


def replay(seed: int) -> int:
    """Run the single case *seed* on a fresh server, showing its traceback if it fails."""
    server, corpus = populated_server()
    try:
        fuzz_case(random.Random(seed), server, corpus)
        good_call_answered(server, corpus)
    except Exception:
        traceback.print_exc()
        return 1
    print(f"case {seed} passes")
    return 0


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000, help="cases to run at most")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long")
    parser.add_argument("--seed", type=int, default=None, help="first case's seed")
    parser.add_argument("--rebuild-every", type=int, default=20_000, help="cases per server")
    parser.add_argument("--show", type=int, default=5, help="tracebacks to print")
    parser.add_argument("--replay", type=int, default=None, help="run only this case seed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; exit status 1 if any case failed."""
    options = parse(argv)
    # The fuzzer checks log events itself; nothing needs printing them.
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    if options.replay is not None:
        return replay(options.replay)

    base = options.seed if options.seed is not None else random.SystemRandom().getrandbits(48)
    warmup = min(options.rebuild_every, max(options.cases // 100, 1))
    server, corpus = populated_server()
    failures: list[int] = []
    kinds: dict[str, list[int]] = {}
    baseline: tuple[int, int] | None = None
    started = time.monotonic()
    deadline = started + options.seconds
    done = 0
    print(f"seed {base}; up to {options.cases} cases or {options.seconds:g} s", flush=True)
    print(f"RSS at start {rss_kib()} KiB, {live_objects()} objects", flush=True)
    for done in range(1, options.cases + 1):
        if done % 1000 == 0 and time.monotonic() > deadline:
            break
        seed = base + done
        try:
            fuzz_case(random.Random(seed), server, corpus)
        except Exception as error:
            failures.append(seed)
            kind = signature(error)
            kinds.setdefault(kind, []).append(seed)
            if len(kinds[kind]) == 1 and len(kinds) <= options.show:
                print(f"FAIL case {seed} ({kind}):", flush=True)
                traceback.print_exc(limit=3)
            # A failure may leave the server damaged; start afresh so one bug is not
            # counted a thousand times.
            server.close()
            server, corpus = populated_server()
            continue
        if done % options.rebuild_every == 0 or done == warmup:
            good_call_answered(server, corpus)
            server.close()
            server, corpus = populated_server()
            if done == warmup:
                baseline = (rss_kib(), live_objects())
                print(f"after {done} warm-up cases: RSS {baseline[0]} KiB, {baseline[1]} objects")
            elif done % (options.rebuild_every * 10) == 0:
                rate = done / (time.monotonic() - started)
                print(f"{done} cases, {len(failures)} failures, {rate:,.0f}/s", flush=True)
    good_call_answered(server, corpus)
    server.close()
    elapsed = time.monotonic() - started
    server, corpus = populated_server()
    print(f"ran {done} cases in {elapsed:.0f} s ({done / elapsed:,.0f}/s); {len(failures)} failed")
    report(baseline, kinds)
    return 1 if failures else 0


def report(baseline: tuple[int, int] | None, kinds: dict[str, list[int]]) -> None:
    """Print memory growth since the warm-up and the failures, grouped by kind."""
    end = (rss_kib(), live_objects())
    if baseline is not None:
        print(
            f"RSS {baseline[0]} -> {end[0]} KiB ({end[0] - baseline[0]:+d}); "
            f"objects {baseline[1]} -> {end[1]} ({end[1] - baseline[1]:+d})"
        )
    for kind, seeds in sorted(kinds.items(), key=lambda item: -len(item[1])):
        print(f"{len(seeds):6d} x {kind}; first seeds {seeds[:3]}")
    if kinds:
        print("replay one with: python fuzz/run.py --replay SEED")


if __name__ == "__main__":
    raise SystemExit(main())
