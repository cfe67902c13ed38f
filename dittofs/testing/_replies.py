"""NFSv3 results as a test sees them: one plain class per procedure's result.

Attributes are :class:`~dittofs.nfs3.types.Fattr` and wcc data
:class:`~dittofs.nfs3.types.Wcc`, the decoded forms of the wire types.
"""

from __future__ import annotations

from typing import Self

import attrs

from dittofs.nfs3.const import StableHow
from dittofs.nfs3.types import Fattr, Wcc
from dittofs.vocabulary import Status


@attrs.frozen(kw_only=True)
class Reply:
    """The common part of every NFS result: its ``nfsstat3``."""

    status: Status

    def expect_ok(self) -> Self:
        """Return this reply if it succeeded; raise ``AssertionError`` naming the status if not."""
        if self.status != Status.OK:
            raise AssertionError(f"{type(self).__name__} failed with NFS3ERR_{self.status.name}")
        return self


@attrs.frozen(kw_only=True)
class GetattrReply(Reply):
    """GETATTR3res."""

    attributes: Fattr | None = None


@attrs.frozen(kw_only=True)
class WccReply(Reply):
    """A result that is only ``wcc_data`` (SETATTR, REMOVE, RMDIR)."""

    wcc: Wcc


@attrs.frozen(kw_only=True)
class LookupReply(Reply):
    """LOOKUP3res."""

    handle: bytes | None = None
    attributes: Fattr | None = None
    dir_attributes: Fattr | None = None


@attrs.frozen(kw_only=True)
class AccessReply(Reply):
    """ACCESS3res."""

    attributes: Fattr | None
    access: int | None = None


@attrs.frozen(kw_only=True)
class ReadlinkReply(Reply):
    """READLINK3res."""

    attributes: Fattr | None
    target: bytes | None = None


@attrs.frozen(kw_only=True)
class ReadReply(Reply):
    """READ3res."""

    attributes: Fattr | None
    count: int | None = None
    eof: bool | None = None
    data: bytes | None = None


@attrs.frozen(kw_only=True)
class WriteReply(Reply):
    """WRITE3res."""

    wcc: Wcc
    count: int | None = None
    committed: StableHow | None = None
    verifier: bytes | None = None


@attrs.frozen(kw_only=True)
class CreateReply(Reply):
    """CREATE3res, MKDIR3res, SYMLINK3res and MKNOD3res, which share one shape."""

    dir_wcc: Wcc
    handle: bytes | None = None
    attributes: Fattr | None = None


@attrs.frozen(kw_only=True)
class RenameReply(Reply):
    """RENAME3res."""

    from_wcc: Wcc
    to_wcc: Wcc


@attrs.frozen(kw_only=True)
class LinkReply(Reply):
    """LINK3res."""

    attributes: Fattr | None
    dir_wcc: Wcc


@attrs.frozen
class DirEntryReply:
    """One READDIR or READDIRPLUS entry; ``attributes``/``handle`` only from READDIRPLUS."""

    fileid: int
    name: bytes
    cookie: int
    attributes: Fattr | None = None
    handle: bytes | None = None


@attrs.frozen(kw_only=True)
class ReaddirReply(Reply):
    """READDIR3res and READDIRPLUS3res."""

    dir_attributes: Fattr | None
    verifier: bytes | None = None
    entries: list[DirEntryReply] = attrs.field(factory=list)
    eof: bool | None = None


@attrs.frozen(kw_only=True)
class FsstatReply(Reply):
    """FSSTAT3res."""

    attributes: Fattr | None
    tbytes: int | None = None
    fbytes: int | None = None
    abytes: int | None = None
    tfiles: int | None = None
    ffiles: int | None = None
    afiles: int | None = None
    invarsec: int | None = None


@attrs.frozen(kw_only=True)
class FsinfoReply(Reply):
    """FSINFO3res; ``time_delta`` in nanoseconds."""

    attributes: Fattr | None
    rtmax: int | None = None
    rtpref: int | None = None
    rtmult: int | None = None
    wtmax: int | None = None
    wtpref: int | None = None
    wtmult: int | None = None
    dtpref: int | None = None
    maxfilesize: int | None = None
    time_delta: int | None = None
    properties: int | None = None


@attrs.frozen(kw_only=True)
class PathconfReply(Reply):
    """PATHCONF3res."""

    attributes: Fattr | None
    linkmax: int | None = None
    name_max: int | None = None
    no_trunc: bool | None = None
    chown_restricted: bool | None = None
    case_insensitive: bool | None = None
    case_preserving: bool | None = None


@attrs.frozen(kw_only=True)
class CommitReply(Reply):
    """COMMIT3res."""

    wcc: Wcc
    verifier: bytes | None = None


@attrs.frozen
class RpcReply:
    """A decoded RPC reply header and the raw results that follow it.

    ``accepted`` is False for MSG_DENIED, in which case ``stat`` is the
    ``reject_stat`` and ``body`` the rest of the rejection.
    """

    xid: int
    accepted: bool
    stat: int
    body: bytes


class RpcCallFailed(AssertionError):
    """The server did not run the call (not MSG_ACCEPTED with SUCCESS)."""

    def __init__(self, reply: RpcReply) -> None:
        super().__init__(f"RPC call not run: accepted={reply.accepted} stat={reply.stat}")
        self.reply = reply
