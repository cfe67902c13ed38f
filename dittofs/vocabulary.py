"""The words every layer shares: file types, status codes and create modes.

This is the bottom of DittoFS's layering: :mod:`dittofs.model`,
:mod:`dittofs.errors` and every store speak these, and the protocol packages
(``nfs3/`` now, NFSv4.1 next) translate them to and from the wire.  The numbers
are RFC 1813's; RFC 8881 gives the conditions it shares with NFSv3 the same
numbers.  Nothing here imports from the rest of DittoFS.
"""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Why an operation failed: ``nfsstat3`` (RFC 1813 section 2.6), ``OK`` when it did not."""

    OK = 0
    PERM = 1
    NOENT = 2
    IO = 5
    NXIO = 6
    ACCES = 13
    EXIST = 17
    XDEV = 18
    NODEV = 19
    NOTDIR = 20
    ISDIR = 21
    INVAL = 22
    FBIG = 27
    NOSPC = 28
    ROFS = 30
    MLINK = 31
    NAMETOOLONG = 63
    NOTEMPTY = 66
    DQUOT = 69
    STALE = 70
    REMOTE = 71
    BADHANDLE = 10001
    NOT_SYNC = 10002
    BAD_COOKIE = 10003
    NOTSUPP = 10004
    TOOSMALL = 10005
    SERVERFAULT = 10006
    BADTYPE = 10007
    JUKEBOX = 10008


class FileType(enum.IntEnum):
    """A file's type: ``ftype3`` (RFC 1813 section 2.5); ``nfs_ftype4`` uses the same numbers."""

    REG = 1
    DIR = 2
    BLK = 3
    CHR = 4
    LNK = 5
    SOCK = 6
    FIFO = 7


class CreateMode(enum.IntEnum):
    """How CREATE treats an existing name: ``createmode3`` (RFC 1813 section 3.3.8)."""

    UNCHECKED = 0
    GUARDED = 1
    EXCLUSIVE = 2
