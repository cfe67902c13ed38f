"""Procedure-level tests of the NFSv3 program (RFC 1813 section 3.3) through ``dittofs.testing``.

Every call is a real RPC record encoded by the harness, dispatched in-process
and decoded back, so these tests see the reply bytes a client would, over
memory stores and without a reactor.  The harness decoder rejects replies
with bytes left over, so each test also checks the ``*3resok``/``*3resfail``
shape of the procedure it calls.
"""

from __future__ import annotations

import time
from typing import Any, cast

from twisted.internet.defer import Deferred, fail
from twisted.logger import ILogObserver, LogLevel, capturedLogs, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from dittofs.access import Access
from dittofs.errors import NFSError
from dittofs.exports import Export
from dittofs.model import SetAttributes
from dittofs.nfs3.const import NFS_PROGRAM, NFS_V3, FsInfoProperties, Proc, StableHow
from dittofs.nfs3.handle import FileHandle
from dittofs.nfs3.service import MAX_IO
from dittofs.policy import AccessPolicy, Squash
from dittofs.rpc.message import AcceptStat
from dittofs.stores.content import memory as memory_content
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.testing import (
    SERVER_TIME,
    Fattr,
    NFSClient,
    PreOpAttr,
    Wcc,
    build_server,
    serve_exports,
    synchronous_result,
)
from dittofs.testing import TickingClock as Clock
from dittofs.vocabulary import CreateMode, FileType, Status

WRITE_VERIFIER = b"wverf-01"
CAPACITY = 2**30
ALL_ACCESS = 0x3F
GARBAGE = b"not a handle"


class ServiceTestCase(SynchronousTestCase):
    """One export over fresh memory stores, a client calling as uid/gid 1000, and its root."""

    def setUp(self) -> None:
        self.metadata = MemoryMetadataStore(clock=Clock())
        self.content = MemoryContentStore(capacity=CAPACITY)
        # Root keeps its powers here (no_root_squash) so tests can act as root;
        # squashing and client lists are tested in test_policy.py.
        self.server = build_server(
            self.metadata,
            self.content,
            write_verifier=WRITE_VERIFIER,
            policy=AccessPolicy(squash=Squash.NONE),
        )
        self.addCleanup(self.server.close)
        self.client = self.server.client(uid=1000, gid=1000)
        self.root = self.client.mnt(b"/export")

    # -- helpers ------------------------------------------------------------------------

    def attrs(self, fh: bytes) -> Fattr:
        """Current attributes of *fh* (the call must succeed)."""
        attributes = self.client.getattr(fh).expect_ok().attributes
        assert attributes is not None
        return attributes

    def file(self, name: bytes, data: bytes = b"", directory: bytes | None = None) -> bytes:
        """Create a file holding *data*; return its handle."""
        return self.client.write_file(self.root if directory is None else directory, name, data)

    def mkdir(self, name: bytes, directory: bytes | None = None, mode: int = 0o755) -> bytes:
        """Create a directory; return its handle."""
        reply = self.client.mkdir(
            self.root if directory is None else directory, name, SetAttributes(mode=mode)
        ).expect_ok()
        assert reply.handle is not None
        return reply.handle

    def stored(self, fh: bytes) -> bytes:
        """What the content store holds for the file behind *fh*."""
        fileid = FileHandle.decode(fh).fileid
        data: bytes = synchronous_result(self.content.read(fileid, 0, 2**30))
        return data

    def assertChanged(self, wcc: Wcc, before: Fattr) -> Fattr:
        """*wcc* has pre-op attributes equal to *before* and later post-op attributes."""
        self.assertEqual(wcc.before, PreOpAttr(before.size, before.mtime, before.ctime))
        self.assertIsNotNone(wcc.after)
        assert wcc.after is not None
        self.assertEqual(wcc.after.fileid, before.fileid)
        self.assertGreater(wcc.after.ctime, before.ctime)
        return wcc.after

    def assertFailedWcc(self, wcc: Wcc, fh: bytes) -> None:
        """A failure's wcc still carries the object's current attributes."""
        self.assertIsNotNone(wcc.after)
        self.assertEqual(wcc.after, self.attrs(fh))

    def assertStatus(self, reply: Any, status: Status) -> None:
        """The reply's nfsstat3 is *status*."""
        self.assertEqual(reply.status, status, f"{type(reply).__name__}: {reply.status!r}")


class HarnessTests(ServiceTestCase):
    """The harness itself: MNT, NULL and the RPC layer underneath."""

    def test_mount_gives_root(self) -> None:
        """MNT's handle is the export's root directory, with the export's fsid."""
        root = self.attrs(self.root)
        self.assertEqual(root.type, FileType.DIR)
        self.assertEqual(root.fsid, self.server.export.fsid)
        self.assertEqual(self.root, self.server.root_handle())

    def test_null(self) -> None:
        """NULL answers with empty results."""
        self.client.null()

    def test_garbage_arguments(self) -> None:
        """Arguments that do not decode are GARBAGE_ARGS, before any procedure runs."""
        reply = self.client.call(NFS_PROGRAM, NFS_V3, Proc.GETATTR, b"\0\0\0\x10abc")
        self.assertTrue(reply.accepted)
        self.assertEqual(reply.stat, AcceptStat.GARBAGE_ARGS)

    def test_clients_are_independent(self) -> None:
        """Clients with other credentials share the server's state."""
        self.file(b"shared", b"data")
        other = self.server.client(uid=None)
        found = other.lookup(self.root, b"shared").expect_ok()
        assert found.handle is not None
        self.assertEqual(other.read_file(found.handle), b"data")


class HandleErrorTests(ServiceTestCase):
    """Handles the server never issued, or whose file is gone."""

    def calls(self, fh: bytes) -> dict[str, Any]:
        """Every procedure that takes a handle, called with *fh* in every handle position."""
        c = self.client
        return {
            "GETATTR": lambda: c.getattr(fh),
            "SETATTR": lambda: c.setattr(fh, SetAttributes(mode=0o600)),
            "LOOKUP": lambda: c.lookup(fh, b"x"),
            "ACCESS": lambda: c.access(fh, ALL_ACCESS),
            "READLINK": lambda: c.readlink(fh),
            "READ": lambda: c.read(fh, 0, 10),
            "WRITE": lambda: c.write(fh, 0, b"x"),
            "CREATE": lambda: c.create(fh, b"x"),
            "MKDIR": lambda: c.mkdir(fh, b"x"),
            "SYMLINK": lambda: c.symlink(fh, b"x", b"y"),
            "MKNOD": lambda: c.mknod(fh, b"x", FileType.FIFO),
            "REMOVE": lambda: c.remove(fh, b"x"),
            "RMDIR": lambda: c.rmdir(fh, b"x"),
            "RENAME from": lambda: c.rename(fh, b"x", self.root, b"y"),
            "RENAME to": lambda: c.rename(self.root, b"x", fh, b"y"),
            "LINK file": lambda: c.link(fh, self.root, b"y"),
            "LINK dir": lambda: c.link(self.root, fh, b"y"),
            "READDIR": lambda: c.readdir(fh),
            "READDIRPLUS": lambda: c.readdirplus(fh),
            "FSSTAT": lambda: c.fsstat(fh),
            "FSINFO": lambda: c.fsinfo(fh),
            "PATHCONF": lambda: c.pathconf(fh),
            "COMMIT": lambda: c.commit(fh),
        }

    def test_garbage_handle(self) -> None:
        """A handle of the wrong size is BADHANDLE for every procedure, in its failure shape."""
        for name, call in self.calls(GARBAGE).items():
            reply = call()
            self.assertEqual(reply.status, Status.BADHANDLE, name)

    def test_wrong_version_handle(self) -> None:
        """A 16-byte handle of another format version is BADHANDLE, not some file."""
        forged = b"\x02" + self.root[1:]
        for name, call in self.calls(forged).items():
            self.assertEqual(call().status, Status.BADHANDLE, name)

    def test_removed_file_handle(self) -> None:
        """A removed file's handle is STALE everywhere, never another file's."""
        fh = self.file(b"gone", b"data")
        self.client.remove(self.root, b"gone").expect_ok()
        self.file(b"new", b"other")
        for name, call in self.calls(fh).items():
            self.assertEqual(call().status, Status.STALE, name)

    def test_unknown_export(self) -> None:
        """A well-formed handle for an export that does not exist is STALE."""
        handle = FileHandle.decode(self.root)
        forged = FileHandle(99, handle.fileid, handle.generation).encode()
        self.assertStatus(self.client.getattr(forged), Status.STALE)

    def test_other_generation(self) -> None:
        """A handle whose generation differs (a restarted store) is STALE."""
        handle = FileHandle.decode(self.root)
        forged = FileHandle(handle.export_id, handle.fileid, handle.generation ^ 1).encode()
        self.assertStatus(self.client.getattr(forged), Status.STALE)


class GetattrTests(ServiceTestCase):
    """RFC 1813 3.3.1 GETATTR."""

    def test_attributes(self) -> None:
        """GETATTR reports the file as created: type, mode, owner, size and export fsid."""
        fh = self.file(b"a", b"hello")
        attributes = self.attrs(fh)
        self.assertEqual(attributes.type, FileType.REG)
        self.assertEqual((attributes.uid, attributes.gid), (1000, 1000))
        self.assertEqual(attributes.size, 5)
        self.assertEqual(attributes.nlink, 1)
        self.assertEqual(attributes.fsid, 1)
        self.assertEqual(attributes.fileid, FileHandle.decode(fh).fileid)


class SetattrTests(ServiceTestCase):
    """RFC 1813 3.3.2 SETATTR."""

    def test_mode_with_wcc(self) -> None:
        """A mode change succeeds with wcc_data: pre-op as before, post-op with the new mode."""
        fh = self.file(b"a", b"data")
        before = self.attrs(fh)
        reply = self.client.setattr(fh, SetAttributes(mode=0o600)).expect_ok()
        after = self.assertChanged(reply.wcc, before)
        self.assertEqual(after.mode, 0o600)
        self.assertEqual(after, self.attrs(fh))

    def test_owner(self) -> None:
        """uid and gid change together."""
        fh = self.file(b"a")
        root = self.server.client(0, 0)
        reply = root.setattr(fh, SetAttributes(uid=5, gid=6)).expect_ok()
        assert reply.wcc.after is not None
        self.assertEqual((reply.wcc.after.uid, reply.wcc.after.gid), (5, 6))

    def test_client_times(self) -> None:
        """atime and mtime set to client times keep their nanoseconds."""
        fh = self.file(b"a")
        atime, mtime = 1_600_000_000_123_456_789, 1_500_000_000_987_654_321
        self.client.setattr(fh, SetAttributes(atime=atime, mtime=mtime)).expect_ok()
        after = self.attrs(fh)
        self.assertEqual((after.atime, after.mtime), (atime, mtime))

    def test_server_time(self) -> None:
        """SET_TO_SERVER_TIME uses the server's clock, not a client value."""
        fh = self.file(b"a")
        self.client.setattr(fh, SetAttributes(mtime=0)).expect_ok()
        self.client.setattr(fh, SetAttributes(mtime=SERVER_TIME)).expect_ok()
        self.assertLess(abs(self.attrs(fh).mtime - time.time_ns()), 60 * 10**9)

    def test_truncate_discards_content(self) -> None:
        """Shrinking cuts the content, so growing again reads zeros, not the old bytes."""
        fh = self.file(b"a", b"0123456789")
        self.client.setattr(fh, SetAttributes(size=4)).expect_ok()
        self.assertEqual(self.stored(fh), b"0123")
        self.client.setattr(fh, SetAttributes(size=10)).expect_ok()
        self.assertEqual(self.client.read_file(fh), b"0123" + bytes(6))
        self.assertEqual(self.attrs(fh).size, 10)

    def test_guard_mismatch(self) -> None:
        """A ctime guard that does not match is NOT_SYNC with wcc, and nothing changes."""
        fh = self.file(b"a", b"data")
        before = self.attrs(fh)
        reply = self.client.setattr(fh, SetAttributes(size=0), guard_ctime=before.ctime - 1)
        self.assertStatus(reply, Status.NOT_SYNC)
        self.assertFailedWcc(reply.wcc, fh)
        self.assertEqual(self.attrs(fh), before)
        self.assertEqual(self.client.read_file(fh), b"data")

    def test_guard_match(self) -> None:
        """A ctime guard equal to the current ctime lets the change through."""
        fh = self.file(b"a")
        ctime = self.attrs(fh).ctime
        self.client.setattr(fh, SetAttributes(mode=0o640), guard_ctime=ctime).expect_ok()
        self.assertEqual(self.attrs(fh).mode, 0o640)

    def test_size_on_directory(self) -> None:
        """Setting a directory's size is ISDIR, with wcc."""
        directory = self.mkdir(b"d")
        reply = self.client.setattr(directory, SetAttributes(size=0))
        self.assertStatus(reply, Status.ISDIR)
        self.assertFailedWcc(reply.wcc, directory)

    def test_size_on_symlink(self) -> None:
        """Setting a symlink's size is INVAL."""
        link = self.client.symlink(self.root, b"l", b"target").expect_ok().handle
        assert link is not None
        self.assertStatus(self.client.setattr(link, SetAttributes(size=0)), Status.INVAL)


class LookupTests(ServiceTestCase):
    """RFC 1813 3.3.3 LOOKUP, and the name rules every procedure shares."""

    def test_found(self) -> None:
        """LOOKUP returns the same handle CREATE did, the file's and the directory's attributes."""
        fh = self.file(b"a")
        reply = self.client.lookup(self.root, b"a").expect_ok()
        self.assertEqual(reply.handle, fh)
        self.assertEqual(reply.attributes, self.attrs(fh))
        self.assertEqual(reply.dir_attributes, self.attrs(self.root))

    def test_dot_and_dotdot(self) -> None:
        """'.' is the directory itself; '..' its parent; the root is its own parent."""
        sub = self.mkdir(b"d")
        self.assertEqual(self.client.lookup(sub, b".").expect_ok().handle, sub)
        self.assertEqual(self.client.lookup(sub, b"..").expect_ok().handle, self.root)
        self.assertEqual(self.client.lookup(self.root, b"..").expect_ok().handle, self.root)
        self.assertEqual(self.client.lookup(self.root, b".").expect_ok().handle, self.root)

    def test_missing(self) -> None:
        """An absent name is NOENT, with the directory's attributes."""
        reply = self.client.lookup(self.root, b"nope")
        self.assertStatus(reply, Status.NOENT)
        self.assertEqual(reply.dir_attributes, self.attrs(self.root))
        self.assertIsNone(reply.handle)

    def test_in_a_file(self) -> None:
        """Looking up inside a regular file is NOTDIR."""
        fh = self.file(b"a")
        self.assertStatus(self.client.lookup(fh, b"x"), Status.NOTDIR)

    def test_bad_names(self) -> None:
        """Empty, '/' or NUL inside is INVAL; over 255 bytes NAMETOOLONG; 255 bytes is fine."""
        cases = {
            b"": Status.INVAL,
            b"a/b": Status.INVAL,
            b"/": Status.INVAL,
            b"a\0b": Status.INVAL,
            b"x" * 256: Status.NAMETOOLONG,
            b"x" * 255: Status.NOENT,
        }
        for name, status in cases.items():
            self.assertEqual(self.client.lookup(self.root, name).status, status, name[:10])

    def test_longest_name(self) -> None:
        """A 255-byte name can be created and found."""
        name = b"n" * 255
        fh = self.file(name)
        self.assertEqual(self.client.lookup(self.root, name).expect_ok().handle, fh)


class AccessTests(ServiceTestCase):
    """RFC 1813 3.3.4 ACCESS, computed for the caller's credentials."""

    def test_owner_group_other_root_anonymous(self) -> None:
        """Each caller gets the rights its class allows on a 0o640 file owned by 1000:1000."""
        fh = self.file(b"a")
        self.client.setattr(fh, SetAttributes(mode=0o640)).expect_ok()
        rw = int(Access.READ | Access.MODIFY | Access.EXTEND)
        expected = {
            (1000, 1000, ()): rw,
            (2000, 1000, ()): int(Access.READ),
            (2000, 5, (1000,)): int(Access.READ),
            (2000, 2000, ()): 0,
            (0, 0, ()): rw,
            (None, None, ()): 0,
        }
        for (uid, gid, gids), rights in expected.items():
            reply = self.server.client(uid, gid, gids).access(fh, ALL_ACCESS).expect_ok()
            self.assertEqual(reply.access, rights, (uid, gid, gids))
            self.assertEqual(reply.attributes, self.attrs(fh))

    def test_directory(self) -> None:
        """On a directory, x is LOOKUP and w brings DELETE."""
        owned = self.mkdir(b"d", mode=0o700)
        self.server.client(0, 0).setattr(self.root, SetAttributes(mode=0o755)).expect_ok()
        reply = self.client.access(self.root, ALL_ACCESS).expect_ok()  # root-owned 0o755
        self.assertEqual(reply.access, int(Access.READ | Access.LOOKUP))
        granted = self.client.access(owned, ALL_ACCESS).expect_ok().access
        self.assertEqual(
            granted,
            int(Access.READ | Access.LOOKUP | Access.MODIFY | Access.EXTEND | Access.DELETE),
        )

    def test_only_requested(self) -> None:
        """Only bits that were asked about come back."""
        fh = self.file(b"a")
        reply = self.client.access(fh, int(Access.EXECUTE | Access.READ)).expect_ok()
        self.assertEqual(reply.access, int(Access.READ))


class ReadlinkTests(ServiceTestCase):
    """RFC 1813 3.3.5 READLINK."""

    def test_target(self) -> None:
        """The target comes back byte for byte, with the link's attributes."""
        created = self.client.symlink(self.root, b"l", b"../some/\xfftarget").expect_ok()
        assert created.handle is not None
        reply = self.client.readlink(created.handle).expect_ok()
        self.assertEqual(reply.target, b"../some/\xfftarget")
        self.assertEqual(reply.attributes, created.attributes)

    def test_not_a_symlink(self) -> None:
        """READLINK of a file is INVAL, with its attributes."""
        fh = self.file(b"a")
        reply = self.client.readlink(fh)
        self.assertStatus(reply, Status.INVAL)
        self.assertEqual(reply.attributes, self.attrs(fh))


class ReadTests(ServiceTestCase):
    """RFC 1813 3.3.6 READ."""

    def test_whole_file(self) -> None:
        """Reading everything returns the data, its count and eof."""
        fh = self.file(b"a", b"hello world")
        reply = self.client.read(fh, 0, 100).expect_ok()
        self.assertEqual((reply.data, reply.count, reply.eof), (b"hello world", 11, True))
        self.assertEqual(reply.attributes, self.attrs(fh))

    def test_partial(self) -> None:
        """A read that stops short of the end is not eof; one that reaches it is."""
        fh = self.file(b"a", b"hello world")
        first = self.client.read(fh, 0, 5).expect_ok()
        self.assertEqual((first.data, first.eof), (b"hello", False))
        last = self.client.read(fh, 6, 5).expect_ok()
        self.assertEqual((last.data, last.eof), (b"world", True))

    def test_past_end(self) -> None:
        """Reading at or past the end returns nothing, with eof."""
        fh = self.file(b"a", b"abc")
        for offset in (3, 1000):
            reply = self.client.read(fh, offset, 10).expect_ok()
            self.assertEqual((reply.data, reply.count, reply.eof), (b"", 0, True))

    def test_empty_file(self) -> None:
        """An empty file reads as eof at once."""
        fh = self.file(b"a")
        reply = self.client.read(fh, 0, 10).expect_ok()
        self.assertEqual((reply.data, reply.eof), (b"", True))

    def test_sparse_extension_reads_zeros(self) -> None:
        """Past the stored content but inside the size, READ returns zeros."""
        fh = self.file(b"a", b"abc")
        self.client.setattr(fh, SetAttributes(size=4096)).expect_ok()
        reply = self.client.read(fh, 0, 8192).expect_ok()
        self.assertEqual(reply.data, b"abc" + bytes(4093))
        self.assertTrue(reply.eof)

    def test_capped_at_max_io(self) -> None:
        """A read larger than rtmax returns rtmax bytes and is not eof."""
        data = bytes(range(256)) * (MAX_IO // 256) + b"tail"
        fh = self.file(b"a")
        self.client.write(fh, 0, data[:MAX_IO]).expect_ok()
        self.client.write(fh, MAX_IO, data[MAX_IO:]).expect_ok()
        reply = self.client.read(fh, 0, 2 * MAX_IO).expect_ok()
        self.assertEqual(reply.count, MAX_IO)
        self.assertFalse(reply.eof)
        self.assertEqual(reply.data, data[:MAX_IO])

    def test_not_a_file(self) -> None:
        """READ of a directory is ISDIR; of a symlink INVAL; both with attributes."""
        directory = self.mkdir(b"d")
        reply = self.client.read(directory, 0, 10)
        self.assertStatus(reply, Status.ISDIR)
        self.assertEqual(reply.attributes, self.attrs(directory))
        link = self.client.symlink(self.root, b"l", b"d").expect_ok().handle
        assert link is not None
        self.assertStatus(self.client.read(link, 0, 10), Status.INVAL)


class WriteTests(ServiceTestCase):
    """RFC 1813 3.3.7 WRITE."""

    def test_wcc(self) -> None:
        """WRITE reports the size, mtime and ctime before and the attributes after."""
        fh = self.file(b"a")
        before = self.attrs(fh)
        reply = self.client.write(fh, 0, b"hello").expect_ok()
        after = self.assertChanged(reply.wcc, before)
        self.assertEqual(after.size, 5)
        self.assertGreater(after.mtime, before.mtime)
        self.assertEqual(reply.count, 5)

    def test_file_sync(self) -> None:
        """A FILE_SYNC write is committed FILE_SYNC, with the server's verifier."""
        fh = self.file(b"a")
        reply = self.client.write(fh, 0, b"x", StableHow.FILE_SYNC).expect_ok()
        self.assertEqual(reply.committed, StableHow.FILE_SYNC)
        self.assertEqual(reply.verifier, WRITE_VERIFIER)

    def test_data_sync(self) -> None:
        """A DATA_SYNC write is committed at least DATA_SYNC."""
        fh = self.file(b"a")
        reply = self.client.write(fh, 0, b"x", StableHow.DATA_SYNC).expect_ok()
        assert reply.committed is not None
        self.assertGreaterEqual(reply.committed, StableHow.DATA_SYNC)

    def test_unstable(self) -> None:
        """An UNSTABLE write says UNSTABLE (never more than the truth) and is readable at once."""
        fh = self.file(b"a")
        reply = self.client.write(fh, 0, b"unstable", StableHow.UNSTABLE).expect_ok()
        self.assertEqual(reply.committed, StableHow.UNSTABLE)
        self.assertEqual(reply.verifier, WRITE_VERIFIER)
        self.assertEqual(self.client.read_file(fh), b"unstable")

    def test_hole(self) -> None:
        """Writing past the end leaves zeros between."""
        fh = self.file(b"a", b"ab")
        self.client.write(fh, 10, b"z").expect_ok()
        self.assertEqual(self.client.read_file(fh), b"ab" + bytes(8) + b"z")
        self.assertEqual(self.attrs(fh).size, 11)

    def test_overwrite_keeps_size(self) -> None:
        """Overwriting inside the file leaves its size alone."""
        fh = self.file(b"a", b"0123456789")
        self.client.write(fh, 2, b"XY").expect_ok()
        self.assertEqual(self.client.read_file(fh), b"01XY456789")
        self.assertEqual(self.attrs(fh).size, 10)

    def test_empty_write_keeps_size(self) -> None:
        """A zero-byte WRITE past the end writes nothing, so the size must not grow.

        RFC 1813 3.3.7: a count of 0 succeeds and writes no data; like
        pwrite(2) with no bytes, it does not extend the file.
        """
        fh = self.file(b"a", b"abc")
        reply = self.client.write(fh, 100, b"").expect_ok()
        self.assertEqual(reply.count, 0)
        self.assertEqual(self.attrs(fh).size, 3)

    def test_count_beyond_data(self) -> None:
        """A count larger than the data sent is INVAL, with wcc."""
        fh = self.file(b"a")
        reply = self.client.write(fh, 0, b"abc", count=10)
        self.assertStatus(reply, Status.INVAL)
        self.assertFailedWcc(reply.wcc, fh)

    def test_too_big(self) -> None:
        """A write ending past the largest file size is FBIG."""
        fh = self.file(b"a")
        self.assertStatus(self.client.write(fh, 2**63 - 2, b"abc"), Status.FBIG)

    def test_not_a_file(self) -> None:
        """WRITE to a directory is ISDIR; to a symlink INVAL."""
        directory = self.mkdir(b"d")
        reply = self.client.write(directory, 0, b"x")
        self.assertStatus(reply, Status.ISDIR)
        self.assertFailedWcc(reply.wcc, directory)
        link = self.client.symlink(self.root, b"l", b"d").expect_ok().handle
        assert link is not None
        self.assertStatus(self.client.write(link, 0, b"x"), Status.INVAL)

    def test_removed_file(self) -> None:
        """WRITE to a removed file is STALE, and its wcc has no attributes to give."""
        fh = self.file(b"a")
        self.client.remove(self.root, b"a").expect_ok()
        reply = self.client.write(fh, 0, b"x")
        self.assertStatus(reply, Status.STALE)
        self.assertEqual(reply.wcc, Wcc(None, None))


class CreateTests(ServiceTestCase):
    """RFC 1813 3.3.8 CREATE."""

    def test_unchecked_new(self) -> None:
        """A new file has the asked mode, the caller as owner, and the directory's wcc."""
        before = self.attrs(self.root)
        reply = self.client.create(self.root, b"a", attributes=SetAttributes(mode=0o600))
        reply.expect_ok()
        assert reply.attributes is not None
        self.assertEqual(reply.attributes.type, FileType.REG)
        self.assertEqual(reply.attributes.mode, 0o600)
        self.assertEqual((reply.attributes.uid, reply.attributes.gid), (1000, 1000))
        self.assertEqual(reply.attributes.fsid, 1)
        after = self.assertChanged(reply.dir_wcc, before)
        self.assertGreater(after.mtime, before.mtime)
        assert reply.handle is not None
        self.assertEqual(self.client.lookup(self.root, b"a").handle, reply.handle)

    def test_unchecked_existing_truncates(self) -> None:
        """UNCHECKED over an existing file reuses it; a size of 0 empties it."""
        fh = self.file(b"a", b"old content")
        reply = self.client.create(self.root, b"a", attributes=SetAttributes(size=0)).expect_ok()
        self.assertEqual(reply.handle, fh)
        assert reply.attributes is not None
        self.assertEqual(reply.attributes.size, 0)
        self.assertEqual(self.client.read_file(fh), b"")
        self.assertEqual(self.stored(fh), b"")

    def test_unchecked_existing_keeps_content(self) -> None:
        """UNCHECKED without a size leaves an existing file's content alone."""
        fh = self.file(b"a", b"keep")
        self.assertEqual(self.client.create(self.root, b"a").expect_ok().handle, fh)
        self.assertEqual(self.client.read_file(fh), b"keep")

    def test_guarded_existing(self) -> None:
        """GUARDED over an existing name is EXIST, with the directory's wcc."""
        self.file(b"a", b"keep")
        reply = self.client.create(self.root, b"a", CreateMode.GUARDED)
        self.assertStatus(reply, Status.EXIST)
        self.assertFailedWcc(reply.dir_wcc, self.root)
        self.assertIsNone(reply.handle)

    def test_guarded_new(self) -> None:
        """GUARDED of a new name creates it."""
        reply = self.client.create(self.root, b"a", CreateMode.GUARDED).expect_ok()
        self.assertIsNotNone(reply.handle)

    def test_exclusive_replay(self) -> None:
        """A retransmitted EXCLUSIVE create succeeds with the same file."""
        first = self.client.create(self.root, b"x", CreateMode.EXCLUSIVE, verifier=b"12345678")
        first.expect_ok()
        again = self.client.create(self.root, b"x", CreateMode.EXCLUSIVE, verifier=b"12345678")
        again.expect_ok()
        self.assertEqual(again.handle, first.handle)

    def test_exclusive_other_verifier(self) -> None:
        """EXCLUSIVE with another verifier (another client's create) is EXIST."""
        self.client.create(self.root, b"x", CreateMode.EXCLUSIVE, verifier=b"12345678").expect_ok()
        reply = self.client.create(self.root, b"x", CreateMode.EXCLUSIVE, verifier=b"87654321")
        self.assertStatus(reply, Status.EXIST)

    def test_exclusive_over_existing_file(self) -> None:
        """EXCLUSIVE over a file made some other way is EXIST."""
        self.file(b"x")
        reply = self.client.create(self.root, b"x", CreateMode.EXCLUSIVE, verifier=b"12345678")
        self.assertStatus(reply, Status.EXIST)

    def test_unchecked_over_directory(self) -> None:
        """UNCHECKED over a directory is EXIST, never a file in its place."""
        self.mkdir(b"d")
        self.assertStatus(self.client.create(self.root, b"d"), Status.EXIST)

    def test_bad_names(self) -> None:
        """'.'/'..' exist already; empty or '/'-holding names are INVAL; 256 bytes too long."""
        cases = {
            b".": Status.EXIST,
            b"..": Status.EXIST,
            b"": Status.INVAL,
            b"a/b": Status.INVAL,
            b"x" * 256: Status.NAMETOOLONG,
        }
        for name, status in cases.items():
            reply = self.client.create(self.root, name)
            self.assertEqual(reply.status, status, name[:10])
            self.assertFailedWcc(reply.dir_wcc, self.root)
        for name in (b".", b".."):
            self.assertStatus(self.client.mkdir(self.root, name), Status.EXIST)
            self.assertStatus(self.client.symlink(self.root, name, b"t"), Status.EXIST)

    def test_in_a_file(self) -> None:
        """Creating inside a regular file is NOTDIR."""
        fh = self.file(b"a")
        self.assertStatus(self.client.create(fh, b"x"), Status.NOTDIR)

    def test_setgid_directory_group(self) -> None:
        """In a setgid directory new entries take its group; new subdirectories stay setgid."""
        shared = self.mkdir(b"shared", mode=0o775)
        # mkdir(2) never sets setgid itself: chmod does.
        self.server.client(0, 0).setattr(shared, SetAttributes(mode=0o2775, gid=500)).expect_ok()
        created = self.client.create(shared, b"f", attributes=SetAttributes(mode=0o644))
        file_attributes = created.expect_ok().attributes
        assert file_attributes is not None
        self.assertEqual((file_attributes.uid, file_attributes.gid), (1000, 500))
        self.assertEqual(file_attributes.mode & 0o2000, 0)
        sub = self.client.mkdir(shared, b"sub", SetAttributes(mode=0o755)).expect_ok().attributes
        assert sub is not None
        self.assertEqual(sub.gid, 500)
        self.assertEqual(sub.mode, 0o2755)

    def test_plain_directory_group(self) -> None:
        """Outside setgid directories the caller's own group owns new files."""
        plain = self.mkdir(b"plain", mode=0o775)
        self.server.client(0, 0).setattr(plain, SetAttributes(gid=500)).expect_ok()
        created = self.client.create(plain, b"f").expect_ok().attributes
        assert created is not None
        self.assertEqual(created.gid, 1000)


class MkdirSymlinkMknodTests(ServiceTestCase):
    """RFC 1813 3.3.9 MKDIR, 3.3.10 SYMLINK and 3.3.11 MKNOD."""

    def test_mkdir(self) -> None:
        """A new directory has nlink 2 and its parent gains a link."""
        before = self.attrs(self.root)
        reply = self.client.mkdir(self.root, b"d", SetAttributes(mode=0o750)).expect_ok()
        assert reply.attributes is not None
        self.assertEqual((reply.attributes.type, reply.attributes.mode), (FileType.DIR, 0o750))
        self.assertEqual(reply.attributes.nlink, 2)
        after = self.assertChanged(reply.dir_wcc, before)
        self.assertEqual(after.nlink, before.nlink + 1)

    def test_mkdir_existing(self) -> None:
        """MKDIR over any existing name is EXIST, with wcc."""
        self.file(b"a")
        reply = self.client.mkdir(self.root, b"a")
        self.assertStatus(reply, Status.EXIST)
        self.assertFailedWcc(reply.dir_wcc, self.root)

    def test_symlink(self) -> None:
        """SYMLINK makes a link whose READLINK is the target, with the directory's wcc."""
        before = self.attrs(self.root)
        reply = self.client.symlink(self.root, b"l", b"/abs/target").expect_ok()
        assert reply.attributes is not None and reply.handle is not None
        self.assertEqual(reply.attributes.type, FileType.LNK)
        self.assertChanged(reply.dir_wcc, before)
        self.assertEqual(self.client.readlink(reply.handle).target, b"/abs/target")

    def test_mknod_devices(self) -> None:
        """Character and block devices keep their major/minor numbers; only root makes them."""
        root = self.server.client(0, 0)
        for kind, rdev in ((FileType.CHR, (4, 64)), (FileType.BLK, (8, 1))):
            before = self.attrs(self.root)
            name = b"dev%d" % kind
            refused = self.client.mknod(self.root, name, kind, rdev=rdev)
            self.assertEqual(refused.status, Status.PERM)
            reply = root.mknod(self.root, name, kind, rdev=rdev).expect_ok()
            assert reply.attributes is not None
            self.assertEqual((reply.attributes.type, reply.attributes.rdev), (kind, rdev))
            self.assertChanged(reply.dir_wcc, before)

    def test_mknod_fifo_and_socket(self) -> None:
        """FIFOs and sockets are made with the asked mode."""
        for kind in (FileType.FIFO, FileType.SOCK):
            reply = self.client.mknod(
                self.root, b"n%d" % kind, kind, SetAttributes(mode=0o600)
            ).expect_ok()
            assert reply.attributes is not None
            self.assertEqual((reply.attributes.type, reply.attributes.mode), (kind, 0o600))

    def test_mknod_bad_type(self) -> None:
        """MKNOD of a regular file, directory or symlink is BADTYPE, with wcc."""
        for kind in (FileType.REG, FileType.DIR, FileType.LNK):
            reply = self.client.mknod(self.root, b"x", kind)
            self.assertStatus(reply, Status.BADTYPE)
            self.assertFailedWcc(reply.dir_wcc, self.root)
        self.assertStatus(self.client.lookup(self.root, b"x"), Status.NOENT)


class RemoveTests(ServiceTestCase):
    """RFC 1813 3.3.12 REMOVE and 3.3.13 RMDIR."""

    def test_remove(self) -> None:
        """REMOVE drops the name and, with the last link, the content; wcc for the directory."""
        fh = self.file(b"a", b"data")
        before = self.attrs(self.root)
        reply = self.client.remove(self.root, b"a").expect_ok()
        self.assertChanged(reply.wcc, before)
        self.assertStatus(self.client.lookup(self.root, b"a"), Status.NOENT)
        self.assertEqual(self.stored(fh), b"")

    def test_remove_one_link(self) -> None:
        """While another link remains the content stays and nlink drops."""
        fh = self.file(b"a", b"data")
        self.client.link(fh, self.root, b"b").expect_ok()
        self.client.remove(self.root, b"a").expect_ok()
        self.assertEqual(self.client.read_file(fh), b"data")
        self.assertEqual(self.attrs(fh).nlink, 1)

    def test_remove_errors(self) -> None:
        """REMOVE of a directory is ISDIR, of nothing NOENT, of '.' INVAL: all with wcc."""
        self.mkdir(b"d")
        for name, status in ((b"d", Status.ISDIR), (b"nope", Status.NOENT), (b".", Status.INVAL)):
            reply = self.client.remove(self.root, name)
            self.assertEqual(reply.status, status, name)
            self.assertFailedWcc(reply.wcc, self.root)

    def test_rmdir(self) -> None:
        """RMDIR removes an empty directory and its parent loses a link."""
        directory = self.mkdir(b"d")
        before = self.attrs(self.root)
        reply = self.client.rmdir(self.root, b"d").expect_ok()
        after = self.assertChanged(reply.wcc, before)
        self.assertEqual(after.nlink, before.nlink - 1)
        self.assertStatus(self.client.getattr(directory), Status.STALE)

    def test_rmdir_errors(self) -> None:
        """RMDIR of a file is NOTDIR, of a full directory NOTEMPTY, of '.'/'..' INVAL."""
        self.file(b"a")
        full = self.mkdir(b"full")
        self.file(b"inside", directory=full)
        cases = (
            (b"a", Status.NOTDIR),
            (b"full", Status.NOTEMPTY),
            (b".", Status.INVAL),
            (b"..", Status.INVAL),
            (b"nope", Status.NOENT),
        )
        for name, status in cases:
            reply = self.client.rmdir(self.root, name)
            self.assertEqual(reply.status, status, name)
            self.assertFailedWcc(reply.wcc, self.root)


class RenameTests(ServiceTestCase):
    """RFC 1813 3.3.14 RENAME."""

    def test_across_directories(self) -> None:
        """A move reports wcc for both directories and moves the directory link."""
        source = self.mkdir(b"src")
        target = self.mkdir(b"dst")
        self.mkdir(b"moving", directory=source)
        source_before, target_before = self.attrs(source), self.attrs(target)
        reply = self.client.rename(source, b"moving", target, b"moved").expect_ok()
        source_after = self.assertChanged(reply.from_wcc, source_before)
        target_after = self.assertChanged(reply.to_wcc, target_before)
        self.assertEqual(source_after.nlink, source_before.nlink - 1)
        self.assertEqual(target_after.nlink, target_before.nlink + 1)
        moved = self.client.lookup(target, b"moved").expect_ok().handle
        assert moved is not None
        self.assertEqual(self.client.lookup(moved, b"..").handle, target)

    def test_over_file_deletes_its_content(self) -> None:
        """Replacing a file's last link deletes its content; the moved file keeps its own."""
        self.file(b"a", b"new")
        old = self.file(b"b", b"old")
        self.client.rename(self.root, b"a", self.root, b"b").expect_ok()
        self.assertEqual(self.stored(old), b"")
        found = self.client.lookup(self.root, b"b").expect_ok().handle
        assert found is not None
        self.assertEqual(self.client.read_file(found), b"new")
        self.assertStatus(self.client.getattr(old), Status.STALE)

    def test_errors(self) -> None:
        """Type mismatches, own subtree, missing source and '.'/'..' fail, with both wccs."""
        self.file(b"f")
        self.file(b"g")
        directory = self.mkdir(b"d")
        self.mkdir(b"full")
        self.file(b"x", directory=self.client.lookup(self.root, b"full").handle)
        self.mkdir(b"e")
        cases = [
            (self.root, b"f", self.root, b"d", Status.ISDIR),
            (self.root, b"d", self.root, b"f", Status.NOTDIR),
            (self.root, b"e", self.root, b"full", Status.NOTEMPTY),
            (self.root, b"d", directory, b"inside", Status.INVAL),
            (self.root, b"nope", self.root, b"g", Status.NOENT),
            (self.root, b".", self.root, b"x", Status.INVAL),
            (self.root, b"f", self.root, b"..", Status.INVAL),
            (self.root, b"f", self.root, b"", Status.INVAL),
            (self.root, b"f", self.root, b"x" * 256, Status.NAMETOOLONG),
        ]
        for from_dir, from_name, to_dir, to_name, status in cases:
            reply = self.client.rename(from_dir, from_name, to_dir, to_name)
            self.assertEqual(reply.status, status, (from_name, to_name))
            self.assertFailedWcc(reply.from_wcc, from_dir)
            self.assertFailedWcc(reply.to_wcc, to_dir)

    def test_onto_same_file(self) -> None:
        """Renaming onto another link of the same file succeeds and changes nothing."""
        fh = self.file(b"a", b"data")
        self.client.link(fh, self.root, b"b").expect_ok()
        self.client.rename(self.root, b"a", self.root, b"b").expect_ok()
        self.assertEqual(self.client.lookup(self.root, b"a").handle, fh)
        self.assertEqual(self.client.lookup(self.root, b"b").handle, fh)
        self.assertEqual(self.client.read_file(fh), b"data")


class LinkTests(ServiceTestCase):
    """RFC 1813 3.3.15 LINK."""

    def test_link(self) -> None:
        """LINK returns the file's attributes (nlink 2) and the directory's wcc."""
        fh = self.file(b"a", b"data")
        before = self.attrs(self.root)
        reply = self.client.link(fh, self.root, b"b").expect_ok()
        assert reply.attributes is not None
        self.assertEqual(reply.attributes.nlink, 2)
        self.assertChanged(reply.dir_wcc, before)
        self.assertEqual(self.client.lookup(self.root, b"b").handle, fh)

    def test_errors(self) -> None:
        """Links to directories are PERM (link(2)'s EPERM), over names EXIST, to '.' EXIST;
        with attributes."""
        fh = self.file(b"a")
        self.file(b"b")
        directory = self.mkdir(b"d")
        for source, name, status in (
            (directory, b"x", Status.PERM),
            (fh, b"b", Status.EXIST),
            (fh, b".", Status.EXIST),
            (fh, b"a/b", Status.INVAL),
        ):
            reply = self.client.link(source, self.root, name)
            self.assertEqual(reply.status, status, name)
            self.assertEqual(reply.attributes, self.attrs(source))
            self.assertFailedWcc(reply.dir_wcc, self.root)


class CrossExportTests(SynchronousTestCase):
    """Two exports: RENAME and LINK may not cross them (XDEV)."""

    def setUp(self) -> None:
        exports = [
            Export(1, b"/one", MemoryMetadataStore(clock=Clock()), MemoryContentStore()),
            Export(2, b"/two", MemoryMetadataStore(clock=Clock()), MemoryContentStore()),
        ]
        self.server = serve_exports(exports)
        self.client: NFSClient = self.server.client()
        self.one = self.client.mnt(b"/one")
        self.two = self.client.mnt(b"/two")

    def test_fsids_differ(self) -> None:
        """Each export reports its own fsid, so clients see separate filesystems."""
        one = self.client.getattr(self.one).expect_ok().attributes
        two = self.client.getattr(self.two).expect_ok().attributes
        assert one is not None and two is not None
        self.assertNotEqual(one.fsid, two.fsid)

    def test_rename_across(self) -> None:
        """RENAME from one export to another is XDEV."""
        self.client.write_file(self.one, b"a")
        reply = self.client.rename(self.one, b"a", self.two, b"a")
        self.assertEqual(reply.status, Status.XDEV)
        self.client.lookup(self.one, b"a").expect_ok()

    def test_link_across(self) -> None:
        """LINK to a directory of another export is XDEV."""
        fh = self.client.write_file(self.one, b"a")
        self.assertEqual(self.client.link(fh, self.two, b"a").status, Status.XDEV)


class ReaddirTests(ServiceTestCase):
    """RFC 1813 3.3.16 READDIR and 3.3.17 READDIRPLUS."""

    def populate(self, count: int) -> dict[bytes, bytes]:
        """Create *count* files named entry-NN; return name -> handle."""
        return {b"entry-%02d" % i: self.file(b"entry-%02d" % i) for i in range(count)}

    def page_all(self, plus: bool, **sizes: int) -> list[Any]:
        """Every entry of the root, paging with the given count sizes until eof."""
        entries: list[Any] = []
        cookie, verifier = 0, bytes(8)
        for _ in range(1000):
            if plus:
                page = self.client.readdirplus(self.root, cookie, verifier, **sizes)
            else:
                page = self.client.readdir(self.root, cookie, verifier, **sizes)
            page.expect_ok()
            self.assertEqual(page.dir_attributes, self.attrs(self.root))
            entries.extend(page.entries)
            if page.eof:
                return entries
            self.assertTrue(page.entries)
            assert page.verifier is not None
            cookie, verifier = page.entries[-1].cookie, page.verifier
        raise AssertionError("READDIR never reached eof")

    def assertListing(self, entries: list[Any], names: set[bytes]) -> None:
        """'.' and '..' first and once, every name once, cookies strictly increasing."""
        listed = [entry.name for entry in entries]
        self.assertEqual(listed[:2], [b".", b".."])
        self.assertEqual(sorted(listed), sorted([b".", b"..", *names]))
        cookies = [entry.cookie for entry in entries]
        self.assertEqual(cookies, sorted(set(cookies)))
        self.assertNotIn(0, cookies)

    def test_one_page(self) -> None:
        """A big enough count lists everything at once, with eof and file ids."""
        handles = self.populate(5)
        reply = self.client.readdir(self.root).expect_ok()
        self.assertTrue(reply.eof)
        self.assertListing(reply.entries, set(handles))
        by_name = {entry.name: entry.fileid for entry in reply.entries}
        for name, fh in handles.items():
            self.assertEqual(by_name[name], FileHandle.decode(fh).fileid)
        root_id = FileHandle.decode(self.root).fileid
        self.assertEqual((by_name[b"."], by_name[b".."]), (root_id, root_id))

    def test_tiny_pages(self) -> None:
        """With room for about one entry per reply, paging still lists everything once."""
        names = set(self.populate(12))
        for count in (140, 172, 200):
            self.assertListing(self.page_all(False, count=count), names)

    def test_too_small(self) -> None:
        """A count too small for even one entry is TOOSMALL, with the directory's attributes."""
        reply = self.client.readdir(self.root, count=100)
        self.assertStatus(reply, Status.TOOSMALL)
        self.assertEqual(reply.dir_attributes, self.attrs(self.root))
        plus = self.client.readdirplus(self.root, maxcount=200)
        self.assertStatus(plus, Status.TOOSMALL)

    def test_verifier(self) -> None:
        """The cookie verifier is stable; a wrong one with a non-zero cookie is BAD_COOKIE."""
        self.populate(3)
        first = self.client.readdir(self.root, count=172).expect_ok()
        second = self.client.readdir(self.root, count=172).expect_ok()
        self.assertEqual(first.verifier, second.verifier)
        cookie = first.entries[-1].cookie
        reply = self.client.readdir(self.root, cookie, b"wrongvrf")
        self.assertStatus(reply, Status.BAD_COOKIE)
        self.assertEqual(reply.dir_attributes, self.attrs(self.root))
        plus = self.client.readdirplus(self.root, cookie, b"wrongvrf")
        self.assertStatus(plus, Status.BAD_COOKIE)
        assert first.verifier is not None
        self.client.readdir(self.root, cookie, first.verifier).expect_ok()

    def test_resume_after_removal(self) -> None:
        """A cookie stays usable after its entry is removed: the rest follows, nothing twice."""
        names = set(self.populate(10))
        first = self.client.readdir(self.root, count=240).expect_ok()
        seen = [entry.name for entry in first.entries]
        last = first.entries[-1]
        self.assertNotIn(last.name, (b".", b".."))
        self.client.remove(self.root, last.name).expect_ok()
        assert first.verifier is not None
        rest = self.client.readdir(self.root, last.cookie, first.verifier).expect_ok()
        listed = [entry.name for entry in rest.entries]
        self.assertTrue(rest.eof)
        self.assertEqual(sorted(seen[:-1] + listed + [last.name]), sorted([b".", b"..", *names]))

    def test_not_a_directory(self) -> None:
        """Listing a file is NOTDIR."""
        fh = self.file(b"a")
        self.assertStatus(self.client.readdir(fh), Status.NOTDIR)
        self.assertStatus(self.client.readdirplus(fh), Status.NOTDIR)

    def test_empty_subdirectory(self) -> None:
        """An empty directory lists '.' (itself) and '..' (its parent), then eof."""
        sub = self.mkdir(b"d")
        reply = self.client.readdirplus(sub).expect_ok()
        self.assertTrue(reply.eof)
        self.assertEqual(
            [(e.name, e.handle) for e in reply.entries], [(b".", sub), (b"..", self.root)]
        )

    def test_readdirplus_attributes_and_handles(self) -> None:
        """Each READDIRPLUS entry carries the attributes and handle LOOKUP would give."""
        handles = self.populate(4)
        self.mkdir(b"sub")
        reply = self.client.readdirplus(self.root).expect_ok()
        self.assertTrue(reply.eof)
        self.assertListing(reply.entries, {*handles, b"sub"})
        for entry in reply.entries:
            found = self.client.lookup(self.root, entry.name).expect_ok()
            self.assertEqual(entry.handle, found.handle, entry.name)
            self.assertEqual(entry.attributes, found.attributes, entry.name)
            assert entry.attributes is not None
            self.assertEqual(entry.fileid, entry.attributes.fileid)

    def test_readdirplus_tiny_pages(self) -> None:
        """READDIRPLUS honours a small maxcount and a small dircount, and lists all once."""
        names = set(self.populate(9))
        self.assertListing(self.page_all(True, maxcount=400, dircount=8192), names)
        self.assertListing(self.page_all(True, maxcount=32768, dircount=70), names)

    def test_readdirplus_dircount_limits_page(self) -> None:
        """dircount bounds the directory part of a reply even when maxcount is large."""
        self.populate(20)
        reply = self.client.readdirplus(self.root, dircount=100, maxcount=65536).expect_ok()
        self.assertFalse(reply.eof)
        used = sum(24 + ((len(e.name) + 3) & ~3) for e in reply.entries)
        self.assertLessEqual(used, 100)
        self.assertGreater(len(reply.entries), 0)

    def test_count_is_respected(self) -> None:
        """A READDIR reply never exceeds the count the client asked for."""
        self.populate(30)
        for count in (200, 512, 1024):
            reply = self.client.readdir(self.root, count=count).expect_ok()
            size = 4 + 4 + 84 + 8 + 4 + 4
            size += sum(24 + ((len(e.name) + 3) & ~3) for e in reply.entries)
            self.assertLessEqual(size, count)
            self.assertFalse(reply.eof)


class FsTests(ServiceTestCase):
    """RFC 1813 3.3.18 FSSTAT, 3.3.19 FSINFO and 3.3.20 PATHCONF."""

    def test_fsstat(self) -> None:
        """FSSTAT bytes come from the content store and files from the metadata store."""
        before = self.client.fsstat(self.root).expect_ok()
        self.assertEqual(before.tbytes, CAPACITY)
        self.assertEqual(before.fbytes, CAPACITY)
        self.assertEqual(before.abytes, before.fbytes)
        self.file(b"a", b"x" * 1000)
        after = self.client.fsstat(self.root).expect_ok()
        # The memory store allocates whole blocks: 1,000 bytes take one.
        self.assertEqual(after.fbytes, CAPACITY - memory_content.BLOCK_SIZE)
        assert before.ffiles is not None
        self.assertEqual(after.ffiles, before.ffiles - 1)
        self.assertEqual(after.tfiles, before.tfiles)
        self.assertEqual(after.attributes, self.attrs(self.root))

    def test_fsinfo(self) -> None:
        """FSINFO advertises 1 MiB transfers, 1 ns times and hard links and symlinks."""
        reply = self.client.fsinfo(self.root).expect_ok()
        self.assertEqual((reply.rtmax, reply.wtmax, reply.rtpref, reply.wtpref), (MAX_IO,) * 4)
        self.assertEqual(reply.time_delta, 1)
        self.assertEqual(reply.maxfilesize, 2**63 - 1)
        assert reply.properties is not None and reply.dtpref is not None
        self.assertTrue(reply.properties & FsInfoProperties.LINK)
        self.assertTrue(reply.properties & FsInfoProperties.SYMLINK)
        self.assertTrue(reply.properties & FsInfoProperties.CANSETTIME)
        self.assertGreater(reply.dtpref, 0)

    def test_pathconf(self) -> None:
        """PATHCONF: 255-byte names, no truncation, case-sensitive and case-preserving."""
        reply = self.client.pathconf(self.root).expect_ok()
        self.assertEqual(reply.name_max, 255)
        self.assertTrue(reply.no_trunc)
        self.assertFalse(reply.case_insensitive)
        self.assertTrue(reply.case_preserving)


class CommitTests(ServiceTestCase):
    """RFC 1813 3.3.21 COMMIT."""

    def test_verifier_matches_write(self) -> None:
        """COMMIT returns the verifier WRITE gave, so the client need not resend."""
        fh = self.file(b"a")
        write = self.client.write(fh, 0, b"data", StableHow.UNSTABLE).expect_ok()
        commit = self.client.commit(fh, 0, 0).expect_ok()
        self.assertEqual(commit.verifier, write.verifier)
        assert commit.wcc.after is not None
        self.assertEqual(commit.wcc.after, self.attrs(fh))
        self.assertIsNotNone(commit.wcc.before)

    def test_verifier_differs_between_servers(self) -> None:
        """A restarted server has a new verifier, telling clients to resend unstable writes."""
        verifiers = {build_server().nfs.write_verifier for _ in range(4)}
        self.assertEqual(len(verifiers), 4)

    def test_not_a_file(self) -> None:
        """COMMIT of a directory is ISDIR, with wcc."""
        reply = self.client.commit(self.root)
        self.assertStatus(reply, Status.ISDIR)
        self.assertFailedWcc(reply.wcc, self.root)


class BrokenContentStore(MemoryContentStore):
    """A content store whose reads raise and whose writes fail, like a broken backend."""

    def read(self, fileid: int, offset: int, count: int) -> Deferred[bytes]:
        """Raise at once: a bug in a store."""
        raise RuntimeError("the disk is on fire")

    def write(
        self, fileid: int, offset: int, data: bytes | memoryview, stable: bool
    ) -> Deferred[None]:
        """Fail asynchronously: a backend error delivered through the Deferred."""
        return fail(ZeroDivisionError("backend arithmetic"))


class StoreFailureTests(SynchronousTestCase):
    """A store raising something other than NFSError becomes NFS3ERR_IO, logged."""

    def setUp(self) -> None:
        self.server = build_server(content=BrokenContentStore())
        self.client = self.server.client()
        self.root = self.client.mnt(b"/export")
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def test_raising_store(self) -> None:
        """A store that raises gives IO (not SYSTEM_ERR) with attributes, and a logged traceback."""
        fh = self.client.create(self.root, b"a", attributes=SetAttributes(size=10)).expect_ok()
        assert fh.handle is not None
        reply = self.client.read(fh.handle, 0, 10)
        self.assertEqual(reply.status, Status.IO)
        self.assertIsNotNone(reply.attributes)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        failures = [e for e in self.events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0].get("procedure"), "READ")

    def test_failing_deferred(self) -> None:
        """A store whose Deferred fails gives IO with wcc, and the failure is logged."""
        fh = self.client.create(self.root, b"a").expect_ok().handle
        assert fh is not None
        reply = self.client.write(fh, 0, b"data")
        self.assertEqual(reply.status, Status.IO)
        self.assertIsNotNone(reply.wcc.after)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        attributes = self.client.getattr(fh).expect_ok().attributes
        assert attributes is not None
        self.assertEqual(attributes.size, 0)


class BusyContentStore(MemoryContentStore):
    """A content store whose backend is away: writes are answered "try again later"."""

    def write(
        self, fileid: int, offset: int, data: bytes | memoryview, stable: bool
    ) -> Deferred[None]:
        """Fail the way the S3 store does while S3 is unreachable."""
        return fail(NFSError(Status.JUKEBOX, "S3 unreachable: connection refused"))


class JukeboxTests(SynchronousTestCase):
    """A store that is away gives JUKEBOX, and the log says which call stalled and why."""

    def test_jukebox_is_logged_as_a_warning(self) -> None:
        """The client hears JUKEBOX with wcc data; a warning names the procedure and cause."""
        client = build_server(content=BusyContentStore()).client()
        root = client.mnt(b"/export")
        fh = client.create(root, b"a").expect_ok().handle
        assert fh is not None
        with capturedLogs() as events:
            reply = client.write(fh, 0, b"data")
        self.assertEqual(reply.status, Status.JUKEBOX)
        self.assertIsNotNone(reply.wcc.after)
        (warning,) = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual(warning["procedure"], "WRITE")
        self.assertIn("S3 unreachable", formatEvent(warning))


class WriteRemoveRaceTests(SynchronousTestCase):
    """A WRITE racing a REMOVE never leaves content that no file owns."""

    def test_write_finishing_after_remove_deletes_its_content(self) -> None:
        """A WRITE whose data lands after the file was removed drops that data."""
        metadata = MemoryMetadataStore(clock=Clock())
        content = MemoryContentStore()
        server = build_server(metadata, content, policy=AccessPolicy(squash=Squash.NONE))
        client = server.client(0, 0)
        root = client.mnt(b"/export")
        handle = client.write_file(root, b"f", b"old")
        real_write = content.write

        def write_then_lose_race(*args: object) -> object:
            written = real_write(*args)  # type: ignore[arg-type]
            client.remove(root, b"f").expect_ok()  # another client's REMOVE lands now...
            real_write(*args)  # type: ignore[arg-type]  # ...and this write's data reappears
            return written

        content.write = write_then_lose_race  # type: ignore[method-assign]
        self.assertEqual(client.write(handle, 0, b"new data").status, Status.STALE)
        self.assertEqual(self.successResultOf(content.content_ids()), [])


class HugeSizeTests(ServiceTestCase):
    """Sizes past maxfilesize are refused, so no file ever holds a size fattr3 cannot carry."""

    def test_setattr_and_create_beyond_maxfilesize_are_fbig(self) -> None:
        """SETATTR and CREATE with a size near 2**64 answer FBIG and leave the file readable."""
        fh = self.file(b"a")
        self.assertEqual(self.client.setattr(fh, SetAttributes(size=2**64 - 1)).status, Status.FBIG)
        self.assertEqual(
            self.client.create(self.root, b"b", attributes=SetAttributes(size=2**63)).status,
            Status.FBIG,
        )
        self.client.getattr(fh).expect_ok()
        self.client.readdirplus(self.root).expect_ok()
