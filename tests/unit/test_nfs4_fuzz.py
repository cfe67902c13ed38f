"""Hostile COMPOUNDs: random operations, absurd counts, forged stateids, wrong slots.

Each example builds a COMPOUND of real operations with plausible arguments
(from ``tests/unit/v41.py``) and then damages it the way a hostile or buggy
client would: unknown operation numbers, arguments cut short or padded with
junk, stateids and handles made up, a SEQUENCE naming another session, slot
or sequence id.  The invariants: every call gets exactly one accepted reply,
SUCCESS with a COMPOUND4res that decodes to its last byte (or GARBAGE_ARGS
for a header that does not), every status is one RFC 5662 defines, no
operation crashes into the catch-all (which logs a failure), and the state
table stays within its bounds however many clients the examples invent.
"""

from __future__ import annotations

import itertools
import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from dittofs.nfs4 import state as nfs4_state
from dittofs.nfs4.const import Attr, Stat4
from dittofs.policy import AccessPolicy, Squash
from dittofs.rpc.message import AcceptStat
from dittofs.testing import build_server
from dittofs.vocabulary import FileType, Status
from tests.unit import v41
from tests.unit.v41 import V41Client

_RUNS = itertools.count()
STATUSES = frozenset(int(s) for s in Status) | frozenset(int(s) for s in Stat4)


def _stateid(rng: random.Random, known: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    choice = rng.randrange(5)
    if choice == 0 and known:
        seqid, other = rng.choice(known)
        return rng.choice([seqid, 0, seqid + 1, 2**32 - 1]), other
    if choice == 1:
        return v41.ANONYMOUS
    if choice == 2:
        return v41.CURRENT
    return rng.randrange(2**32), rng.randbytes(12)


def _op(
    rng: random.Random, client: V41Client, handles: list[bytes], known: list[tuple[int, bytes]]
) -> v41.Arg:
    """One operation with arguments that are right, nearly right, or wrong."""
    name = rng.choice([b"a", b"b", b"dir", b"", b"..", b"x" * 300, b"a/b", rng.randbytes(4)])
    owner = (rng.choice([client.clientid, rng.randrange(2**64)]), rng.randbytes(rng.randrange(8)))
    makers = [
        v41.putrootfh,
        lambda: v41.putfh(
            rng.choice(handles)
            if handles and rng.random() < 0.7
            else rng.randbytes(rng.choice([0, 16, 128]))
        ),
        v41.getfh,
        v41.savefh,
        v41.restorefh,
        lambda: v41.lookup(name),
        v41.lookupp,
        lambda: v41.getattr_(*rng.sample(range(80), rng.randrange(6))),
        lambda: v41.access(rng.randrange(256)),
        v41.readlink,
        lambda: v41.remove(name),
        lambda: v41.rename(name, rng.choice([b"a", b"c"])),
        lambda: v41.link(name),
        lambda: v41.create(
            rng.choice([1, 2, 3, 5, 6, 7, 9]), name, {Attr.MODE: v41.u32(0o755)}, link=b"t"
        ),
        lambda: v41.readdir(
            rng.choice([0, 1, 3, 2**64 - 1]),
            rng.randbytes(8),
            rng.choice([0, 100, 4096]),
            rng.sample(range(60), 3),
        ),
        lambda: v41.open_(
            owner,
            name,
            access=rng.randrange(8),
            deny=rng.randrange(8),
            create=rng.choice([None, 0, 1, 2, 3]),
            verifier=rng.randbytes(8),
        ),
        lambda: v41.open_(owner, None, access=rng.randrange(1, 4)),
        lambda: v41.close(_stateid(rng, known)),
        lambda: v41.open_downgrade(_stateid(rng, known), rng.randrange(4), rng.randrange(4)),
        lambda: v41.read(
            _stateid(rng, known), rng.choice([0, 2**63, 2**64 - 1]), rng.choice([0, 10, 2**32 - 1])
        ),
        lambda: v41.write(
            _stateid(rng, known),
            rng.choice([0, 2**63 - 2, 2**64 - 1]),
            rng.randbytes(rng.randrange(20)),
            rng.randrange(3),
        ),
        v41.commit,
        lambda: v41.setattr_(
            {
                rng.choice([Attr.SIZE, Attr.MODE]): v41.u64(rng.randrange(2**64))
                if rng.random() < 0.5
                else v41.u32(7)
            },
            _stateid(rng, known),
        ),
        lambda: v41.verify({Attr.SIZE: v41.u64(rng.randrange(4))}, negate=rng.random() < 0.5),
        lambda: v41.lock_new(
            rng.randrange(1, 5),
            rng.randrange(2**64),
            rng.choice([0, 1, 2**64 - 1, rng.randrange(2**64)]),
            _stateid(rng, known),
            owner,
            rng.random() < 0.2,
        ),
        lambda: v41.lock_more(
            rng.randrange(1, 5), rng.randrange(100), rng.randrange(1, 100), _stateid(rng, known)
        ),
        lambda: v41.lockt(rng.randrange(1, 5), rng.randrange(100), rng.randrange(100), owner),
        lambda: v41.locku(
            rng.randrange(1, 5),
            _stateid(rng, known),
            rng.randrange(100),
            rng.choice([0, 1, 2**64 - 1]),
        ),
        lambda: v41.test_stateid(*(_stateid(rng, known) for _ in range(rng.randrange(4)))),
        lambda: v41.free_stateid(_stateid(rng, known)),
        lambda: v41.secinfo_no_name(rng.randrange(3)),
        lambda: v41.reclaim_complete(rng.random() < 0.5),
        lambda: v41.exchange_id(
            rng.randbytes(rng.randrange(1, 9)), flags=rng.choice([0, 0x40000000, 0x12345678])
        ),
        lambda: v41.create_session(
            rng.choice([client.clientid, rng.randrange(2**64)]),
            rng.randrange(3),
            slots=rng.choice([0, 1, 2**32 - 1]),
        ),
        lambda: v41.destroy_session(rng.choice([client.sessionid, rng.randbytes(16)])),
        lambda: v41.destroy_clientid(rng.randrange(2**64)),
        lambda: (
            rng.choice([0, 1, 2, 19, 40, 46, 50, 59, 9999, 2**32 - 1]),
            rng.randbytes(rng.randrange(12)),
        ),
    ]
    op, args = rng.choice(makers)()
    damage = rng.randrange(10)
    if damage == 0 and args:
        args = args[: rng.randrange(len(args))]
    elif damage == 1:
        args += rng.randbytes(rng.randrange(1, 9))
    return op, args


def _compound(
    rng: random.Random, client: V41Client, handles: list[bytes], known: list[tuple[int, bytes]]
) -> bytes:
    ops = [_op(rng, client, handles, known) for _ in range(rng.randrange(8))]
    first = rng.randrange(6)
    if first < 4:
        slot = rng.choice([0, 0, 1, 7, 8, 2**32 - 1])
        seqid = rng.choice([1, 2, 3, 2**32 - 1])
        sessionid = client.sessionid if first < 3 else rng.randbytes(16)
        ops.insert(0, v41.sequence(sessionid, seqid, slot, rng.random() < 0.5))
    body = v41.text(rng.randbytes(rng.randrange(4))) + v41.u32(rng.choice([1, 1, 1, 0, 2]))
    count = len(ops) if rng.random() < 0.9 else rng.choice([len(ops) + 3, 2**31, 2**32 - 1])
    body += v41.u32(count) + b"".join(v41.u32(op) + args for op, args in ops)
    if rng.random() < 0.05:
        body = body[: rng.randrange(len(body) + 1)]
    return body


class HostileCompoundTests(SynchronousTestCase):
    """The invariants of the module docstring, over hypothesis-chosen random streams."""

    def setUp(self) -> None:
        server = build_server(policy=AccessPolicy(squash=Squash.NONE))
        self.server, self.nfs4 = v41.with_v41(server)
        self.client = V41Client(self.server).connect()
        export = self.client.root_of_export()
        reply = self.client.ok(
            *export,
            v41.create(FileType.DIR, b"dir"),
            v41.getfh(),
            *export,
            v41.open_(self.client.new_owner(), b"a", create=0),
            v41.getfh(),
        )
        self.handles = [reply[len(export) + 1].value, reply.last.value]
        self.known = [reply[-2].value["stateid"]]

    def _check(self, body: bytes) -> None:
        reply = self.client.rpc.call(v41.NFS_PROGRAM, 4, 1, body)
        self.assertTrue(reply.accepted)
        self.assertIn(reply.stat, (AcceptStat.SUCCESS, AcceptStat.GARBAGE_ARGS))
        if reply.stat == AcceptStat.SUCCESS:
            decoded = v41.decode_reply(reply.body)
            self.assertIn(decoded.status, STATUSES)
            for result in decoded.results:
                self.assertIn(result.status, STATUSES)
            if decoded.results:
                self.assertEqual(decoded.status, decoded.last.status)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.randoms(use_true_random=False))
    def test_random_compounds(self, rng: random.Random) -> None:
        """Twenty damaged COMPOUNDs in a row: well-formed answers, no crash, a good call after."""
        with capturedLogs() as events:
            for _ in range(20):
                self._check(_compound(rng, self.client, self.handles, self.known))
        crashes = [e for e in events if e.get("log_level") in (LogLevel.critical, LogLevel.error)]
        self.assertEqual(crashes, [], "an operation crashed")
        # Hypothesis reruns the test on this one server: one new client owner per run.
        fresh = V41Client(self.server, owner=b"after-%d" % next(_RUNS)).connect()
        self.assertEqual(fresh.ok(*fresh.root_of_export(), v41.getfh()).status, Status.OK)

    def test_state_stays_bounded(self) -> None:
        """Clients invented by the thousand are capped; the table answers RESOURCE past it."""
        original = nfs4_state.MAX_CLIENTS
        nfs4_state.MAX_CLIENTS = 50
        self.addCleanup(setattr, nfs4_state, "MAX_CLIENTS", original)
        statuses = set()
        for index in range(120):
            reply = self.client.compound([v41.exchange_id(struct.pack(">I", index))])
            statuses.add(reply.status)
        self.assertEqual(statuses, {Status.OK, Stat4.RESOURCE})
        self.assertLessEqual(len(self.nfs4.state._clients), 50)
