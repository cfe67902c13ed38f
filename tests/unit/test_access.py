"""Permission arithmetic for ACCESS (``dittofs.access``), checked against POSIX rules."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dittofs.access import (
    ANONYMOUS_GID,
    ANONYMOUS_UID,
    Access,
    allowed_access,
    caller_ids,
    permission_bits,
)
from dittofs.model import Attributes
from dittofs.rpc.message import ANONYMOUS, AuthFlavor, Credentials
from dittofs.vocabulary import FileType

ALL = int(
    Access.READ | Access.LOOKUP | Access.MODIFY | Access.EXTEND | Access.DELETE | Access.EXECUTE
)
FILE_RW = int(Access.READ | Access.MODIFY | Access.EXTEND)
DIR_RWX = int(Access.READ | Access.LOOKUP | Access.MODIFY | Access.EXTEND | Access.DELETE)

OWNER = 1000
GROUP = 100


def attributes(mode: int, type: FileType = FileType.REG) -> Attributes:
    """A file owned by uid 1000, gid 100, with *mode*."""
    return Attributes(
        fileid=5,
        generation=1,
        type=type,
        mode=mode,
        nlink=1,
        uid=OWNER,
        gid=GROUP,
        size=0,
        used=0,
        rdev=(0, 0),
        atime=0,
        mtime=0,
        ctime=0,
    )


def user(uid: int, gid: int, gids: tuple[int, ...] = ()) -> Credentials:
    """AUTH_SYS credentials."""
    return Credentials(AuthFlavor.AUTH_SYS, uid, gid, gids)


class CallerIdsTests(SynchronousTestCase):
    """Who a call acts as."""

    def test_auth_sys(self) -> None:
        """AUTH_SYS callers are who they say, supplementary groups included."""
        self.assertEqual(caller_ids(user(7, 8, (9, 10))), (7, 8, (9, 10)))

    def test_auth_none_is_anonymous(self) -> None:
        """AUTH_NONE callers act as nobody (65534), never as root (uid 0 by default)."""
        self.assertEqual(caller_ids(ANONYMOUS), (ANONYMOUS_UID, ANONYMOUS_GID, ()))
        self.assertEqual(ANONYMOUS_UID, 65534)


class PermissionBitsTests(SynchronousTestCase):
    """Which rwx triple applies: owner, else group, else other, as POSIX chooses."""

    def test_owner_class(self) -> None:
        """The owner gets the owner bits."""
        self.assertEqual(permission_bits(attributes(0o750), user(OWNER, 1)), 0o7)

    def test_owner_class_even_when_less_permissive(self) -> None:
        """POSIX picks one class: an owner with no owner bits gets nothing, even if group may."""
        self.assertEqual(permission_bits(attributes(0o077), user(OWNER, GROUP)), 0)

    def test_group_class(self) -> None:
        """A non-owner in the file's group gets the group bits."""
        self.assertEqual(permission_bits(attributes(0o754), user(2000, GROUP)), 0o5)

    def test_supplementary_group(self) -> None:
        """Membership through a supplementary gid counts as the group class."""
        self.assertEqual(permission_bits(attributes(0o754), user(2000, 1, (3, GROUP))), 0o5)

    def test_group_class_even_when_less_permissive(self) -> None:
        """A group member with no group bits gets nothing, even if others may."""
        self.assertEqual(permission_bits(attributes(0o707), user(2000, GROUP)), 0)

    def test_other_class(self) -> None:
        """Everyone else gets the other bits."""
        self.assertEqual(permission_bits(attributes(0o751), user(2000, 2000)), 0o1)

    def test_root_reads_and_writes_anything(self) -> None:
        """Root may read and write a file with no permission bits at all."""
        self.assertEqual(permission_bits(attributes(0o000), user(0, 0)), 0o6)

    def test_root_executes_only_executables(self) -> None:
        """Root may execute a file only if some class may; directories are always searchable."""
        self.assertEqual(permission_bits(attributes(0o001), user(0, 0)), 0o7)
        self.assertEqual(permission_bits(attributes(0o100), user(0, 0)), 0o7)
        self.assertEqual(permission_bits(attributes(0o000, FileType.DIR), user(0, 0)), 0o7)

    def test_anonymous_is_other(self) -> None:
        """AUTH_NONE callers get the other bits."""
        self.assertEqual(permission_bits(attributes(0o764), ANONYMOUS), 0o4)


class AllowedAccessTests(SynchronousTestCase):
    """ACCESS results (RFC 1813 3.3.4): the requested rights the caller holds."""

    def test_owner_of_file(self) -> None:
        """rwx on a file means READ, MODIFY, EXTEND and EXECUTE; DELETE and LOOKUP are for dirs."""
        granted = allowed_access(attributes(0o700), user(OWNER, 1), ALL)
        self.assertEqual(granted, FILE_RW | Access.EXECUTE)

    def test_owner_of_directory(self) -> None:
        """rwx on a directory means READ, LOOKUP, MODIFY, EXTEND and DELETE, not EXECUTE."""
        granted = allowed_access(attributes(0o700, FileType.DIR), user(OWNER, 1), ALL)
        self.assertEqual(granted, DIR_RWX)

    def test_group_read_only(self) -> None:
        """r-- for the group gives group members READ alone."""
        granted = allowed_access(attributes(0o640), user(2000, GROUP), ALL)
        self.assertEqual(granted, Access.READ)

    def test_other_nothing(self) -> None:
        """--- for others gives them no right at all."""
        self.assertEqual(allowed_access(attributes(0o770), user(2000, 2000), ALL), 0)

    def test_other_search_only_directory(self) -> None:
        """--x on a directory lets others look names up but not list or change it."""
        granted = allowed_access(attributes(0o701, FileType.DIR), user(2000, 2000), ALL)
        self.assertEqual(granted, Access.LOOKUP)

    def test_root(self) -> None:
        """Root reads and writes a 000 file but may not execute it."""
        granted = allowed_access(attributes(0o000), user(0, 0), ALL)
        self.assertEqual(granted, FILE_RW)
        root_dir = allowed_access(attributes(0o000, FileType.DIR), user(0, 0), ALL)
        self.assertEqual(root_dir, DIR_RWX)

    def test_anonymous(self) -> None:
        """AUTH_NONE callers get what others get."""
        granted = allowed_access(attributes(0o604), ANONYMOUS, ALL)
        self.assertEqual(granted, Access.READ)

    def test_only_requested_bits(self) -> None:
        """The reply never grants a right that was not asked about."""
        granted = allowed_access(attributes(0o777), user(OWNER, 1), int(Access.READ))
        self.assertEqual(granted, Access.READ)
        self.assertEqual(allowed_access(attributes(0o777), user(OWNER, 1), 0), 0)

    def test_unknown_request_bits_ignored(self) -> None:
        """Bits RFC 1813 does not define are never granted, even to root."""
        granted = allowed_access(attributes(0o777), user(0, 0), 0xFFFFFFFF)
        self.assertEqual(granted & ~ALL, 0)
        self.assertEqual(granted, FILE_RW | Access.EXECUTE)

    def test_symlink_and_special_files_use_file_rights(self) -> None:
        """Non-directories all use the file meanings (EXECUTE, not LOOKUP)."""
        for kind in (FileType.LNK, FileType.FIFO, FileType.CHR):
            granted = allowed_access(attributes(0o755, kind), user(OWNER, 1), ALL)
            self.assertEqual(granted, FILE_RW | Access.EXECUTE, kind)
