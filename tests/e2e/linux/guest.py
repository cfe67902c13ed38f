"""Boot a Linux guest under QEMU (TCG) whose kernel NFS client mounts a DittoFS server.

The guest is Debian's stock kernel with an initramfs built here: a static
busybox as ``/init``, and only the modules needed for virtio networking, 9p
and the NFSv3 and NFSv4 clients.  Two 9p shares give it everything else:

* ``hostroot``: the host's ``/``, read-only.  The guest chroots into it, so a
  scenario script runs with the host's bash, coreutils, python3, fio and
  stress-ng without any of them being copied into an image.
* ``job``: a per-run directory, writable.  The harness puts the scenario
  script and its settings there; the guest writes one ``SCENARIO name
  PASS|FAIL detail`` line per scenario into ``results``, a log per scenario
  under ``logs/``, and its exit status into ``status``, then powers off.

The guest's only network is QEMU's user-mode (slirp) stack; 10.0.2.2 inside
the guest is the host's loopback, where DittoFS listens.  Nothing leaves the
QEMU process.  The host side bounds every boot with a timeout that kills
QEMU.

Kernel packages are fetched once with ``apt-get download`` and unpacked with
``dpkg -x`` under ``<repo>/.e2e-cache/linux`` (gitignored); the host's /boot
is never used or touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import lzma
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CACHE = Path(os.environ.get("DITTOFS_E2E_CACHE", REPO / ".e2e-cache" / "linux"))

#: Modules the guest needs; their dependencies are found from each module's modinfo.
TARGET_MODULES = ("virtio_pci", "virtio_net", "9pnet_virtio", "9p", "nfsv3", "nfsv4")

#: Host tool -> the Debian package that provides it.
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg": "dpkg",
}
BUSYBOX = Path("/bin/busybox")

#: Where, in the guest, 10.0.2.2 is the host's loopback.
HOST_ADDRESS = "10.0.2.2"
GUEST_ADDRESS = "10.0.2.15"

#: The mount options the kernel client is given (no portmapper, no NLM).
MOUNT_OPTIONS = (
    "vers=3,proto=tcp,port={port},mountport={port},mountproto=tcp,nolock,"
    f"addr={HOST_ADDRESS},mountaddr={HOST_ADDRESS}"
)

#: The same over NFSv4.1: one port, no MOUNT protocol, and locks that reach the server.
MOUNT_OPTIONS_V41 = f"vers=4.1,proto=tcp,port={{port}},addr={HOST_ADDRESS}"

#: The host's / for the guest to chroot into: read-only, and with inode numbers of the
#: host's many file systems remapped so the guest's 9p sees no collisions.
HOST_ROOT_SHARE = "security_model=none,readonly=on,multidevs=remap"

SCENARIO_LINE = re.compile(r"^SCENARIO (\S+) (PASS|FAIL)(?: (.*))?$")


class GuestError(Exception):
    """The guest could not be prepared or booted (not: a scenario failed)."""


class MissingPackageError(GuestError):
    """A host tool is missing; the message names the Debian package to install."""


@attrs.frozen
class Kernel:
    """A kernel unpacked from a Debian package: the image and its modules directory."""

    package: str
    version: str
    vmlinuz: Path
    modules: Path


@attrs.frozen
class ScenarioResult:
    """One ``SCENARIO`` line: did it pass, and what it said about itself."""

    name: str
    passed: bool
    detail: str
    log: str


@attrs.define
class GuestRun:
    """What one boot produced."""

    results: dict[str, ScenarioResult]
    console: str
    status: int | None
    boot_seconds: float | None
    wall_seconds: float
    timed_out: bool
    extra: list[str]
    """Lines of ``results`` that are not ``SCENARIO`` lines (``XCHECK`` requests, notes)."""

    def summary(self) -> str:
        """One line per scenario, for a failure message or a report."""
        lines = [
            f"{r.name}: {'PASS' if r.passed else 'FAIL'} {r.detail}" for r in self.results.values()
        ]
        lines.append(
            f"status={self.status} timed_out={self.timed_out} "
            f"boot={self.boot_seconds}s wall={self.wall_seconds:.1f}s"
        )
        return "\n".join(lines)


def require_host_tools() -> None:
    """Fail with the package to install if a host tool the harness needs is missing."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if not BUSYBOX.exists() or not _is_static_elf(BUSYBOX):
        missing.append("busybox-static")
    if missing:
        raise MissingPackageError(
            "the Linux-guest tests need these Debian packages: "
            f"apt-get install -y {' '.join(missing)}"
        )


def _is_static_elf(path: Path) -> bool:
    """True if *path* is an ELF executable without a program interpreter (PT_INTERP)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for index in range(phnum):
        (p_type,) = struct.unpack_from("<I", data, phoff + index * phentsize)
        if p_type == 3:
            return False
    return True


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=600, cwd=cwd
        )
    except FileNotFoundError as error:
        raise MissingPackageError(f"{what}: {command[0]} is not installed") from error
    if done.returncode != 0:
        raise GuestError(f"{what} failed ({shlex.join(command)}):\n{done.stdout}{done.stderr}")
    return done.stdout


def kernel_package() -> str:
    """The versioned package ``linux-image-amd64`` depends on (or DITTOFS_E2E_KERNEL_PACKAGE)."""
    pinned = os.environ.get("DITTOFS_E2E_KERNEL_PACKAGE")
    if pinned:
        return pinned
    # Once a kernel is cached it is kept, so runs stay comparable (delete the cache to move on).
    cached = sorted(CACHE.glob("linux-image-*/.complete"))
    if cached:
        return cached[-1].parent.name
    output = _run(["apt-cache", "depends", "linux-image-amd64"], "finding the Debian kernel")
    found = re.findall(r"Depends:\s*(linux-image-\S+-amd64)", output)
    if not found:
        raise GuestError(
            "apt-cache does not know linux-image-amd64: run `apt-get update` first\n" + output
        )
    return found[0]


def ensure_kernel() -> Kernel:
    """Download and unpack the Debian kernel package once; return where its parts are."""
    require_host_tools()
    package = kernel_package()
    tree = CACHE / package
    if not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as download:
            _run(["apt-get", "download", package], f"apt-get download {package}", Path(download))
            (deb,) = Path(download).glob("*.deb")
            _run(["dpkg", "-x", str(deb), str(tree)], f"dpkg -x {deb.name}")
        (tree / ".complete").write_text(package + "\n")
    images = sorted(tree.glob("boot/vmlinuz-*"))
    if not images:
        raise GuestError(f"{package} has no boot/vmlinuz-*")
    version = images[0].name.removeprefix("vmlinuz-")
    modules = next(p for p in (tree / "lib/modules", tree / "usr/lib/modules") if p.exists())
    return Kernel(package, version, images[0], modules / version)


def _module_files(modules: Path) -> dict[str, Path]:
    """Map each module name (with ``-`` spelt ``_``) to its file."""
    found: dict[str, Path] = {}
    for path in modules.rglob("*.ko*"):
        name = path.name.split(".ko")[0].replace("-", "_")
        found[name] = path
    return found


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        raise GuestError(f"{path.name}: zstd-compressed modules are not supported")
    return data


def _depends(module: bytes) -> list[str]:
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", module)
    if not match or not match.group(1):
        return []
    return [name.decode().replace("-", "_") for name in match.group(1).split(b",")]


def module_load_order(
    modules: Path, targets: Iterable[str] = TARGET_MODULES
) -> list[tuple[str, bytes]]:
    """The target modules and everything they depend on, dependencies first."""
    files = _module_files(modules)
    ordered: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in files:
            raise GuestError(f"kernel module {name} not found under {modules}")
        data = _module_bytes(files[name])
        for dependency in _depends(data):
            visit(dependency)
        ordered.append((name, data))

    for target in targets:
        visit(target)
    return ordered


INIT = r"""#!/bin/busybox sh
# DittoFS e2e guest init: modules, network, 9p shares, then the job in a chroot.
/bin/busybox mkdir -p /proc /sys /dev /host /bin
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "E2E: init at $(cut -d' ' -f1 /proc/uptime)s"
for module in $(cat /modules.order); do
    insmod "/modules/$module.ko" || echo "E2E: insmod $module failed"
done
ip link set lo up
ip addr add __GUEST__/24 dev eth0
ip link set eth0 up
P9="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o "$P9,ro,cache=loose" hostroot /host || echo "E2E: cannot mount host root"
mount -t tmpfs -o mode=755 tmpfs /host/run
mount -t tmpfs -o mode=1777 tmpfs /host/tmp
mkdir -p /host/run/job /host/run/nfs
mount -t 9p -o "$P9" job /host/run/job || echo "E2E: cannot mount job share"
mount -t proc proc /host/proc || echo "E2E: cannot mount /host/proc"
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mkdir -p /host/dev/shm /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t devpts devpts /host/dev/pts
ln -s /proc/self/fd /host/dev/fd
ln -s /proc/self/fd/0 /host/dev/stdin
ln -s /proc/self/fd/1 /host/dev/stdout
ln -s /proc/self/fd/2 /host/dev/stderr
cut -d' ' -f1 /proc/uptime > /host/run/job/boot-seconds
echo "E2E: running job at $(cat /host/run/job/boot-seconds)s"
chroot /host /usr/bin/env -i HOME=/tmp TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash /run/job/run.sh
echo $? > /host/run/job/status
echo "E2E: job exited $(cat /host/run/job/status) at $(cut -d' ' -f1 /proc/uptime)s"
sync
umount /host/run/job
poweroff -f
"""


def _newc(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A ``newc`` cpio archive of (name, mode, data, rdev major, rdev minor) entries."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\x00" * (-out.tell() % 4))

    for inode, (name, mode, data, major, minor) in enumerate(
        [*entries, ("TRAILER!!!", 0, b"", 0, 0)], start=1
    ):
        encoded = name.encode() + b"\x00"
        fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(encoded), 0)
        out.write(b"070701" + b"".join(b"%08X" % field for field in fields))
        out.write(encoded)
        pad()
        out.write(data)
        pad()
    return out.getvalue()


def ensure_initramfs(kernel: Kernel) -> Path:
    """Build (once per kernel, busybox and init script) the guest's initramfs."""
    busybox = BUSYBOX.read_bytes()
    modules = module_load_order(kernel.modules)
    init = INIT.replace("__GUEST__", GUEST_ADDRESS).encode()
    key = hashlib.sha256(busybox + init + b"".join(n.encode() + d for n, d in modules))
    path = CACHE / kernel.package / f"initramfs-{key.hexdigest()[:16]}.cpio"
    if path.exists():
        return path
    directory, regular, executable = 0o040755, 0o100644, 0o100755
    entries: list[tuple[str, int, bytes, int, int]] = [
        ("bin", directory, b"", 0, 0),
        ("dev", directory, b"", 0, 0),
        ("dev/console", 0o020600, b"", 5, 1),
        ("dev/null", 0o020666, b"", 1, 3),
        ("modules", directory, b"", 0, 0),
        ("proc", directory, b"", 0, 0),
        ("sys", directory, b"", 0, 0),
        ("host", directory, b"", 0, 0),
        ("bin/busybox", executable, busybox, 0, 0),
        ("init", executable, init, 0, 0),
        ("modules.order", regular, "".join(f"{n}\n" for n, _ in modules).encode(), 0, 0),
    ]
    entries += [(f"modules/{name}.ko", regular, data, 0, 0) for name, data in modules]
    for stale in path.parent.glob("initramfs-*.cpio"):
        stale.unlink()
    partial = path.with_suffix(".partial")
    partial.write_bytes(_newc(entries))
    partial.rename(path)
    return path


def boot(
    script: Path,
    port: int,
    workdir: Path,
    *,
    export: str = "/export",
    settings: Mapping[str, str] | None = None,
    timeout: float = 900.0,
    memory_mib: int = 2048,
    cpus: int = 1,
) -> GuestRun:
    """Boot the guest, run *script* (bash, in the chroot) against DittoFS on *port*.

    *settings* become shell variables the script can read from
    ``/run/job/settings``, alongside ``DITTOFS_PORT``, ``DITTOFS_EXPORT``,
    ``DITTOFS_SERVER`` and ``DITTOFS_MOUNT_OPTIONS``.

    One virtual CPU is the default on purpose: on a 2-core host that also
    runs the server, a second TCG vCPU made every scenario 2-3 times slower
    (cross-vCPU synchronisation), CPU-bound ones included.
    """
    kernel = ensure_kernel()
    initramfs = ensure_initramfs(kernel)
    job = workdir / "job"
    shutil.rmtree(job, ignore_errors=True)
    (job / "logs").mkdir(parents=True)
    shutil.copy(script, job / "scenarios.sh")
    variables = {
        "DITTOFS_PORT": str(port),
        "DITTOFS_EXPORT": export,
        "DITTOFS_SERVER": HOST_ADDRESS,
        "DITTOFS_MOUNT_OPTIONS": MOUNT_OPTIONS.format(port=port),
        **(settings or {}),
    }
    (job / "settings").write_text(
        "".join(f"{key}={shlex.quote(value)}\n" for key, value in variables.items())
    )
    (job / "run.sh").write_text(
        "set -a\n. /run/job/settings\nset +a\n"
        "exec /bin/bash /run/job/scenarios.sh /run/job/results /run/job/logs\n"
    )
    (job / "results").write_text("")
    console_path = workdir / "console.log"
    command = [
        "qemu-system-x86_64",
        "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(cpus), "-m", str(memory_mib),
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", f"file:{console_path}",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs),
        "-append", "console=ttyS0 panic=-1 quiet loglevel=4",
        "-netdev", f"user,id=n0,net=10.0.2.0/24,host={HOST_ADDRESS}",
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-virtfs", f"local,path=/,mount_tag=hostroot,{HOST_ROOT_SHARE}",
        "-virtfs", f"local,path={job},mount_tag=job,security_model=none",
    ]  # fmt: skip
    started = time.monotonic()
    timed_out = False
    with open(workdir / "qemu.log", "wb") as qemu_log:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT
            )
        except FileNotFoundError as error:
            raise MissingPackageError("apt-get install -y qemu-system-x86") from error
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    wall = time.monotonic() - started
    console = console_path.read_text(errors="replace") if console_path.exists() else ""
    qemu_output = (workdir / "qemu.log").read_text(errors="replace")
    if qemu_output.strip():
        console += "\n--- qemu ---\n" + qemu_output
    return _collect(job, console, wall, timed_out)


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")
    return ""


def _collect(job: Path, console: str, wall: float, timed_out: bool) -> GuestRun:
    results: dict[str, ScenarioResult] = {}
    extra: list[str] = []
    for line in _read(job / "results").splitlines():
        match = SCENARIO_LINE.match(line)
        if match:
            name, verdict, detail = match.groups()
            log = _read(job / "logs" / f"{name}.log")
            results[name] = ScenarioResult(name, verdict == "PASS", detail or "", log)
        elif line.strip():
            extra.append(line)
    status_text = _read(job / "status").strip()
    boot_text = _read(job / "boot-seconds").strip()
    return GuestRun(
        results=results,
        console=console,
        status=int(status_text) if status_text.lstrip("-").isdigit() else None,
        boot_seconds=float(boot_text) if boot_text else None,
        wall_seconds=wall,
        timed_out=timed_out,
        extra=extra,
    )
