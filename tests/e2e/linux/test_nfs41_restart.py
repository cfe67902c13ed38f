"""A DittoFS restart under the Linux kernel's NFSv4.1 client holding a lock (``restart.sh``).

The guest's process takes a write lock; the host stops DittoFS (SIGTERM) and
starts it again on the same port and data directory, whose client record
lets the guest reclaim in the grace period.  The guest then writes through
its open and checks that the server still refuses the range to another of
its processes; on the host, a second NFSv4.1 client (the unit tests' client
over TCP) must be refused the range too, naming it, which only a reclaimed
lock can do.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.e2e.linux import guest
from tests.e2e.linux.test_linux_client import BOOT_TIMEOUT
from tests.e2e.server import dittofs_server, free_port
from tests.unit import v41

pytestmark = pytest.mark.linux_guest

HERE = Path(__file__).resolve().parent
STEPS = ["mount", "held", "holder_writes", "still_refused", "released", "umount"]


def _wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.2)
    return False


def test_lock_survives_a_restart(tmp_path: Path) -> None:
    """The guest reclaims its lock after the restart; the host's client is refused it."""
    guest.require_host_tools()
    port = free_port()
    content = tmp_path / "content"
    content.mkdir()
    options = ("--content", f"fs:{content}", "--nfs4", "--squash", "no_root_squash")
    job = tmp_path / "guest" / "job"
    seen: list[str] = []
    #: The server now serving: the first, then the one started after it on the same port.
    serving = [dittofs_server(tmp_path, *options, port=port)]
    first = serving[0].__enter__()

    def host_side() -> None:
        if not _wait_for(job / "held", BOOT_TIMEOUT):
            seen.append("the guest never held its lock")
            return
        serving[0].__exit__(None, None, None)  # SIGTERM, and wait for the process to end
        serving[0] = dittofs_server(tmp_path, *options, port=port)
        seen.append(f"restarted:{serving[0].__enter__().port}")
        (job / "restarted").touch()
        if not _wait_for(job / "reclaimed", 300):
            seen.append("the guest never said it had reclaimed")
            return
        rpc = v41.SocketRpc("127.0.0.1", port)
        try:
            client = v41.V41Client(None, owner=b"host-after-restart", rpc=rpc).connect()
            names = [v41.lookup(name) for name in (b"export", b"held.bin")]
            tested = client.call(
                v41.putrootfh(), *names, v41.lockt(v41.WRITE_LT, 0, 50, client.new_owner())
            )
            seen.append(f"LOCKT {tested.status} {tested.last.value}")
        finally:
            rpc.close()
            (job / "checked").touch()

    thread = threading.Thread(target=host_side, daemon=True)
    thread.start()
    try:
        run = guest.boot(
            HERE / "restart.sh",
            first.port,
            tmp_path / "guest",
            export=first.export,
            settings={"DITTOFS_MOUNT_OPTIONS": guest.MOUNT_OPTIONS_V41.format(port=port)},
            timeout=BOOT_TIMEOUT,
        )
    finally:
        thread.join(timeout=60)
        serving[0].__exit__(None, None, None)
    log = (tmp_path / f"dittofs-{port}.log").read_text(errors="replace")
    explain = (
        f"{run.summary()}\n{run.console[-3000:]}\nhost: {seen}\n--- DittoFS ---\n{log[-6000:]}"
    )
    assert [name for name in STEPS if name in run.results] == STEPS, explain
    assert all(run.results[name].passed for name in STEPS), explain
    assert seen[0] == f"restarted:{port}", explain
    assert seen[1].startswith("LOCKT 10010 {'offset': 0, 'length': 50"), explain
