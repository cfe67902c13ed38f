"""Who may use an export and what each caller may do: client lists, squash, read-only, POSIX.

The permission matrix runs over every metadata store (memory, SQLite and the
local PostgreSQL and Redis), since each store must hand the service the
attributes those rules are decided on.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dittofs.access import Access
from dittofs.exports import Export
from dittofs.interfaces import IMetadataStore
from dittofs.model import SetAttributes
from dittofs.policy import AccessPolicy, Squash, parse_clients
from dittofs.rpc.message import ANONYMOUS, AuthFlavor, Credentials
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.testing import SERVER_TIME, InProcessServer, NFSClient, TickingClock, serve_exports
from dittofs.vocabulary import FileType, Status
from tests.unit import backends

ALL_ACCESS = int(
    Access.READ | Access.LOOKUP | Access.MODIFY | Access.EXTEND | Access.DELETE | Access.EXECUTE
)
OWNER, MEMBER, OTHER, THIRD = 1000, 1001, 1002, 1003
GROUP, SECOND_GROUP, SHARED_GROUP = 1000, 2000, 3000


def user(uid: int, gid: int = 0, gids: tuple[int, ...] = ()) -> Credentials:
    return Credentials(AuthFlavor.AUTH_SYS, uid, gid, gids, b"host")


class AccessPolicyTests(SynchronousTestCase):
    """The policy's two questions: may this client connect, and as whom does it act."""

    def test_loopback_only_by_default(self) -> None:
        """Out of the box only this machine may use an export (IPv4, IPv6 and mapped IPv4)."""
        policy = AccessPolicy()
        self.assertTrue(policy.admits("127.0.0.1", 40000))
        self.assertTrue(policy.admits("::1", 40000))
        self.assertTrue(policy.admits("::ffff:127.0.0.1", 40000))
        self.assertFalse(policy.admits("192.0.2.1", 40000))
        self.assertFalse(policy.admits("not an address", 40000))

    def test_client_lists(self) -> None:
        """Addresses and CIDRs of both families are matched; anything else is refused."""
        policy = AccessPolicy(clients=parse_clients(["192.0.2.0/24", "2001:db8::/32", "10.1.2.3"]))
        self.assertTrue(policy.admits("192.0.2.77", 1))
        self.assertTrue(policy.admits("2001:db8::5", 1))
        self.assertTrue(policy.admits("10.1.2.3", 1))
        self.assertFalse(policy.admits("10.1.2.4", 1))
        self.assertFalse(policy.admits("127.0.0.1", 1))

    def test_bad_client_entry(self) -> None:
        """A typo in the client list is an error naming the entry, not an open door."""
        with self.assertRaises(ValueError) as raised:
            parse_clients(["10.0.0.300"])
        self.assertIn("10.0.0.300", str(raised.exception))

    def test_secure_wants_privileged_ports(self) -> None:
        """A secure export admits only clients calling from ports below 1024."""
        policy = AccessPolicy(secure=True)
        self.assertTrue(policy.admits("127.0.0.1", 1023))
        self.assertFalse(policy.admits("127.0.0.1", 1024))

    def test_root_squash(self) -> None:
        """By default root (and group 0) becomes the anonymous user; others stay themselves."""
        policy = AccessPolicy()
        squashed = policy.identity(user(0, 0, (0, 5)))
        self.assertEqual((squashed.uid, squashed.gid, squashed.gids), (65534, 65534, (65534, 5)))
        self.assertEqual(policy.identity(user(7, 8)), user(7, 8))

    def test_all_squash_and_anonymous(self) -> None:
        """all_squash maps everyone to anonuid/anongid; AUTH_NONE is always anonymous."""
        policy = AccessPolicy(squash=Squash.ALL, anonuid=99, anongid=98)
        squashed = policy.identity(user(7, 8, (9,)))
        self.assertEqual((squashed.uid, squashed.gid, squashed.gids), (99, 98, ()))
        anonymous = AccessPolicy(squash=Squash.NONE).identity(ANONYMOUS)
        self.assertEqual((anonymous.uid, anonymous.gid), (65534, 65534))

    def test_no_root_squash(self) -> None:
        """no_root_squash leaves root as root."""
        self.assertEqual(AccessPolicy(squash=Squash.NONE).identity(user(0)), user(0))


def _server(policy: AccessPolicy, *more: Export) -> InProcessServer:
    export = Export(
        1, b"/export", MemoryMetadataStore(clock=TickingClock()), MemoryContentStore(), policy
    )
    return serve_exports([export, *more])


class ExportAccessTests(SynchronousTestCase):
    """The policy enforced at MNT and on every NFS call."""

    def test_outsider_cannot_mount_or_use_a_leaked_handle(self) -> None:
        """An outsider gets MNT3ERR_ACCES, and NFS3ERR_ACCES even with a valid handle."""
        server = _server(AccessPolicy(clients=parse_clients(["127.0.0.1"])))
        inside = server.client(1, 1)
        handle = inside.mnt(b"/export")
        outsider = server.client(1, 1, host="192.0.2.9")
        with self.assertRaises(AssertionError) as refused:
            outsider.mnt(b"/export")
        self.assertIn("ACCES", str(refused.exception))
        self.assertEqual(outsider.getattr(handle).status, Status.ACCES)
        self.assertEqual(outsider.create(handle, b"f").status, Status.ACCES)

    def test_root_is_squashed_by_default(self) -> None:
        """Root's new files belong to nobody, and root may not chmod another user's file."""
        server = _server(AccessPolicy())
        root = server.client(0, 0)
        handle = root.mnt(b"/export")
        created = root.create(handle, b"by-root").expect_ok().attributes
        assert created is not None
        self.assertEqual((created.uid, created.gid), (65534, 65534))
        mine = server.client(OWNER, GROUP).create(handle, b"mine").expect_ok().handle
        assert mine is not None
        self.assertEqual(root.setattr(mine, SetAttributes(mode=0o777)).status, Status.PERM)

    def test_read_only_refuses_every_change(self) -> None:
        """Every modifying procedure is NFS3ERR_ROFS on a read-only export; reads still work."""
        metadata = MemoryMetadataStore(clock=TickingClock())
        writable = serve_exports([Export(1, b"/export", metadata, MemoryContentStore())])
        setup = writable.client(0, 0)
        root = setup.mnt(b"/export")
        file = setup.write_file(root, b"f", b"data")
        directory = setup.mkdir(root, b"d").expect_ok().handle
        assert directory is not None
        read_only = serve_exports(
            [Export(1, b"/export", metadata, MemoryContentStore(), AccessPolicy(read_only=True))]
        )
        client = read_only.client(0, 0)
        refused = {
            "SETATTR": client.setattr(file, SetAttributes(mode=0o600)),
            "WRITE": client.write(file, 0, b"x"),
            "CREATE": client.create(root, b"new"),
            "MKDIR": client.mkdir(root, b"newdir"),
            "SYMLINK": client.symlink(root, b"ln", b"f"),
            "MKNOD": client.mknod(root, b"fifo", FileType.FIFO),
            "REMOVE": client.remove(root, b"f"),
            "RMDIR": client.rmdir(root, b"d"),
            "RENAME": client.rename(root, b"f", root, b"g"),
            "LINK": client.link(file, root, b"f2"),
        }
        self.assertEqual(
            {name: reply.status for name, reply in refused.items()},
            dict.fromkeys(refused, Status.ROFS),
        )
        self.assertEqual(client.lookup(root, b"f").status, Status.OK)
        granted = client.access(root, ALL_ACCESS).expect_ok().access
        self.assertEqual(granted & int(Access.MODIFY | Access.EXTEND | Access.DELETE), 0)

    def test_export_lists_only_what_the_client_may_mount(self) -> None:
        """EXPORT hides exports a client may not mount."""
        hidden = Export(
            2,
            b"/private",
            MemoryMetadataStore(),
            MemoryContentStore(),
            AccessPolicy(clients=parse_clients(["192.0.2.0/24"])),
        )
        server = _server(AccessPolicy(), hidden)
        reply = server.client().call(100005, 3, 5, b"")
        self.assertIn(b"/export", reply.body)
        self.assertNotIn(b"/private", reply.body)

    def test_mount_a_subdirectory(self) -> None:
        """MNT of a directory inside an export returns that directory, with search checked."""
        server = _server(AccessPolicy(squash=Squash.NONE))
        root = server.client(0, 0)
        top = root.mnt(b"/export")
        inner = root.mkdir(top, b"a").expect_ok().handle
        assert inner is not None
        deeper = root.mkdir(inner, b"b", SetAttributes(mode=0o700)).expect_ok().handle
        self.assertEqual(root.mnt(b"/export/a/b/"), deeper)
        with self.assertRaises(AssertionError) as missing:
            root.mnt(b"/export/a/nope")
        self.assertIn("NOENT", str(missing.exception))
        root.setattr(inner, SetAttributes(mode=0o700)).expect_ok()
        with self.assertRaises(AssertionError) as denied:
            server.client(OTHER, OTHER).mnt(b"/export/a/b")
        self.assertIn("ACCES", str(denied.exception))


class PermissionMatrix:
    """POSIX permissions on every modifying procedure, for one metadata store.

    The tree: ``d`` (0755, owner's), ``d/f`` (0640, owner's, group GROUP),
    ``t`` (sticky 1777, root's), ``s`` (setgid 2775, group SHARED_GROUP).
    """

    def make_metadata(self) -> IMetadataStore:
        raise NotImplementedError

    def setUp(self: SynchronousTestCase | PermissionMatrix) -> None:  # type: ignore[misc]
        assert isinstance(self, PermissionMatrix) and isinstance(self, SynchronousTestCase)
        export = Export(
            1,
            b"/export",
            self.make_metadata(),
            MemoryContentStore(),
            AccessPolicy(squash=Squash.NONE),
        )
        self.server = serve_exports([export])
        self.addCleanup(self.server.close)
        self.root = self.server.client(0, 0)
        self.owner = self.server.client(OWNER, GROUP, (GROUP, SECOND_GROUP))
        self.member = self.server.client(MEMBER, MEMBER, (GROUP,))
        self.other = self.server.client(OTHER, OTHER)
        self.third = self.server.client(THIRD, THIRD)
        top = self.root.mnt(b"/export")
        self.top = top
        self.d = self._made(
            self.root.mkdir(top, b"d", SetAttributes(mode=0o755, uid=OWNER, gid=GROUP))
        )
        self.f = self._made(self.owner.create(self.d, b"f", attributes=SetAttributes(mode=0o640)))
        self.t = self._made(self.root.mkdir(top, b"t", SetAttributes(mode=0o1777)))
        self.s = self._made(
            self.root.mkdir(top, b"s", SetAttributes(mode=0o777, gid=SHARED_GROUP))
        )
        # mkdir(2) never sets setgid itself (test_mkdir_keeps_only_permissions_and_sticky).
        self.root.setattr(self.s, SetAttributes(mode=0o2777)).expect_ok()  # type: ignore[attr-defined]

    @staticmethod
    def _made(reply: object) -> bytes:
        handle = reply.expect_ok().handle  # type: ignore[attr-defined]
        assert handle is not None
        return bytes(handle)

    def assertStatus(self, reply: object, status: Status) -> None:
        assert isinstance(self, SynchronousTestCase)
        self.assertEqual(reply.status, status)  # type: ignore[attr-defined]

    def test_read_and_write_follow_mode_bits(self) -> None:
        """0640: the owner writes, the group reads, others do neither."""
        self.assertStatus(self.owner.write(self.f, 0, b"x"), Status.OK)
        self.assertStatus(self.member.read(self.f, 0, 1), Status.OK)
        self.assertStatus(self.member.write(self.f, 0, b"x"), Status.ACCES)
        self.assertStatus(self.other.read(self.f, 0, 1), Status.ACCES)
        self.assertStatus(self.other.write(self.f, 0, b"x"), Status.ACCES)
        self.assertStatus(self.other.commit(self.f), Status.ACCES)

    def test_owner_may_write_a_read_only_file(self) -> None:
        """As knfsd allows: the client checked at open, so the owner's writes land."""
        self.owner.setattr(self.f, SetAttributes(mode=0o400)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.owner.write(self.f, 0, b"x"), Status.OK)

    def test_directory_changes_need_write_and_search(self) -> None:
        """Creating, linking, renaming and removing in 0755 ``d`` is for the owner (and root)."""
        for client, status in ((self.member, Status.ACCES), (self.other, Status.ACCES)):
            self.assertStatus(client.create(self.d, b"new"), status)
            self.assertStatus(client.mkdir(self.d, b"newdir"), status)
            self.assertStatus(client.symlink(self.d, b"ln", b"f"), status)
            self.assertStatus(client.link(self.f, self.d, b"f2"), status)
            self.assertStatus(client.rename(self.d, b"f", self.d, b"g"), status)
            self.assertStatus(client.remove(self.d, b"f"), status)
        self.assertStatus(self.owner.create(self.d, b"new"), Status.OK)
        self.assertStatus(self.owner.rename(self.d, b"new", self.d, b"newer"), Status.OK)
        self.assertStatus(self.owner.remove(self.d, b"newer"), Status.OK)

    def test_lookup_and_readdir_need_search_and_read(self) -> None:
        """0711: others may look names up but not list; 0700: not even look up."""
        self.owner.setattr(self.d, SetAttributes(mode=0o711)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.other.lookup(self.d, b"f"), Status.OK)
        self.assertStatus(self.other.readdir(self.d), Status.ACCES)
        self.owner.setattr(self.d, SetAttributes(mode=0o700)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.other.lookup(self.d, b"f"), Status.ACCES)

    def test_chmod_chown_chgrp(self) -> None:
        """chmod is the owner's; chown is root's; chgrp is the owner's, to its own groups."""
        self.assertStatus(self.member.setattr(self.f, SetAttributes(mode=0o666)), Status.PERM)
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(mode=0o600)), Status.OK)
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(uid=MEMBER)), Status.PERM)
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(gid=SECOND_GROUP)), Status.OK)
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(gid=SHARED_GROUP)), Status.PERM)
        self.assertStatus(self.root.setattr(self.f, SetAttributes(uid=MEMBER)), Status.OK)

    def test_chown_to_the_current_owner_is_still_roots(self) -> None:
        """Linux's chown_ok and chgrp_ok: naming the values a file already has is no loophole.

        A non-owner may not "change" the owner or group to what they are; the
        owner may name itself as owner and keep its group, even one it is not in.
        """
        self.root.setattr(self.f, SetAttributes(mode=0o666)).expect_ok()  # type: ignore[attr-defined]
        for changes in (
            SetAttributes(uid=OWNER),
            SetAttributes(gid=GROUP),
            SetAttributes(uid=OWNER, gid=GROUP),
        ):
            self.assertStatus(self.member.setattr(self.f, changes), Status.PERM)
            self.assertStatus(self.other.setattr(self.f, changes), Status.PERM)
        link = self._made(self.owner.symlink(self.d, b"ln", b"f"))
        self.assertStatus(self.other.setattr(link, SetAttributes(uid=OWNER)), Status.PERM)
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(uid=OWNER)), Status.OK)
        self.root.setattr(self.f, SetAttributes(gid=SHARED_GROUP)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(gid=SHARED_GROUP)), Status.OK)

    def _mode(self, handle: bytes) -> int:
        attributes = self.root.getattr(handle).expect_ok().attributes  # type: ignore[attr-defined]
        assert attributes is not None
        return int(attributes.mode)  # type: ignore[attr-defined]

    def test_write_by_anyone_but_root_clears_setuid_and_setgid(self) -> None:
        """Linux removes setuid, and setgid with group execute, when an unprivileged caller
        writes or truncates (the owner too); root keeps them; setgid without group execute
        stays for a caller in the file's group."""
        cases = (
            (self.other, 0o4777, 0o777),
            (self.other, 0o2777, 0o777),
            (self.other, 0o6777, 0o777),
            (self.owner, 0o6777, 0o777),
            (self.member, 0o2767, 0o2767),  # no group execute, caller in the group
            (self.other, 0o2767, 0o767),  # no group execute, caller outside it
            (self.root, 0o6777, 0o6777),
        )
        for client, before, after in cases:
            for change in ("write", "truncate", "empty write"):
                self.root.setattr(self.f, SetAttributes(mode=before)).expect_ok()  # type: ignore[attr-defined]
                if change == "write":
                    self.assertStatus(client.write(self.f, 0, b"x"), Status.OK)
                    expected = after
                elif change == "truncate":
                    self.assertStatus(client.setattr(self.f, SetAttributes(size=0)), Status.OK)
                    expected = after
                else:
                    self.assertStatus(client.write(self.f, 0, b""), Status.OK)
                    expected = before
                assert isinstance(self, SynchronousTestCase)
                self.assertEqual(
                    oct(self._mode(self.f)), oct(expected), (client.uid, oct(before), change)
                )

    def test_chown_clears_setuid_even_to_the_same_owner(self) -> None:
        """Linux's chown_common kills setuid on any chown of a non-directory, root's too."""
        self.root.setattr(self.f, SetAttributes(mode=0o6755)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.root.setattr(self.f, SetAttributes(uid=OWNER)), Status.OK)
        assert isinstance(self, SynchronousTestCase)
        self.assertEqual(oct(self._mode(self.f)), oct(0o755))
        self.root.setattr(self.f, SetAttributes(mode=0o6745)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(gid=GROUP)), Status.OK)
        self.assertEqual(oct(self._mode(self.f)), oct(0o2745))

    # -- differences the POSIX differential test found (tests/e2e/posix), kept as plain tests --

    def test_a_taken_name_is_exist_before_a_denied_write(self) -> None:
        """The kernel looks a new name up before ``may_create``: EEXIST wins over EACCES
        and over the EPERM of a device node or of a hard link to a directory."""
        for client in (self.member, self.other):
            self.assertStatus(client.create(self.d, b"f", attributes=SetAttributes()), Status.EXIST)
            self.assertStatus(client.mkdir(self.d, b"f"), Status.EXIST)
            self.assertStatus(client.symlink(self.d, b"f", b"x"), Status.EXIST)
            self.assertStatus(client.link(self.f, self.d, b"f"), Status.EXIST)
            self.assertStatus(client.create(self.d, b"new"), Status.ACCES)
        self.assertStatus(self.owner.mknod(self.d, b"f", FileType.CHR, rdev=(1, 3)), Status.EXIST)
        self.assertStatus(self.root.link(self.d, self.top, b"d"), Status.EXIST)
        self.assertStatus(self.root.link(self.d, self.top, b"d2"), Status.PERM)

    def test_a_missing_name_is_noent_before_a_denied_write(self) -> None:
        """The kernel looks the victim up before ``may_delete``: ENOENT wins over EACCES."""
        self.assertStatus(self.other.remove(self.d, b"missing"), Status.NOENT)
        self.assertStatus(self.other.rmdir(self.d, b"missing"), Status.NOENT)
        self.assertStatus(self.other.rename(self.d, b"missing", self.t, b"x"), Status.NOENT)
        self.assertStatus(self.other.remove(self.d, b"f"), Status.ACCES)
        # Both directories are searched (the kernel's walks to them) before the source
        # is looked up: no search permission on the target is ACCES, source or not.
        self.owner.setattr(self.d, SetAttributes(mode=0o700)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.other.rename(self.t, b"missing", self.d, b"x"), Status.ACCES)
        self._made(self.other.create(self.t, b"mine"))
        self.assertStatus(self.other.rename(self.t, b"mine", self.d, b"x"), Status.ACCES)
        self.assertStatus(self.other.rename(self.t, b"missing", self.t, b"x"), Status.NOENT)

    def test_rename_onto_an_ancestor_is_notempty_first(self) -> None:
        """Renaming a file onto the directory holding it is NOTEMPTY (Linux's loop check),
        not ISDIR, and not PERM for a caller the sticky bit would stop."""
        self.assertStatus(self.root.rename(self.d, b"f", self.top, b"d"), Status.NOTEMPTY)
        self._made(self.other.create(self.t, b"x"))
        inner = self._made(self.other.mkdir(self.t, b"inner"))
        self._made(self.other.create(inner, b"y"))
        self.assertStatus(self.third.rename(inner, b"y", self.t, b"inner"), Status.NOTEMPTY)
        self.assertStatus(self.root.rename(self.t, b"inner", inner, b"z"), Status.INVAL)

    def test_rename_onto_the_file_itself_is_a_no_op_for_anyone(self) -> None:
        """Linux's vfs_rename returns at once when source and target are one file (the
        same name, or two links of it): no write permission is needed, nothing moves."""
        self.assertStatus(self.other.rename(self.d, b"f", self.d, b"f"), Status.OK)
        self.root.link(self.f, self.d, b"f2").expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.other.rename(self.d, b"f", self.d, b"f2"), Status.OK)
        for name in (b"f", b"f2"):
            self.root.lookup(self.d, name).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.other.rename(self.d, b"f", self.d, b"g"), Status.ACCES)

    def test_rename_checks_the_target_type_before_the_moving_directory(self) -> None:
        """A directory renamed onto a file in another directory is NOTDIR, even when the
        directory itself is not writable (Linux's may_delete on the target comes before
        the write check of the ``..`` that would change)."""
        self._made(self.other.mkdir(self.s, b"a", SetAttributes(mode=0)))
        b = self._made(self.other.mkdir(self.s, b"b", SetAttributes(mode=0o777)))
        self._made(self.other.create(b, b"x"))
        self.assertStatus(self.other.rename(self.s, b"a", b, b"x"), Status.NOTDIR)
        self.assertStatus(self.other.rename(self.s, b"a", b, b"y"), Status.ACCES)

    def test_rename_checks_the_source_sticky_bit_before_the_target(self) -> None:
        """The source's may_delete (with its sticky bit, EPERM) comes before the target's
        write check (EACCES)."""
        self._made(self.other.create(self.t, b"y"))
        self.assertStatus(self.third.rename(self.t, b"y", self.d, b"z"), Status.PERM)
        self.assertStatus(self.other.rename(self.t, b"y", self.d, b"z"), Status.ACCES)

    def test_mkdir_keeps_only_permissions_and_sticky(self) -> None:
        """mkdir(2) masks setuid and setgid (a setgid parent still passes its setgid on)."""
        made = self.owner.mkdir(self.d, b"x", SetAttributes(mode=0o7755)).expect_ok().attributes  # type: ignore[attr-defined]
        assert made is not None
        assert isinstance(self, SynchronousTestCase)
        self.assertEqual(oct(made.mode), oct(0o1755))  # type: ignore[attr-defined]

    def test_setgid_program_for_a_group_one_is_not_in(self) -> None:
        """Linux's mode_strip_sgid: a file created setgid and group-executable in a setgid
        directory of another group loses setgid, unless the creator is root."""
        made = self.other.create(self.s, b"p", attributes=SetAttributes(mode=0o2775)).expect_ok()  # type: ignore[attr-defined]
        assert isinstance(self, SynchronousTestCase)
        self.assertEqual(oct(made.attributes.mode), oct(0o775))
        kept = self.other.create(self.s, b"q", attributes=SetAttributes(mode=0o2765)).expect_ok()  # type: ignore[attr-defined]
        self.assertEqual(oct(kept.attributes.mode), oct(0o2765))
        rooted = self.root.create(self.s, b"r", attributes=SetAttributes(mode=0o2775)).expect_ok()  # type: ignore[attr-defined]
        self.assertEqual(oct(rooted.attributes.mode), oct(0o2775))

    def test_truncate_to_the_same_size_keeps_mtime(self) -> None:
        """POSIX truncate moves mtime only if the size changes."""
        self.owner.write(self.f, 0, b"12345").expect_ok()  # type: ignore[attr-defined]
        self.owner.setattr(self.f, SetAttributes(mtime=10**18)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(size=5)), Status.OK)
        attributes = self.root.getattr(self.f).expect_ok().attributes  # type: ignore[attr-defined]
        assert isinstance(self, SynchronousTestCase)
        self.assertEqual((attributes.size, attributes.mtime), (5, 10**18))
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(size=4)), Status.OK)
        attributes = self.root.getattr(self.f).expect_ok().attributes  # type: ignore[attr-defined]
        self.assertNotEqual(attributes.mtime, 10**18)

    def test_times(self) -> None:
        """Anyone who may write may set times to now; only the owner may choose them."""
        self.root.setattr(self.f, SetAttributes(mode=0o666)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.other.setattr(self.f, SetAttributes(mtime=SERVER_TIME)), Status.OK)
        self.assertStatus(self.other.setattr(self.f, SetAttributes(mtime=10**18)), Status.PERM)
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(mtime=10**18)), Status.OK)

    def test_truncate_needs_write(self) -> None:
        """Setting the size is a write: refused to the group of a 0640 file."""
        self.assertStatus(self.member.setattr(self.f, SetAttributes(size=0)), Status.ACCES)
        self.assertStatus(self.owner.setattr(self.f, SetAttributes(size=0)), Status.OK)

    def test_sticky_directory(self) -> None:
        """In 1777 ``t`` a file can be removed or renamed by its owner, not by others."""
        self._made(self.other.create(self.t, b"x"))
        self.assertStatus(self.third.remove(self.t, b"x"), Status.PERM)
        self.assertStatus(self.third.rename(self.t, b"x", self.t, b"y"), Status.PERM)
        self._made(self.third.create(self.t, b"z"))
        self.assertStatus(self.other.rename(self.t, b"x", self.t, b"z"), Status.PERM)
        self.assertStatus(self.other.rename(self.t, b"x", self.t, b"y"), Status.OK)
        self.assertStatus(self.root.remove(self.t, b"y"), Status.OK)

    def test_setgid_directory(self) -> None:
        """In setgid ``s`` new files take the directory's group and new directories keep setgid."""
        created = self.other.create(self.s, b"file").expect_ok().attributes  # type: ignore[attr-defined]
        assert created is not None
        self.assertEqual(created.gid, SHARED_GROUP)  # type: ignore[attr-defined]
        made = self.other.mkdir(self.s, b"sub").expect_ok().attributes  # type: ignore[attr-defined]
        assert made is not None
        self.assertEqual((made.gid, made.mode & 0o2000), (SHARED_GROUP, 0o2000))  # type: ignore[attr-defined]

    def test_moving_a_directory_needs_write_on_it(self) -> None:
        """A directory changing parent rewrites its '..', so the mover needs write on it."""
        inner = self._made(self.other.mkdir(self.t, b"mine", SetAttributes(mode=0o555)))
        self.assertStatus(self.other.rename(self.t, b"mine", self.s, b"moved"), Status.ACCES)
        self.other.setattr(inner, SetAttributes(mode=0o755)).expect_ok()  # type: ignore[attr-defined]
        self.assertStatus(self.other.rename(self.t, b"mine", self.s, b"moved"), Status.OK)

    def test_devices_are_roots(self) -> None:
        """Only root makes device nodes."""
        self.assertStatus(self.owner.mknod(self.d, b"dev", FileType.CHR, rdev=(1, 3)), Status.PERM)
        self.assertStatus(self.root.mknod(self.d, b"dev", FileType.CHR, rdev=(1, 3)), Status.OK)

    def test_access_agrees_with_the_calls(self) -> None:
        """ACCESS grants MODIFY exactly to those whose WRITE then succeeds."""
        clients: tuple[NFSClient, ...] = (self.owner, self.member, self.other)
        for client in clients:
            granted = client.access(self.f, ALL_ACCESS).expect_ok().access
            wrote = client.write(self.f, 0, b"x").status == Status.OK
            # The owner override lets an owner write what ACCESS (mode bits) would not grant;
            # with 0640 the owner holds w anyway, so both must agree for everyone here.
            assert isinstance(self, SynchronousTestCase)
            self.assertEqual(bool(granted & Access.MODIFY), wrote, client.uid)


class MemoryPermissionTests(PermissionMatrix, SynchronousTestCase):
    """The permission matrix over the memory metadata store."""

    def make_metadata(self) -> IMetadataStore:
        return MemoryMetadataStore(clock=TickingClock())


class SqlitePermissionTests(PermissionMatrix, SynchronousTestCase):
    """The permission matrix over SQLite."""

    def make_metadata(self) -> IMetadataStore:
        return backends.sqlite_store(self)


class PostgresPermissionTests(PermissionMatrix, SynchronousTestCase):
    """The permission matrix over the local PostgreSQL."""

    def make_metadata(self) -> IMetadataStore:
        return backends.postgres_store(self)


class RedisPermissionTests(PermissionMatrix, SynchronousTestCase):
    """The permission matrix over the local Redis."""

    def make_metadata(self) -> IMetadataStore:
        return backends.redis_store(self)
