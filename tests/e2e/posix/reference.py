"""The reference side: real system calls on a local filesystem, as real users.

Each identity gets a worker process that has given up root for good
(``setgroups``, ``setresgid``, ``setresuid``), so the kernel applies every
permission rule, capabilities included, exactly as it would to that user.
A worker runs one operation at a time, sent over a pipe, and answers with
the result or the errno.  The workers' umask is 0: modes arrive as asked, as
they do over NFS, where the client applies the umask before sending.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import attrs

#: What an operation answers: ("ok", value) or ("err", errno name).
Outcome = tuple[str, Any]


@attrs.frozen
class Identity:
    """A caller: uid, primary gid and supplementary groups, as AUTH_SYS carries them."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def _open_for(path: str, flags: int) -> int:
    # O_NONBLOCK: a FIFO must never stall the worker (the machine skips them anyway).
    return os.open(path, flags | os.O_NONBLOCK)


def _write(path: str, offset: int, data: bytes) -> None:
    fd = _open_for(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def _read(path: str, offset: int, count: int) -> bytes:
    fd = _open_for(path, os.O_RDONLY)
    try:
        return os.pread(fd, count, offset)
    finally:
        os.close(fd)


def _create(path: str, mode: int) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))


def _listdir(path: str) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sorted(os.fsencode(name) for name in os.listdir(fd))
    finally:
        os.close(fd)


def _lstat(path: str) -> tuple[int, ...]:
    info = os.lstat(path)
    return (
        info.st_mode,
        info.st_nlink,
        info.st_uid,
        info.st_gid,
        info.st_size,
        os.major(info.st_rdev),
        os.minor(info.st_rdev),
        info.st_atime_ns,
        info.st_mtime_ns,
    )


def _stat_follow(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_mode, info.st_size


def _read_all(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _mknod(path: str, kind: str, mode: int, major: int, minor: int) -> None:
    bits = {"fifo": stat.S_IFIFO, "chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "sock": stat.S_IFSOCK}[
        kind
    ]
    os.mknod(path, mode | bits, os.makedev(major, minor))


#: Every operation a worker runs, by name; each is one system call (or an open and it).
OPERATIONS: dict[str, Callable[..., Any]] = {
    "create": _create,
    "mkdir": os.mkdir,
    "mknod": _mknod,
    "symlink": lambda path, target: os.symlink(target, path),
    "write": _write,
    "read": _read,
    "truncate": os.truncate,
    "unlink": os.unlink,
    "rmdir": os.rmdir,
    "rename": os.rename,
    "link": lambda source, path: os.link(source, path, follow_symlinks=False),
    "readlink": lambda path: os.fsencode(os.readlink(path)),
    "chmod": os.chmod,
    "chown": os.chown,
    "lchown": os.lchown,
    "utime": lambda path, times: os.utime(path, ns=times, follow_symlinks=False),
    "utime_now": lambda path: os.utime(path, None, follow_symlinks=False),
    "listdir": _listdir,
    "lstat": _lstat,
    "stat_follow": _stat_follow,
    "read_all": _read_all,
}


def _serve(identity: Identity, top: str, connection: Connection) -> None:
    """The worker's life: drop root for good, then run operations until told to stop."""
    if identity.uid != 0:
        os.setgroups(list(identity.groups))
        os.setresgid(identity.gid, identity.gid, identity.gid)
        os.setresuid(identity.uid, identity.uid, identity.uid)
    os.umask(0)
    os.chdir(top)
    while True:
        message = connection.recv()
        if message is None:
            return
        name, args = message
        try:
            connection.send(("ok", OPERATIONS[name](*args)))
        except OSError as error:
            connection.send(("err", errno.errorcode.get(error.errno or 0, str(error.errno))))
        except Exception as error:  # a harness bug: say so rather than die mid-run
            connection.send(("harness error", repr(error)))


class Reference:
    """Worker processes, one per identity, over one directory of the local filesystem."""

    def __init__(self, top: Path, identities: list[Identity]) -> None:
        context = multiprocessing.get_context("fork")
        self.top = top
        self._workers: dict[str, tuple[Any, Connection]] = {}
        for identity in identities:
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(identity, str(top), theirs), daemon=True)
            process.start()
            theirs.close()
            self._workers[identity.name] = (process, ours)

    def run(self, identity: str, name: str, *args: Any) -> Outcome:
        """Run operation *name* as *identity*; its outcome."""
        _, connection = self._workers[identity]
        connection.send((name, args))
        if not connection.poll(60):
            raise TimeoutError(f"reference worker {identity} did not answer {name}{args}")
        outcome: Outcome = connection.recv()
        return outcome

    def close(self) -> None:
        """Stop every worker."""
        for process, connection in self._workers.values():
            with contextlib.suppress(OSError):
                connection.send(None)
            process.join(10)
            if process.is_alive():
                process.kill()
            connection.close()


@contextlib.contextmanager
def reference_tree(identities: list[Identity]) -> Iterator[Reference]:
    """A private tmpfs (``noatime``, as DittoFS never moves atime on READ) with the workers.

    Mounting needs root; the caller skips otherwise.  It lives in a fresh
    0755 directory of the system's temporary directory, which every worker
    can reach (pytest's own are 0700).
    """
    top = Path(tempfile.mkdtemp(prefix="dittofs-posix-"))
    top.chmod(0o755)
    _must(["mount", "-t", "tmpfs", "-o", "noatime,mode=0755,size=256m", "tmpfs", str(top)])
    try:
        reference = Reference(top, identities)
        try:
            yield reference
        finally:
            reference.close()
    finally:
        _must(["umount", "-l", str(top)])
        top.rmdir()


def _must(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=60)
