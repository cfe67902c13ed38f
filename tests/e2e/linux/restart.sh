#!/bin/bash
# The guest's side of test_nfs41_restart.py: hold a lock across a server restart.
#
#   restart.sh RESULTS LOGDIR
#
# A process takes a write lock on bytes 0-49 of a file over NFSv4.1 and keeps
# it.  The host restarts DittoFS (same port, same data directory); the guest
# then touches the mount, which sets its kernel client reclaiming in the grace
# period, and checks that another of its processes is still refused the range
# by the server, and that the holder is alive and can still write.  One
# SCENARIO line per step, as scenarios.sh writes them; files in /run/job are
# how the guest and the host take turns, every wait bounded.
set -u
RESULTS=$1
LOGS=$2
M=/run/nfs
JOB=/run/job
exec > "$LOGS/restart.log" 2>&1

report() {
    echo "SCENARIO $1 $2 ${3:-}" >> "$RESULTS"
    echo "E2E: $1 $2 ${3:-}" > /dev/console
}

mkdir -p "$M"
if mount -t nfs4 -o "$DITTOFS_MOUNT_OPTIONS" "$DITTOFS_SERVER:$DITTOFS_EXPORT" "$M"; then
    report mount PASS
else
    report mount FAIL "could not mount"
    exit 1
fi
python3 - "$M/held.bin" "$JOB" <<'PY'
import errno, fcntl, os, signal, sys, time

path, job = sys.argv[1], sys.argv[2]


def report(name, ok, detail=""):
    with open(os.path.join(job, "results"), "a") as results:
        results.write(f"SCENARIO {name} {'PASS' if ok else 'FAIL'} {detail}\n")
    print(name, ok, detail, flush=True)
    if not ok:
        sys.exit(1)


def wait_for(name, seconds=300):
    deadline = time.monotonic() + seconds
    while not os.path.exists(os.path.join(job, name)):
        if time.monotonic() > deadline:
            report(name, False, f"the host never wrote {name}")
        time.sleep(0.2)


def refused(length, start):
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)
    return False


with open(path, "wb") as f:
    f.write(b"x" * 100)
ready, told = os.pipe()
go, going = os.pipe()
holder = os.fork()
if holder == 0:
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 50, 0)
    os.write(told, b"1")
    os.read(go, 1)  # after the restart: write through the reclaimed open and lock
    try:
        os.pwrite(fd, b"after the restart", 0)
        os.fsync(fd)
        os.write(told, b"1")
    except OSError as error:
        os.write(told, str(error.errno).encode())
    time.sleep(600)
    os._exit(0)
os.read(ready, 1)
report("held", refused(20, 10), "another process is refused 10-29")
open(os.path.join(job, "held"), "w").close()
wait_for("restarted")
os.stat(path)  # the first call after the restart: the client finds its session gone
os.write(going, b"1")
answer = os.read(ready, 8)
report("holder_writes", answer == b"1", f"the holder's write after the restart: {answer!r}")
report("still_refused", refused(20, 10), "the reclaimed lock still refuses another process")
open(os.path.join(job, "reclaimed"), "w").close()
wait_for("checked")
os.kill(holder, signal.SIGKILL)
os.waitpid(holder, 0)
deadline = time.monotonic() + 30
while refused(50, 0):
    if time.monotonic() > deadline:
        report("released", False, "the killed holder's lock stayed")
    time.sleep(0.5)
report("released", True)
PY
umount "$M" && report umount PASS || report umount FAIL
