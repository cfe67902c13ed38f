"""The servers under test, started on 127.0.0.1 and always stopped: DittoFS and nfs-ganesha.

DittoFS is the repository's own code (``python -m twisted dittofs`` with the
repository first on ``PYTHONPATH``), MOUNT and NFS on one port.

nfs-ganesha (Debian's ``nfs-ganesha`` and ``nfs-ganesha-vfs``) insists on
registering with rpcbind and puts MOUNT on its own port.  So that nothing
touches the machine's port 111 or ``/run``, it runs inside a private mount
namespace (``unshare -m --propagation private``) with its own tmpfs ``/run``
and its own ``rpcbind -f``.  That rpcbind reads an ``/etc/netconfig``
bind-mounted from a private copy whose inet and inet6 transports are not
visible, so it listens only on its unix socket.  Ganesha serves NFSv3 on
port P and MOUNT on P+1, TCP only, on 127.0.0.1; its log is kept in a file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.client import HTTPConnection
from pathlib import Path
from types import TracebackType

from benchmarks.client import REPO, BenchError

STARTUP_SECONDS = 60.0
STOP_SECONDS = 30.0
LOG_TAIL_LINES = 30


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_port_pair() -> int:
    """A port P such that P and P+1 are both free on 127.0.0.1."""
    for _ in range(100):
        port = free_port()
        if port < 65535 and _port_free(port + 1):
            return port
    raise BenchError("could not find two adjacent free TCP ports on 127.0.0.1")


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def _wait_listening(name: str, process: subprocess.Popen[bytes], ports: list[int]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while not all(_listening(port) for port in ports):
        if process.poll() is not None:
            raise BenchError(f"{name} exited with {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise BenchError(f"{name} did not listen within {STARTUP_SECONDS:.0f}s")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time used so far by process *pid* (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(parent: int) -> dict[int, str]:
    """The processes whose parent is *parent*: id -> command name."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            text = stat.read_text()
            if int(text.rpartition(")")[2].split()[1]) == parent:
                found[int(stat.parent.name)] = text[text.index("(") + 1 : text.rindex(")")]
    return found


def _child_named(parent: int, name: str) -> int | None:
    """The id of a child of *parent* whose command is *name*, if there is one."""
    return next((pid for pid, command in _children(parent).items() if command == name), None)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return f"({path} was not written)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _stop_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the process group we created for *process* (its id is the process's own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then after STOP_SECONDS SIGKILL to the process group we created for it.

    The group is signalled only while its leader is not yet reaped, so its id
    cannot have been reused by anything else.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            _stop_group(process, signal.SIGKILL)
            process.wait(STOP_SECONDS)


class DittoServer:
    """A DittoFS process serving ``/export`` with the given stores."""

    export = "/export"

    def __init__(
        self,
        workdir: Path,
        metadata: str,
        content: str,
        *,
        label: str = "DittoFS",
        metrics: bool = False,
        source: Path = REPO,
        workers: int = 1,
    ) -> None:
        self.workdir = workdir
        #: Worker processes (``--workers``); with more than one, the process started supervises.
        self.workers = workers
        #: The tree whose ``dittofs`` package runs (another checkout, to compare revisions).
        self.source = source
        self.metadata = metadata
        self.content = content
        self.label = label
        self.nfsport = self.mountport = 0
        #: Serve /metrics on a port of its own (for the soak's memory readings).
        self.metrics = metrics
        self.metrics_url = ""
        self.log_path = workdir / "dittofs.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server process (the Python interpreter running the reactor)."""
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> DittoServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.nfsport = self.mountport = port
        command = [
            sys.executable, "-m", "twisted", "--log-format", "text", "dittofs",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--export", self.export,
            "--data-dir", str(self.workdir / "data"),
            "--metadata", self.metadata,
            "--content", self.content,
        ]  # fmt: skip
        # Always say how many: the default is one per core.  A tree from before
        # --workers existed (a --baseline) serves from one process anyway.
        if self.workers > 1 or (self.source / "dittofs" / "workers.py").exists():
            command += ["--workers", str(self.workers)]
        if self.metrics:
            metrics_port = free_port()
            command += ["--metrics", f"tcp:{metrics_port}:interface=127.0.0.1"]
            self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.source), env.get("PYTHONPATH")]))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        try:
            _wait_listening("DittoFS", self.process, [port])
            self._wait_workers()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_workers(self) -> None:
        """With several workers the port listens before they serve: wait until they do."""
        if self.workers == 1:
            return
        deadline = time.monotonic() + STARTUP_SECONDS
        while f"with {self.workers} workers" not in self.log_path.read_text(errors="replace"):
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"DittoFS's {self.workers} workers did not start")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The processes serving: the server, or with several workers the workers."""
        return [self.pid] if self.workers == 1 else sorted(_children(self.pid))

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            _stop(self.process)

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far (its supervisor and workers together)."""
        return sum(cpu_seconds(pid) for pid in {self.pid, *self.pids()})

    def rss_kib(self) -> int:
        """The resident set size (``VmRSS``) of the server, or of its largest worker, in KiB."""
        sizes = []
        for pid in self.pids():
            status = Path(f"/proc/{pid}/status").read_text()
            match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
            if match is None:
                raise BenchError(f"no VmRSS for DittoFS (pid {pid})")
            sizes.append(int(match.group(1)))
        return max(sizes)

    def metrics_texts(self) -> list[str]:
        """Each serving process's own ``/metrics``: the server's, or every worker's.

        A supervisor's endpoint sums its workers; each worker also serves its
        own on a UNIX socket, found here among the sockets the worker holds.
        """
        if self.workers == 1:
            with urllib.request.urlopen(self.metrics_url, timeout=30) as response:
                return [response.read().decode()]
        paths = {
            fields[6]: fields[7]
            for fields in (line.split() for line in Path("/proc/net/unix").read_text().splitlines())
            if len(fields) == 8 and fields[7].endswith(".sock") and "/worker-" in fields[7]
        }
        texts = []
        for pid in self.pids():
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
            held = {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}
            found = [path for inode, path in paths.items() if inode in held]
            if len(found) != 1:
                raise BenchError(f"no metrics socket of its own for DittoFS worker {pid}")
            texts.append(_get_unix(found[0], "/metrics"))
        return texts

    def check(self) -> None:
        """Raise if the server died or logged a traceback."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchError(f"DittoFS exited with {self.process.returncode}")
        if "Traceback" in self.log_path.read_text(errors="replace"):
            raise BenchError(f"DittoFS logged a traceback (see {self.log_path})")

    def describe_logs(self) -> str:
        """The tail of the server log, for a failure report."""
        return f"--- DittoFS log ({self.log_path}), last lines:\n{_tail(self.log_path)}"


_LAUNCH = """\
# Runs as: unshare -m --propagation private sh launch.sh  (a private mount namespace)
set -e
mount -t tmpfs -o mode=0755 bench-run /run
mount --bind "$BENCH_NETCONFIG" /etc/netconfig
mkdir -p /run/ganesha /run/rpcbind
rpcbind -f >"$BENCH_RPCBIND_LOG" 2>&1 &
rpcbind_pid=$!
tries=0
while [ ! -S /run/rpcbind.sock ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then
        echo "rpcbind did not create /run/rpcbind.sock" >&2
        kill "$rpcbind_pid" 2>/dev/null || true
        exit 1
    fi
    sleep 0.1
done
set +e
ganesha.nfsd -F -L "$BENCH_GANESHA_LOG" -f "$BENCH_GANESHA_CONF" \\
    -p /run/ganesha/ganesha.pid -N NIV_EVENT &
ganesha_pid=$!
trap 'kill -TERM "$ganesha_pid" 2>/dev/null' TERM INT HUP
wait "$ganesha_pid"
status=$?
# A trapped signal only interrupts wait: let ganesha finish shutting down.
tries=0
while kill -0 "$ganesha_pid" 2>/dev/null && [ "$tries" -lt 300 ]; do
    tries=$((tries + 1))
    sleep 0.1
done
kill -TERM "$rpcbind_pid" 2>/dev/null
wait "$rpcbind_pid"
exit "$status"
"""

_CONFIG = """\
NFS_CORE_PARAM {{
    Bind_addr = 127.0.0.1;
    NFS_Port = {nfsport};
    MNT_Port = {mountport};
    Protocols = 3;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Mount_Path_Pseudo = true;
}}
NFSV4 {{
    Graceless = true;
}}
EXPORT {{
    Export_Id = 1;
    Path = {path};
    Pseudo = {export};
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 3;
    Transports = TCP;
    FSAL {{
        Name = VFS;
    }}
}}
"""


def _private_netconfig(system: str) -> str:
    """/etc/netconfig with the inet and inet6 transports made invisible (flag ``-``)."""
    lines = []
    for line in system.splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.startswith("#") and fields[3] in ("inet", "inet6"):
            fields[2] = "-"
            lines.append("\t".join(fields))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


class GaneshaServer:
    """nfs-ganesha with the VFS FSAL exporting a local directory as ``/export``."""

    export = "/export"
    label = "ganesha"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.directory = workdir / "export"
        self.log_path = workdir / "ganesha.log"
        self.rpcbind_log = workdir / "rpcbind.log"
        self.launcher_log = workdir / "launcher.log"
        self.nfsport = self.mountport = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.server_pid: int | None = None

    @staticmethod
    def check_installed() -> None:
        """Raise unless everything needed to run ganesha here is present."""
        missing = [tool for tool in ("ganesha.nfsd", "rpcbind", "unshare") if not _which(tool)]
        if missing:
            raise BenchError(
                f"missing {', '.join(missing)}: "
                "apt-get install -y nfs-ganesha nfs-ganesha-vfs rpcbind"
            )
        if os.geteuid() != 0:
            raise BenchError("ganesha needs root here (mount namespace, tmpfs /run)")

    def __enter__(self) -> GaneshaServer:
        self.check_installed()
        self.directory.mkdir(parents=True, exist_ok=True)
        # The benchmark client is an ordinary user: let it create files in the export.
        self.directory.chmod(0o777)
        port = free_port_pair()
        self.nfsport, self.mountport = port, port + 1
        config = self.workdir / "ganesha.conf"
        config.write_text(
            _CONFIG.format(
                nfsport=self.nfsport,
                mountport=self.mountport,
                path=self.directory,
                export=self.export,
            )
        )
        netconfig = self.workdir / "netconfig"
        netconfig.write_text(_private_netconfig(Path("/etc/netconfig").read_text()))
        launcher = self.workdir / "launch.sh"
        launcher.write_text(_LAUNCH)
        env = dict(os.environ)
        env.update(
            BENCH_NETCONFIG=str(netconfig),
            BENCH_RPCBIND_LOG=str(self.rpcbind_log),
            BENCH_GANESHA_LOG=str(self.log_path),
            BENCH_GANESHA_CONF=str(config),
        )
        with open(self.launcher_log, "wb") as log:
            self.process = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", str(launcher)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        try:
            assert self.process is not None
            _wait_listening("ganesha", self.process, [self.mountport, self.nfsport])
            self.server_pid = _child_named(self.process.pid, "ganesha.nfsd")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None:
            _stop(self.process)

    def cpu_seconds(self) -> float:
        """CPU time ganesha has used so far (0 if its process could not be found)."""
        return cpu_seconds(self.server_pid) if self.server_pid else 0.0

    def check(self) -> None:
        """Raise if ganesha (or its launcher) is gone."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchError(f"ganesha's launcher exited with {self.process.returncode}")

    def describe_logs(self) -> str:
        """The tails of ganesha's, rpcbind's and the launcher's logs, for a failure report."""
        return "\n".join(
            f"--- {name} ({path}), last lines:\n{_tail(path)}"
            for name, path in (
                ("ganesha log", self.log_path),
                ("ganesha launcher", self.launcher_log),
                ("rpcbind", self.rpcbind_log),
            )
        )


def _which(tool: str) -> bool:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is not None


def _get_unix(path: str, target: str) -> str:
    """The body of ``GET target`` from an HTTP server on the UNIX socket *path*."""
    connection = HTTPConnection("localhost", timeout=30)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.settimeout(30)
    unix.connect(path)
    connection.sock = unix
    try:
        connection.request("GET", target)
        return connection.getresponse().read().decode()
    finally:
        connection.close()
