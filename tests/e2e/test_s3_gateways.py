"""Several gateways over one S3 prefix and one metadata store, with clients nobody here wrote.

Each pairing starts real servers (``--content s3://...?durability=remote``,
each with a cache of its own) over one SeaweedFS prefix and one metadata
store: a shared SQLite file on this host, the local PostgreSQL or Redis.  An
anfs client per gateway then plays rounds of "change the file through one
gateway (FILE_SYNC, or UNSTABLE then COMMIT), read it through another":
writes at random offsets, appends, truncates both ways, renames; every read
must be the model's bytes.  ``dittofs fsck`` finds the stores clean after.

Then kill -9: one of two gateways over PostgreSQL is killed mid-storm,
``DITTOFS_GATEWAY_KILLS`` times (10), alternately; the survivor must read
every acknowledged byte, and the killed one, started again, must not lay its
unacknowledged writes over what the survivor wrote meanwhile; ``fsck`` and
``gc`` follow.  The Linux kernel client's half (a mount on one gateway,
libnfs on another) is the ``sqlite+s3x2`` pairing of ``tests/e2e/linux``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import FILE_SYNC, NFS3_OK, UNSTABLE, AnfsNfs3, run, sattr
from tests.e2e.seaweedfs import credentials_env, shared_seaweedfs
from tests.e2e.server import RunningServer, dittofs_server
from tests.e2e.storm import fsck, log_problems, metadata_spec, whole
from tests.e2e.test_s3_e2e import call_retrying
from tests.e2e.test_s3_e2e import create as _create
from tests.unit.test_s3_content import BUCKET as UNIT_BUCKET

#: The unit tests' bucket on the process's shared SeaweedFS: each new bucket takes volumes
#: of its own, which a SeaweedFS that served the unit tests may no longer have.
BUCKET = UNIT_BUCKET
#: Rounds per pairing (the issue's check: 1,000 per metadata store).
ROUNDS = int(os.environ.get("DITTOFS_GATEWAY_ROUNDS", "1000"))
SPAN = 3 * 256 * 1024  # three blocks of the test's block size
BLOCK = "256KiB"


@contextlib.contextmanager
def shared_stores(kind: str, count: int, workdir: Path) -> Iterator[tuple[str, list[str]]]:
    """One metadata store of *kind*, and content specs of *count* gateways over one new prefix."""
    weed = shared_seaweedfs()
    weed.create_bucket(BUCKET)
    with pytest.MonkeyPatch.context() as patch, metadata_spec(kind, workdir) as metadata:
        for key, value in credentials_env().items():
            patch.setenv(key, value)
        yield metadata, [
            weed.spec(
                BUCKET, f"gateways-{workdir.name}", cache_dir=workdir / f"cache-{n}",
                block_size=BLOCK, durability="remote", flush_delay="0.2s",
            )
            for n in range(count)
        ]  # fmt: skip


@contextlib.contextmanager
def gateways(
    kind: str, count: int, workdir: Path
) -> Iterator[tuple[str, str, list[RunningServer]]]:
    """*count* gateways over one metadata store of *kind* and one fresh prefix."""
    with shared_stores(kind, count, workdir) as (metadata, specs), contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(dittofs_server(workdir, "--metadata", metadata, "--content", spec))
            for spec in specs
        ]
        yield metadata, specs[0], servers


async def rounds(servers: list[RunningServer], seed: int) -> int:
    """Change through one gateway, read through another; returns the rounds played."""
    rng = random.Random(seed)
    model = bytearray()
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(AnfsNfs3(s.port)) for s in servers]
        created = await clients[0].create(clients[0].root, b"shared.bin")
        assert created["status"] == NFS3_OK, created
        handle = bytes(created["resok"]["obj"]["handle"]["data"])
        name = b"shared.bin"
        for round_ in range(ROUNDS):
            writer, reader = rng.sample(clients, 2)
            action = rng.random()
            if action < 0.08:
                size = rng.randrange(0, SPAN)
                reply = await call_retrying(writer.setattr, handle, sattr(size=size))
                assert reply["status"] == NFS3_OK, reply
                model[size:] = b""
                model.extend(bytes(size - len(model)))
            elif action < 0.12:
                new = f"shared-{round_}.bin".encode()
                reply = await writer.rename(writer.root, name, writer.root, new)
                assert reply["status"] == NFS3_OK, reply
                name = new
                found = await reader.lookup(reader.root, name)
                assert found["status"] == NFS3_OK, found
                assert bytes(found["resok"]["object"]["data"]) == handle
            else:
                at = len(model) if action < 0.3 else rng.randrange(0, SPAN)
                data = rng.randbytes(rng.randrange(1, 70_000))
                stable = FILE_SYNC if rng.random() < 0.5 else UNSTABLE
                # JUKEBOX asks a client to wait and retry (S3 slow to take an upload).
                reply = await call_retrying(writer.write, handle, at, data, stable)
                assert reply["status"] == NFS3_OK, reply
                if stable == UNSTABLE:
                    committed = await call_retrying(writer.commit, handle)
                    assert committed["status"] == NFS3_OK, committed
                model.extend(bytes(max(0, at - len(model))))
                model[at : at + len(data)] = data
            if round_ % 50 == 0 or action < 0.12:
                assert await whole(reader, handle) == bytes(model), f"round {round_}"
            else:
                low = rng.randrange(0, max(1, len(model)))
                reply = await reader.read(handle, low, 65_536)
                assert reply["status"] == NFS3_OK, reply
                got = bytes(reply["resok"]["data"])
                assert got == bytes(model[low : low + 65_536]), f"round {round_} at {low}"
        assert await whole(clients[-1], handle) == bytes(model)
    return ROUNDS


@pytest.mark.parametrize(("kind", "count"), [("sqlite", 2), ("postgresql", 3), ("redis", 2)])
def test_write_through_one_gateway_read_through_another(
    kind: str, count: int, tmp_path: Path
) -> None:
    """Every read through any gateway returns what another gateway answered as stable."""
    with gateways(kind, count, tmp_path) as (metadata, content, servers):
        played = run(rounds(servers, seed=count * 1000 + len(kind)), timeout=900)
        assert played == ROUNDS
        for server in servers:
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(60) == 0, server.log()[-5000:]
        problems = log_problems(*servers)
        assert not problems, problems
        status, output = fsck(metadata, content, tmp_path / f"data-{servers[0].port}")
        assert status == 0, output
        assert "fsck: clean" in output, output


# -- kill -9 of a gateway mid-storm -------------------------------------------------------

#: Kills per run (the issue's check: at least 10).
KILLS = int(os.environ.get("DITTOFS_GATEWAY_KILLS", "10"))
WRITERS = 3
KILL_AFTER = (0.3, 2.5)


class Model:
    """What one file must hold: the bytes acknowledged as stable, and writes that may have landed.

    A write is *maybe* from the moment it is sent until it is acknowledged as
    stable (a FILE_SYNC reply, or the COMMIT after an UNSTABLE one); a later
    acknowledged write supersedes the maybe bytes it overlaps.
    """

    def __init__(self) -> None:
        self.stable = bytearray()
        self.maybe: list[tuple[int, bytes]] = []

    def sent(self, at: int, data: bytes) -> None:
        self.maybe.append((at, data))

    def acknowledged_last(self) -> None:
        """The newest write was answered FILE_SYNC."""
        self._lay(*self.maybe.pop())

    def committed(self) -> None:
        """A COMMIT was answered: every write sent before it is stable, in order."""
        done, self.maybe = self.maybe, []
        for at, data in done:
            self._lay(at, data)

    def _lay(self, at: int, data: bytes) -> None:
        end = at + len(data)
        self.stable.extend(bytes(max(0, at - len(self.stable))))
        self.stable[at:end] = data
        kept = []
        for start, old in self.maybe:
            stop = start + len(old)
            if stop <= at or start >= end:
                kept.append((start, old))
                continue
            if start < at:
                kept.append((start, old[: at - start]))
            if stop > end:
                kept.append((end, old[end - start :]))
        self.maybe = kept

    def problem(self, got: bytes) -> str | None:
        """Why *got* cannot be this file's content (None when it can)."""
        longest = max([len(self.stable), *(at + len(data) for at, data in self.maybe)])
        if not len(self.stable) <= len(got) <= longest:
            return f"{len(got)} bytes, {len(self.stable)} acknowledged, at most {longest} written"
        want = bytes(self.stable) + bytes(len(got) - len(self.stable))
        allowed: dict[int, set[int]] = {}
        for at, data in self.maybe:
            for offset, value in enumerate(data[: max(0, len(got) - at)]):
                allowed.setdefault(at + offset, set()).add(value)
        for chunk in range(0, len(got), 4096):
            if got[chunk : chunk + 4096] == want[chunk : chunk + 4096]:
                continue
            for i in range(chunk, min(len(got), chunk + 4096)):
                if got[i] != want[i] and got[i] not in allowed.get(i, ()):
                    return f"byte {i} is {got[i]}, acknowledged {want[i]}"
        return None

    def settle(self, got: bytes) -> None:
        """The file reads *got* after a crash: the maybe writes that landed are now its truth."""
        self.stable[:] = got
        self.maybe.clear()


async def write_storm(nfs: AnfsNfs3, handle: bytes, model: Model, rng: random.Random) -> None:
    """Overwrite and append through one gateway until cancelled, keeping *model* current."""
    while True:
        at = len(model.stable) if rng.random() < 0.25 else rng.randrange(0, SPAN)
        data = rng.randbytes(rng.randrange(1, 70_000))
        stable = rng.random() < 0.5
        model.sent(at, data)
        reply = await call_retrying(nfs.write, handle, at, data, FILE_SYNC if stable else UNSTABLE)
        assert reply["status"] == NFS3_OK, reply
        if stable:
            model.acknowledged_last()
        elif rng.random() < 0.5:
            committed = await call_retrying(nfs.commit, handle)
            assert committed["status"] == NFS3_OK, committed
            model.committed()


class Gateway:
    """A gateway that can be killed and started again on its own cache."""

    def __init__(self, workdir: Path, metadata: str, content: str) -> None:
        self.options = (workdir, "--metadata", metadata, "--content", content)
        self.logs: list[RunningServer] = []
        self._stack = contextlib.ExitStack()

    @property
    def server(self) -> RunningServer:
        return self.logs[-1]

    def start(self) -> None:
        workdir, *options = self.options
        self.logs.append(self._stack.enter_context(dittofs_server(Path(workdir), *options)))

    def kill(self) -> None:
        self.server.process.kill()
        self.server.process.wait(30)
        self._stack.close()

    def stop(self) -> int:
        self.server.process.send_signal(signal.SIGTERM)
        status = self.server.process.wait(60)
        self._stack.close()
        return status


async def storm_then_kill(
    victim: Gateway, handles: list[bytes], models: list[Model], rng: random.Random
) -> float:
    """Write through *victim* from one client per file, SIGKILL it mid-storm; the delay."""
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for _ in handles:
            nfs = AnfsNfs3(victim.server.port)
            await nfs.__aenter__()
            # The gateway is gone when they close: closing may fail, and that is fine.
            stack.push_async_callback(_close_quietly, nfs)
            clients.append(nfs)
        tasks = [
            asyncio.create_task(write_storm(nfs, handle, model, random.Random(rng.random())))
            for nfs, handle, model in zip(clients, handles, models, strict=True)
        ]
        delay = rng.uniform(*KILL_AFTER)
        await asyncio.wait(tasks, timeout=delay)
        ended = [task for task in tasks if task.done()]
        victim.server.process.kill()
        for task in tasks:
            task.cancel()  # no reply can come now; what was in flight stays "maybe"
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in ended:
            task.result()  # a storm that stopped before the kill says why
        return delay


async def _close_quietly(nfs: AnfsNfs3) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nfs.__aexit__(None, None, None), 2)


async def check_files(port: int, handles: list[bytes], models: list[Model], when: str) -> None:
    """Every file, read through the gateway on *port*, is what its model allows; settle it."""
    async with AnfsNfs3(port) as nfs:
        for number, (handle, model) in enumerate(zip(handles, models, strict=True)):
            got = await whole(nfs, handle)
            problem = model.problem(got)
            assert problem is None, f"{when}, file {number}: {problem}"
            model.settle(got)


async def overwrite(
    port: int, handles: list[bytes], models: list[Model], rng: random.Random
) -> None:
    """One FILE_SYNC write per file through the gateway on *port*."""
    async with AnfsNfs3(port) as nfs:
        for handle, model in zip(handles, models, strict=True):
            at, data = rng.randrange(0, SPAN), rng.randbytes(rng.randrange(1, 200_000))
            model.sent(at, data)
            reply = await call_retrying(nfs.write, handle, at, data, FILE_SYNC)
            assert reply["status"] == NFS3_OK, reply
            model.acknowledged_last()


def test_kill_9_of_a_gateway_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """SIGKILL one of two gateways mid-storm, again and again: nothing acknowledged is lost.

    After each kill the survivor reads every byte acknowledged as stable (and
    for bytes in flight, the old or the new), then writes over part of each
    file; the killed gateway, started again on its own cache, reads exactly
    that (its journal of unacknowledged writes is not laid over it).  At the
    end fsck is clean, ``dittofs gc --grace 0`` collects only what no map
    names, and a gateway with an empty cache reads every file whole.
    """
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    summary: list[str] = []
    with shared_stores("postgresql", 2, tmp_path) as (metadata, specs):
        pair = [Gateway(tmp_path, metadata, spec) for spec in specs]
        try:
            for gateway in pair:
                gateway.start()

            async def create() -> list[bytes]:
                async with AnfsNfs3(pair[0].server.port) as nfs:
                    return [await _create(nfs, f"storm-{n}.bin") for n in range(WRITERS)]

            handles = run(create())
            models = [Model() for _ in handles]
            for kill in range(KILLS):
                victim, survivor = pair[kill % 2], pair[1 - kill % 2]
                delay = run(storm_then_kill(victim, handles, models, rng))
                victim.kill()
                assert victim.logs[-1].process.returncode == -signal.SIGKILL
                in_flight = sum(len(model.maybe) for model in models)
                when = f"seed {seed}, kill {kill} after {delay:.2f}s"
                run(check_files(survivor.server.port, handles, models, when + ", survivor"))
                run(overwrite(survivor.server.port, handles, models, rng))
                victim.start()
                run(check_files(victim.server.port, handles, models, when + ", restarted"))
                summary.append(f"kill {kill}: after {delay:.2f}s, {in_flight} writes in doubt")
            statuses = [gateway.stop() for gateway in pair]
        finally:
            for gateway in pair:
                if gateway.logs and gateway.server.process.poll() is None:
                    gateway.kill()
        print(f"seed {seed}\n" + "\n".join(summary))
        assert statuses == [0, 0], statuses
        problems = log_problems(*(server for gateway in pair for server in gateway.logs))
        assert not problems, problems
        status, output = fsck(metadata, specs[0], tmp_path / "fsck")
        assert (status, "fsck: clean" in output) == (0, True), output
        gc = subprocess.run(
            [sys.executable, "-m", "dittofs.cli", "gc", "-q", "--metadata", metadata,
             "--content", specs[0], "--grace", "0", "--data-dir", str(tmp_path / "gc")],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert gc.returncode == 0, gc.stdout + gc.stderr
        fresh = Gateway(tmp_path, metadata, specs[0].replace("cache-0", "cache-fresh"))
        fresh.start()
        try:
            run(check_files(fresh.server.port, handles, models, f"seed {seed}, after gc"))
        finally:
            assert fresh.stop() == 0
        status, output = fsck(metadata, specs[0], tmp_path / "fsck")
        assert (status, "fsck: clean" in output) == (0, True), output
