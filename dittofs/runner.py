"""What DittoFS tells the program that runs it (twistd, twist): started, or failed and why.

twistd forks; the process the shell started waits on a pipe for ``0``
(started) or ``1 <message>`` (failed) and exits 0 or 1 after it.  twistd
writes ``0`` as soon as ``startService`` returns, before any store has
opened; DittoFS takes the pipe and answers itself once it really serves.
A worker process (:mod:`dittofs.workers`) answers its supervisor the same
way, on a pipe of its own.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import MutableMapping
from typing import Any


def take_status_pipe(runner: MutableMapping[str, Any] | None) -> int | None:
    """Take from a daemonising twistd the pipe on which its first process waits.

    twistd keeps it under ``statusPipe`` in its options (DittoFS's parent
    options): there is none under ``twistd -n``, twist or an embedding
    program.
    """
    if runner is None:
        return None
    pipe = runner.pop("statusPipe", None)
    return pipe if isinstance(pipe, int) else None


def answer_status_pipe(pipe: int | None, failure: str | None) -> None:
    """Say on *pipe* that DittoFS serves (*failure* None) or why not, then close it.

    twistd's first process reads at most 100 bytes and prints the text after
    ``1 `` on its stderr before exiting 1, as for an exception in twistd; a
    supervisor reads the whole message.  It is written in one ``write`` of
    at most ``PIPE_BUF`` bytes, which a pipe never splits.
    """
    if pipe is None:
        return
    answer = b"0" if failure is None else b"1 " + failure.encode("ascii", "backslashreplace")
    with contextlib.suppress(OSError):  # it has gone: nobody is left to tell
        os.write(pipe, answer[: select.PIPE_BUF])
    os.close(pipe)


def exit_failed(runner: MutableMapping[str, Any] | None) -> None:
    """Leave at once with status 1, output flushed, so systemd or a shell sees the failure.

    twistd and twist exit 0 whenever the reactor stops and offer no way to
    say otherwise, so the process leaves here, once the reactor has shut
    down (the stores that opened are closed), before they return.  Threads
    a failed store left behind cannot hold it.  twistd would have removed
    its pidfile after that, so it is removed here.
    """
    pidfile = runner.get("pidfile") if runner is not None else None
    if pidfile:
        with contextlib.suppress(OSError):
            os.unlink(pidfile)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(1)
