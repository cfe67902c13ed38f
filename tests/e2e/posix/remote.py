"""The NFS side: the operations of :mod:`.reference` through anfs, as a Linux client sends them.

Each system call becomes the NFSv3 calls the Linux kernel client makes for
it: the path walked with LOOKUP (following symbolic links with READLINK,
at most 40, as the kernel does), ACCESS where the kernel asks it at open
time, then the procedure itself.  Only checks that the client's VFS makes
on its own, and that a server is never asked (the ``fs.protected_*``
sysctls), are made here too; every other decision is left to DittoFS.
"""

from __future__ import annotations

import asyncio
import stat
from typing import Any

from tests.e2e.clients import (
    FILE_SYNC,
    GUARDED,
    NFS3_OK,
    SET_TO_SERVER_TIME,
    AnfsNfs3,
    const,
    entries,
    sattr,
)
from tests.e2e.posix.reference import Identity, Outcome

#: nfsstat3 to the errno a Linux client reports (RFC 1813 section 2.6 keeps errno's numbers).
ERRNO = {
    1: "EPERM", 2: "ENOENT", 5: "EIO", 6: "ENXIO", 13: "EACCES", 17: "EEXIST", 18: "EXDEV",
    19: "ENODEV", 20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL", 27: "EFBIG", 28: "ENOSPC",
    30: "EROFS", 31: "EMLINK", 63: "ENAMETOOLONG", 66: "ENOTEMPTY", 69: "EDQUOT", 70: "ESTALE",
}  # fmt: skip
#: The kernel's limit on symbolic links followed in one walk (MAXSYMLINKS).
MAX_SYMLINKS = 40
ACCESS_READ, ACCESS_LOOKUP, ACCESS_MODIFY = 0x01, 0x02, 0x04
NOENT = 2
_TYPE_BITS = {
    const.NF3REG: stat.S_IFREG, const.NF3DIR: stat.S_IFDIR, const.NF3LNK: stat.S_IFLNK,
    const.NF3CHR: stat.S_IFCHR, const.NF3BLK: stat.S_IFBLK, const.NF3SOCK: stat.S_IFSOCK,
    const.NF3FIFO: stat.S_IFIFO,
}  # fmt: skip
_MKNOD_TYPES = {
    "fifo": const.NF3FIFO, "chr": const.NF3CHR, "blk": const.NF3BLK, "sock": const.NF3SOCK,
}  # fmt: skip
#: The export root as the walk needs it: a directory nobody's symlinks live in.
_ROOT = {"type": const.NF3DIR, "mode": 0o777, "uid": 0}
_CALL_SECONDS = 60.0
_READ_CHUNK = 1 << 20


class Errno(Exception):
    """The errno a Linux client would report for this operation."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def checked(reply: dict[str, Any]) -> dict[str, Any]:
    """The ``resok`` of a reply, or the errno its status means."""
    status = reply["status"]
    if status != NFS3_OK:
        raise Errno(ERRNO.get(status, f"NFS3ERR_{status}"))
    return reply.get("resok", reply)


def stat_tuple(attributes: dict[str, Any]) -> tuple[int, ...]:
    """fattr3 in the shape of the reference's ``lstat`` tuple."""
    rdev = attributes["rdev"]
    return (
        _TYPE_BITS[attributes["type"]] | (attributes["mode"] & 0o7777),
        attributes["nlink"],
        attributes["uid"],
        attributes["gid"],
        attributes["size"],
        rdev["major"],
        rdev["minor"],
        attributes["atime"][0] * 10**9 + attributes["atime"][1],
        attributes["mtime"][0] * 10**9 + attributes["mtime"][1],
    )


class Protections:
    """The host's ``fs.protected_symlinks`` and ``fs.protected_hardlinks``: the client's VFS
    applies them on NFS mounts as on local ones, so the NFS side must too."""

    def __init__(self) -> None:
        self.symlinks = _sysctl("protected_symlinks")
        self.hardlinks = _sysctl("protected_hardlinks")


def _sysctl(name: str) -> bool:
    try:
        with open(f"/proc/sys/fs/{name}") as file:
            return file.read().strip() != "0"
    except OSError:
        return False


class Remote:
    """One anfs client per identity, all on one DittoFS export."""

    def __init__(self, port: int, identities: list[Identity], squashed: dict[str, int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.protections = Protections()
        #: The uid each identity acts as on the server (after squashing), for the VFS checks.
        self.acting_uid = squashed
        self.clients: dict[str, AnfsNfs3] = {}
        for identity in identities:
            client = AnfsNfs3(port, uid=identity.uid, gid=identity.gid, gids=identity.groups)
            self.loop.run_until_complete(asyncio.wait_for(client.__aenter__(), _CALL_SECONDS))
            self.clients[identity.name] = client

    def close(self) -> None:
        """Disconnect every client."""
        for client in self.clients.values():
            self.loop.run_until_complete(client.__aexit__(None, None, None))
        self.loop.close()

    def run(self, identity: str, name: str, *args: Any) -> Outcome:
        """Run operation *name* as *identity*; its outcome, as :meth:`Reference.run` gives it."""
        call = getattr(self, f"_{name}")(identity, self.clients[identity], *args)
        try:
            value = self.loop.run_until_complete(asyncio.wait_for(call, _CALL_SECONDS))
        except Errno as error:
            return ("err", error.name)
        return ("ok", value)

    # -- the kernel's path walk ---------------------------------------------------------

    async def _walk(
        self, who: str, nfs: AnfsNfs3, path: str, follow: bool
    ) -> tuple[bytes, dict[str, Any]]:
        """Resolve *path* from the export root, LOOKUP by LOOKUP, as the kernel walks it."""
        handle, attributes = nfs.root, _ROOT
        pending = path.split("/") if path else []
        links = 0
        while pending:
            name = pending.pop(0)
            if attributes["type"] != const.NF3DIR:
                raise Errno("ENOTDIR")
            found = checked(await nfs.lookup(handle, name.encode()))
            child = bytes(found["object"]["data"])
            child_attributes = found["obj_attributes"]["attributes"]
            if child_attributes["type"] == const.NF3LNK and (pending or follow):
                links += 1
                if links > MAX_SYMLINKS:
                    raise Errno("ELOOP")
                self._may_follow(who, attributes, child_attributes)
                target = bytes(checked(await nfs.readlink(child))["data"]).decode()
                pending = target.split("/") + pending
                continue
            handle, attributes = child, child_attributes
        return handle, attributes

    def _may_follow(self, who: str, directory: dict[str, Any], link: dict[str, Any]) -> None:
        """The kernel's ``may_follow_link`` under ``fs.protected_symlinks`` (root included)."""
        if not self.protections.symlinks or link["uid"] == self.acting_uid[who]:
            return
        sticky_world_writable = stat.S_ISVTX | stat.S_IWOTH
        if directory["mode"] & sticky_world_writable != sticky_world_writable:
            return
        if directory["uid"] == link["uid"]:
            return
        raise Errno("EACCES")

    async def _parent(self, who: str, nfs: AnfsNfs3, path: str) -> tuple[bytes, bytes]:
        """The directory that holds *path*'s last component, and that component."""
        head, _, name = path.rpartition("/")
        handle, attributes = await self._walk(who, nfs, head, follow=True)
        if attributes["type"] != const.NF3DIR:
            raise Errno("ENOTDIR")
        # The kernel's walk checks search permission on the last directory too
        # (may_lookup before the last name), asking the server with ACCESS.
        if not checked(await nfs.access(handle, ACCESS_LOOKUP))["access"] & ACCESS_LOOKUP:
            raise Errno("EACCES")
        return handle, name.encode()

    async def _opened(
        self, who: str, nfs: AnfsNfs3, path: str, access: int
    ) -> tuple[bytes, dict[str, Any]]:
        """What open(2) checks before any READ or WRITE: the walk and ACCESS for *access*."""
        handle, attributes = await self._walk(who, nfs, path, follow=True)
        if attributes["type"] == const.NF3DIR and access == ACCESS_MODIFY:
            raise Errno("EISDIR")
        granted = checked(await nfs.access(handle, access))["access"]
        if granted & access != access:
            raise Errno("EACCES")
        return handle, attributes

    # -- the operations, named as in reference.OPERATIONS --------------------------------

    async def _create(self, who: str, nfs: AnfsNfs3, path: str, mode: int) -> None:
        directory, name = await self._parent(who, nfs, path)
        checked(await nfs.create(directory, name, GUARDED, sattr(mode=mode)))

    async def _mkdir(self, who: str, nfs: AnfsNfs3, path: str, mode: int) -> None:
        directory, name = await self._parent(who, nfs, path)
        checked(await nfs.mkdir(directory, name, mode))

    async def _mknod(
        self, who: str, nfs: AnfsNfs3, path: str, kind: str, mode: int, major: int, minor: int
    ) -> None:
        directory, name = await self._parent(who, nfs, path)
        checked(await nfs.mknod(directory, name, _MKNOD_TYPES[kind], major, minor, mode))

    async def _symlink(self, who: str, nfs: AnfsNfs3, path: str, target: str) -> None:
        directory, name = await self._parent(who, nfs, path)
        checked(await nfs.symlink(directory, name, target.encode()))

    async def _write(self, who: str, nfs: AnfsNfs3, path: str, offset: int, data: bytes) -> None:
        handle, _ = await self._opened(who, nfs, path, ACCESS_MODIFY)
        checked(await nfs.write(handle, offset, data, FILE_SYNC))

    async def _read(self, who: str, nfs: AnfsNfs3, path: str, offset: int, count: int) -> bytes:
        handle, attributes = await self._opened(who, nfs, path, ACCESS_READ)
        if attributes["type"] == const.NF3DIR:
            raise Errno("EISDIR")
        return bytes(checked(await nfs.read(handle, offset, count))["data"])

    async def _truncate(self, who: str, nfs: AnfsNfs3, path: str, size: int) -> None:
        handle, _ = await self._opened(who, nfs, path, ACCESS_MODIFY)
        checked(await nfs.setattr(handle, sattr(size=size)))

    async def _unlink(self, who: str, nfs: AnfsNfs3, path: str) -> None:
        directory, name = await self._parent(who, nfs, path)
        checked(await nfs.remove(directory, name))

    async def _rmdir(self, who: str, nfs: AnfsNfs3, path: str) -> None:
        directory, name = await self._parent(who, nfs, path)
        checked(await nfs.rmdir(directory, name))

    async def _rename(self, who: str, nfs: AnfsNfs3, source: str, target: str) -> None:
        from_dir, from_name = await self._parent(who, nfs, source)
        to_dir, to_name = await self._parent(who, nfs, target)
        checked(await nfs.rename(from_dir, from_name, to_dir, to_name))

    async def _link(self, who: str, nfs: AnfsNfs3, source: str, path: str) -> None:
        handle, attributes = await self._walk(who, nfs, source, follow=False)
        directory, name = await self._parent(who, nfs, path)
        if not await self._may_link(who, nfs, handle, attributes):
            # The kernel looks the new name up (EEXIST, or EACCES without search
            # permission) before it checks the source.
            status = (await nfs.lookup(directory, name))["status"]
            if status == NFS3_OK:
                raise Errno("EEXIST")
            if status != NOENT:
                checked({"status": status})
            raise Errno("EPERM")
        checked(await nfs.link(handle, directory, name))

    async def _may_link(
        self, who: str, nfs: AnfsNfs3, handle: bytes, attributes: dict[str, Any]
    ) -> bool:
        """The kernel's ``may_linkat`` under ``fs.protected_hardlinks``."""
        uid = self.acting_uid[who]
        if not self.protections.hardlinks or uid in (0, attributes["uid"]):
            return True
        mode = attributes["mode"]
        if attributes["type"] != const.NF3REG or mode & stat.S_ISUID:
            return False
        if mode & (stat.S_ISGID | stat.S_IXGRP) == stat.S_ISGID | stat.S_IXGRP:
            return False
        wanted = ACCESS_READ | ACCESS_MODIFY
        return bool(checked(await nfs.access(handle, wanted))["access"] & wanted == wanted)

    async def _readlink(self, who: str, nfs: AnfsNfs3, path: str) -> bytes:
        handle, attributes = await self._walk(who, nfs, path, follow=False)
        if attributes["type"] != const.NF3LNK:
            raise Errno("EINVAL")
        return bytes(checked(await nfs.readlink(handle))["data"])

    async def _chmod(self, who: str, nfs: AnfsNfs3, path: str, mode: int) -> None:
        handle, _ = await self._walk(who, nfs, path, follow=True)
        checked(await nfs.setattr(handle, sattr(mode=mode)))

    async def _chown_as(
        self, who: str, nfs: AnfsNfs3, path: str, uid: int, gid: int, follow: bool
    ) -> None:
        handle, _ = await self._walk(who, nfs, path, follow=follow)
        changes = sattr(uid=None if uid == -1 else uid, gid=None if gid == -1 else gid)
        checked(await nfs.setattr(handle, changes))

    async def _chown(self, who: str, nfs: AnfsNfs3, path: str, uid: int, gid: int) -> None:
        await self._chown_as(who, nfs, path, uid, gid, follow=True)

    async def _lchown(self, who: str, nfs: AnfsNfs3, path: str, uid: int, gid: int) -> None:
        await self._chown_as(who, nfs, path, uid, gid, follow=False)

    async def _utime(self, who: str, nfs: AnfsNfs3, path: str, times: tuple[int, int]) -> None:
        handle, _ = await self._walk(who, nfs, path, follow=False)
        atime, mtime = (divmod(value, 10**9) for value in times)
        checked(await nfs.setattr(handle, sattr(atime=atime, mtime=mtime)))

    async def _utime_now(self, who: str, nfs: AnfsNfs3, path: str) -> None:
        handle, _ = await self._walk(who, nfs, path, follow=False)
        now = SET_TO_SERVER_TIME
        checked(await nfs.setattr(handle, sattr(atime=now, mtime=now)))

    async def _listdir(self, who: str, nfs: AnfsNfs3, path: str) -> list[bytes]:
        handle, attributes = await self._walk(who, nfs, path, follow=True)
        if attributes["type"] != const.NF3DIR:
            raise Errno("ENOTDIR")
        granted = checked(await nfs.access(handle, ACCESS_READ))["access"]
        if not granted & ACCESS_READ:
            raise Errno("EACCES")
        names: list[bytes] = []
        cookie, verifier = 0, bytes(8)
        while True:
            resok = checked(await nfs.readdir(handle, cookie, verifier, 4096))
            verifier = bytes(resok["cookieverf"])
            batch = entries(resok["reply"])
            names.extend(bytes(entry["name"]) for entry in batch)
            if resok["reply"]["eof"]:
                return sorted(name for name in names if name not in (b".", b".."))
            cookie = batch[-1]["cookie"]

    async def _lstat(self, who: str, nfs: AnfsNfs3, path: str) -> tuple[int, ...]:
        _, attributes = await self._walk(who, nfs, path, follow=False)
        return stat_tuple(attributes)

    async def _read_all(self, who: str, nfs: AnfsNfs3, path: str) -> bytes:
        handle, _ = await self._opened(who, nfs, path, ACCESS_READ)
        data = bytearray()
        while True:
            resok = checked(await nfs.read(handle, len(data), _READ_CHUNK))
            data += bytes(resok["data"])
            if resok["eof"]:
                return bytes(data)
