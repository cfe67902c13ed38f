"""Shared pieces of the survival and multi-gateway tests: stores, fsck, tree walks, a storm.

The servers run as subprocesses, the client is anfs (through
:class:`tests.e2e.clients.AnfsNfs3`) and ``dittofs fsck`` runs as the console
command users run.  Every PostgreSQL schema and Redis prefix is new (from
``tests.unit.backends``) and is removed again, so runs never see each other's
files.

:func:`shared_storm` is a bounded storm of namespace operations from several
clients of several gateways at once, all on one small pool of names so that
they collide: creates, renames (in one directory, across directories, over
an existing file, of directories) and removes.  It knows nothing about the
outcome of each call; it only records statuses, and a status no
interleaving of correct operations could produce is "unexpected".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from tests.e2e.clients import FILE_SYNC, GUARDED, NFS3_OK, AnfsNfs3, entries, sattr
from tests.e2e.server import RunningServer
from tests.unit import backends

# nfsstat3 values (RFC 1813 2.6) the storms meet.
NOENT, IO, EXIST, NOTDIR, ISDIR, INVAL = 2, 5, 17, 20, 21, 22
NOTEMPTY, STALE, SERVERFAULT, JUKEBOX = 66, 70, 10006, 10008
NF3REG, NF3DIR = 1, 2

#: How long one call may take before the storm counts it as lost.
CALL_SECONDS = 20.0
FSCK_SECONDS = 120.0
LOG_TAIL = 6000


# -- stores ----------------------------------------------------------------------------


@contextlib.contextmanager
def metadata_spec(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh metadata store of *kind* (``sqlite``, ``postgresql`` or ``redis``)."""
    if kind == "sqlite":
        yield f"sqlite:{workdir / 'metadata.db'}"
    elif kind == "postgresql":
        with backends.postgres_schema("e2e") as schema:
            url = backends.postgres_url(schema)
            yield url
    elif kind == "redis":
        with backends.redis_prefix("e2e") as prefix:
            url = f"{backends.REDIS}?prefix={prefix}"
            yield url
    else:
        raise ValueError(kind)


def fsck(metadata: str, content: str, data_dir: Path, repair: bool = False) -> tuple[int, str]:
    """Run ``dittofs fsck`` (to check, or with *repair*) on the stores: exit status and output."""
    command = [
        sys.executable, "-c", "from dittofs.cli import main; main()",
        "fsck", "--metadata", metadata, "--content", content, "--data-dir", str(data_dir), "-q",
        *(["--repair"] if repair else []),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, timeout=FSCK_SECONDS, check=False)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def log_problems(*servers: RunningServer) -> str:
    """The logs of servers that logged a traceback (empty when none did)."""
    return "\n".join(
        f"--- {server.log_path.name}:\n{server.log()[-LOG_TAIL:]}"
        for server in servers
        if "Traceback" in server.log()
    )


# -- replies ---------------------------------------------------------------------------


def handle_of(reply: dict[str, Any]) -> bytes:
    """The new object's handle in a successful CREATE or MKDIR reply."""
    obj = reply["resok"]["obj"]
    assert obj["present"], reply
    return bytes(obj["handle"]["data"])


def fileid_of(reply: dict[str, Any]) -> int:
    """The new object's file id in a successful CREATE or MKDIR reply."""
    attributes = reply["resok"]["obj_attributes"]
    assert attributes["present"], reply
    return int(attributes["attributes"]["fileid"])


async def must(call: Any) -> dict[str, Any]:
    """Await an anfs call that has to succeed."""
    reply: dict[str, Any] = await call
    assert reply["status"] == NFS3_OK, reply
    return reply


async def make_dir(nfs: AnfsNfs3, parent: bytes, name: str) -> bytes:
    """MKDIR that has to succeed: the new directory's handle."""
    return handle_of(await must(nfs.mkdir(parent, name.encode())))


async def make_file(nfs: AnfsNfs3, parent: bytes, name: str, data: bytes = b"") -> bytes:
    """CREATE (GUARDED) and, with *data*, a FILE_SYNC WRITE, both of which must succeed."""
    handle = handle_of(await must(nfs.create(parent, name.encode(), GUARDED, sattr(mode=0o644))))
    if data:
        await must(nfs.write(handle, 0, data, FILE_SYNC))
    return handle


async def lookup(nfs: AnfsNfs3, directory: bytes, name: str) -> tuple[int, bytes | None]:
    """LOOKUP: its status and, on success, the handle."""
    reply = await nfs.lookup(directory, name.encode())
    if reply["status"] != NFS3_OK:
        return reply["status"], None
    return NFS3_OK, bytes(reply["resok"]["object"]["data"])


async def whole(nfs: AnfsNfs3, handle: bytes) -> bytes:
    """The file's bytes, read to EOF."""
    data = b""
    for _ in range(1000):
        reply = await nfs.read(handle, len(data), 256 * 1024)
        assert reply["status"] == NFS3_OK, reply
        data += bytes(reply["resok"]["data"])
        if reply["resok"]["eof"]:
            return data
    raise AssertionError("no EOF")


# -- tree walks ------------------------------------------------------------------------


@attrs.frozen
class Node:
    """What a listing says about one entry."""

    type: int
    size: int
    fileid: int
    nlink: int


async def listing(nfs: AnfsNfs3, directory: bytes) -> list[tuple[str, bytes, dict[str, Any]]]:
    """Name, handle and attributes of every entry but ``.`` and ``..`` (READDIRPLUS to eof)."""
    found: list[tuple[str, bytes, dict[str, Any]]] = []
    cookie, verifier = 0, bytes(8)
    for _ in range(10_000):
        reply = await must(nfs.readdirplus(directory, cookie, verifier, 512, 2048))
        resok = reply["resok"]
        verifier = bytes(resok["cookieverf"])
        batch = entries(resok["reply"])
        for entry in batch:
            name = bytes(entry["name"]).decode()
            if name in (".", ".."):
                continue
            assert entry["name_handle"]["present"], entry
            assert entry["name_attributes"]["present"], entry
            found.append(
                (name, bytes(entry["name_handle"]["handle"]["data"]), entry["name_attributes"])
            )
        if resok["reply"]["eof"]:
            return found
        assert batch, "READDIRPLUS returned an empty page without eof"
        cookie = batch[-1]["cookie"]
    raise AssertionError("READDIRPLUS never reached eof")


async def walk(
    nfs: AnfsNfs3, root: bytes, handles: dict[str, bytes] | None = None, limit: int = 50_000
) -> dict[str, Node]:
    """Every path below *root* (``a/b/c``), found by READDIRPLUS, with what the listing says.

    A name listed twice in one directory is an error: a listing is a set.
    With *handles*, the handle of every path is put there too.
    """
    tree: dict[str, Node] = {}
    pending: list[tuple[str, bytes]] = [("", root)]
    while pending:
        prefix, directory = pending.pop()
        for name, handle, attributes in await listing(nfs, directory):
            path = f"{prefix}{name}"
            assert path not in tree, f"{path!r} is listed twice"
            a = attributes["attributes"]
            tree[path] = Node(a["type"], a["size"], a["fileid"], a["nlink"])
            if handles is not None:
                handles[path] = handle
            if a["type"] == NF3DIR:
                pending.append((f"{path}/", handle))
            assert len(tree) <= limit, f"more than {limit} entries"
    return tree


def link_count_problems(tree: dict[str, Node]) -> list[str]:
    """Where a walked tree's link counts disagree with its own shape (no hard links are made).

    A file is named once, so its nlink is 1; a directory's nlink is 2 plus its
    subdirectories (RFC 1813 leaves it to the server; DittoFS counts as Unix does).
    """
    subdirectories: Counter[str] = Counter()
    names: Counter[int] = Counter()
    for path, node in tree.items():
        names[node.fileid] += 1
        if node.type == NF3DIR:
            subdirectories[path.rpartition("/")[0]] += 1
    problems = [f"file id {f} is named {n} times" for f, n in names.items() if n > 1]
    for path, node in sorted(tree.items()):
        expected = 2 + subdirectories[path] if node.type == NF3DIR else 1
        if node.nlink != expected:
            problems.append(f"{path}: nlink {node.nlink}, expected {expected}")
    return problems


# -- the shared storm ------------------------------------------------------------------

#: Statuses that some interleaving of correct operations explains, per operation.
EXPLAINED: dict[str, frozenset[int]] = {
    "create": frozenset({NFS3_OK, EXIST, STALE}),
    "write": frozenset({NFS3_OK, STALE}),
    "mkdir": frozenset({NFS3_OK, EXIST, STALE}),
    "rename": frozenset({NFS3_OK, NOENT, STALE}),
    # A directory cannot go into its own subtree (INVAL) nor over a non-empty one.
    "rename-dir": frozenset({NFS3_OK, NOENT, STALE, INVAL, EXIST, NOTEMPTY}),
    "remove": frozenset({NFS3_OK, NOENT, STALE}),
    "rmdir": frozenset({NFS3_OK, NOENT, STALE, NOTEMPTY}),
}
#: ``(operation, weight)``: mostly files, some directories.
MIX = (
    ("create", 24),
    ("write", 8),
    ("mkdir", 6),
    ("rename", 30),
    ("rename-dir", 8),
    ("remove", 18),
    ("rmdir", 6),
)
FILE_NAMES = 12
DIR_NAMES = 3
KNOWN_LIMIT = 40


@attrs.define
class StormReport:
    """What a storm's clients saw: statuses per operation, and anything unexplained."""

    statuses: Counter[tuple[str, int]] = attrs.Factory(Counter)
    unexpected: list[str] = attrs.Factory(list)
    operations: int = 0
    seconds: float = 0.0

    def ok(self, operation: str) -> int:
        """How many *operation* calls succeeded."""
        return self.statuses[(operation, NFS3_OK)]

    def summary(self) -> str:
        """One line per operation: how often each status came back."""
        lines = [f"{self.operations} operations in {self.seconds:.1f}s"]
        for operation, _ in MIX:
            seen = {s: n for (o, s), n in sorted(self.statuses.items()) if o == operation}
            lines.append(f"  {operation}: {seen}")
        return "\n".join(lines)


async def _storm_client(
    port: int,
    export: str,
    top: list[bytes],
    seed: int,
    operations: int,
    deadline: float,
    report: StormReport,
) -> None:
    rng = random.Random(seed)
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    directories = list(top)  # handles of directories this client knows; the first few never move
    files: list[bytes] = []
    loop = asyncio.get_running_loop()
    async with AnfsNfs3(port, export) as nfs:
        for _ in range(operations):
            if loop.time() > deadline:
                return
            kind = rng.choices(kinds, weights)[0]
            here, there = rng.choice(directories), rng.choice(directories)
            if rng.random() < 0.4:
                there = here  # a rename within one directory
            file_name = f"f{rng.randrange(FILE_NAMES)}".encode()
            other_file = f"f{rng.randrange(FILE_NAMES)}".encode()
            dir_name = f"s{rng.randrange(DIR_NAMES)}".encode()
            other_dir = f"s{rng.randrange(DIR_NAMES)}".encode()
            call: Any
            if kind == "create":
                call = nfs.create(here, file_name, GUARDED, sattr(mode=0o644))
            elif kind == "write" and files:
                call = nfs.write(rng.choice(files), 0, os.urandom(rng.randrange(1, 200)))
            elif kind == "mkdir":
                call = nfs.mkdir(here, dir_name)
            elif kind == "rename":
                call = nfs.rename(here, file_name, there, other_file)
            elif kind == "rename-dir":
                call = nfs.rename(here, dir_name, there, other_dir)
            elif kind == "remove":
                call = nfs.remove(here, file_name)
            elif kind == "rmdir":
                call = nfs.rmdir(here, dir_name)
            else:
                continue
            try:
                reply = await asyncio.wait_for(call, CALL_SECONDS)
            except Exception as error:  # every failure is reported, not raised
                report.unexpected.append(f"{kind} on port {port}: {error!r}")
                return
            status = reply["status"]
            report.operations += 1
            report.statuses[(kind, status)] += 1
            if status == JUKEBOX:
                await asyncio.sleep(0.05)  # what a client does: wait, then carry on
            elif status not in EXPLAINED[kind] or (
                # The top directories are never removed: STALE can only mean a handle
                # of a directory made (and maybe removed) during the storm.
                status == STALE
                and kind != "write"
                and here in top
                and (there in top or not kind.startswith("rename"))
            ):
                names = {
                    "create": file_name,
                    "write": b"",
                    "mkdir": dir_name,
                    "rename": file_name + b" -> " + other_file,
                    "rename-dir": dir_name + b" -> " + other_dir,
                    "remove": file_name,
                    "rmdir": dir_name,
                }[kind].decode()
                where = (
                    "in top directories" if here in top and there in top else "in subdirectories"
                )
                report.unexpected.append(
                    f"{kind.upper()} {names} {where} via port {port}: status {status}"
                    f" (its directory exists: {_directory_present(reply)})"
                )
            elif status == NFS3_OK and kind == "create":
                files = [*files[-KNOWN_LIMIT:], handle_of(reply)]
            elif status == NFS3_OK and kind == "mkdir":
                directories = [*top, *directories[len(top) :][-KNOWN_LIMIT:], handle_of(reply)]


def _directory_present(reply: dict[str, Any]) -> bool:
    """Whether a failed reply carries the directory's attributes (so it does exist)."""
    body = reply.get("resfail") or reply.get("res") or {}
    wcc = body.get("fromdir_wcc", body)
    return bool(wcc.get("after", wcc).get("present"))


async def shared_storm(
    servers: list[RunningServer],
    top: list[bytes],
    *,
    clients_per_server: int,
    operations: int,
    seconds: float,
    seed: int,
) -> StormReport:
    """Run the storm from *clients_per_server* clients of each server at once, on *top*'s dirs.

    Each client stops after *operations* calls or *seconds*, whichever comes first.
    """
    report = StormReport()
    started = time.monotonic()
    deadline = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(
        *(
            _storm_client(
                server.port, server.export, top, seed * 1000 + n, operations, deadline, report
            )
            for n, server in enumerate(servers * clients_per_server)
        )
    )
    report.seconds = time.monotonic() - started
    return report


# -- coherence: a change through one server, reads through another ------------------

COHERENCE_ROUNDS = 1000
COHERENCE_NAMES = 8


async def _coherence_round(
    changer: AnfsNfs3,
    reader: AnfsNfs3,
    directory: bytes,
    files: dict[str, tuple[bytes, int, int]],
    rng: random.Random,
    where: str,
) -> list[str]:
    """The reader looks, the changer changes, the reader must see the change at once.

    *files* is the model: name -> (handle, mode, size).  The reader first
    LOOKUPs the names the change will touch and GETATTRs their files, so
    that what it keeps (if it keeps anything) is from before the change.
    """
    pool = [f"n{n}" for n in range(COHERENCE_NAMES)]
    present = sorted(files)
    absent = [name for name in pool if name not in files]
    choices = ["create"] if not present else ["chmod", "write", "rename", "remove", "create"]
    if not absent:
        choices.remove("create")
    operation = rng.choice(choices)
    name = rng.choice(absent if operation == "create" else present)
    other = rng.choice(pool)
    watched_names = {name, other}
    watched_handles = {files[each][0] for each in watched_names if each in files}
    for each in watched_names:
        await reader.lookup(directory, each.encode())
    for handle in watched_handles:
        await reader.getattr(handle)
    if operation == "create":
        mode = rng.choice((0o600, 0o640, 0o644))
        handle = handle_of(
            await must(changer.create(directory, name.encode(), GUARDED, sattr(mode=mode)))
        )
        files[name] = (handle, mode, 0)
        watched_handles.add(handle)
    elif operation == "chmod":
        handle, _, size = files[name]
        mode = rng.choice((0o600, 0o640, 0o644, 0o664))
        await must(changer.setattr(handle, sattr(mode=mode)))
        files[name] = (handle, mode, size)
    elif operation == "write":
        handle, mode, size = files[name]
        length = rng.randrange(1, 3000)
        await must(changer.write(handle, 0, b"w" * length, FILE_SYNC))
        files[name] = (handle, mode, max(size, length))
    elif operation == "rename":
        await must(changer.rename(directory, name.encode(), directory, other.encode()))
        if other != name:
            files[other] = files.pop(name)
    else:
        await must(changer.remove(directory, name.encode()))
        del files[name]
    problems = []
    what = f"{where}: {operation} {name} (other {other})"
    for each in sorted(watched_names):
        reply = await reader.lookup(directory, each.encode())
        if each not in files:
            if reply["status"] != NOENT:
                problems.append(f"{what}: LOOKUP {each} answered {reply['status']}, not NOENT")
        elif reply["status"] != NFS3_OK:
            problems.append(f"{what}: LOOKUP {each} answered {reply['status']}")
        elif bytes(reply["resok"]["object"]["data"]) != files[each][0]:
            problems.append(f"{what}: LOOKUP {each} found another file")
    live = {handle: (mode, size) for handle, mode, size in files.values()}
    for handle in sorted(watched_handles):
        reply = await reader.getattr(handle)
        if handle not in live:
            if reply["status"] != STALE:
                problems.append(f"{what}: GETATTR of a removed file answered {reply['status']}")
            continue
        if reply["status"] != NFS3_OK:
            problems.append(f"{what}: GETATTR answered {reply['status']}")
            continue
        attributes = reply["attributes"]
        seen = (attributes["mode"] & 0o7777, attributes["size"])
        if seen != live[handle]:
            problems.append(f"{what}: GETATTR gave mode, size {seen}, not {live[handle]}")
    names, _pages = await reader.list_names(directory)
    listed = sorted(entry.decode() for entry in names if entry not in (b".", b".."))
    if listed != sorted(files):
        problems.append(f"{what}: READDIR lists {listed}, not {sorted(files)}")
    return problems


async def coherence_rounds(first: AnfsNfs3, second: AnfsNfs3) -> list[str]:
    """:data:`COHERENCE_ROUNDS` rounds, *first* and *second* swapping roles: what went wrong."""
    directory = await make_dir(first, first.root, "coherence")
    files: dict[str, tuple[bytes, int, int]] = {}
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    problems: list[str] = []
    for round_ in range(COHERENCE_ROUNDS):
        changer, reader = (first, second) if round_ % 2 == 0 else (second, first)
        where = f"round {round_} (seed {seed})"
        problems += await _coherence_round(changer, reader, directory, files, rng, where)
    return problems
