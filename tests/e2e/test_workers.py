"""``--workers N``: one port served by N processes over shared stores.

The supervisor binds N ``SO_REUSEPORT`` sockets and starts N workers; which
worker serves a connection is read from ``/proc`` (the socket's inode, and
the process holding it), so each test knows which process it talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.clients import NFS3_OK, AnfsNfs3, run
from tests.e2e.server import RunningServer, dittofs_server, free_port
from tests.e2e.storm import (
    COHERENCE_ROUNDS,
    coherence_rounds,
    fsck,
    log_problems,
    make_file,
    must,
    whole,
)
from tests.e2e.test_wire import (
    SUCCESS,
    RawConnection,
    call_message,
    parse_reply,
    record,
    root_handle,
    sys_cred,
    xdr_opaque,
)

NFS_PROGRAM = 100003
NFSPROC3_REMOVE = 12
WORKERS = 2
#: Clients opened at most to find one whose connections all reach one given worker.
PINNING_TRIES = 40
START_SECONDS = 30.0


# -- which process serves a connection ---------------------------------------------------


def children(pid: int) -> list[int]:
    """The process ids whose parent is *pid*."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return sorted(found)


def wait_for_workers(server: RunningServer, count: int = WORKERS) -> list[int]:
    """The worker pids, once the supervisor has said that all of them serve."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if f"with {count} workers" in server.log():
            pids = children(server.process.pid)
            assert len(pids) == count, pids
            return pids
        time.sleep(0.1)
    raise AssertionError(f"the workers did not start:\n{server.log()[-4000:]}")


def connections_to(port: int) -> dict[int, int]:
    """Client port -> socket inode of every established connection to local *port*."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if state == "01" and int(local.split(":")[1], 16) == port:
            found[int(remote.split(":")[1], 16)] = inode
    return found


def owners(port: int, client_ports: set[int], pids: list[int]) -> set[int]:
    """The worker pids holding the server ends of the connections from *client_ports*."""
    inodes = {inode for client, inode in connections_to(port).items() if client in client_ports}
    holders = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    match = re.fullmatch(r"socket:\[(\d+)\]", link)
                    if match and int(match.group(1)) in inodes:
                        holders.add(pid)
    return holders


async def pinned_clients(
    server: RunningServer, pids: list[int], stack: contextlib.AsyncExitStack
) -> dict[int, AnfsNfs3]:
    """One anfs client per worker, each with both its connections on that worker."""
    found: dict[int, AnfsNfs3] = {}
    for _ in range(PINNING_TRIES):
        before = set(connections_to(server.port))
        client = await stack.enter_async_context(AnfsNfs3(server.port))
        held = owners(server.port, set(connections_to(server.port)) - before, pids)
        if len(held) == 1:
            found.setdefault(held.pop(), client)
        if len(found) == len(pids):
            return found
    raise AssertionError(f"no client reached only worker(s) {set(pids) - set(found)}")


@contextlib.contextmanager
def workers_server(tmp_path: Path, *options: str) -> Iterator[tuple[RunningServer, list[int], int]]:
    """A server of two workers over one SQLite file and fs content, its metrics port too."""
    metrics = free_port()
    with dittofs_server(
        tmp_path,
        "--workers", str(WORKERS),
        "--metadata", f"sqlite:{tmp_path / 'metadata.db'}",
        "--content", f"fs:{tmp_path / 'content'}",
        "--metrics", f"tcp:{metrics}:interface=127.0.0.1",
        *options,
    ) as server:  # fmt: skip
        yield server, wait_for_workers(server), metrics


def scrape(port: int, page: str = "/metrics") -> tuple[int, str]:
    """GET *page* from the metrics endpoint: status code and body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sample(text: str, name: str) -> float:
    """The value of the sample *name* (with its labels, if any) in an exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {name}")


# -- the tests -------------------------------------------------------------------------


def test_a_change_through_one_worker_is_seen_by_the_next_call_to_the_other(
    tmp_path: Path,
) -> None:
    """1,000 rounds: a change answered by one worker, then LOOKUP/GETATTR/READDIR via the other.

    Both workers keep a metadata cache over one SQLite file; a client pinned
    to each (both of its connections held by that worker) alternates being
    the one that changes and the one that reads.  Strict: never an old answer.
    """
    with workers_server(tmp_path) as (server, pids, metrics):

        async def main() -> list[str]:
            async with contextlib.AsyncExitStack() as stack:
                clients = await pinned_clients(server, pids, stack)
                first, second = (clients[pid] for pid in pids)
                return await coherence_rounds(first, second)

        problems = run(main(), timeout=300)
        status, text = scrape(metrics)
        assert status == 200
        # Both workers served: the supervisor sums their calls (and counts no restart).
        assert sample(text, "dittofs_workers") == WORKERS
        assert sample(text, "dittofs_worker_restarts_total") == 0
        calls = sample(text, 'dittofs_rpc_calls_total{procedure="LOOKUP",program="nfs"}')
        assert calls >= COHERENCE_ROUNDS, calls
        assert not log_problems(server)
    status, output = fsck(
        f"sqlite:{tmp_path / 'metadata.db'}", f"fs:{tmp_path / 'content'}", tmp_path
    )
    assert status == 0, output
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])


def test_a_retransmission_after_a_reconnect_reaches_the_same_worker(tmp_path: Path) -> None:
    """A REMOVE resent after a reconnect from the same source port gets the first reply.

    The Linux client reconnects from the port it had, so that the server's
    duplicate-request cache recognises its retransmissions.  The kernel hashes
    the same addresses and ports to the same socket, hence the same worker,
    whose cache answers NFS3_OK again instead of running the REMOVE (NOENT).
    """
    with workers_server(tmp_path) as (server, pids, _metrics):
        run(_create(server.port, [b"doomed"]))
        remove = record(
            call_message(
                0x5EED, NFS_PROGRAM, 3, NFSPROC3_REMOVE,
                xdr_opaque(_root(server)) + xdr_opaque(b"doomed"), cred=sys_cred(),
            )
        )  # fmt: skip
        source = free_port()
        served_by = []
        replies = []
        for _ in range(2):
            conn = _connect_from(server.port, source)
            try:
                conn.send(remove)
                replies.append(conn.receive())
                served_by.append(owners(server.port, {source}, pids))  # accepted by now
            finally:
                # An abortive close (RST) leaves no TIME_WAIT, so the port can connect again.
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
        first, second = replies
        assert served_by[0] == served_by[1] and len(served_by[0]) == 1, served_by
        parsed = parse_reply(first)
        assert parsed["accept_stat"] == SUCCESS
        assert struct.unpack_from(">I", parsed["results"])[0] == NFS3_OK
        assert second == first


def test_a_killed_worker_is_started_again_and_nothing_stable_is_lost(tmp_path: Path) -> None:
    """kill -9 of one worker: the other keeps serving, the supervisor starts it again.

    A file written FILE_SYNC through the killed worker is read whole through
    the other, before and after the restart; the restart is logged and
    counted in the summed metrics.
    """
    with workers_server(tmp_path) as (server, pids, metrics):
        data = os.urandom(256 * 1024)

        async def main() -> None:
            async with contextlib.AsyncExitStack() as stack:
                clients = await pinned_clients(server, pids, stack)
                doomed, survivor = pids
                handle = await make_file(clients[doomed], clients[doomed].root, "kept", data)
                os.kill(doomed, signal.SIGKILL)
                assert await whole(clients[survivor], handle) == data
                deadline = time.monotonic() + START_SECONDS
                while "serves again" not in server.log():
                    assert time.monotonic() < deadline, server.log()[-3000:]
                    await asyncio.sleep(0.1)
                restarted = children(server.process.pid)
                assert len(restarted) == WORKERS and doomed not in restarted, restarted
                assert survivor in restarted
                async with AnfsNfs3(server.port) as fresh:
                    found = await must(fresh.lookup(fresh.root, b"kept"))
                    handle = bytes(found["resok"]["object"]["data"])
                    assert await whole(fresh, handle) == data

        run(main(), timeout=120)
        log = server.log()
        killed = f"(pid {pids[0]}) ended: it was killed by SIGKILL; starting it again"
        assert killed in log, log[-3000:]
        status, text = scrape(metrics)
        assert status == 200 and sample(text, "dittofs_worker_restarts_total") == 1
        assert scrape(metrics, "/ready")[0] == 200


def test_sighup_and_sigterm_reach_every_worker(tmp_path: Path) -> None:
    """SIGHUP makes each worker re-read the configuration; SIGTERM stops them all, status 0."""
    with workers_server(tmp_path) as (server, pids, _metrics):
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while server.log().count("SIGHUP: configuration re-read") < WORKERS:
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived its supervisor"
        assert server.log().count("DittoFS stopped") == WORKERS + 1


def test_memory_stores_are_refused_with_several_workers(tmp_path: Path) -> None:
    """The memory store lives in one process: --workers 2 with it is one line and exit 2."""
    done = _dittofs(tmp_path, "--workers", "2", "--metadata", "memory")
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "--workers" in lines[0] and "memory" in lines[0], lines


def test_a_store_that_cannot_open_fails_the_start(tmp_path: Path) -> None:
    """A store that cannot open: one CRITICAL line from the supervisor, which opens the stores
    before it binds, and exit status 1."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    done = _dittofs(
        tmp_path, "--workers", "2", "--metadata", f"sqlite:{blocker / 'metadata.db'}",
        "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
    )  # fmt: skip
    assert done.returncode == 1, done
    output = done.stdout.decode() + done.stderr.decode()
    critical = [line for line in output.splitlines() if "#critical]" in line]
    assert len(critical) == 1, output[-3000:]
    assert f"Could not open sqlite metadata ({blocker / 'metadata.db'}) for /export" in critical[0]
    assert "Traceback" not in output


# -- helpers ---------------------------------------------------------------------------


async def _create(port: int, names: list[bytes]) -> None:
    async with AnfsNfs3(port) as nfs:
        for name in names:
            await make_file(nfs, nfs.root, name.decode())


def _root(server: RunningServer) -> bytes:
    conn = RawConnection(server.port)
    try:
        return root_handle(conn, server.export)
    finally:
        conn.close()


def _connect_from(port: int, source: int) -> RawConnection:
    """A raw connection to *port* from local port *source*."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", source))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    conn = RawConnection.__new__(RawConnection)
    conn.sock = sock
    return conn


def _dittofs(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[bytes]:
    """Run the server in the foreground until it exits (a start that must fail)."""
    command = [
        sys.executable, "-m", "twisted", "--log-format", "text", "dittofs",
        "--data-dir", str(tmp_path / "data"), *options,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, timeout=60, check=False)
