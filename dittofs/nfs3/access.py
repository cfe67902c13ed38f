"""Permission arithmetic from mode bits and AUTH_SYS identities (POSIX semantics)."""

from __future__ import annotations

from dittofs.model import Attributes
from dittofs.nfs3.const import Access, FileType
from dittofs.rpc.message import Credentials

#: The identity AUTH_NONE callers (and squashed users) act as.
ANONYMOUS_UID = 65534
ANONYMOUS_GID = 65534

_ALL = Access.READ | Access.LOOKUP | Access.MODIFY | Access.EXTEND | Access.DELETE | Access.EXECUTE


def caller_ids(credentials: Credentials) -> tuple[int, int, tuple[int, ...]]:
    """Return (uid, gid, supplementary gids); AUTH_NONE is the anonymous user."""
    if credentials.uid is None or credentials.gid is None:
        return ANONYMOUS_UID, ANONYMOUS_GID, ()
    return credentials.uid, credentials.gid, credentials.gids


def permission_bits(attributes: Attributes, credentials: Credentials) -> int:
    """Return the rwx triple (0-7) that applies to the caller, as POSIX picks it."""
    uid, gid, gids = caller_ids(credentials)
    if uid == 0:
        # Root may read and write anything; it may execute only what someone may execute.
        return 0o6 | (0o1 if attributes.type == FileType.DIR or attributes.mode & 0o111 else 0)
    if uid == attributes.uid:
        return (attributes.mode >> 6) & 7
    if attributes.gid == gid or attributes.gid in gids:
        return (attributes.mode >> 3) & 7
    return attributes.mode & 7


def allowed_access(attributes: Attributes, credentials: Credentials, requested: int) -> int:
    """Answer ACCESS (RFC 1813 section 3.3.4): the requested bits the caller holds."""
    bits = permission_bits(attributes, credentials)
    granted = Access(0)
    if bits & 4:
        granted |= Access.READ
    if bits & 2:
        granted |= Access.MODIFY | Access.EXTEND
        if attributes.type == FileType.DIR:
            granted |= Access.DELETE
    if bits & 1:
        granted |= Access.LOOKUP if attributes.type == FileType.DIR else Access.EXECUTE
    return int(granted & _ALL) & requested
