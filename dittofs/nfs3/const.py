"""Numbers from RFC 1813: program, procedures, status codes, file types and flags."""

from __future__ import annotations

import enum

NFS_PROGRAM = 100003
NFS_V3 = 3

NFS3_FHSIZE = 64
NFS3_COOKIEVERFSIZE = 8
NFS3_CREATEVERFSIZE = 8
NFS3_WRITEVERFSIZE = 8
#: Longest symlink target or path argument we decode.
PATH_MAX = 4096


class Proc(enum.IntEnum):
    """NFSv3 procedure numbers (RFC 1813 section 3.3)."""

    NULL = 0
    GETATTR = 1
    SETATTR = 2
    LOOKUP = 3
    ACCESS = 4
    READLINK = 5
    READ = 6
    WRITE = 7
    CREATE = 8
    MKDIR = 9
    SYMLINK = 10
    MKNOD = 11
    REMOVE = 12
    RMDIR = 13
    RENAME = 14
    LINK = 15
    READDIR = 16
    READDIRPLUS = 17
    FSSTAT = 18
    FSINFO = 19
    PATHCONF = 20
    COMMIT = 21


class StableHow(enum.IntEnum):
    """``stable_how`` for WRITE."""

    UNSTABLE = 0
    DATA_SYNC = 1
    FILE_SYNC = 2


class TimeHow(enum.IntEnum):
    """``time_how`` in ``sattr3``."""

    DONT_CHANGE = 0
    SET_TO_SERVER_TIME = 1
    SET_TO_CLIENT_TIME = 2


class FsInfoProperties(enum.IntFlag):
    """FSINFO ``properties`` bits."""

    LINK = 0x0001
    SYMLINK = 0x0002
    HOMOGENEOUS = 0x0008
    CANSETTIME = 0x0010
