"""Sample the DittoFS server with py-spy while one workload runs, and summarise where time went.

``py-spy record --threads --idle --format raw`` writes collapsed stacks
(``thread;frame;frame;... count``) for every thread, idle or not.  A sample
whose innermost frame is a wait (the reactor in ``epoll``, a pool thread in
``Condition.wait``) counts as idle: py-spy's own idle detection counts
``Condition.wait`` as work.  The summary gives how busy the reactor thread
and the other threads were, then where the busy samples were spent.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.client import BenchError

RATE = 250
TOP = 12
#: Innermost frames that mean the thread is waiting for work.
_WAITING = frozenset(
    ["Condition.wait", "EPollReactor.doPoll", "PollReactor.doPoll", "SelectReactor.doSelect"]
)
#: Frames every sample passes through (interpreter, thread and reactor start-up).
_PLUMBING = frozenset(
    [
        "<module>", "_run_code", "_run_module_as_main", "Thread.run", "Thread._bootstrap",
        "Thread._bootstrap_inner", "Twist.run", "Twist.main", "Runner.run",
        "Runner.startReactor", "ReactorBase.run", "ReactorBase.mainLoop",
        "ThreadedContextTracker.callWithContext", "ContextTracker.callWithContext",
        "callWithContext", "callWithLogger", "ThreadWorker.__init__.<locals>.work",
    ]
)  # fmt: skip


@contextlib.contextmanager
def pyspy(pid: int, output: Path) -> Iterator[None]:
    """Record *pid* with py-spy into *output* (raw collapsed stacks) for the body's duration."""
    executable = shutil.which("py-spy")
    if executable is None:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    log = output.with_suffix(".log")
    with open(log, "wb") as log_file:
        recorder = subprocess.Popen(
            [executable, "record", "--pid", str(pid), "--rate", str(RATE), "--threads",
             "--idle", "--format", "raw", "--output", str(output)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        time.sleep(1.0)  # py-spy attaches before the workload starts
        if recorder.poll() is not None:
            raise BenchError(f"py-spy exited at once: {log.read_text(errors='replace')}")
        yield
    finally:
        if recorder.poll() is None:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                recorder.wait(60)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()
    if not output.exists():
        raise BenchError(f"py-spy wrote no profile: {log.read_text(errors='replace')}")


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py:123)"
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def _function(frame: str) -> str:
    return frame.partition(" (")[0]


def _function_in(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].rpartition(":")[0]
    return f"{name} ({module})" if module else name


@dataclass
class _Tally:
    """Samples of one group of threads: all of them, and where the busy ones were."""

    samples: int = 0
    busy: int = 0
    threads: set[str] = field(default_factory=set)
    own: collections.Counter[str] = field(default_factory=collections.Counter)
    inclusive: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, thread: str, frames: list[str], count: int) -> None:
        self.samples += count
        self.threads.add(thread)
        if _function(frames[-1]) in _WAITING:
            return
        self.busy += count
        self.own[_function_in(frames[-1])] += count
        for frame in {_short(frame) for frame in frames}:
            if _function(frame) not in _PLUMBING:
                self.inclusive[frame] += count

    def report(self, name: str, top: int) -> list[str]:
        share = self.busy / self.samples if self.samples else 0.0
        lines = [f"  {name} ({len(self.threads)}): busy in {share:.0%} of their samples"]
        if not self.busy:
            return lines
        lines.append("    self time of the busy samples, by function:")
        lines += [
            f"      {100 * count / self.busy:5.1f}%  {function}"
            for function, count in self.own.most_common(top)
        ]
        lines.append("    inclusive time of the busy samples (a frame and all it called):")
        lines += [
            f"      {100 * count / self.busy:5.1f}%  {frame}"
            for frame, count in self.inclusive.most_common(top)
        ]
        return lines


def summarise(path: Path, top: int = TOP) -> str:
    """How busy the reactor and the other threads were, and where their busy time went.

    "Busy" for a pool thread includes time blocked inside a system call made
    from Python (``fsync``, ``pread``): py-spy sees the Python frame, not the wait.
    """
    reactor, others = _Tally(), _Tally()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        thread, *frames = stack.split(";")
        if frames:
            (reactor if "MainThread" in thread else others).add(thread, frames, int(count_text))
    lines = [f"{path.name} (py-spy at {RATE} Hz, --threads --idle):"]
    lines += reactor.report("reactor thread", top)
    lines += others.report("pool threads", top // 2)
    return "\n".join(lines)
