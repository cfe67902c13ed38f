"""The NFSv4.1 program (RFC 8881) through real COMPOUND records, in process, over memory stores.

The client in ``tests/unit/v41.py`` encodes each COMPOUND and decodes every
result, rejecting replies with bytes left over, so these tests also check the
shape of each operation's result.  The Linux kernel client in the guest suite
(``tests/e2e/linux``, pairings ``*-nfs4.1``) judges the same code as users do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from dittofs.exports import Export
from dittofs.nfs4.const import Attr, Op, Stat4
from dittofs.nfs4.pseudo import PSEUDO_FSID
from dittofs.policy import AccessPolicy, Squash
from dittofs.rpc.message import AcceptStat
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from dittofs.testing import TickingClock, build_server, serve_exports
from dittofs.vocabulary import FileType, Status
from tests.unit import v41
from tests.unit.test_content_conformance import make_fs_store
from tests.unit.v41 import V41Client

REG, DIR = FileType.REG, FileType.DIR
WRITE_LT, READ_LT = 2, 1


class FakeClock:
    """Monotonic seconds that move only when a test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class V41TestCase(SynchronousTestCase):
    """One export ``/export`` over memory stores; root keeps its powers."""

    def setUp(self) -> None:
        server = build_server(
            MemoryMetadataStore(clock=TickingClock()),
            MemoryContentStore(),
            policy=AccessPolicy(squash=Squash.NONE),
        )
        self.clock = FakeClock()
        self.server, self.nfs4 = v41.with_v41(server, lease_time=30, clock=self.clock)
        self.client = V41Client(self.server).connect()

    def export_fh(self, client: V41Client | None = None) -> bytes:
        client = client or self.client
        reply = client.ok(*client.root_of_export(), v41.getfh())
        fh: bytes = reply.last.value
        return fh

    def create_file(
        self, name: bytes, data: bytes = b"", client: V41Client | None = None
    ) -> tuple[bytes, Any]:
        """OPEN-create *name* in the export, write *data*; its handle and open stateid."""
        client = client or self.client
        owner = client.new_owner()
        ops = [
            *client.root_of_export(),
            v41.open_(owner, name, create=0, attrs_={Attr.MODE: v41.u32(0o644)}),
            v41.getfh(),
        ]
        if data:
            ops.append(v41.write(v41.CURRENT, 0, data))
        reply = client.ok(*ops)
        return reply[len(client.root_of_export()) + 1].value, reply[
            len(client.root_of_export())
        ].value["stateid"]


class CompoundTests(V41TestCase):
    """RFC 8881 sections 15.2 and 16.2: what every COMPOUND is checked for."""

    def test_null(self) -> None:
        """Procedure 0 of version 4 answers with no results."""
        reply = self.client.rpc.call(v41.NFS_PROGRAM, 4, 0, b"")
        self.assertEqual((reply.accepted, reply.stat, reply.body), (True, AcceptStat.SUCCESS, b""))

    def test_v3_and_v4_share_the_program(self) -> None:
        """Version 3 still answers, and versions 3 to 4 are what a mismatch names."""
        reply = self.client.rpc.call(v41.NFS_PROGRAM, 5, 0, b"")
        self.assertEqual(reply.stat, AcceptStat.PROG_MISMATCH)
        self.assertEqual(reply.body, b"\0\0\0\3\0\0\0\4")
        v3 = self.client.rpc.call(v41.NFS_PROGRAM, 3, 0, b"")
        self.assertEqual((v3.accepted, v3.stat), (True, AcceptStat.SUCCESS))

    def test_other_minor_versions_mismatch(self) -> None:
        """4.0 and 4.2 get NFS4ERR_MINOR_VERS_MISMATCH and no results, so a client falls back."""
        for minor in (0, 2):
            reply = self.client.compound([v41.putrootfh()], minor=minor, tag=b"hello")
            self.assertEqual(
                (reply.status, reply.tag, reply.results), (Stat4.MINOR_VERS_MISMATCH, b"hello", [])
            )

    def test_empty_compound(self) -> None:
        """No operations: OK, with the tag echoed."""
        reply = self.client.compound([], tag=b"nothing")
        self.assertEqual((reply.status, reply.tag, reply.results), (Status.OK, b"nothing", []))

    def test_operations_need_a_session(self) -> None:
        """Without SEQUENCE first, only the session operations may come, each alone."""
        reply = self.client.compound([v41.putrootfh()])
        self.assertEqual((reply.status, reply.last.op), (Stat4.OP_NOT_IN_SESSION, Op.PUTROOTFH))
        reply = self.client.compound([v41.exchange_id(b"x"), v41.putrootfh()])
        self.assertEqual(reply.status, Stat4.NOT_ONLY_OP)

    def test_sequence_only_first(self) -> None:
        """A SEQUENCE after the first operation is NFS4ERR_SEQUENCE_POS."""
        reply = self.client.call(v41.putrootfh(), v41.sequence(self.client.sessionid, 1, 1))
        self.assertEqual(reply.status, Stat4.SEQUENCE_POS)
        self.assertEqual([r.status for r in reply.results], [Status.OK, Stat4.SEQUENCE_POS])

    def test_undecodable_arguments_stop_there(self) -> None:
        """Arguments that do not decode: BADXDR for that operation, after the ones before."""
        reply = self.client.call(v41.putrootfh(), (Op.LOOKUP, b"\0\0\0\x09ab"))
        self.assertEqual([r.status for r in reply.results], [Status.OK, Stat4.BADXDR])

    def test_unknown_operation_is_illegal(self) -> None:
        """A number no minor version defines: OP_ILLEGAL, reported as operation ILLEGAL."""
        reply = self.client.call(v41.putrootfh(), (9999, b""))
        self.assertEqual((reply.status, reply.last.op), (Stat4.OP_ILLEGAL, Op.ILLEGAL))

    def test_minor_version_0_operations_are_not_supported(self) -> None:
        """RENEW, SETCLIENTID and the like belong to 4.0: NOTSUPP in a 4.1 COMPOUND."""
        reply = self.client.call((Op.RENEW, v41.u64(1)))
        self.assertEqual((reply.status, reply.last.op), (Status.NOTSUPP, Op.RENEW))

    def test_too_many_operations(self) -> None:
        """An absurd operation count is refused on the first operation, nothing decoded past it."""
        body = v41.text(b"") + v41.u32(1) + v41.u32(2**31) + v41.u32(Op.PUTROOTFH)
        reply = self.client.rpc.call(v41.NFS_PROGRAM, 4, 1, body)
        result = v41.decode_reply(reply.body)
        self.assertEqual((result.status, result.last.op), (Stat4.TOO_MANY_OPS, Op.PUTROOTFH))

    def test_malformed_header_is_garbage_args(self) -> None:
        """A COMPOUND whose tag runs past the record is GARBAGE_ARGS, the RPC error."""
        reply = self.client.rpc.call(v41.NFS_PROGRAM, 4, 1, b"\0\0\1\0ab")
        self.assertEqual(reply.stat, AcceptStat.GARBAGE_ARGS)


class SessionTests(V41TestCase):
    """RFC 8881 sections 2.10 and 18.35-18.37, 18.46: clients, sessions, slots."""

    def test_exchange_id(self) -> None:
        """A new client is unconfirmed until its session; the server says it does no pNFS."""
        reply = self.client.compound([v41.exchange_id(b"another")])
        value = reply[0].value
        self.assertEqual(value["flags"] & 0x00070000, 0x00010000)
        self.assertFalse(value["flags"] & 0x80000000)
        self.assertEqual(value["protect"], 0)
        again = self.client.compound([v41.exchange_id(b"unit-client")])
        self.assertTrue(again[0].value["flags"] & 0x80000000, "confirmed once it has a session")
        self.assertEqual(again[0].value["clientid"], self.client.clientid)

    def test_create_session_replay(self) -> None:
        """CREATE_SESSION with the last sequence again returns the same session."""
        reply = self.client.compound([v41.exchange_id(b"replayer")])
        clientid, sequence = reply[0].value["clientid"], reply[0].value["sequence"]
        first = self.client.compound([v41.create_session(clientid, sequence)])
        again = self.client.compound([v41.create_session(clientid, sequence)])
        self.assertEqual(first[0].value["sessionid"], again[0].value["sessionid"])
        skipped = self.client.compound([v41.create_session(clientid, sequence + 5)])
        self.assertEqual(skipped.status, Stat4.SEQ_MISORDERED)

    def test_unknown_client(self) -> None:
        """A client id this server never gave: STALE_CLIENTID."""
        reply = self.client.compound([v41.create_session(12345, 1)])
        self.assertEqual(reply.status, Stat4.STALE_CLIENTID)

    def test_sequence_result(self) -> None:
        """SEQUENCE echoes the session, sequence and slot; no back channel was bound."""
        reply = self.client.compound([v41.sequence(self.client.sessionid, 1, 3)])
        value = reply[0].value
        self.assertEqual(
            (value["sessionid"], value["seqid"], value["slot"]), (self.client.sessionid, 1, 3)
        )
        self.assertEqual(value["highest"], 7)

    def test_retransmission_gets_the_first_reply(self) -> None:
        """A retried REMOVE (same slot and sequence id) gets the first reply, not NOENT."""
        self.create_file(b"gone")
        ops = [*self.client.root_of_export(), v41.remove(b"gone")]
        seq = v41.sequence(self.client.sessionid, 1, 5)
        first = self.client.compound([seq, *ops])
        again = self.client.compound([seq, *ops])
        self.assertEqual(first.status, Status.OK)
        self.assertEqual(again, first)
        later = self.client.compound([v41.sequence(self.client.sessionid, 2, 5), *ops])
        self.assertEqual(later.status, Status.NOENT)

    def test_uncached_retry(self) -> None:
        """A retry of a request the client asked not to keep: RETRY_UNCACHED_REP."""
        seq = v41.sequence(self.client.sessionid, 1, 4, cache_this=False)
        self.client.compound([seq, v41.putrootfh()])
        again = self.client.compound([seq, v41.putrootfh()])
        self.assertEqual(again.status, Stat4.RETRY_UNCACHED_REP)

    def test_misordered_and_bad_slot(self) -> None:
        """A sequence id that skips ahead, and a slot past the table."""
        skipped = self.client.compound([v41.sequence(self.client.sessionid, 3, 2)])
        self.assertEqual(skipped.status, Stat4.SEQ_MISORDERED)
        beyond = self.client.compound([v41.sequence(self.client.sessionid, 1, 8)])
        self.assertEqual(beyond.status, Stat4.BADSLOT)

    def test_destroyed_session(self) -> None:
        """After DESTROY_SESSION, its SEQUENCE is BADSESSION; the client id then goes."""
        reply = self.client.compound([v41.destroy_session(self.client.sessionid)])
        self.assertEqual(reply.status, Status.OK)
        gone = self.client.compound([v41.sequence(self.client.sessionid, 1)])
        self.assertEqual(gone.status, Stat4.BADSESSION)
        destroyed = self.client.compound([v41.destroy_clientid(self.client.clientid)])
        self.assertEqual(destroyed.status, Status.OK)

    def test_reclaim_complete_once(self) -> None:
        """RECLAIM_COMPLETE for the whole client is accepted once."""
        self.assertEqual(self.client.call(v41.reclaim_complete()).status, Status.OK)
        self.assertEqual(self.client.call(v41.reclaim_complete()).status, Stat4.COMPLETE_ALREADY)


class NamespaceTests(SynchronousTestCase):
    """RFC 8881 section 7: the pseudo file system joining the exports."""

    def setUp(self) -> None:
        exports = [
            Export(1, b"/srv/a", MemoryMetadataStore(clock=TickingClock()), MemoryContentStore()),
            Export(2, b"/srv/b", MemoryMetadataStore(clock=TickingClock()), MemoryContentStore()),
            Export(3, b"/other", MemoryMetadataStore(clock=TickingClock()), MemoryContentStore()),
        ]
        self.server, _ = v41.with_v41(serve_exports(exports))
        self.client = V41Client(self.server).connect()

    def test_root_lists_the_first_names(self) -> None:
        """The root holds ``other`` and ``srv``; ``srv`` holds both exports."""
        reply = self.client.ok(v41.putrootfh(), v41.readdir())
        self.assertEqual([e[1] for e in reply.last.value["entries"]], [b"other", b"srv"])
        reply = self.client.ok(
            v41.putrootfh(), v41.lookup(b"srv"), v41.readdir(bits=[Attr.FSID, Attr.TYPE])
        )
        entries = reply.last.value["entries"]
        self.assertEqual(
            [(e[1], e[2][Attr.FSID]) for e in entries], [(b"a", (1, 0)), (b"b", (2, 0))]
        )

    def test_lookup_into_an_export(self) -> None:
        """LOOKUP crosses into the export's root: its handle is the one MOUNT gives v3."""
        reply = self.client.ok(
            v41.putrootfh(),
            v41.lookup(b"srv"),
            v41.lookup(b"b"),
            v41.getfh(),
            v41.getattr_(Attr.FSID, Attr.TYPE),
        )
        self.assertEqual(reply[3].value, self.server.client().mnt(b"/srv/b"))
        self.assertEqual(reply[4].value, {Attr.FSID: (2, 0), Attr.TYPE: DIR})

    def test_lookupp_climbs_out(self) -> None:
        """LOOKUPP from an export's root reaches the pseudo directory above, then the root."""
        reply = self.client.ok(
            v41.putrootfh(),
            v41.lookup(b"srv"),
            v41.lookup(b"a"),
            v41.lookupp(),
            v41.getattr_(Attr.FSID),
            v41.lookupp(),
            v41.getfh(),
        )
        self.assertEqual(reply[4].value, {Attr.FSID: PSEUDO_FSID})
        root = self.client.ok(v41.putrootfh(), v41.getfh()).last.value
        self.assertEqual(reply.last.value, root)
        self.assertEqual(self.client.call(v41.putrootfh(), v41.lookupp()).status, Status.NOENT)

    def test_pseudo_directories_are_read_only(self) -> None:
        """Nothing may be made in a pseudo directory; v3 does not know its handles."""
        reply = self.client.call(v41.putrootfh(), v41.create(DIR, b"new"))
        self.assertEqual(reply.status, Status.ROFS)
        root = self.client.ok(v41.putrootfh(), v41.getfh()).last.value
        self.assertEqual(self.server.client().getattr(root).status, Status.BADHANDLE)

    def test_missing_name(self) -> None:
        """A name that is not there: NOENT; ``..`` is not a name at all: BADNAME."""
        self.assertEqual(
            self.client.call(v41.putrootfh(), v41.lookup(b"nope")).status, Status.NOENT
        )
        self.assertEqual(self.client.call(v41.putrootfh(), v41.lookup(b"..")).status, Stat4.BADNAME)

    def test_secinfo(self) -> None:
        """SECINFO_NO_NAME offers AUTH_SYS, then AUTH_NONE, and consumes the current handle."""
        reply = self.client.call(v41.putrootfh(), v41.secinfo_no_name(), v41.getfh())
        self.assertEqual(reply[1].value, [1, 0])
        self.assertEqual(reply.last.status, Stat4.NOFILEHANDLE)


class FileTests(V41TestCase):
    """Opens, I/O, attributes and names (RFC 8881 sections 18.2-18.32)."""

    def test_open_write_read_close(self) -> None:
        """What OPEN-create writes, READ returns; CLOSE ends the stateid."""
        fh, stateid = self.create_file(b"f", b"hello world")
        reply = self.client.ok(
            v41.putfh(fh), v41.read(stateid, 0, 100), v41.getattr_(Attr.SIZE, Attr.TYPE, Attr.MODE)
        )
        self.assertEqual(reply[1].value, (True, b"hello world"))
        self.assertEqual(reply[2].value, {Attr.SIZE: 11, Attr.TYPE: REG, Attr.MODE: 0o644})
        closed = self.client.ok(v41.putfh(fh), v41.close(stateid))
        self.assertEqual(closed.last.value[1], stateid[1])
        stale = self.client.call(v41.putfh(fh), v41.read(stateid, 0, 1))
        self.assertEqual(stale.status, Stat4.BAD_STATEID)

    def test_handles_are_shared_with_v3(self) -> None:
        """A file made over v4.1 has the handle v3's LOOKUP gives, and the same bytes."""
        fh, _ = self.create_file(b"both", b"data")
        v3 = self.server.client()
        found = v3.lookup(v3.mnt(b"/export"), b"both")
        self.assertEqual(found.handle, fh)
        self.assertEqual(v3.read(fh, 0, 10).data, b"data")

    def test_owner_strings_are_numbers(self) -> None:
        """Owners travel as numeric strings; a name is BADOWNER; ACLs are not supported."""
        fh, _ = self.create_file(b"owned")
        reply = self.client.ok(v41.putfh(fh), v41.getattr_(Attr.OWNER, Attr.OWNER_GROUP))
        self.assertEqual(reply.last.value, {Attr.OWNER: b"0", Attr.OWNER_GROUP: b"0"})
        self.client.ok(v41.putfh(fh), v41.setattr_({Attr.OWNER: v41.text(b"1234")}))
        reply = self.client.ok(v41.putfh(fh), v41.getattr_(Attr.OWNER))
        self.assertEqual(reply.last.value, {Attr.OWNER: b"1234"})
        named = self.client.call(
            v41.putfh(fh), v41.setattr_({Attr.OWNER: v41.text(b"alice@example")})
        )
        self.assertEqual((named.status, named.last.value), (Stat4.BADOWNER, frozenset()))
        acl = self.client.call(v41.putfh(fh), v41.setattr_({12: v41.u32(0)}))
        self.assertEqual(acl.status, Stat4.ATTRNOTSUPP)

    def test_verify_and_nverify(self) -> None:
        """VERIFY goes on when attributes match; NVERIFY when they differ."""
        fh, _ = self.create_file(b"v", b"12345")
        self.client.ok(v41.putfh(fh), v41.verify({Attr.SIZE: v41.u64(5)}))
        self.assertEqual(
            self.client.call(v41.putfh(fh), v41.verify({Attr.SIZE: v41.u64(6)})).status,
            Stat4.NOT_SAME,
        )
        self.assertEqual(
            self.client.call(
                v41.putfh(fh), v41.verify({Attr.SIZE: v41.u64(5)}, negate=True)
            ).status,
            Stat4.SAME,
        )

    def test_truncate_needs_a_write_open(self) -> None:
        """SETATTR of the size with a read-only open's stateid is OPENMODE."""
        fh, stateid = self.create_file(b"t", b"abcdef")
        owner = self.client.new_owner()
        reader = self.client.ok(v41.putfh(fh), v41.open_(owner, None, access=1)).last.value[
            "stateid"
        ]
        refused = self.client.call(v41.putfh(fh), v41.setattr_({Attr.SIZE: v41.u64(2)}, reader))
        self.assertEqual(refused.status, Stat4.OPENMODE)
        self.client.ok(v41.putfh(fh), v41.setattr_({Attr.SIZE: v41.u64(2)}, stateid))
        self.assertEqual(
            self.client.ok(v41.putfh(fh), v41.read(stateid, 0, 10)).last.value, (True, b"ab")
        )

    def test_guarded_create_of_an_existing_name(self) -> None:
        """OPEN GUARDED4 of a name that exists is EXIST; UNCHECKED4 opens it."""
        self.create_file(b"g", b"x")
        owner = self.client.new_owner()
        reply = self.client.call(*self.client.root_of_export(), v41.open_(owner, b"g", create=1))
        self.assertEqual(reply.status, Status.EXIST)

    def test_exclusive_create_replays(self) -> None:
        """EXCLUSIVE4_1 with the same verifier twice opens the one file both times."""
        owner = self.client.new_owner()
        ops = [
            *self.client.root_of_export(),
            v41.open_(owner, b"x", create=3, verifier=b"12345678"),
            v41.getfh(),
        ]
        first = self.client.ok(*ops).last.value
        again = self.client.ok(*ops).last.value
        self.assertEqual(first, again)
        other = [
            *self.client.root_of_export(),
            v41.open_(owner, b"x", create=3, verifier=b"87654321"),
        ]
        self.assertEqual(self.client.call(*other).status, Status.EXIST)

    def test_open_of_a_directory(self) -> None:
        """OPEN opens regular files only: a directory is ISDIR, a symlink SYMLINK."""
        self.client.ok(*self.client.root_of_export(), v41.create(DIR, b"d"))
        self.client.ok(*self.client.root_of_export(), v41.create(FileType.LNK, b"l", link=b"d"))
        owner = self.client.new_owner()
        self.assertEqual(
            self.client.call(*self.client.root_of_export(), v41.open_(owner, b"d")).status,
            Status.ISDIR,
        )
        self.assertEqual(
            self.client.call(*self.client.root_of_export(), v41.open_(owner, b"l")).status,
            Stat4.SYMLINK,
        )

    def test_names(self) -> None:
        """CREATE, LINK, RENAME, READLINK and REMOVE, each with its change info.

        CREATE makes its new object the current one, so ``sym`` is made in ``dir``.
        """
        export = self.client.root_of_export()
        self.client.ok(
            *export, v41.create(DIR, b"dir"), v41.create(FileType.LNK, b"sym", link=b"target")
        )
        reply = self.client.ok(*export, v41.lookup(b"dir"), v41.lookup(b"sym"), v41.readlink())
        self.assertEqual(reply.last.value, b"target")
        fh, _ = self.create_file(b"file", b"content")
        self.client.ok(v41.putfh(fh), v41.savefh(), *export, v41.link(b"hard"))
        reply = self.client.ok(v41.putfh(fh), v41.getattr_(Attr.NUMLINKS))
        self.assertEqual(reply.last.value, {Attr.NUMLINKS: 2})
        renamed = self.client.ok(
            *export, v41.savefh(), v41.lookup(b"dir"), v41.rename(b"hard", b"moved")
        )
        before, after = renamed.last.value[1][1], renamed.last.value[1][2]
        self.assertLess(before, after)
        self.assertEqual(self.client.call(*export, v41.remove(b"dir")).status, Status.NOTEMPTY)
        self.client.ok(*export, v41.lookup(b"dir"), v41.remove(b"moved"), v41.remove(b"sym"))
        self.client.ok(*export, v41.remove(b"dir"))

    def test_readdir_pages(self) -> None:
        """READDIR resumes after each page's last cookie, with the verifier it gave."""
        export = self.client.root_of_export()
        names = [b"n%03d" % i for i in range(40)]
        for name in names:
            self.client.ok(*export, v41.create(DIR, name))
        seen, cookie, verifier = [], 0, bytes(8)
        for _ in range(40):
            page = self.client.ok(*export, v41.readdir(cookie, verifier, maxcount=600)).last.value
            seen += [e[1] for e in page["entries"]]
            if page["eof"]:
                break
            cookie, verifier = page["entries"][-1][0], page["verifier"]
        self.assertEqual(sorted(seen), names)
        self.assertEqual(
            self.client.call(*export, v41.readdir(maxcount=40)).status, Status.TOOSMALL
        )
        self.assertEqual(self.client.call(*export, v41.readdir(cookie=2)).status, Status.BAD_COOKIE)

    def test_access(self) -> None:
        """ACCESS answers for the six bits, by the caller's identity."""
        fh, _ = self.create_file(b"mode600")
        self.client.ok(v41.putfh(fh), v41.setattr_({Attr.MODE: v41.u32(0o600)}))
        other = V41Client(self.server, owner=b"other", uid=1000, gid=1000).connect()
        self.assertEqual(other.ok(v41.putfh(fh), v41.access(0x3F)).last.value, (0x3F, 0))
        self.assertEqual(self.client.ok(v41.putfh(fh), v41.access(0x3F)).last.value[1] & 0x1, 0x1)


class StateTests(V41TestCase):
    """Share reservations and byte-range locks across clients (RFC 8881 sections 9 and 18.10)."""

    def setUp(self) -> None:
        super().setUp()
        self.other = V41Client(self.server, owner=b"second-client").connect()
        self.fh, self.stateid = self.create_file(b"locked", b"0123456789" * 10)

    def _open(self, client: V41Client, access: int = 3, deny: int = 0) -> tuple[int, bytes]:
        reply = client.call(
            v41.putfh(self.fh), v41.open_(client.new_owner(), None, access=access, deny=deny)
        )
        assert reply.status == Status.OK, reply
        stateid: tuple[int, bytes] = reply.last.value["stateid"]
        return stateid

    def test_share_deny(self) -> None:
        """An open denying writes keeps another client's write open out, not its read open.

        The writer's own open must go first: a deny conflicts with any other owner's access.
        """
        refused = self.client.call(
            v41.putfh(self.fh), v41.open_(self.client.new_owner(), None, access=1, deny=2)
        )
        self.assertEqual(refused.status, Stat4.SHARE_DENIED)
        self.client.ok(v41.putfh(self.fh), v41.close(self.stateid))
        self._open(self.client, access=1, deny=2)
        refused = self.other.call(
            v41.putfh(self.fh), v41.open_(self.other.new_owner(), None, access=2)
        )
        self.assertEqual(refused.status, Stat4.SHARE_DENIED)
        self._open(self.other, access=1)

    def test_conflicting_write_locks(self) -> None:
        """A write lock blocks another client's overlapping lock, naming the holder and range."""
        owner = self.client.new_owner()
        held = self.client.ok(
            v41.putfh(self.fh), v41.lock_new(WRITE_LT, 0, 10, self.stateid, owner)
        ).last.value
        theirs = self._open(self.other)
        their_owner = self.other.new_owner()
        denied = self.other.call(
            v41.putfh(self.fh), v41.lock_new(WRITE_LT, 5, 10, theirs, their_owner)
        )
        self.assertEqual(denied.status, Stat4.DENIED)
        self.assertEqual(
            denied.last.value, {"offset": 0, "length": 10, "type": WRITE_LT, "owner": owner}
        )
        tested = self.other.call(v41.putfh(self.fh), v41.lockt(READ_LT, 9, 1, their_owner))
        self.assertEqual(tested.status, Stat4.DENIED)
        granted = self.other.ok(
            v41.putfh(self.fh), v41.lock_new(READ_LT, 10, 2**64 - 1, theirs, their_owner)
        )
        self.assertEqual(granted.last.op, Op.LOCK)
        self.client.ok(v41.putfh(self.fh), v41.locku(WRITE_LT, held, 0, 10))
        mine = granted.last.value
        self.other.ok(v41.putfh(self.fh), v41.lock_more(WRITE_LT, 0, 10, mine))

    def test_read_locks_share(self) -> None:
        """Read locks of two clients on one range both hold."""
        self.client.ok(
            v41.putfh(self.fh), v41.lock_new(READ_LT, 0, 50, self.stateid, self.client.new_owner())
        )
        self.other.ok(
            v41.putfh(self.fh),
            v41.lock_new(READ_LT, 0, 50, self._open(self.other), self.other.new_owner()),
        )

    def test_expired_holder_loses_its_locks(self) -> None:
        """Once the holder's lease runs out, a conflicting lock is granted and its state goes."""
        self.client.ok(
            v41.putfh(self.fh), v41.lock_new(WRITE_LT, 0, 10, self.stateid, self.client.new_owner())
        )
        theirs = self._open(self.other)
        owner = self.other.new_owner()
        self.assertEqual(
            self.other.call(v41.putfh(self.fh), v41.lock_new(WRITE_LT, 0, 1, theirs, owner)).status,
            Stat4.DENIED,
        )
        self.clock.now += 31
        self.other.ok(v41.putfh(self.fh), v41.lock_new(WRITE_LT, 0, 1, theirs, owner))
        gone = self.client.compound([self.client.seq()])
        self.assertEqual(gone.status, Stat4.BADSESSION)

    def test_lock_ranges(self) -> None:
        """A lock of no bytes or past the last offset is INVAL; a write lock needs a write open."""
        owner = self.client.new_owner()
        self.assertEqual(
            self.client.call(
                v41.putfh(self.fh), v41.lock_new(WRITE_LT, 0, 0, self.stateid, owner)
            ).status,
            Status.INVAL,
        )
        self.assertEqual(
            self.client.call(
                v41.putfh(self.fh), v41.lock_new(WRITE_LT, 2**63, 2**63 + 1, self.stateid, owner)
            ).status,
            Status.INVAL,
        )
        reader = self._open(self.client, access=1)
        self.assertEqual(
            self.client.call(
                v41.putfh(self.fh), v41.lock_new(WRITE_LT, 0, 1, reader, self.client.new_owner())
            ).status,
            Stat4.OPENMODE,
        )

    def test_stateids(self) -> None:
        """TEST_STATEID judges each; a forged one is BAD_STATEID, another instance's STALE."""
        forged = (1, b"\0\0\0\0forgedforg")
        reply = self.client.ok(v41.test_stateid(self.stateid, forged))
        self.assertEqual(reply.last.value, [Status.OK, Stat4.BAD_STATEID])
        stale = self.client.call(v41.putfh(self.fh), v41.read(forged, 0, 1))
        self.assertEqual(stale.status, Stat4.STALE_STATEID)
        ours = (1, self.stateid[1][:4] + b"\xff" * 8)
        bad = self.client.call(v41.putfh(self.fh), v41.read(ours, 0, 1))
        self.assertEqual(bad.status, Stat4.BAD_STATEID)
        old = self.client.call(
            v41.putfh(self.fh), v41.read((self.stateid[0] + 1, self.stateid[1]), 0, 1)
        )
        self.assertEqual(old.status, Stat4.BAD_STATEID)

    def test_free_stateid(self) -> None:
        """A lock stateid with no locks may be freed; one holding locks may not."""
        lock = self.client.ok(
            v41.putfh(self.fh), v41.lock_new(WRITE_LT, 0, 1, self.stateid, self.client.new_owner())
        ).last.value
        self.assertEqual(self.client.call(v41.free_stateid(lock)).status, Stat4.LOCKS_HELD)
        unlocked = self.client.ok(v41.putfh(self.fh), v41.locku(WRITE_LT, lock, 0, 1)).last.value
        self.client.ok(v41.free_stateid(unlocked))
        self.assertEqual(self.client.ok(v41.test_stateid(unlocked)).last.value, [Stat4.BAD_STATEID])


class MetricsTests(V41TestCase):
    """Each operation of a COMPOUND is counted by name and status, as v3 procedures are."""

    def test_operations_are_counted(self) -> None:
        """A COMPOUND that fails at its LOOKUP counts SEQUENCE, PUTROOTFH, LOOKUP, not GETFH."""
        self.client.call(v41.putrootfh(), v41.lookup(b"nope"), v41.getfh())
        registry = self.nfs4.metrics.registry

        def count(operation: str, status: str) -> float | None:
            labels = {"operation": operation, "status": status}
            return registry.get_sample_value("dittofs_nfs4_operations_total", labels)

        self.assertEqual(count("LOOKUP", "NOENT"), 1.0)
        self.assertEqual(count("PUTROOTFH", "OK"), 1.0)
        self.assertEqual(count("SEQUENCE", "OK"), 1.0)
        self.assertIsNone(count("GETFH", "OK"))


class GraceTests(SynchronousTestCase):
    """RFC 8881 section 8.4.2: after a restart, the clients of the last start reclaim first."""

    def setUp(self) -> None:
        self.base = build_server(
            MemoryMetadataStore(clock=TickingClock()),
            MemoryContentStore(),
            policy=AccessPolicy(squash=Squash.NONE),
        )
        self.clock = FakeClock()
        self.record = Path(self.mktemp())
        server, _ = v41.with_v41(self.base, lease_time=30, clock=self.clock, record=self.record)
        self.client = V41Client(server, owner=b"holder").connect()
        owner = self.client.new_owner()
        export = self.client.root_of_export()
        reply = self.client.ok(*export, v41.open_(owner, b"f", create=0), v41.getfh())
        self.fh = reply.last.value
        stateid = reply[len(export)].value["stateid"]
        self.client.ok(v41.putfh(self.fh), v41.lock_new(WRITE_LT, 0, 10, stateid, owner))

    def restart(self) -> tuple[Any, V41Client, V41Client]:
        """A new instance over the same exports and record; the holder and a newcomer."""
        server, nfs4 = v41.with_v41(self.base, lease_time=30, clock=self.clock, record=self.record)
        return (
            nfs4,
            V41Client(server, owner=b"holder").connect(),
            V41Client(server, owner=b"newcomer").connect(),
        )

    def test_the_record_names_the_clients(self) -> None:
        """A client is recorded once it has a session, by its owner."""
        self.assertEqual(self.record.read_text(), b"holder".hex() + "\n")

    def test_reclaim_in_grace(self) -> None:
        """The holder reclaims its open and lock; others wait (GRACE) until it is done."""
        _, holder, newcomer = self.restart()
        owner = holder.new_owner()
        new_open = newcomer.call(v41.putfh(self.fh), v41.open_(newcomer.new_owner(), None))
        self.assertEqual(new_open.status, Stat4.GRACE)
        reclaimed = holder.ok(v41.putfh(self.fh), v41.open_(owner, None, claim=1))
        stateid = reclaimed.last.value["stateid"]
        holder.ok(v41.putfh(self.fh), v41.lock_new(WRITE_LT, 0, 10, stateid, owner, reclaim=True))
        stranger = newcomer.call(v41.putfh(self.fh), v41.open_(newcomer.new_owner(), None, claim=1))
        self.assertEqual(stranger.status, Stat4.RECLAIM_BAD)
        holder.ok(v41.reclaim_complete())
        theirs = newcomer.ok(v41.putfh(self.fh), v41.open_(newcomer.new_owner(), None))
        their_state = theirs.last.value["stateid"]
        denied = newcomer.call(
            v41.putfh(self.fh),
            v41.lock_new(WRITE_LT, 5, 1, their_state, newcomer.new_owner()),
        )
        self.assertEqual(denied.status, Stat4.DENIED, "the reclaimed lock holds")
        late = holder.call(v41.putfh(self.fh), v41.open_(holder.new_owner(), None, claim=1))
        self.assertEqual(late.status, Stat4.NO_GRACE)

    def test_grace_ends_after_a_lease(self) -> None:
        """Clients that never reclaim do not hold the others back longer than one lease."""
        _, _, newcomer = self.restart()
        self.clock.now += 31
        newcomer.ok(v41.putfh(self.fh), v41.open_(newcomer.new_owner(), None))

    def test_no_record_no_grace(self) -> None:
        """A server that served no v4.1 client has no grace period."""
        server, _ = v41.with_v41(self.base, clock=self.clock, record=Path(self.mktemp()))
        fresh = V41Client(server, owner=b"first").connect()
        fresh.ok(v41.putfh(self.fh), v41.open_(fresh.new_owner(), None))
        reclaim = fresh.call(v41.putfh(self.fh), v41.open_(fresh.new_owner(), None, claim=1))
        self.assertEqual(reclaim.status, Stat4.NO_GRACE)


class LentReadTests(V41TestCase):
    """READ data comes from the file itself (a region) only in replies the slot does not keep."""

    def setUp(self) -> None:
        content, _ = make_fs_store(self)
        server = build_server(
            MemoryMetadataStore(clock=TickingClock()),
            content,
            policy=AccessPolicy(squash=Squash.NONE),
        )
        self.server, self.nfs4 = v41.with_v41(server)
        self.client = V41Client(self.server).connect()
        self.content = content

    def read(self, seqid: int, keep: bool, offset: int) -> v41.Reply:
        """SEQUENCE (slot 0, *seqid*, ``cachethis`` *keep*), PUTFH, READ of 200,000 bytes."""
        sequence = v41.sequence(self.client.sessionid, seqid, cache_this=keep)
        return self.client.compound(
            [sequence, v41.putfh(self.fh), v41.read(self.open, offset, 200_000)]
        )

    def test_lent_unless_kept(self) -> None:
        """Lent when ``cachethis`` is off, bytes kept for a retry when on; the same data."""
        data = os.urandom(300_000)
        self.fh, self.open = self.create_file(b"big", data)
        seqid = next(self.client._seqids)
        with mock.patch.object(self.content, "read_lent", wraps=self.content.read_lent) as lent:
            uncached = self.read(seqid, False, 1000)
            self.assertEqual(lent.call_count, 1)
            self.assertEqual(uncached.last.value, (False, data[1000:201_000]))
            # A retry of a reply not kept cannot be answered from the file again.
            self.assertEqual(self.read(seqid, False, 1000).status, Stat4.RETRY_UNCACHED_REP)
            kept = self.read(seqid + 1, True, 100_000)
            self.assertEqual(lent.call_count, 1)
            self.assertEqual(kept.last.value, (True, data[100_000:]))


class ReviewRegressionTests(V41TestCase):
    """What a review of the first version found, each kept from coming back."""

    def _root_file(self) -> bytes:
        """A root-owned 0644 file with ten bytes in a world-writable directory, closed."""
        export = self.client.root_of_export()
        self.client.ok(*export, v41.create(DIR, b"shared", {Attr.MODE: v41.u32(0o777)}))
        owner = self.client.new_owner()
        reply = self.client.ok(
            *export,
            v41.lookup(b"shared"),
            v41.open_(owner, b"theirs", create=0, attrs_={Attr.MODE: v41.u32(0o644)}),
            v41.write(v41.CURRENT, 0, b"0123456789"),
            v41.getfh(),
            v41.close(v41.CURRENT),
        )
        fh: bytes = reply[-2].value
        return fh

    def test_o_trunc_needs_write_permission(self) -> None:
        """UNCHECKED4 with size 0 by someone who may not write: ACCESS, and nothing cut."""
        fh = self._root_file()
        other = V41Client(self.server, owner=b"uid1000", uid=1000, gid=1000).connect()
        refused = other.call(
            *other.root_of_export(),
            v41.lookup(b"shared"),
            v41.open_(
                other.new_owner(), b"theirs", access=3, create=0, attrs_={Attr.SIZE: v41.u64(0)}
            ),
        )
        self.assertEqual(refused.status, Status.ACCES)
        size = self.client.ok(v41.putfh(fh), v41.getattr_(Attr.SIZE)).last.value
        self.assertEqual(size, {Attr.SIZE: 10})

    def test_o_trunc_waits_for_the_share_reservation(self) -> None:
        """An open refused by another's DENY_WRITE cuts nothing either."""
        fh = self._root_file()
        self.client.ok(v41.putfh(fh), v41.open_(self.client.new_owner(), None, access=1, deny=2))
        refused = self.client.call(
            *self.client.root_of_export(),
            v41.lookup(b"shared"),
            v41.open_(self.client.new_owner(), b"theirs", create=0, attrs_={Attr.SIZE: v41.u64(0)}),
        )
        self.assertEqual(refused.status, Stat4.SHARE_DENIED)
        size = self.client.ok(v41.putfh(fh), v41.getattr_(Attr.SIZE)).last.value
        self.assertEqual(size, {Attr.SIZE: 10})

    def test_v3_unchecked_create_needs_write_permission(self) -> None:
        """NFSv3 CREATE UNCHECKED with a size cuts an existing file only for a writer."""
        fh = self._root_file()
        v3 = self.server.client(uid=1000, gid=1000)
        directory = v3.lookup(v3.mnt(b"/export"), b"shared").handle
        from dittofs.model import SetAttributes
        from dittofs.vocabulary import CreateMode

        reply = v3.create(directory, b"theirs", CreateMode.UNCHECKED, SetAttributes(size=0))
        self.assertEqual(reply.status, Status.ACCES)
        self.assertEqual(v3.getattr(fh).attributes.size, 10)

    def test_stateids_belong_to_their_client(self) -> None:
        """Another client may neither use nor test nor close my stateid."""
        fh, stateid = self.create_file(b"mine", b"data")
        other = V41Client(self.server, owner=b"intruder").connect()
        self.assertEqual(other.call(v41.putfh(fh), v41.close(stateid)).status, Stat4.BAD_STATEID)
        self.assertEqual(other.ok(v41.test_stateid(stateid)).last.value, [Stat4.BAD_STATEID])
        self.assertEqual(
            other.call(v41.putfh(fh), v41.read(stateid, 0, 4)).status, Stat4.BAD_STATEID
        )
        self.assertEqual(
            self.client.ok(v41.putfh(fh), v41.read(stateid, 0, 4)).last.value, (True, b"data")
        )

    def test_downgrade_and_close_set_the_current_stateid(self) -> None:
        """OPEN; OPEN_DOWNGRADE(current); CLOSE(current) is one COMPOUND that works."""
        self.create_file(b"d")
        self.client.ok(
            *self.client.root_of_export(),
            v41.open_(self.client.new_owner(), b"d", access=3),
            v41.open_downgrade(v41.CURRENT, 1),
            v41.close(v41.CURRENT),
        )

    def test_readdir_verifier_of_another_directory(self) -> None:
        """A cookie with a verifier this directory never gave is NFS4ERR_NOT_SAME."""
        reply = self.client.call(*self.client.root_of_export(), v41.readdir(3, b"12345678"))
        self.assertEqual(reply.status, Stat4.NOT_SAME)

    def test_lock_ranges_are_bounded(self) -> None:
        """Alternating one-byte locks past the limit are NFS4ERR_RESOURCE, not a slow table."""
        from dittofs.nfs4 import state as nfs4_state

        self.patch(nfs4_state, "MAX_RANGES", 8)
        fh, stateid = self.create_file(b"ranges", b"x" * 100)
        owner = self.client.new_owner()
        lock = self.client.ok(v41.putfh(fh), v41.lock_new(READ_LT, 0, 1, stateid, owner)).last.value
        statuses = []
        for start in range(2, 40, 2):
            reply = self.client.call(v41.putfh(fh), v41.lock_more(READ_LT, start, 1, lock))
            statuses.append(reply.status)
            if reply.status == Status.OK:
                lock = reply.last.value
        self.assertEqual(statuses[:7], [Status.OK] * 7)
        self.assertEqual(set(statuses[7:]), {Stat4.RESOURCE})

    def test_a_busy_slot_answers_delay(self) -> None:
        """A request on a slot whose request still runs is NFS4ERR_DELAY, whatever its sequence."""
        self.nfs4.state.session(self.client.sessionid).slots[2].busy = True
        for seqid in (0, 1):
            reply = self.client.compound([v41.sequence(self.client.sessionid, seqid, 2)])
            self.assertEqual(reply.status, Stat4.DELAY)
