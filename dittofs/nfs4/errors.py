"""The exception an NFSv4.1 operation raises for a status NFSv3 does not have."""

from __future__ import annotations

from dittofs.nfs4.const import Stat4


class NFS4Error(Exception):
    """An operation failed with a v4-only ``nfsstat4`` (stores raise ``NFSError``)."""

    def __init__(self, status: Stat4, detail: str = "", body: bytes = b"") -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        #: What the operation's result carries after the status when it fails this way
        #: (LOCK4denied for NFS4ERR_DENIED); most carry nothing.
        self.body = body

    def __str__(self) -> str:
        return f"NFS4ERR_{self.status.name}" + (f": {self.detail}" if self.detail else "")
