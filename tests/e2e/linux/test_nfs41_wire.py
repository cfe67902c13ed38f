"""tshark's verdict on NFSv4.1: the Linux guest's scenarios captured on the wire and decoded.

DittoFS serves sqlite+fs with ``--nfs4``; the guest's kernel mounts it with
``vers=4.1`` and runs a selection of ``scenarios.sh`` (those that create,
rename, link, set attributes, open, lock and sync, without the long bulk
transfers, which would make the capture hundreds of megabytes), with the
host's v4.1 lock partner taking part in ``locks``.  tshark captures the
port on the loopback interface, where QEMU's user network meets DittoFS, and
Wireshark's RPC and NFSv4 dissectors then decode the capture: no malformed
packet, no expert error, exactly one reply for every call, and the
operations a mount and those scenarios need all decoded.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.e2e.linux import guest
from tests.e2e.linux.test_linux_client import BOOT_TIMEOUT, SCRIPT, _lock_partner
from tests.e2e.server import dittofs_server
from tests.e2e.test_wire import (
    _tshark_usable,
    calls_and_replies,
    capture,
    decode,
    lost_packets,
)

pytestmark = pytest.mark.linux_guest

CAPTURED_SCENARIOS = "cp_tree rename hardlink symlink attrs special unlink_open fsync locks"
#: Operations the mount and those scenarios cannot do without (``nfs.opcode`` values).
EXPECTED_OPERATIONS = {
    "ACCESS": 3, "CLOSE": 4, "COMMIT": 5, "CREATE": 6, "GETATTR": 9, "GETFH": 10, "LINK": 11,
    "LOCK": 12, "LOCKT": 13, "LOCKU": 14, "LOOKUP": 15, "OPEN": 18, "PUTFH": 22,
    "PUTROOTFH": 24, "READ": 25, "READDIR": 26, "READLINK": 27, "REMOVE": 28, "RENAME": 29,
    "SAVEFH": 32, "SETATTR": 34, "WRITE": 38, "EXCHANGE_ID": 42, "CREATE_SESSION": 43,
    "SECINFO_NO_NAME": 52, "SEQUENCE": 53, "RECLAIM_COMPLETE": 58,
}  # fmt: skip
#: A capture that lost packets proves nothing either way; the run is taken again this often.
TAKES = 2


def test_tshark_decodes_a_v41_guest_session(tmp_path: Path) -> None:
    """Wireshark decodes the guest's NFSv4.1 traffic cleanly, a reply for every call."""
    reason = _tshark_usable()
    if reason:
        pytest.skip(reason)
    guest.require_host_tools()
    for take in range(TAKES):
        workdir = tmp_path / f"take{take}"
        content = workdir / "content"
        content.mkdir(parents=True)
        options = ("--content", f"fs:{content}", "--nfs4", "--squash", "no_root_squash")
        with dittofs_server(workdir, *options) as server:
            pcap, log = workdir / "session.pcapng", workdir / "tshark.log"
            partner: list[str] = []
            job = workdir / "guest" / "job"
            with capture(server.port, pcap, log):
                thread = threading.Thread(
                    target=_lock_partner, args=(job, server.port, server.export, partner)
                )
                thread.start()
                run = guest.boot(
                    SCRIPT,
                    server.port,
                    workdir / "guest",
                    export=server.export,
                    settings={
                        "DITTOFS_E2E_SCENARIOS": CAPTURED_SCENARIOS,
                        "DITTOFS_MOUNT_OPTIONS": guest.MOUNT_OPTIONS_V41.format(port=server.port),
                    },
                    timeout=BOOT_TIMEOUT,
                )
                thread.join(timeout=60)
        failed = [r for r in run.results.values() if not r.passed]
        assert run.status == 0 and not failed, f"{run.summary()}\n{run.console[-4000:]}"
        assert partner == ["ok"], partner
        if not lost_packets(pcap, server.port):
            break
    else:
        pytest.fail(f"all {TAKES} captures lost packets, so none can judge the server")
    port = server.port
    malformed = decode(pcap, port, "-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number")
    assert malformed.strip() == "", f"malformed frames: {malformed.split()[:20]}"
    errors = decode(
        pcap, port, "-Y", "_ws.expert.severity >= 8388608", "-T", "fields", "-e", "_ws.expert"
    )
    assert errors.strip() == "", f"expert errors: {errors[:2000]}"
    calls, replies = calls_and_replies(pcap, port)
    assert sum(calls.values()) > 200, "the scenarios should have made many calls"
    assert calls == replies, (
        f"calls without a reply: {calls - replies}; replies without a call: {replies - calls}"
    )
    opcodes = decode(pcap, port, "-Y", "nfs", "-T", "fields", "-e", "nfs.opcode")
    seen = {int(code) for line in opcodes.split() for code in line.split(",") if code}
    missing = {name for name, code in EXPECTED_OPERATIONS.items() if code not in seen}
    assert not missing, f"operations never decoded: {sorted(missing)}"
