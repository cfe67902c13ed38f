"""Metadata that survives: restarts keep file handles, ``kill -9`` loses nothing answered.

NFSv3 clients hold file handles across server restarts and replay
uncommitted writes when the write verifier changes (RFC 1813 3.3.7), so a
restart must keep every handle valid and must change the verifier.  And a
reply is a promise: once a CREATE, RENAME, REMOVE or stable WRITE was
answered, a crash of the server right after must not undo it.

The crash tests drive a storm from several clients, each in its own
directory with a model of what it should contain; every call that got an
answer updates the model.  The server is killed with SIGKILL at a random
moment; calls in flight then may or may not have happened, so each client's
directory must match its model either without or with its one unanswered
call.  Earlier rounds' directories must stay exactly as they were verified,
and ``dittofs fsck`` must find the stores clean after every kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.e2e.clients import (
    FILE_SYNC,
    GUARDED,
    NFS3_OK,
    UNSTABLE,
    AnfsNfs3,
    run,
    sattr,
)
from tests.e2e.server import RunningServer, dittofs_server
from tests.e2e.storm import (
    JUKEBOX,
    NF3DIR,
    NF3REG,
    Node,
    fileid_of,
    fsck,
    handle_of,
    link_count_problems,
    log_problems,
    lookup,
    make_dir,
    make_file,
    metadata_spec,
    must,
    walk,
)

NF3LNK = 5
CLIENTS = 3
#: Calls per client per round; the kill normally comes first.
ROUND_OPERATIONS = 400
#: The kill comes this many seconds (uniformly) into a round's storm.
KILL_AFTER = (0.1, 0.9)
MIX = (
    ("create", 30),
    ("write", 14),
    ("mkdir", 8),
    ("rename", 22),
    ("rename-dir", 7),
    ("remove", 13),
    ("rmdir", 6),
)


@contextlib.contextmanager
def stores(kind: str, workdir: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """A fresh metadata store of *kind*, content in ``fs``, all data in one ``--data-dir``.

    Yields the ``--metadata`` specification and the server options.  SQLite
    and the content store are named the short way (``sqlite``, ``fs``), so
    they live in the data directory, as in a default installation.
    """
    data = workdir / "data"
    with metadata_spec(kind, workdir) as spec:
        metadata = "sqlite" if kind == "sqlite" else spec
        yield metadata, ("--data-dir", str(data), "--metadata", metadata, "--content", "fs")


# -- restart ---------------------------------------------------------------------------


@attrs.frozen
class Remembered:
    """What a client knew before the restart."""

    root: bytes
    #: path -> (parent handle, handle, file id, type, data or symlink target)
    objects: dict[str, tuple[bytes, bytes, int, int, bytes]]
    unstable_file: bytes
    verifier: bytes


async def populate(port: int) -> Remembered:
    """Make a small tree; remember every handle and an UNSTABLE write's verifier."""
    async with AnfsNfs3(port) as nfs:
        keep = await make_dir(nfs, nfs.root, "keep")
        sub = await make_dir(nfs, keep, "sub")
        objects: dict[str, tuple[bytes, bytes, int, int, bytes]] = {}
        for parent, path, data in (
            (keep, "keep/a.txt", b"the first file\n"),
            (sub, "keep/sub/b.bin", os.urandom(3000)),
            (keep, "keep/empty", b""),
        ):
            handle = await make_file(nfs, parent, path.rpartition("/")[2], data)
            fileid = (await must(nfs.getattr(handle)))["attributes"]["fileid"]
            objects[path] = (parent, handle, fileid, NF3REG, data)
        reply = await must(nfs.symlink(keep, b"link", b"a.txt"))
        objects["keep/link"] = (keep, handle_of(reply), fileid_of(reply), NF3LNK, b"a.txt")
        for parent, path, handle in ((nfs.root, "keep", keep), (keep, "keep/sub", sub)):
            fileid = (await must(nfs.getattr(handle)))["attributes"]["fileid"]
            objects[path] = (parent, handle, fileid, NF3DIR, b"")
        unstable = await make_file(nfs, keep, "unstable")
        first = await must(nfs.write(unstable, 0, b"uncommitted", UNSTABLE))
        again = await must(nfs.write(unstable, 11, b" still", UNSTABLE))
        verifier = bytes(first["resok"]["verf"])
        assert bytes(again["resok"]["verf"]) == verifier, "the verifier changed without a restart"
        return Remembered(nfs.root, objects, unstable, verifier)


async def check_remembered(port: int, old: Remembered) -> None:
    """Every remembered handle still names its file, with its data; the verifier is new."""
    async with AnfsNfs3(port) as nfs:
        assert nfs.root == old.root, "MNT gives a different root handle after the restart"
        for path, (parent, handle, fileid, kind, data) in old.objects.items():
            reply = await nfs.getattr(handle)
            assert reply["status"] == NFS3_OK, f"GETATTR of {path}'s old handle: {reply}"
            attributes = reply["attributes"]
            assert (attributes["fileid"], attributes["type"]) == (fileid, kind), path
            status, found = await lookup(nfs, parent, path.rpartition("/")[2])
            assert (status, found) == (NFS3_OK, handle), f"LOOKUP {path} gives another handle"
            if kind == NF3REG:
                assert attributes["size"] == len(data), path
                read = (await must(nfs.read(handle, 0, 8192)))["resok"]
                assert bytes(read["data"]) == data, f"READ {path} through its old handle"
            elif kind == NF3LNK:
                target = (await must(nfs.readlink(handle)))["resok"]["data"]
                assert bytes(target) == data, path
        reply = await must(nfs.write(old.unstable_file, 0, b"replayed", UNSTABLE))
        verifier = bytes(reply["resok"]["verf"])
        assert verifier != old.verifier, "the write verifier survived a restart"
        commit = await must(nfs.commit(old.unstable_file))
        assert bytes(commit["resok"]["verf"]) == verifier
        # File ids are never reused: a new file gets one no old handle carries.
        keep = old.objects["keep"][1]
        new = fileid_of(await must(nfs.create(keep, b"new", GUARDED, sattr(mode=0o644))))
        assert new not in {fileid for _, _, fileid, _, _ in old.objects.values()}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
def test_handles_survive_restart(kind: str, tmp_path: Path) -> None:
    """After a stop and a start on the same stores, old handles resolve and READ the same bytes.

    The WRITE verifier must differ, or clients would never replay UNSTABLE
    writes the old process may have lost (RFC 1813 3.3.7).
    """
    with stores(kind, tmp_path) as (_, options):
        with dittofs_server(tmp_path, *options) as first:
            remembered = run(populate(first.port))
        # twistd re-raises SIGTERM after a clean shutdown, so -15 is a normal stop.
        assert first.process.returncode in (0, -15), first.log()[-4000:]
        assert "Main loop terminated." in first.log(), first.log()[-4000:]
        with dittofs_server(tmp_path, *options) as second:
            run(check_remembered(second.port, remembered))
        assert not log_problems(first, second), log_problems(first, second)


# -- kill -9 ---------------------------------------------------------------------------


@attrs.frozen
class Expect:
    """What a model says one entry must look like; None means "either way"."""

    type: int
    fileid: int | None
    sizes: frozenset[int] | None = None
    data: bytes | None = None


State = dict[str, Expect]


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory + "/")


def _moved(mapping: dict[str, Any], source: str, target: str) -> dict[str, Any]:
    """*mapping* with *source* and everything under it moved to *target*."""
    return {
        (target + key[len(source) :] if _under(key, source) else key): value
        for key, value in mapping.items()
    }


class ModelClient:
    """One client working in its own directory, keeping a model of it.

    ``state`` is what the directory holds after every answered call;
    ``pending`` is what it holds if the one unanswered call took effect.
    """

    def __init__(self, nfs: AnfsNfs3, home: bytes, rng: random.Random) -> None:
        self.nfs = nfs
        self.rng = rng
        self.state: State = {}
        self.handles: dict[str, bytes] = {"": home}
        self.pending: State | None = None
        self.in_flight: str | None = None
        self.answered = 0
        self.failures: list[str] = []
        #: Set when the server is killed.  Cancelling is not enough: Python 3.11's
        #: ``wait_for`` swallows a cancellation that meets a reply just arrived.
        self.stopped = False
        #: Every answered call and its status, for the report of a failure.
        self.history: list[str] = []
        self._names = 0

    def _fresh(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    async def _call(self, what: str, pending: State, call: Awaitable[Any]) -> dict[str, Any] | None:
        """Send one call; its reply if it succeeded (None otherwise, noted when unexpected)."""
        self.pending, self.in_flight = pending, what
        reply: dict[str, Any] = await call
        self.pending = self.in_flight = None
        self.answered += 1
        self.history.append(f"{what}: {reply['status']}")
        if reply["status"] == NFS3_OK:
            return reply
        if reply["status"] != JUKEBOX:  # JUKEBOX: nothing was done; a client tries later
            self.failures.append(f"{what}: status {reply['status']}")
        return None

    async def run(self, operations: int) -> None:
        """Make up to *operations* calls, each chosen to succeed on the model's directory."""
        kinds, weights = zip(*MIX, strict=True)
        for _ in range(operations):
            if self.stopped:
                return
            await self.step(self.rng.choices(kinds, weights)[0])

    async def step(self, kind: str) -> None:
        """One call of *kind* (or a create when the directory has nothing it applies to)."""
        rng, nfs, state, handles = self.rng, self.nfs, self.state, self.handles
        files = sorted(p for p, e in state.items() if e.type == NF3REG)
        dirs = ["", *sorted(p for p, e in state.items() if e.type == NF3DIR)]
        if kind == "write" and files:
            path = rng.choice(files)
            old = state[path]
            assert old.data is not None and old.sizes is not None
            data = os.urandom(rng.randrange(1, 100))
            new = Expect(NF3REG, old.fileid, frozenset({max(len(old.data), len(data))}))
            new = attrs.evolve(new, data=data + old.data[len(data) :])
            either = Expect(NF3REG, old.fileid, old.sizes | new.sizes)
            call = nfs.write(handles[path], 0, data, FILE_SYNC)
            what = f"WRITE #{old.fileid} {path} {len(data)} bytes: {data.hex()}"
            if await self._call(what, {**state, path: either}, call):
                self.state = {**state, path: new}
        elif kind == "rename" and files:
            path = rng.choice(files)
            parent, _, name = path.rpartition("/")
            others = [f for f in files if f != path]
            chance = rng.random()
            if chance < 0.3 and others:
                target = rng.choice(others)  # rename over an existing file
            elif chance < 0.6:
                target = _join(parent, self._fresh("r"))  # in the same directory
            else:
                target = _join(rng.choice(dirs), self._fresh("r"))
            to_dir, _, to_name = target.rpartition("/")
            after = {p: e for p, e in state.items() if p not in (path, target)}
            after[target] = state[path]
            call = nfs.rename(handles[parent], name.encode(), handles[to_dir], to_name.encode())
            moving = state[path].fileid
            replaced = state[target].fileid if target in state else None
            what = f"RENAME #{moving} {path} {target} (over #{replaced} )"
            if await self._call(what, after, call):
                self.state = after
                self.handles = {p: h for p, h in handles.items() if p not in (path, target)}
                self.handles[target] = handles[path]
        elif kind == "rename-dir" and len(dirs) > 1:
            path = rng.choice(dirs[1:])
            parent, _, name = path.rpartition("/")
            to_dir = rng.choice([d for d in dirs if not _under(d, path)])
            target = _join(to_dir, self._fresh("m"))
            after = _moved(state, path, target)
            call = nfs.rename(
                handles[parent], name.encode(), handles[to_dir], target.rpartition("/")[2].encode()
            )
            if await self._call(f"RENAME {path} {target}", after, call):
                self.state, self.handles = after, _moved(handles, path, target)
        elif kind == "remove" and files:
            path = rng.choice(files)
            parent, _, name = path.rpartition("/")
            after = {p: e for p, e in state.items() if p != path}
            what = f"REMOVE #{state[path].fileid} {path}"
            if await self._call(what, after, nfs.remove(handles[parent], name.encode())):
                self.state = after
                del self.handles[path]
        elif kind == "rmdir" and (
            empty := [d for d in dirs[1:] if not any(p.startswith(d + "/") for p in state)]
        ):
            path = rng.choice(empty)
            parent, _, name = path.rpartition("/")
            after = {p: e for p, e in state.items() if p != path}
            if await self._call(f"RMDIR {path}", after, nfs.rmdir(handles[parent], name.encode())):
                self.state = after
                del self.handles[path]
        else:
            is_dir = kind == "mkdir"
            parent = rng.choice(dirs)
            path = _join(parent, self._fresh("d" if is_dir else "f"))
            name = path.rpartition("/")[2].encode()
            made = Expect(NF3DIR, None) if is_dir else Expect(NF3REG, None, frozenset({0}), b"")
            call = (
                nfs.mkdir(handles[parent], name)
                if is_dir
                else nfs.create(handles[parent], name, GUARDED, sattr(mode=0o644))
            )
            reply = await self._call(f"{kind.upper()} {path}", {**state, path: made}, call)
            if reply:
                self.history[-1] += f" made #{fileid_of(reply)} "
                self.state = {**state, path: attrs.evolve(made, fileid=fileid_of(reply))}
                self.handles = {**handles, path: handle_of(reply)}


def mismatch(
    actual: dict[str, Node], contents: dict[str, bytes], expected: State, client: ModelClient
) -> str | None:
    """How a walked directory (and its files' data) differs from a model; None if it matches."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        return f"missing {missing[:10]}, unexpected {extra[:10]}"
    for path, want in sorted(expected.items()):
        node = actual[path]
        if node.type != want.type or want.fileid not in (None, node.fileid):
            return f"{path}: type {node.type} file id {node.fileid}, expected {want}"
        if want.sizes is not None and node.size not in want.sizes:
            return f"{path}: size {node.size}, expected one of {sorted(want.sizes)}"
        if want.data is not None and contents[path] != want.data:
            history = [line for line in client.history if f"#{want.fileid} " in line]
            return (
                f"{path}: READ gives {contents[path].hex()}, answered WRITEs left "
                f"{want.data.hex()}; its calls: {history[-8:]}"
            )
    return None


@attrs.define
class Round:
    """A round's clients, as the kill left them."""

    number: int
    clients: list[ModelClient]
    in_flight: int = 0


async def verify(nfs: AnfsNfs3, crashed: Round, frozen: dict[str, Node]) -> list[str]:
    """Check the crashed round against its models and earlier rounds against *frozen*.

    Adds the crashed round's verified tree to *frozen*; returns what is wrong.
    """
    problems: list[str] = []
    handles: dict[str, bytes] = {}
    tree = await walk(nfs, nfs.root, handles)
    problems += link_count_problems(tree)
    for path, node in frozen.items():
        if tree.get(path) != node:
            problems.append(f"earlier round changed: {path} was {node}, now {tree.get(path)}")
    for number, client in enumerate(crashed.clients):
        home = f"round{crashed.number}/c{number}/"
        actual = {p[len(home) :]: n for p, n in tree.items() if p.startswith(home)}
        contents = {
            path: bytes((await must(nfs.read(handles[home + path], 0, 4096)))["resok"]["data"])
            for path, node in actual.items()
            if node.type == NF3REG
        }
        candidates = [client.state] if client.pending is None else [client.state, client.pending]
        differences = [mismatch(actual, contents, candidate, client) for candidate in candidates]
        if all(differences):
            problems.append(f"{home}: {' / or, with the unanswered call: '.join(differences)}")
    mine = f"round{crashed.number}"
    frozen.update({p: n for p, n in tree.items() if p == mine or p.startswith(mine + "/")})
    return problems


async def storm_and_kill(
    server: RunningServer, number: int, rng: random.Random
) -> tuple[Round, float]:
    """Start the round's clients, kill the server with SIGKILL mid-storm, return the models."""
    opened: list[AnfsNfs3] = []

    async def connect() -> AnfsNfs3:
        nfs = AnfsNfs3(server.port)
        await nfs.__aenter__()
        opened.append(nfs)
        return nfs

    try:
        setup = await connect()
        round_dir = await make_dir(setup, setup.root, f"round{number}")
        clients = []
        for n in range(CLIENTS):
            home = await make_dir(setup, round_dir, f"c{n}")
            clients.append(ModelClient(await connect(), home, random.Random(rng.random())))
        tasks = [asyncio.create_task(c.run(ROUND_OPERATIONS)) for c in clients]
        delay = rng.uniform(*KILL_AFTER)
        await asyncio.wait(tasks, timeout=delay)
        server.process.kill()
        for client, task in zip(clients, tasks, strict=True):
            client.stopped = True
            task.cancel()  # no reply can come now; what was in flight stays pending
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [result for result in results if isinstance(result, Exception)]
        if errors:
            raise errors[0]
        return Round(number, clients, sum(c.pending is not None for c in clients)), delay
    finally:
        for nfs in opened:  # the server is gone: closing may fail, and that is fine
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nfs.__aexit__(None, None, None), 2)


@pytest.mark.parametrize(("kind", "rounds"), [("sqlite", 20), ("postgresql", 5)])
def test_kill_9_loses_nothing_answered(kind: str, rounds: int, tmp_path: Path) -> None:
    """SIGKILL mid-storm, restart: every answered call is there, fsck finds nothing.

    Answered creates exist (unless later removed), answered removes are
    gone, renames are at their target with the same file id, answered
    stable writes READ back; the one unanswered call per client may or may
    not have happened, but nothing in between.
    """
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    frozen: dict[str, Node] = {}
    crashed: Round | None = None
    started = time.monotonic()
    summary: list[str] = []
    fsck_problems: list[str] = []
    answered: list[int] = []
    with stores(kind, tmp_path) as (metadata, options):
        for number in range(rounds + 1):
            with dittofs_server(tmp_path, *options) as server:

                async def main(
                    server: RunningServer = server,
                    number: int = number,
                    crashed: Round | None = crashed,
                ) -> Round | None:
                    if crashed is not None:
                        async with AnfsNfs3(server.port) as nfs:
                            problems = await verify(nfs, crashed, frozen)
                        assert not problems, (
                            f"seed {seed}, after the kill in round {crashed.number}:\n"
                            + "\n".join(problems[:30])
                        )
                    if number == rounds:
                        return None
                    result, delay = await storm_and_kill(server, number, rng)
                    answered.append(sum(c.answered for c in result.clients))
                    summary.append(
                        f"round {number}: killed after {delay:.2f}s, "
                        f"{sum(c.answered for c in result.clients)} answered, "
                        f"{result.in_flight} in flight"
                    )
                    return result

                crashed = run(main(), timeout=120)
                assert not log_problems(server), log_problems(server)
                for client in crashed.clients if crashed else []:
                    assert not client.failures, f"seed {seed}: {client.failures[:10]}"
            if crashed is not None:
                assert server.process.wait(10) == -9, "the server was not killed"
                status, output = fsck(metadata, "fs", tmp_path / "data")
                if status != 0:
                    # Noted, then mended so later rounds show their own problems.
                    in_flight = [c.in_flight[:60] for c in crashed.clients if c.in_flight]
                    fsck_problems.append(
                        f"after the kill in round {crashed.number} (calls in flight: "
                        f"{in_flight}): fsck exit {status}:\n{output}"
                    )
                    fsck(metadata, "fs", tmp_path / "data", repair=True)
    print(f"seed {seed}, {time.monotonic() - started:.1f}s\n" + "\n".join(summary))
    assert sum(answered) > 0, "the storms never got going"
    assert not fsck_problems, (
        f"seed {seed}: fsck found problems after {len(fsck_problems)} of {rounds} kills:\n"
        + "\n".join(fsck_problems)
    )
