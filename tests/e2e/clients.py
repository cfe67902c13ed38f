"""Thin wrappers around clients nobody here wrote: libnfs's command-line tools and anfs.

The end-to-end tests judge DittoFS by what independent implementations make
of it, so nothing here imports ``dittofs``.  :class:`AnfsNfs3` sends every
call through anfs's own RPC transport (which splits records into 10 KiB
fragments) with arguments packed by anfs's ``nfs_pro_v3Packer`` and results
decoded by anfs's ``nfs_pro_v3Unpacker``; each reply must be consumed exactly
by that decoder, so a reply one word too long or too short fails the test.

anfs quirks worked around here (anfs 0.0.3):

* ``NFSv3Client.mknod``, ``fsstat`` and ``commit`` forget to ``await`` the
  call, and ``readdir`` continues with READDIRPLUS; we pack those calls
  ourselves with anfs's packer instead.
* ``unpack_nfstime3`` returns a local ``datetime`` (losing nanoseconds), so a
  SETATTR guard could never match; :class:`Unpacker` keeps the exact pair.
* ``unpack_mountres3`` refers to constants anfs never defines; MNT replies
  are decoded with the unpacker's primitives.
* ``RPC.call`` waits forever if the connection drops, so every call here has
  a timeout.
* ``RPC`` writes each fragment with its own ``drain``, so two concurrent
  calls whose records exceed one fragment could interleave on the wire; only
  small calls are ever issued concurrently.
* Directory listings are linked lists that anfs decodes recursively; pages
  are kept small so Python's recursion limit is never near.
"""

from __future__ import annotations

import asyncio
import subprocess
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

with warnings.catch_warnings():
    # anfs packs with the stdlib xdrlib, deprecated since Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from anfs.protocol.mount import Mount
    from anfs.protocol.nfs3 import messages as const
    from anfs.protocol.nfs3 import rtypes
    from anfs.protocol.nfs3.client import NFSv3Client
    from anfs.protocol.nfs3.pack import nfs_pro_v3Packer, nfs_pro_v3Unpacker
    from anfs.protocol.rpc import RPC
    from anfs.protocol.rpc.common.target import RPCTarget
    from anfs.protocol.rpc.messages import AUTH_SYS

__all__ = [
    "AUTH_SYS",
    "RPC",
    "Mount",
    "NFSv3Client",
    "RPCTarget",
    "const",
    "nfs_pro_v3Packer",
    "rtypes",
]

T = TypeVar("T")

HOST = "127.0.0.1"
#: anfs's own default when a target comes from a URL: records go out in 10 KiB fragments.
FRAGMENT_SIZE = 10 * 1024
CALL_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0

MOUNT_PROGRAM = 100005
MOUNT_V3 = 3
NFS_PROGRAM = const.NFS_PROGRAM
NFS_V3 = const.NFS_V3

# nfsstat3 and friends, spelled as the RFC does (values from anfs's constants module).
NFS3_OK = const.NFS3_OK
UNCHECKED, GUARDED, EXCLUSIVE = const.UNCHECKED, const.GUARDED, const.EXCLUSIVE
UNSTABLE, DATA_SYNC, FILE_SYNC = const.UNSTABLE, const.DATA_SYNC, const.FILE_SYNC
DONT_CHANGE, SET_TO_SERVER_TIME, SET_TO_CLIENT_TIME = (
    const.DONT_CHANGE,
    const.SET_TO_SERVER_TIME,
    const.SET_TO_CLIENT_TIME,
)


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    """Run an anfs coroutine to completion from a plain (synchronous) pytest test."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


def libnfs(*args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """Run one of libnfs's tools (``nfs-cp``, ``nfs-ls``, ``nfs-cat``) and capture its output."""
    return subprocess.run(list(args), capture_output=True, timeout=timeout, check=False)


class Unpacker(nfs_pro_v3Unpacker):  # type: ignore[misc]
    """anfs's decoder, except that ``nfstime3`` stays an exact ``(seconds, nseconds)`` pair."""

    def unpack_nfstime3(self, data_format: str = "json") -> tuple[int, int]:
        """Decode ``nfstime3`` without anfs's lossy conversion to a local ``datetime``."""
        return (self.unpack_uint32(), self.unpack_uint32())


def sattr(
    mode: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    size: int | None = None,
    atime: int | tuple[int, int] = DONT_CHANGE,
    mtime: int | tuple[int, int] = DONT_CHANGE,
) -> Any:
    """Build an anfs ``sattr3``; a time is ``DONT_CHANGE``, ``SET_TO_SERVER_TIME`` or a pair."""

    def how(value: int | tuple[int, int]) -> Any:
        if isinstance(value, tuple):
            return rtypes.set_time(SET_TO_CLIENT_TIME, rtypes.nfstime3(*value))
        return rtypes.set_time(value)

    def u32(value: int | None) -> Any:
        return rtypes.set_uint32(value is not None, value)

    return rtypes.sattr3(
        mode=u32(mode),
        uid=u32(uid),
        gid=u32(gid),
        size=rtypes.set_uint64(size is not None, size),
        atime=how(atime),
        mtime=how(mtime),
    )


def entries(dirlist: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten anfs's nested ``nextentry`` lists of a READDIR(PLUS) reply, without recursion."""
    flat: list[dict[str, Any]] = []
    chain = dirlist["entries"]
    while chain:
        (entry,) = chain
        chain = entry.pop("nextentry")
        flat.append(entry)
    return flat


class RpcCallRejected(Exception):
    """The server answered with something other than an accepted, successful reply."""


class AnfsNfs3:
    """An anfs connection pair: MOUNT v3 for the root handle, NFS v3 for everything else.

    Handles are raw ``bytes``; each method returns anfs's decoded result as a
    ``dict`` (``status`` plus ``resok`` or ``resfail``).
    """

    def __init__(
        self,
        port: int,
        export: str = "/export",
        uid: int = 0,
        gid: int = 0,
        fragsize: int = FRAGMENT_SIZE,
        gids: tuple[int, ...] | None = None,
    ) -> None:
        self.port = port
        self.export = export
        groups = [gid] if gids is None else list(gids)
        self.credential = AUTH_SYS(machinename="dittofs-e2e", uid=uid, gid=gid, gids=groups)
        self.target = RPCTarget(HOST, port, fragsize=fragsize, timeout=10)
        self.mount_rpc: RPC | None = None
        self.nfs_rpc: RPC | None = None
        self.root = b""
        #: Size of the results of the last NFS call (for checking READDIR's count limits).
        self.last_reply_size = 0

    async def __aenter__(self) -> AnfsNfs3:
        self.mount_rpc = await self._connect(MOUNT_PROGRAM, MOUNT_V3)
        self.nfs_rpc = await self._connect(NFS_PROGRAM, NFS_V3)
        status, handle, _ = await self.mnt(self.export.encode())
        if status != 0 or handle is None:
            raise RpcCallRejected(f"MNT {self.export} failed with mountstat3 {status}")
        self.root = handle
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for rpc in (self.mount_rpc, self.nfs_rpc):
            if rpc is not None:
                await rpc.disconnect()

    async def _connect(self, program: int, version: int) -> RPC:
        rpc = RPC(self.target, self.credential)
        _, error = await rpc.connect(program, version)
        if error is not None:
            raise error
        return rpc

    async def call(self, program: int, procedure: int, data: bytes) -> bytes:
        """One RPC call through anfs; the accepted-reply results, or :class:`RpcCallRejected`."""
        rpc = self.mount_rpc if program == MOUNT_PROGRAM else self.nfs_rpc
        version = MOUNT_V3 if program == MOUNT_PROGRAM else NFS_V3
        assert rpc is not None, "not connected"
        results, error = await asyncio.wait_for(
            rpc.call(program, version, procedure, data), CALL_TIMEOUT
        )
        if error is not None:
            raise RpcCallRejected(f"program {program} procedure {procedure}: {error!r}")
        return bytes(results)

    async def _nfs(self, procedure: int, packer: Any, decode: str) -> dict[str, Any]:
        reply = await self.call(NFS_PROGRAM, procedure, packer.get_buffer())
        self.last_reply_size = len(reply)
        unpacker = Unpacker(reply)
        result: dict[str, Any] = getattr(unpacker, decode)()
        unpacker.done()  # the reply must be exactly as long as RFC 1813 says
        return result

    # -- MOUNT -----------------------------------------------------------------------

    async def mnt(self, path: bytes) -> tuple[int, bytes | None, list[int]]:
        """MOUNTPROC3_MNT: ``(mountstat3, handle or None, auth flavours)``."""
        packer = nfs_pro_v3Packer()
        packer.pack_dirpath(path)
        unpacker = Unpacker(await self.call(MOUNT_PROGRAM, 1, packer.get_buffer()))
        status = unpacker.unpack_uint()
        handle, flavors = None, []
        if status == 0:
            handle = bytes(unpacker.unpack_fhandle3())
            flavors = unpacker.unpack_array(unpacker.unpack_int)
        unpacker.done()
        return status, handle, flavors

    # -- NFS v3, RFC 1813 section 3.3 --------------------------------------------------

    async def null(self) -> bytes:
        """NFSPROC3_NULL."""
        return await self.call(NFS_PROGRAM, const.NFS3_PROCEDURE_NULL, b"")

    async def getattr(self, fh: bytes) -> dict[str, Any]:
        """NFSPROC3_GETATTR."""
        packer = nfs_pro_v3Packer()
        packer.pack_fhandle3(fh)
        return await self._nfs(const.NFS3_PROCEDURE_GETATTR, packer, "unpack_getattr3res")

    async def setattr(
        self, fh: bytes, attributes: Any, guard: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """NFSPROC3_SETATTR, guarded by *guard* ctime when given."""
        packer = nfs_pro_v3Packer()
        check = rtypes.sattrguard3(check=guard is not None)
        if guard is not None:
            check.ctime = rtypes.nfstime3(*guard)
        packer.pack_setattr3args(
            rtypes.setattr3args(object=rtypes.nfs_fh3(fh), new_attributes=attributes, guard=check)
        )
        return await self._nfs(const.NFS3_PROCEDURE_SETATTR, packer, "unpack_setattr3res")

    async def lookup(self, directory: bytes, name: bytes) -> dict[str, Any]:
        """NFSPROC3_LOOKUP."""
        packer = nfs_pro_v3Packer()
        packer.pack_diropargs3(rtypes.diropargs3(dir=rtypes.nfs_fh3(directory), name=name))
        return await self._nfs(const.NFS3_PROCEDURE_LOOKUP, packer, "unpack_lookup3res")

    async def access(self, fh: bytes, bits: int) -> dict[str, Any]:
        """NFSPROC3_ACCESS."""
        packer = nfs_pro_v3Packer()
        packer.pack_access3args(rtypes.access3args(object=rtypes.nfs_fh3(fh), access=bits))
        return await self._nfs(const.NFS3_PROCEDURE_ACCESS, packer, "unpack_access3res")

    async def readlink(self, fh: bytes) -> dict[str, Any]:
        """NFSPROC3_READLINK."""
        packer = nfs_pro_v3Packer()
        packer.pack_fhandle3(fh)
        return await self._nfs(const.NFS3_PROCEDURE_READLINK, packer, "unpack_readlink3res")

    async def read(self, fh: bytes, offset: int, count: int) -> dict[str, Any]:
        """NFSPROC3_READ."""
        packer = nfs_pro_v3Packer()
        packer.pack_read3args(rtypes.read3args(file=rtypes.nfs_fh3(fh), offset=offset, count=count))
        return await self._nfs(const.NFS3_PROCEDURE_READ, packer, "unpack_read3res")

    async def write(
        self, fh: bytes, offset: int, data: bytes, stable: int = FILE_SYNC
    ) -> dict[str, Any]:
        """NFSPROC3_WRITE."""
        packer = nfs_pro_v3Packer()
        packer.pack_write3args(
            rtypes.write3args(
                file=rtypes.nfs_fh3(fh), offset=offset, count=len(data), stable=stable, data=data
            )
        )
        return await self._nfs(const.NFS3_PROCEDURE_WRITE, packer, "unpack_write3res")

    async def create(
        self,
        directory: bytes,
        name: bytes,
        mode: int = UNCHECKED,
        attributes: Any = None,
        verifier: bytes = b"",
    ) -> dict[str, Any]:
        """NFSPROC3_CREATE: UNCHECKED, GUARDED (with *attributes*) or EXCLUSIVE (*verifier*)."""
        packer = nfs_pro_v3Packer()
        how = rtypes.createhow3(
            mode=mode, obj_attributes=attributes or sattr(mode=0o644), verf=verifier
        )
        packer.pack_create3args(
            rtypes.create3args(
                where=rtypes.diropargs3(dir=rtypes.nfs_fh3(directory), name=name), how=how
            )
        )
        return await self._nfs(const.NFS3_PROCEDURE_CREATE, packer, "unpack_create3res")

    async def mkdir(self, directory: bytes, name: bytes, mode: int = 0o755) -> dict[str, Any]:
        """NFSPROC3_MKDIR."""
        packer = nfs_pro_v3Packer()
        packer.pack_mkdir3args(
            rtypes.mkdir3args(
                where=rtypes.diropargs3(dir=rtypes.nfs_fh3(directory), name=name),
                attributes=sattr(mode=mode),
            )
        )
        return await self._nfs(const.NFS3_PROCEDURE_MKDIR, packer, "unpack_mkdir3res")

    async def symlink(self, directory: bytes, name: bytes, target: bytes) -> dict[str, Any]:
        """NFSPROC3_SYMLINK."""
        packer = nfs_pro_v3Packer()
        packer.pack_symlink3args(
            rtypes.symlink3args(
                where=rtypes.diropargs3(dir=rtypes.nfs_fh3(directory), name=name),
                symlink=rtypes.symlinkdata3(symlink_attributes=sattr(), symlink_data=target),
            )
        )
        return await self._nfs(const.NFS3_PROCEDURE_SYMLINK, packer, "unpack_symlink3res")

    async def mknod(
        self,
        directory: bytes,
        name: bytes,
        ftype: int,
        major: int = 0,
        minor: int = 0,
        mode: int = 0o600,
    ) -> dict[str, Any]:
        """NFSPROC3_MKNOD (anfs's own ``mknod`` never awaits its call)."""
        packer = nfs_pro_v3Packer()
        if ftype in (const.NF3CHR, const.NF3BLK):
            device = rtypes.devicedata3(
                dev_attributes=sattr(mode=mode), spec=rtypes.specdata3(major=major, minor=minor)
            )
            what = rtypes.mknoddata3(type=ftype, device=device)
        else:
            what = rtypes.mknoddata3(type=ftype, pipe_attributes=sattr(mode=mode))
        packer.pack_mknod3args(
            rtypes.mknod3args(
                where=rtypes.diropargs3(dir=rtypes.nfs_fh3(directory), name=name), what=what
            )
        )
        return await self._nfs(const.NFS3_PROCEDURE_MKNOD, packer, "unpack_mknod3res")

    async def remove(self, directory: bytes, name: bytes) -> dict[str, Any]:
        """NFSPROC3_REMOVE."""
        packer = nfs_pro_v3Packer()
        packer.pack_diropargs3(rtypes.diropargs3(dir=rtypes.nfs_fh3(directory), name=name))
        return await self._nfs(const.NFS3_PROCEDURE_REMOVE, packer, "unpack_remove3res")

    async def rmdir(self, directory: bytes, name: bytes) -> dict[str, Any]:
        """NFSPROC3_RMDIR."""
        packer = nfs_pro_v3Packer()
        packer.pack_diropargs3(rtypes.diropargs3(dir=rtypes.nfs_fh3(directory), name=name))
        return await self._nfs(const.NFS3_PROCEDURE_RMDIR, packer, "unpack_rmdir3res")

    async def rename(
        self, from_dir: bytes, from_name: bytes, to_dir: bytes, to_name: bytes
    ) -> dict[str, Any]:
        """NFSPROC3_RENAME."""
        packer = nfs_pro_v3Packer()
        packer.pack_rename3args(
            rtypes.rename3args(
                from_v=rtypes.diropargs3(dir=rtypes.nfs_fh3(from_dir), name=from_name),
                to=rtypes.diropargs3(dir=rtypes.nfs_fh3(to_dir), name=to_name),
            )
        )
        return await self._nfs(const.NFS3_PROCEDURE_RENAME, packer, "unpack_rename3res")

    async def link(self, fh: bytes, directory: bytes, name: bytes) -> dict[str, Any]:
        """NFSPROC3_LINK."""
        packer = nfs_pro_v3Packer()
        packer.pack_link3args(
            rtypes.link3args(
                file=rtypes.nfs_fh3(fh),
                link=rtypes.diropargs3(dir=rtypes.nfs_fh3(directory), name=name),
            )
        )
        return await self._nfs(const.NFS3_PROCEDURE_LINK, packer, "unpack_link3res")

    async def readdir(
        self, directory: bytes, cookie: int = 0, verifier: bytes = bytes(8), count: int = 1024
    ) -> dict[str, Any]:
        """NFSPROC3_READDIR: one page."""
        packer = nfs_pro_v3Packer()
        packer.pack_readdir3args(
            rtypes.readdir3args(
                dir=rtypes.nfs_fh3(directory), cookie=cookie, cookieverf=verifier, count=count
            )
        )
        return await self._nfs(const.NFS3_PROCEDURE_READDIR, packer, "unpack_readdir3res")

    async def readdirplus(
        self,
        directory: bytes,
        cookie: int = 0,
        verifier: bytes = bytes(8),
        dircount: int = 512,
        maxcount: int = 4096,
    ) -> dict[str, Any]:
        """NFSPROC3_READDIRPLUS: one page."""
        packer = nfs_pro_v3Packer()
        packer.pack_readdirplus3args(
            rtypes.readdirplus3args(
                dir=rtypes.nfs_fh3(directory),
                cookie=cookie,
                cookieverf=verifier,
                dircount=dircount,
                maxcount=maxcount,
            )
        )
        return await self._nfs(const.NFS3_PROCEDURE_READDIRPLUS, packer, "unpack_readdirplus3res")

    async def fsstat(self, fh: bytes) -> dict[str, Any]:
        """NFSPROC3_FSSTAT (anfs's own ``fsstat`` never awaits its call)."""
        packer = nfs_pro_v3Packer()
        packer.pack_fhandle3(fh)
        return await self._nfs(const.NFS3_PROCEDURE_FSSTAT, packer, "unpack_fsstat3res")

    async def fsinfo(self, fh: bytes) -> dict[str, Any]:
        """NFSPROC3_FSINFO."""
        packer = nfs_pro_v3Packer()
        packer.pack_fhandle3(fh)
        return await self._nfs(const.NFS3_PROCEDURE_FSINFO, packer, "unpack_fsinfo3res")

    async def pathconf(self, fh: bytes) -> dict[str, Any]:
        """NFSPROC3_PATHCONF."""
        packer = nfs_pro_v3Packer()
        packer.pack_fhandle3(fh)
        return await self._nfs(const.NFS3_PROCEDURE_PATHCONF, packer, "unpack_pathconf3res")

    async def commit(self, fh: bytes, offset: int = 0, count: int = 0) -> dict[str, Any]:
        """NFSPROC3_COMMIT (anfs's own ``commit`` never awaits its call)."""
        packer = nfs_pro_v3Packer()
        packer.pack_commit3args(
            rtypes.commit3args(file=rtypes.nfs_fh3(fh), offset=offset, count=count)
        )
        return await self._nfs(const.NFS3_PROCEDURE_COMMIT, packer, "unpack_commit3res")

    # -- conveniences built from the calls above ---------------------------------------

    async def list_names(
        self, directory: bytes, count: int = 1024, max_pages: int = 5000
    ) -> tuple[list[bytes], int]:
        """Every name READDIR returns, following cookies to EOF: ``(names, pages)``."""
        names: list[bytes] = []
        cookie, verifier = 0, bytes(8)
        for page in range(1, max_pages + 1):
            reply = await self.readdir(directory, cookie, verifier, count)
            if reply["status"] != NFS3_OK:
                raise RpcCallRejected(f"READDIR failed with {reply['status']}")
            resok = reply["resok"]
            verifier = bytes(resok["cookieverf"])
            batch = entries(resok["reply"])
            names.extend(bytes(entry["name"]) for entry in batch)
            if resok["reply"]["eof"]:
                return names, page
            if not batch:
                raise RpcCallRejected("READDIR returned an empty page without eof")
            cookie = batch[-1]["cookie"]
        raise RpcCallRejected(f"READDIR did not reach eof in {max_pages} pages")
