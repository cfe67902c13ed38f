"""The Linux kernel's NFSv3 client, in a QEMU guest, against DittoFS: one test per scenario.

For each store pairing a DittoFS process starts, libnfs on the host writes a
file into the export, and one guest boots and runs every scenario of
``scenarios.sh`` against the mount (about four minutes under TCG).  Each
test here then asserts its scenario's ``SCENARIO ... PASS`` line; a failure
shows the scenario's own log, the guest console and the server log.  After
the guest is gone, libnfs (a second client) checks what the guest left.

Run it alone with ``python -m pytest tests/e2e/linux -m linux_guest``; see
docs/testing-linux.md.  ``DITTOFS_E2E_FULL=1`` selects the long variant
(a 1 GiB file instead of 256 MiB); ``DITTOFS_E2E_SCENARIOS="cp_tree tar"``
runs only those scenarios (the others are then skipped, saying so).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from tests.e2e.linux import guest
from tests.e2e.seaweedfs import credentials_env, seaweedfs
from tests.e2e.server import RunningServer, dittofs_server
from tests.unit import backends, v41

pytestmark = pytest.mark.linux_guest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "scenarios.sh"
FULL = os.environ.get("DITTOFS_E2E_FULL") == "1"
SELECTED = os.environ.get("DITTOFS_E2E_SCENARIOS", "").split()
#: Host-side bound on one boot: the guest normally needs 5 to 8 minutes, FULL about 12;
#: the bound leaves room for a machine that something else is loading.
BOOT_TIMEOUT = 1800.0 if FULL else 900.0
LOG_TAIL = 12_000
#: Entries the bigdir scenario creates.  The embedded metadata pairings over NFSv3
#: create the whole 20,000 in CI.  The shared databases answer each CREATE at network
#: round-trip speed (about 12 ms under the TCG guest), and NFSv4.1 creates a file with
#: an OPEN and a CLOSE (7 ms against NFSv3's 4 ms), so CI gives those pairings
#: 5,000 and FULL the whole.
BIGDIR_ENTRIES = 20_000
BIGDIR_ENTRIES_FEWER = BIGDIR_ENTRIES if FULL else 5_000
#: MiB the bigfile scenario writes and reads back on the PostgreSQL pairings, against
#: 256 on the others (FULL: 1 GiB everywhere).  They move their data through the same
#: fs content store as sqlite+fs, and under TCG 256 MiB take 70 to 90 s a boot.
BIGFILE_MIB_SHARED_DATABASE = 64
S3_BUCKET = "dittofs-linux"

#: Store pairings: the options of each gateway, given a scratch directory and the test
#: request (for the clean-up of a database schema, a Redis prefix or an S3 server).  The
#: guest mounts the first gateway; libnfs on the host writes and checks through the last,
#: so with two gateways every cross-client check is also a cross-gateway one.
PAIRINGS: dict[str, Callable[[Path, pytest.FixtureRequest], tuple[tuple[str, ...], ...]]] = {
    "memory+memory": lambda workdir, request: (("--metadata", "memory", "--content", "memory"),),
    "memory+fs": lambda workdir, request: (
        ("--metadata", "memory", "--content", f"fs:{workdir}"),
    ),
    "sqlite+fs": lambda workdir, request: (("--metadata", "sqlite", "--content", f"fs:{workdir}"),),
    "postgresql+fs": lambda workdir, request: (
        ("--metadata", _postgres_schema(request), "--content", f"fs:{workdir}"),
    ),
    "sqlite+fs-1process": lambda workdir, request: (
        ("--metadata", "sqlite", "--content", f"fs:{workdir}", "--workers", "1"),
    ),
    "postgresql+fs-1process": lambda workdir, request: (
        ("--metadata", _postgres_schema(request), "--content", f"fs:{workdir}", "--workers", "1"),
    ),
    "sqlite+fs-nfs4.1": lambda workdir, request: (
        ("--metadata", "sqlite", "--content", f"fs:{workdir}", "--nfs4"),
    ),
    "postgresql+fs-nfs4.1": lambda workdir, request: (
        ("--metadata", _postgres_schema(request), "--content", f"fs:{workdir}", "--nfs4"),
    ),
    "redis+fs": lambda workdir, request: (
        ("--metadata", _redis_prefix(request), "--content", f"fs:{workdir}"),
    ),
    "sqlite+s3": lambda workdir, request: (
        ("--metadata", "sqlite", "--content", _s3_spec(workdir, request)[0]),
    ),
    "sqlite+s3x2": lambda workdir, request: tuple(
        ("--metadata", f"sqlite:{workdir.parent / 'shared.db'}", "--content", spec)
        for spec in _s3_spec(workdir, request, gateways=2, durability="remote")
    ),
}  # fmt: skip


def _postgres_schema(request: pytest.FixtureRequest) -> str:
    """A fresh schema of the test database, dropped after the pairing's tests."""
    return backends.postgres_url(
        backends.entered(backends.postgres_schema("linux"), request.addfinalizer)
    )


def _redis_prefix(request: pytest.FixtureRequest) -> str:
    """A fresh key prefix in the local Redis, deleted after the pairing's tests."""
    prefix = backends.entered(backends.redis_prefix("linux"), request.addfinalizer)
    return f"{backends.REDIS}?prefix={prefix}"


def _s3_spec(
    cache: Path, request: pytest.FixtureRequest, gateways: int = 1, **options: str
) -> list[str]:
    """Content specs of *gateways* over one prefix of a SeaweedFS of the pairing's own.

    Each gateway has a cache directory of its own.  The SeaweedFS is stopped
    after the pairing, and its credentials are in the environment meanwhile.
    Not the test process's shared one: the scenarios fill several of its
    volumes, which the unit tests' buckets would then be short of.
    """
    patch = pytest.MonkeyPatch()
    request.addfinalizer(patch.undo)
    for key, value in credentials_env().items():
        patch.setenv(key, value)
    weed = backends.entered(seaweedfs(cache.parent / "seaweedfs"), request.addfinalizer)
    weed.create_bucket(S3_BUCKET)
    return [
        weed.spec(
            S3_BUCKET, cache.parent.name, cache_dir=cache / str(n), cache_size="512MiB", **options
        )
        for n in range(gateways)
    ]


def _scenario_names() -> list[str]:
    """The scenarios in the order the script runs them, read from the script itself."""
    block = re.search(r'^SCENARIOS="(.*?)"$', SCRIPT.read_text(), re.MULTILINE | re.DOTALL)
    assert block, f"no SCENARIOS list in {SCRIPT}"
    names = [line.split(":")[0] for line in block.group(1).split("\n") if line.strip()]
    return ["mount", *names, "umount"]


SCENARIOS = _scenario_names()


@attrs.frozen
class Booted:
    """The gateways of a pairing and what one guest run against the first produced."""

    pairing: str
    gateways: tuple[RunningServer, ...]
    run: guest.GuestRun
    #: What the host's NFSv4.1 lock partner saw (v4.1 pairings only).
    partner: list[str] = attrs.field(factory=list)

    @property
    def server(self) -> RunningServer:
        """The gateway the guest mounts."""
        return self.gateways[0]

    @property
    def host_side(self) -> RunningServer:
        """The gateway libnfs on the host writes and checks through."""
        return self.gateways[-1]


def _lock_partner(job: Path, port: int, export: str, outcome: list[str]) -> None:
    """The second NFSv4.1 client of the ``locks`` scenario, on the host, over TCP.

    It waits for the guest's process to hold a write lock on bytes 0-49, checks
    that its own LOCKT and LOCK of them are DENIED naming that range while 60-69
    is granted, then holds 80-89 until the guest has been refused it.  Each step
    is told to the guest through a file of the job directory; *outcome* ends
    with ``ok`` or says what went wrong.  Every wait is bounded.
    """

    def wait_for(name: str) -> str | None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if (job / name).exists():
                return (job / name).read_text()
            time.sleep(0.2)
        return None

    def tell(name: str, text: str = "") -> None:
        (job / f".{name}").write_text(text)
        (job / f".{name}").rename(job / name)

    relative = wait_for("lock-held")
    if relative is None:
        outcome.append("the guest never held its lock")
        return
    rpc = v41.SocketRpc("127.0.0.1", port)
    try:
        client = v41.V41Client(None, owner=b"dittofs-host-lock-partner", rpc=rpc).connect()
        path = [v41.lookup(name.encode()) for name in (export + "/" + relative).split("/") if name]
        owner = client.new_owner()
        tested = client.call(v41.putrootfh(), *path, v41.lockt(v41.WRITE_LT, 0, 50, owner))
        denied = tested.last.value
        if tested.status != 10010 or (denied["offset"], denied["length"]) != (0, 50):
            tell("host-checked", f"LOCKT of 0-49 answered {tested}")
            outcome.append(f"LOCKT: {tested}")
            return
        opened = client.ok(v41.putrootfh(), *path, v41.open_(owner, None, access=3))
        stateid = opened.last.value["stateid"]
        refused = client.call(
            v41.putrootfh(), *path, v41.lock_new(v41.WRITE_LT, 10, 20, stateid, owner)
        )
        beside = client.call(
            v41.putrootfh(), *path, v41.lock_new(v41.WRITE_LT, 60, 10, stateid, owner)
        )
        if refused.status != 10010 or beside.status != 0:
            tell("host-checked", f"LOCK 10-29 answered {refused.status}, 60-69 {beside.status}")
            outcome.append(f"LOCK: {refused} {beside}")
            return
        lock = beside.last.value
        lock = client.ok(v41.putrootfh(), *path, v41.locku(v41.WRITE_LT, lock, 60, 10)).last.value
        tell("host-checked", "ok")
        lock = client.ok(
            v41.putrootfh(), *path, v41.lock_more(v41.WRITE_LT, 80, 10, lock)
        ).last.value
        tell("host-holds")
        if wait_for("guest-denied") is None:
            outcome.append("the guest never reported being refused 80-89")
            return
        client.ok(v41.putrootfh(), *path, v41.locku(v41.WRITE_LT, lock, 80, 10))
        client.ok(v41.putrootfh(), *path, v41.close(stateid))
        tell("host-released")
        outcome.append("ok")
    except Exception as error:  # the outcome, not a thread's traceback, fails the test
        outcome.append(f"{type(error).__name__}: {error}")
    finally:
        rpc.close()


def _tail(text: str, limit: int = LOG_TAIL) -> str:
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def _libnfs(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), capture_output=True, timeout=300, check=False)


def _require_libnfs() -> None:
    missing = [tool for tool in ("nfs-cp", "nfs-cat", "nfs-ls") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install -y libnfs-utils")


#: The pairings booted by default (and in CI): the embedded default, PostgreSQL, S3 as
#: several gateways share it (two with ``durability=remote`` over one SQLite file and one
#: prefix), and the default pairing and PostgreSQL over NFSv4.1.  With the default
#: ``--workers auto`` the v3 fs pairings are served by one worker per core.
#: ``DITTOFS_E2E_PAIRINGS=all`` adds redis+fs (out of CI's 50 minutes since NFSv4.1's
#: boots came in; Redis metadata is in CI's other end-to-end suites), the memory stores,
#: which every other end-to-end suite exercises, one S3 gateway with the default
#: ``durability=local``, and sqlite+fs and postgresql+fs served by one process
#: (``--workers 1``); or name the pairings, separated by spaces.
DEPLOYED = (
    "sqlite+fs",
    "postgresql+fs",
    "sqlite+s3x2",
    "sqlite+fs-nfs4.1",
    "postgresql+fs-nfs4.1",
)
_ASKED = os.environ.get("DITTOFS_E2E_PAIRINGS", "").split()
BOOTED = sorted(PAIRINGS) if _ASKED == ["all"] else sorted(_ASKED or DEPLOYED)


@pytest.fixture(scope="module", params=BOOTED)
def booted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Booted]:
    """Serve one pairing, put a file in with libnfs, and boot the guest once against it."""
    pairing: str = request.param
    guest.require_host_tools()
    _require_libnfs()
    workdir = tmp_path_factory.mktemp(f"linux-{pairing.replace('+', '-')}")
    content = workdir / "content"
    content.mkdir()
    # The scenarios run as root and check that chown, mknod and cp -a keep owners,
    # so root keeps its powers (root squashing is the server's default).
    gateways = PAIRINGS[pairing](content, request)
    with contextlib.ExitStack() as stack:
        servers = tuple(
            stack.enter_context(dittofs_server(workdir, *options, "--squash", "no_root_squash"))
            for options in gateways
        )
        data = os.urandom(300_000) + b"written by libnfs on the host\n"
        local = workdir / "from-host.bin"
        local.write_bytes(data)
        copied = _libnfs("nfs-cp", str(local), servers[-1].url("from-host.bin"))
        assert copied.returncode == 0, copied.stderr.decode(errors="replace")
        settings = {
            "DITTOFS_E2E_FULL": "1" if FULL else "0",
            "DITTOFS_E2E_SCENARIOS": " ".join(SELECTED),
            "DITTOFS_E2E_HOST_FILE": "from-host.bin",
            "DITTOFS_E2E_HOST_SIZE": str(len(data)),
            "DITTOFS_E2E_HOST_SHA256": hashlib.sha256(data).hexdigest(),
            "DITTOFS_E2E_BIGDIR_ENTRIES": str(
                BIGDIR_ENTRIES
                if pairing.startswith(("memory", "sqlite")) and not pairing.endswith("-nfs4.1")
                else BIGDIR_ENTRIES_FEWER
            ),
        }
        if pairing.startswith("postgresql"):
            settings["DITTOFS_E2E_BIGFILE_MIB"] = str(BIGFILE_MIB_SHARED_DATABASE)
        if pairing.endswith("-nfs4.1"):
            settings["DITTOFS_MOUNT_OPTIONS"] = guest.MOUNT_OPTIONS_V41.format(port=servers[0].port)
        if "fs:" in " ".join(gateways[0]):
            stat = os.statvfs(content)
            settings["DITTOFS_E2E_EXPECT_TOTAL"] = str(stat.f_blocks * stat.f_frsize)
        partner: list[str] = []
        thread = None
        if pairing.endswith("-nfs4.1"):
            args = (workdir / "guest" / "job", servers[0].port, servers[0].export, partner)
            thread = threading.Thread(target=_lock_partner, args=args, daemon=True)
            thread.start()
        run = guest.boot(
            SCRIPT,
            servers[0].port,
            workdir / "guest",
            export=servers[0].export,
            settings=settings,
            timeout=BOOT_TIMEOUT,
        )
        if thread is not None:
            thread.join(timeout=60)
        print(f"\n[{pairing}] {run.summary()}")
        yield Booted(pairing, servers, run, partner)


def _explain(booted: Booted, scenario_log: str = "") -> str:
    run = booted.run
    parts = [
        f"pairing {booted.pairing}",
        run.summary(),
        f"--- scenario log ---\n{_tail(scenario_log)}" if scenario_log else "",
        f"--- guest console ---\n{_tail(run.console)}",
        *(
            f"--- DittoFS log (gateway {n}) ---\n{_tail(gateway.log())}"
            for n, gateway in enumerate(booted.gateways, 1)
        ),
    ]
    return "\n".join(part for part in parts if part)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(booted: Booted, scenario: str) -> None:
    """The scenario ran in the guest and every check in it held (see scenarios.sh)."""
    if SELECTED and scenario not in (*SELECTED, "mount", "umount"):
        pytest.skip(f"DITTOFS_E2E_SCENARIOS={' '.join(SELECTED)!r} leaves {scenario} out")
    result = booted.run.results.get(scenario)
    if result is None:
        pytest.fail(f"{scenario} never reported\n{_explain(booted)}", pytrace=False)
    if not result.passed:
        pytest.fail(f"{scenario}: {result.detail}\n{_explain(booted, result.log)}", pytrace=False)


def test_locks_across_clients(booted: Booted) -> None:
    """Over NFSv4.1, the guest's locks and the host client's refuse each other (``locks``)."""
    if not booted.pairing.endswith("-nfs4.1"):
        pytest.skip("NFSv3 mounts use nolock: locks stay local to the client, nothing to share")
    if SELECTED and "locks" not in SELECTED:
        pytest.skip(f"DITTOFS_E2E_SCENARIOS={' '.join(SELECTED)!r} leaves locks out")
    assert booted.partner == ["ok"], (
        f"the host's lock partner: {booted.partner}\n{_explain(booted)}"
    )


def test_guest_finished(booted: Booted) -> None:
    """The guest ran the whole script and powered off by itself, within the time bound."""
    run = booted.run
    assert not run.timed_out, f"the guest was killed after {BOOT_TIMEOUT}s\n{_explain(booted)}"
    assert run.status == 0, f"the scenario script exited {run.status}\n{_explain(booted)}"


def test_server_log_clean(booted: Booted) -> None:
    """Nothing the clients sent made a gateway log a traceback, and every one is still up."""
    for gateway in booted.gateways:
        log = gateway.log()
        assert gateway.process.poll() is None, f"DittoFS exited\n{_tail(log)}"
        assert "Traceback" not in log, f"DittoFS logged a traceback\n{_tail(log)}"


@attrs.frozen
class Entry:
    """One line of ``nfs-ls -R``."""

    mode: str
    nlink: int
    size: int


def _listing(server: RunningServer) -> dict[str, Entry]:
    """The whole export as libnfs lists it, by path relative to the export."""
    listed = _libnfs("nfs-ls", "-R", server.url())
    assert listed.returncode == 0, listed.stderr.decode(errors="replace")
    entries: dict[str, Entry] = {}
    for line in listed.stdout.decode(errors="replace").splitlines():
        if line.strip():
            mode, nlink, _uid, _gid, size, path = line.split(None, 5)
            entries[path] = Entry(mode, int(nlink), int(size))
    return entries


def _digest(server: RunningServer, name: str, algorithm: str) -> str:
    """Stream a top-level file through nfs-cat into a hash, never holding it whole."""
    digest = hashlib.new(algorithm)
    with subprocess.Popen(["nfs-cat", server.url(name)], stdout=subprocess.PIPE) as cat:
        assert cat.stdout is not None
        while block := cat.stdout.read(1 << 20):
            digest.update(block)
    assert cat.returncode == 0, f"nfs-cat {name} exited {cat.returncode}"
    return digest.hexdigest()


def _mode_bits(mode: str) -> str:
    """``-rw-r-----`` as ``640``."""
    bits = mode[-9:]
    return "".join(
        str(
            sum(
                value for char, value in zip(bits[i : i + 3], (4, 2, 1), strict=True) if char != "-"
            )
        )
        for i in (0, 3, 6)
    )


def test_host_sees_guest_changes(booted: Booted) -> None:
    """libnfs on the host, a second client, sees what the guest wrote, renamed and linked."""
    requests = [line.split()[1:] for line in booted.run.extra if line.startswith("XCHECK ")]
    if not requests and SELECTED:
        pytest.skip(f"DITTOFS_E2E_SCENARIOS={' '.join(SELECTED)!r} asked for no cross-client check")
    if not requests:
        pytest.fail(f"the guest asked for no cross-client checks\n{_explain(booted)}")
    listing = _listing(booted.host_side)
    problems = []
    for kind, path, *wanted in requests:
        expected = wanted
        if kind in ("md5", "sha256"):
            got = _digest(booted.host_side, path, kind)
        elif kind == "count":
            got = str(sum(1 for name in listing if name.startswith(f"{path}/")))
        elif kind == "names":
            got = " ".join(
                sorted(n.split("/")[-1] for n in listing if n.rpartition("/")[0] == path)
            )
            expected = [" ".join(sorted(wanted))]
        elif kind == "mode":
            got = _mode_bits(listing[path].mode) if path in listing else "absent"
        elif kind == "nlink":
            got = str(listing[path].nlink) if path in listing else "absent"
        else:
            problems.append(f"unknown check {kind}")
            continue
        if [got] != expected:
            problems.append(f"{kind} {path}: the guest saw {' '.join(expected)}, libnfs sees {got}")
    assert not problems, "\n".join(problems) + "\n" + _explain(booted)
