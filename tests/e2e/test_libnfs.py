"""DittoFS through libnfs's command-line tools (Debian ``libnfs-utils``): nfs-cp, nfs-ls, nfs-cat.

libnfs is a C NFSv3 client used by real programs (ffmpeg, qemu, gvfs); here
it mounts with MOUNT v3 and speaks NFSv3 on the server's single port, with
no portmapper.  Files written by one client are read back by the other
(anfs), so neither client's view of the server is taken on trust.

libnfs 4.0 mounts the directory part of a URL (``/export/a/b`` for
``nfs://host/export/a/b/file``), so its tools only reach files directly in
the export root; these tests work there with unique names.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import NFS3_OK, AnfsNfs3, const, libnfs, run
from tests.e2e.server import RunningServer

COPY_SIZE = 100 * 1024 * 1024
CHUNK = 1024 * 1024
LISTED_FILES = 500
CONCURRENT_CALLS = 50


def sha256(path: Path) -> str:
    """Hash a file in chunks, so 100 MiB never sits in this process twice."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def random_100mib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """100 MiB of random bytes in a local file (made once per module)."""
    path = tmp_path_factory.mktemp("random") / "random-100MiB.bin"
    with path.open("wb") as file:
        for _ in range(COPY_SIZE // CHUNK):
            file.write(os.urandom(CHUNK))
    yield path
    path.unlink()


def listing(server: RunningServer, path: str = "", recursive: bool = False) -> dict[str, int]:
    """``nfs-ls`` of a directory as {name: size}, asserting the tool succeeded."""
    args = ["nfs-ls", *(["-R"] if recursive else []), server.url(path)]
    result = libnfs(*args)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    sizes: dict[str, int] = {}
    for line in result.stdout.decode().splitlines():
        if not line.strip():
            continue
        _mode, _nlink, _uid, _gid, size, entry = line.split(None, 5)
        assert entry not in sizes, f"nfs-ls listed {entry!r} twice"
        sizes[entry] = int(size)
    return sizes


def test_copy_100mib_in_and_out(
    server: RunningServer, random_100mib: Path, tmp_path: Path, name: str
) -> None:
    """A 100 MiB random file copied in and back out with nfs-cp is byte-identical."""
    remote = f"{name}.bin"
    copied_in = libnfs("nfs-cp", str(random_100mib), server.url(remote))
    assert copied_in.returncode == 0, copied_in.stderr.decode(errors="replace")
    assert listing(server)[remote] == COPY_SIZE

    back = tmp_path / "copied-back.bin"
    copied_out = libnfs("nfs-cp", server.url(remote), str(back))
    assert copied_out.returncode == 0, copied_out.stderr.decode(errors="replace")
    assert back.stat().st_size == COPY_SIZE
    assert sha256(back) == sha256(random_100mib)

    async def check_and_clean() -> None:
        async with AnfsNfs3(server.port, server.export) as nfs:
            found = await nfs.lookup(nfs.root, remote.encode())
            assert found["status"] == NFS3_OK
            handle = bytes(found["resok"]["object"]["data"])
            assert found["resok"]["obj_attributes"]["attributes"]["size"] == COPY_SIZE
            offset = 37 * CHUNK + 12345
            middle = await nfs.read(handle, offset, 65536)
            with random_100mib.open("rb") as local:
                local.seek(offset)
                assert middle["resok"]["data"] == local.read(65536)
            assert (await nfs.remove(nfs.root, remote.encode()))["status"] == NFS3_OK

    run(check_and_clean())
    back.unlink()


def test_recursive_listing_of_what_anfs_made(server: RunningServer, name: str) -> None:
    """nfs-ls -R (READDIRPLUS paging by libnfs) lists every entry anfs created, once, sized."""
    names = [f"file-{i:03d}".encode() for i in range(LISTED_FILES)]

    async def populate() -> None:
        async with AnfsNfs3(server.port, server.export) as nfs:
            made = await nfs.mkdir(nfs.root, name.encode())
            top = bytes(made["resok"]["obj"]["handle"]["data"])
            for start in range(0, len(names), CONCURRENT_CALLS):
                replies = await asyncio.gather(
                    *(nfs.create(top, n) for n in names[start : start + CONCURRENT_CALLS])
                )
                assert all(reply["status"] == NFS3_OK for reply in replies)
            sub = await nfs.mkdir(top, b"sub")
            sub_handle = bytes(sub["resok"]["obj"]["handle"]["data"])
            inner = await nfs.create(sub_handle, b"inner.txt")
            inner_handle = bytes(inner["resok"]["obj"]["handle"]["data"])
            assert (await nfs.write(inner_handle, 0, b"x" * 1234))["status"] == NFS3_OK

    run(populate())
    listed = listing(server, recursive=True)
    assert name in listed
    assert f"{name}/sub" in listed
    assert {f"{name}/{n.decode()}" for n in names} <= set(listed)
    assert listed[f"{name}/sub/inner.txt"] == 1234
    assert all(listed[f"{name}/{n.decode()}"] == 0 for n in names)


def test_files_cross_between_clients(server: RunningServer, tmp_path: Path, name: str) -> None:
    """What anfs writes nfs-cat reads, and what nfs-cp writes anfs reads, byte for byte."""
    from_anfs = os.urandom(200_000)
    from_libnfs = os.urandom(150_001)
    local = tmp_path / "from-libnfs.bin"
    local.write_bytes(from_libnfs)

    async def write_with_anfs() -> None:
        async with AnfsNfs3(server.port, server.export) as nfs:
            created = await nfs.create(nfs.root, f"{name}.anfs".encode())
            handle = bytes(created["resok"]["obj"]["handle"]["data"])
            for offset in range(0, len(from_anfs), 65536):
                chunk = from_anfs[offset : offset + 65536]
                assert (await nfs.write(handle, offset, chunk))["status"] == NFS3_OK

    run(write_with_anfs())
    catted = libnfs("nfs-cat", server.url(f"{name}.anfs"))
    assert catted.returncode == 0, catted.stderr.decode(errors="replace")
    assert catted.stdout == from_anfs

    copied = libnfs("nfs-cp", str(local), server.url(f"{name}.libnfs"))
    assert copied.returncode == 0, copied.stderr.decode(errors="replace")

    async def read_with_anfs() -> bytes:
        async with AnfsNfs3(server.port, server.export) as nfs:
            found = await nfs.lookup(nfs.root, f"{name}.libnfs".encode())
            handle = bytes(found["resok"]["object"]["data"])
            data = b""
            for _ in range(100):
                reply = await nfs.read(handle, len(data), 65536)
                data += reply["resok"]["data"]
                if reply["resok"]["eof"]:
                    return data
            raise AssertionError("no eof after 100 reads")

    assert run(read_with_anfs()) == from_libnfs


def test_empty_file_roundtrip(server: RunningServer, tmp_path: Path, name: str) -> None:
    """A zero-byte file survives nfs-cp in and out (READ at offset 0 of an empty file is eof)."""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    copied_in = libnfs("nfs-cp", str(empty), server.url(f"{name}.empty"))
    assert copied_in.returncode == 0, copied_in.stderr.decode(errors="replace")
    assert listing(server)[f"{name}.empty"] == 0
    back = tmp_path / "back"
    copied_out = libnfs("nfs-cp", server.url(f"{name}.empty"), str(back))
    assert copied_out.returncode == 0, copied_out.stderr.decode(errors="replace")
    assert back.read_bytes() == b""


def test_errors_reach_libnfs(server: RunningServer, tmp_path: Path, name: str) -> None:
    """Missing files, unknown exports and existing targets fail with the right NFS status."""
    missing = libnfs("nfs-cat", server.url(f"{name}.missing"))
    assert missing.returncode != 0
    assert b"NFS3ERR_NOENT" in missing.stderr

    unknown_export = server.url("").replace(server.export, "/no-such-export")
    unmounted = libnfs("nfs-ls", unknown_export)
    assert unmounted.returncode != 0
    assert b"MNT3ERR_NOENT" in unmounted.stderr

    local = tmp_path / "twice"
    local.write_bytes(b"first")
    assert libnfs("nfs-cp", str(local), server.url(f"{name}.twice")).returncode == 0
    again = libnfs("nfs-cp", str(local), server.url(f"{name}.twice"))
    assert again.returncode != 0, "nfs-cp creates GUARDED (O_EXCL): the second copy must fail"
    assert b"NFS3ERR_EXIST" in again.stderr


def test_nested_paths_through_subdirectory_mounts(
    server: RunningServer, tmp_path: Path, name: str
) -> None:
    """libnfs reaches a file below the export root: it mounts the URL's directory part.

    RFC 1813 appendix I lets MNT map any server pathname to a handle; DittoFS
    walks a path below an export with the same search permission LOOKUP needs.
    """

    async def make_directory() -> None:
        async with AnfsNfs3(server.port, server.export) as nfs:
            status = (await nfs.mkdir(nfs.root, name.encode()))["status"]
            assert status in (NFS3_OK, const.NFS3ERR_EXIST)

    run(make_directory())
    local = tmp_path / "nested"
    local.write_bytes(b"nested")
    copied = libnfs("nfs-cp", str(local), server.url(f"{name}/nested"))
    assert copied.returncode == 0, copied.stderr.decode(errors="replace")
