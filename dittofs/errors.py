"""The one exception type stores and procedures raise to answer with an NFS error."""

from __future__ import annotations

from dittofs.vocabulary import Status


class NFSError(Exception):
    """An operation failed with the given ``nfsstat3``.

    Stores raise it for conditions the client must hear about (``NOENT``,
    ``EXIST``, ``NOTEMPTY``, ``STALE`` ...); the NFS service turns it into the
    procedure's failure result, with the wcc or post-op attributes the RFC
    asks for.
    """

    def __init__(self, status: Status, detail: str = "") -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail

    def __str__(self) -> str:
        return f"NFS3ERR_{self.status.name}" + (f": {self.detail}" if self.detail else "")
