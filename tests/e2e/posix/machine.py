"""The state machine: random POSIX operations on both sides, every outcome compared.

Hypothesis draws each step (who, which operation, which paths and values)
from a small universe of names, so operations collide: renames over
existing files and non-empty directories, links onto links of the same
file, walks through symbolic links and files.  After every step the
outcome (value or errno) of both sides must be equal, then so must the
``lstat`` of every path the step named and of their directories.  At the
end of each example the whole tree is compared, contents included.

Where NFSv3 itself cannot carry local semantics, the comparison leaves a
field out, and :data:`EXCEPTIONS` says why.  Nothing else may differ.
"""

from __future__ import annotations

import random
import stat
import sys
from collections import Counter
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from tests.e2e.posix.reference import Outcome, Reference
from tests.e2e.posix.remote import Remote

#: Fields of ``lstat`` that are not compared, and why.
EXCEPTIONS = {
    "ctime": "cannot be set, so two systems running at different moments never agree on it; "
    "whether each call moves it is proven by the unit tests of every store",
    "directory size": "NFSv3 leaves it to the server; DittoFS reports 4096, tmpfs a count of "
    "entries",
    "times set to now": "two clocks: a time the system chose is compared as 'recent', a time "
    "the caller chose (always before 2020 here) exactly",
    "atime on READ": "DittoFS never moves atime on READ (as noatime); the reference is a "
    "noatime tmpfs, so the two agree and atime is compared like mtime",
    "truncate to the current size": "POSIX moves mtime only if the size changes, and so do "
    "ext4 and DittoFS; tmpfs moves it when a page lies past the new size and not otherwise "
    "(shmem_truncate_range), so the reference cannot judge: such a truncate is not issued; "
    "tests/unit/test_policy.py checks DittoFS keeps mtime",
    "opening FIFOs and devices": "opens the device on the client, not the server: "
    "read, write and truncate of such a path are not issued",
}

#: How often a run reports its progress on stderr (long runs take hours).
PROGRESS_EVERY = 10_000
NAMES = ("a", "b", "c")
MAX_DEPTH = 4
IDS = (-1, 0, 1001, 1002, 1003, 65534)
MODES = st.one_of(
    st.sampled_from(
        (0o777, 0o755, 0o700, 0o644, 0o600, 0o444, 0o000, 0o711, 0o070, 0o007, 0o4755,
         0o2755, 0o6777, 0o2745, 0o1777, 0o3777, 0o4777, 0o2777, 0o2767)
    ),
    st.integers(0, 0o7777),
)  # fmt: skip
OFFSETS = st.sampled_from((0, 1, 4095, 4096, 65536, 100_000))
SIZES = st.sampled_from((0, 1, 100, 5000))
#: Explicit times: before 2020, so never mistaken for "now" (see EXCEPTIONS).
EXPLICIT_BEFORE = 1_577_836_800 * 10**9
TIMES = st.integers(10**9 * 10**9, EXPLICIT_BEFORE - 1)
#: Targets of new symbolic links: names of the universe (relative, never absolute or '..').
TARGETS = st.sampled_from(("a", "b", "c", "a/b", "b/c", "missing", "a/missing"))
SPECIAL = (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK)


def paths() -> st.SearchStrategy[str]:
    """A path of one to three names from the universe."""
    return st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)


class Budget:
    """Operations done, by name, across every example of one run."""

    def __init__(self) -> None:
        #: Outcomes of the operations the rules drew, by operation and "ok" or errno.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        #: ``lstat`` comparisons made to observe the effects of those operations.
        self.observations = 0
        self.skipped: Counter[str] = Counter()

    def count(self, name: str, outcome: str) -> None:
        """Count one compared operation; long runs say every so often how far they are."""
        self.outcomes[name, outcome] += 1
        if self.total % PROGRESS_EVERY == 0:
            print(f"{self.total} operations compared, no difference", file=sys.stderr, flush=True)

    @property
    def total(self) -> int:
        """Operations compared so far (observations not counted)."""
        return sum(self.outcomes.values())

    def summary(self) -> str:
        """One line per operation: how often it ran and how it ended."""
        by_name: dict[str, Counter[str]] = {}
        for (name, outcome), count in self.outcomes.items():
            by_name.setdefault(name, Counter())[outcome] = count
        return "\n".join(
            f"  {name}: " + ", ".join(f"{outcome} {count}" for outcome, count in c.most_common())
            for name, c in sorted(by_name.items())
        )


def normalise(value: Any) -> Any:
    """An ``lstat`` tuple with what :data:`EXCEPTIONS` leaves out masked."""
    if not (isinstance(value, tuple) and len(value) == 9):
        return value
    mode, nlink, uid, gid, size, major, minor, atime, mtime = value
    if stat.S_ISDIR(mode):
        size = "dir"
    return (
        oct(mode), nlink, uid, gid, size, major, minor,
        atime if atime < EXPLICIT_BEFORE else "recent",
        mtime if mtime < EXPLICIT_BEFORE else "recent",
    )  # fmt: skip


class Differential(RuleBasedStateMachine):
    """Set up by :func:`machine_for` with both sides; one example is one fresh directory."""

    reference: Reference
    remote: Remote
    identities: tuple[str, ...]
    budget: Budget
    examples = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).examples += 1
        self.base = f"run{type(self).examples}"
        #: Paths (below the example's directory) last seen to exist.
        self.known: set[str] = set()

    # -- both sides, compared ---------------------------------------------------------------

    def step(self, who: str, name: str, *args: Any) -> Outcome:
        """One operation a rule drew, compared and counted."""
        outcome = self.both(who, name, *args)
        self.budget.count(name, "ok" if outcome[0] == "ok" else str(outcome[1]))
        return outcome

    def both(self, who: str, name: str, *args: Any) -> Outcome:
        """Run one operation on both sides; fail unless the outcomes agree."""
        local = self.reference.run(who, name, *args)
        remote = self.remote.run(who, name, *args)
        assert _comparable(local) == _comparable(remote), (
            f"{who} {name}{args}: the local filesystem answered {_shown(local)}, "
            f"DittoFS {_shown(remote)}"
        )
        return local

    def pick(self, data: st.DataObject, new: bool = False) -> str:
        """A path for a step: for a *new* entry mostly a new name in a directory that
        exists, otherwise mostly a path that exists; sometimes any path of the universe
        (so walks meet files, dead ends and names taken)."""
        ways = ("child", "child", "known", "any") if new else ("known", "known", "known", "any")
        how = data.draw(st.sampled_from(ways))
        if how == "any" or not self.known:
            return data.draw(paths())
        path = data.draw(st.sampled_from(sorted(self.known)))
        if how == "child" and path.count("/") < MAX_DEPTH - 1:
            path = f"{path}/{data.draw(st.sampled_from(NAMES))}"
        return path

    def at(self, path: str) -> str:
        return f"{self.base}/{path}"

    def observe(self, *names: str) -> None:
        """Compare the lstat of each path named and of the directories holding it."""
        seen: set[str] = set()
        for path in names:
            parts = path.split("/")
            for depth in range(len(parts), -1, -1):
                seen.add("/".join(parts[:depth]))
        for path in sorted(seen):
            found = self.both("root", "lstat", self.at(path) if path else self.base)
            self.budget.observations += 1
            if path and found[0] == "ok":
                self.known.add(path)
            else:
                self.known.discard(path)

    def special(self, path: str) -> bool:
        """Whether *path* leads to a FIFO, socket or device (see EXCEPTIONS)."""
        kind, value = self.reference.run("setup", "stat_follow", self.at(path))
        return kind == "ok" and stat.S_IFMT(value[0]) in SPECIAL

    def sized(self, path: str, size: int) -> bool:
        """Whether *path* leads to a regular file of *size* bytes (see EXCEPTIONS)."""
        kind, value = self.reference.run("setup", "stat_follow", self.at(path))
        return kind == "ok" and stat.S_ISREG(value[0]) and value[1] == size

    # -- the example's directory --------------------------------------------------------------

    @initialize()
    def fresh_directory(self) -> None:
        """A new world-writable directory on both sides, owned alike (root may be squashed)."""
        assert self.remote.run("root", "mkdir", self.base, 0o777)[0] == "ok"
        owner = self.remote.run("root", "lstat", self.base)
        assert owner[0] == "ok", owner
        assert self.reference.run("setup", "mkdir", self.base, 0o777)[0] == "ok"
        assert self.reference.run("setup", "chown", self.base, owner[1][2], owner[1][3])[0] == "ok"
        assert self.reference.run("setup", "chmod", self.base, 0o777)[0] == "ok"

    # -- the rules: one system call each ---------------------------------------------------------

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data(), mode=MODES)
    def create(self, who: str, data: st.DataObject, mode: int) -> None:
        path = self.pick(data, new=True)
        self.step(who, "create", self.at(path), mode)
        self.observe(path)

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data(), mode=MODES)
    def mkdir(self, who: str, data: st.DataObject, mode: int) -> None:
        path = self.pick(data, new=True)
        self.step(who, "mkdir", self.at(path), mode)
        self.observe(path)

    @rule(
        who=st.sampled_from(("root", "alice", "bob")),
        data=st.data(),
        kind=st.sampled_from(("fifo", "chr", "blk", "sock")),
        mode=MODES,
    )
    def mknod(self, who: str, data: st.DataObject, kind: str, mode: int) -> None:
        path = self.pick(data, new=True)
        self.step(who, "mknod", self.at(path), kind, mode & 0o777, 1, 3)
        self.observe(path)

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data(), points_to=TARGETS)
    def symlink(self, who: str, data: st.DataObject, points_to: str) -> None:
        path = self.pick(data, new=True)
        self.step(who, "symlink", self.at(path), points_to)
        self.observe(path)

    @rule(
        who=st.sampled_from(("root", "alice", "bob")),
        data=st.data(),
        offset=OFFSETS,
        size=SIZES,
        seed=st.integers(0, 2**32),
    )
    def write(self, who: str, data: st.DataObject, offset: int, size: int, seed: int) -> None:
        path = self.pick(data)
        if self.special(path):
            self.budget.skipped["write"] += 1
            return
        self.step(who, "write", self.at(path), offset, random.Random(seed).randbytes(size))
        self.observe(path)

    @rule(
        who=st.sampled_from(("root", "alice", "bob")),
        data=st.data(),
        offset=OFFSETS,
        count=st.sampled_from((0, 1, 100, 8192, 70_000)),
    )
    def read(self, who: str, data: st.DataObject, offset: int, count: int) -> None:
        path = self.pick(data)
        if self.special(path):
            self.budget.skipped["read"] += 1
            return
        self.step(who, "read", self.at(path), offset, count)
        self.observe(path)

    @rule(
        who=st.sampled_from(("root", "alice", "bob")),
        data=st.data(),
        size=st.sampled_from((0, 1, 5000, 70_000)),
    )
    def truncate(self, who: str, data: st.DataObject, size: int) -> None:
        path = self.pick(data)
        if self.special(path) or self.sized(path, size):
            self.budget.skipped["truncate"] += 1
            return
        self.step(who, "truncate", self.at(path), size)
        self.observe(path)

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data())
    def unlink(self, who: str, data: st.DataObject) -> None:
        path = self.pick(data)
        self.step(who, "unlink", self.at(path))
        self.observe(path)

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data())
    def rmdir(self, who: str, data: st.DataObject) -> None:
        path = self.pick(data)
        self.step(who, "rmdir", self.at(path))
        self.observe(path)

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data())
    def rename(self, who: str, data: st.DataObject) -> None:
        source, destination = self.pick(data), self.pick(data, new=True)
        self.step(who, "rename", self.at(source), self.at(destination))
        self.observe(source, destination)

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data())
    def link(self, who: str, data: st.DataObject) -> None:
        source, destination = self.pick(data), self.pick(data, new=True)
        self.step(who, "link", self.at(source), self.at(destination))
        self.observe(source, destination)

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data())
    def readlink(self, who: str, data: st.DataObject) -> None:
        path = self.pick(data)
        self.step(who, "readlink", self.at(path))

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data(), mode=MODES)
    def chmod(self, who: str, data: st.DataObject, mode: int) -> None:
        path = self.pick(data)
        self.step(who, "chmod", self.at(path), mode)
        self.observe(path)

    @rule(
        who=st.sampled_from(("root", "alice", "bob")),
        data=st.data(),
        ids=st.tuples(st.sampled_from(IDS), st.sampled_from(IDS)).filter(
            lambda ids: ids != (-1, -1)
        ),
        follow=st.booleans(),
    )
    def chown(self, who: str, data: st.DataObject, ids: tuple[int, int], follow: bool) -> None:
        path = self.pick(data)
        self.step(who, "chown" if follow else "lchown", self.at(path), *ids)
        self.observe(path)

    @rule(
        who=st.sampled_from(("root", "alice", "bob")), data=st.data(), times=st.tuples(TIMES, TIMES)
    )
    def utime(self, who: str, data: st.DataObject, times: tuple[int, int]) -> None:
        path = self.pick(data)
        self.step(who, "utime", self.at(path), times)
        self.observe(path)

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data())
    def utime_now(self, who: str, data: st.DataObject) -> None:
        path = self.pick(data)
        self.step(who, "utime_now", self.at(path))
        self.observe(path)

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data())
    def listdir(self, who: str, data: st.DataObject) -> None:
        path = self.pick(data)
        self.step(who, "listdir", self.at(path))

    @rule(who=st.sampled_from(("root", "alice", "bob")), data=st.data())
    def lstat(self, who: str, data: st.DataObject) -> None:
        path = self.pick(data)
        self.step(who, "lstat", self.at(path))

    def teardown(self) -> None:
        """The whole tree, contents included, must agree at the end of every example."""
        self.compare_tree(self.base)

    def compare_tree(self, path: str) -> None:
        kind, info = self.both("root", "lstat", path)
        if kind != "ok":
            return
        if stat.S_ISDIR(info[0]):
            listed = self.both("root", "listdir", path)
            if listed[0] == "ok":
                for name in listed[1]:
                    self.compare_tree(f"{path}/{name.decode()}")
        elif stat.S_ISREG(info[0]):
            self.both("root", "read_all", path)


def _comparable(outcome: Outcome) -> Outcome:
    kind, value = outcome
    return (kind, normalise(value))


def _shown(outcome: Outcome) -> str:
    kind, value = _comparable(outcome)
    if kind == "err":
        return str(value)
    if isinstance(value, bytes) and len(value) > 64:
        return f"{len(value)} bytes starting {value[:32]!r}"
    return f"ok {value!r}"


def machine_for(reference: Reference, remote: Remote, budget: Budget) -> type[Differential]:
    """A :class:`Differential` bound to one pair of sides."""
    attributes = {"reference": reference, "remote": remote, "budget": budget, "examples": 0}
    return type("DifferentialOnStores", (Differential,), attributes)
