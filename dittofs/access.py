"""Permission arithmetic from mode bits and AUTH_SYS identities (POSIX semantics).

:func:`allowed_access` answers ACCESS; the ``require_*`` functions enforce the
same rules on the calls themselves, raising ``NFS3ERR_ACCES`` where POSIX
says ``EACCES`` (mode bits deny) and ``NFS3ERR_PERM`` where it says ``EPERM``
(only the owner or root may).  Like knfsd, the owner of a file may read and
write it whatever its mode: the client already checked at open time, and a
file created read-only must still take the data written through that open.
"""

from __future__ import annotations

import enum

import attrs

from dittofs.errors import NFSError
from dittofs.model import Attributes, SetAttributes
from dittofs.rpc.message import Credentials
from dittofs.vocabulary import FileType, Status


class Access(enum.IntFlag):
    """ACCESS request and result bits: NFSv3's ``ACCESS3_*`` and v4's ``ACCESS4_*`` agree."""

    READ = 0x0001
    LOOKUP = 0x0002
    MODIFY = 0x0004
    EXTEND = 0x0008
    DELETE = 0x0010
    EXECUTE = 0x0020


READ = 4
WRITE = 2
EXECUTE = 1
_STICKY = 0o1000
_SETUID = 0o4000
_SETGID = 0o2000
_GROUP_EXECUTE = 0o010

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


def is_root(credentials: Credentials) -> bool:
    """True for the superuser (after any squashing)."""
    return caller_ids(credentials)[0] == 0


def in_group(credentials: Credentials, gid: int) -> bool:
    """True when *gid* is the caller's group or one of its supplementary groups."""
    _, primary, groups = caller_ids(credentials)
    return gid == primary or gid in groups


def require(
    attributes: Attributes, credentials: Credentials, wanted: int, owner_override: bool = False
) -> None:
    """Raise ACCES unless the caller holds all *wanted* rwx bits on the object."""
    if owner_override and caller_ids(credentials)[0] == attributes.uid:
        return
    if permission_bits(attributes, credentials) & wanted != wanted:
        raise NFSError(Status.ACCES)


def require_readable(attributes: Attributes, credentials: Credentials) -> None:
    """READ: read permission, owner override, or execute (a client reads to execute)."""
    bits = permission_bits(attributes, credentials)
    if bits & (READ | EXECUTE) or caller_ids(credentials)[0] == attributes.uid:
        return
    raise NFSError(Status.ACCES)


def require_sticky(directory: Attributes, victim: Attributes, credentials: Credentials) -> None:
    """In a sticky directory only the entry's owner, the directory's owner or root may unlink it."""
    if not directory.mode & _STICKY:
        return
    uid = caller_ids(credentials)[0]
    if uid not in (0, directory.uid, victim.uid):
        raise NFSError(Status.PERM, "sticky directory")


def _drops_setgid(attributes: Attributes, credentials: Credentials) -> bool:
    """Whether a change by this caller must drop the file's setgid bit (Linux's rule).

    Setgid with group execute is a real setgid and always goes; without it, it
    goes unless the caller is root or in the file's group.
    """
    if not attributes.mode & _SETGID:
        return False
    if attributes.mode & _GROUP_EXECUTE:
        return True
    return not (is_root(credentials) or in_group(credentials, attributes.gid))


def mode_after_write(attributes: Attributes, credentials: Credentials) -> int:
    """The mode a regular file keeps after this caller writes to or truncates it.

    As Linux does for a caller without CAP_FSETID (anyone but root, the owner
    included): setuid is removed, and setgid as :func:`_drops_setgid` says.
    The NFS client leaves this to the server.
    """
    mode = attributes.mode
    if attributes.type != FileType.REG or is_root(credentials):
        return mode
    if mode & _SETUID:
        mode &= ~_SETUID
    if _drops_setgid(attributes, credentials):
        mode &= ~_SETGID
    return mode


def check_setattr(
    attributes: Attributes, changes: SetAttributes, client_times: bool, credentials: Credentials
) -> SetAttributes:
    """Enforce who may chmod, chown, truncate or set times; return the changes to make.

    The rules are Linux's (``chown_ok``, ``chgrp_ok``, ``setattr_prepare``):
    only root may give a file to someone, even to the owner it already has,
    though the owner may name itself; the owner may change the group only to
    one of its own groups or to the group it already has.  The returned
    changes may differ from those asked: a chmod by someone outside the
    file's group drops the setgid bit, a chown of a non-directory (even to
    the same owner) clears setuid and a real setgid, and a truncate by anyone
    but root clears them as a write does (:func:`mode_after_write`).
    """
    uid = caller_ids(credentials)[0]
    root = uid == 0
    owner = uid == attributes.uid
    if changes.mode is not None and not (root or owner):
        raise NFSError(Status.PERM, "only the owner may change the mode")
    if changes.uid is not None and not (root or (owner and changes.uid == attributes.uid)):
        raise NFSError(Status.PERM, "only root may change the owner")
    if changes.gid is not None and not (
        root or (owner and (changes.gid == attributes.gid or in_group(credentials, changes.gid)))
    ):
        raise NFSError(Status.PERM, "only the owner, to one of its groups, may change the group")
    if changes.size is not None:
        require(attributes, credentials, WRITE, owner_override=True)
    if changes.atime is not None or changes.mtime is not None:
        if client_times and not (root or owner):
            raise NFSError(Status.PERM, "only the owner may set times")
        if not client_times:
            require(attributes, credentials, WRITE, owner_override=True)
    mode = changes.mode
    if (
        mode is not None
        and not root
        and not in_group(credentials, changes.gid if changes.gid is not None else attributes.gid)
    ):
        mode &= ~_SETGID
    current = attributes.mode if mode is None else mode
    kept = current
    if (changes.uid is not None or changes.gid is not None) and attributes.type != FileType.DIR:
        kept &= ~_SETUID
        if _drops_setgid(attributes, credentials):
            kept &= ~_SETGID
    if changes.size is not None:
        kept &= mode_after_write(attributes, credentials) | ~(_SETUID | _SETGID)
    if kept != current:
        mode = kept
    return changes if mode == changes.mode else attrs.evolve(changes, mode=mode)
