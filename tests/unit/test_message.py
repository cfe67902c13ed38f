"""Tests for :mod:`dittofs.rpc.message`: decoding RPC calls and encoding every reply shape.

Calls are built and replies are parsed with the small hand-written
:mod:`struct` helpers below (shared with the dispatcher, protocol, MOUNT and
tap tests), never with the project's own encoders, so the tests check the
wire format of RFC 5531 rather than agreement of the code with itself.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dittofs.rpc.message import (
    ANONYMOUS,
    AcceptStat,
    AuthFlavor,
    AuthStat,
    CallRejected,
    accepted_reply,
    auth_error_reply,
    parse_call,
    prog_mismatch_reply,
    rpc_mismatch_reply,
)
from dittofs.rpc.xdr import XdrError

# RFC 5531 constants, written out here rather than imported from the code under test.
MSG_ACCEPTED = 0
MSG_DENIED = 1
SUCCESS = 0
PROG_UNAVAIL = 1
PROG_MISMATCH = 2
PROC_UNAVAIL = 3
GARBAGE_ARGS = 4
SYSTEM_ERR = 5
RPC_MISMATCH = 0
AUTH_ERROR = 1
AUTH_BADCRED = 1
AUTH_TOOWEAK = 5


def pad(data: bytes) -> bytes:
    """Return *data* followed by XDR zero padding."""
    return data + b"\0" * (-len(data) % 4)


def xdr_opaque(data: bytes) -> bytes:
    """Encode a variable-length opaque by hand."""
    return struct.pack(">I", len(data)) + pad(data)


def auth_sys(
    stamp: int = 7,
    machine: bytes = b"client",
    uid: int = 1000,
    gid: int = 100,
    gids: Sequence[int] = (),
) -> bytes:
    """Encode an AUTH_SYS credential body (RFC 5531 appendix A)."""
    return (
        struct.pack(">I", stamp)
        + xdr_opaque(machine)
        + struct.pack(f">III{len(gids)}I", uid, gid, len(gids), *gids)
    )


def build_call(
    xid: int,
    program: int,
    version: int,
    procedure: int,
    args: bytes = b"",
    cred: tuple[int, bytes] = (0, b""),
    verf: tuple[int, bytes] = (0, b""),
    rpcvers: int = 2,
) -> bytes:
    """Encode a call message (without record marking)."""
    return (
        struct.pack(">6I", xid, 0, rpcvers, program, version, procedure)
        + struct.pack(">I", cred[0])
        + xdr_opaque(cred[1])
        + struct.pack(">I", verf[0])
        + xdr_opaque(verf[1])
        + args
    )


def record_mark(message: bytes) -> bytes:
    """Frame *message* as one final fragment."""
    return struct.pack(">I", 0x80000000 | len(message)) + message


def split_records(stream: bytes) -> list[bytes]:
    """Split a server's output into messages, checking every record is one final fragment."""
    messages = []
    offset = 0
    while offset < len(stream):
        if len(stream) - offset < 4:
            raise AssertionError(f"stray bytes at end of stream: {stream[offset:]!r}")
        (mark,) = struct.unpack_from(">I", stream, offset)
        if not mark & 0x80000000:
            raise AssertionError("server reply is not a single final fragment")
        length = mark & 0x7FFFFFFF
        end = offset + 4 + length
        if end > len(stream):
            raise AssertionError("record mark announces more bytes than were written")
        messages.append(stream[offset + 4 : end])
        offset = end
    return messages


@attrs.frozen
class Reply:
    """A reply message decoded by :func:`parse_reply`."""

    xid: int
    reply_stat: int
    accept_stat: int | None = None
    reject_stat: int | None = None
    auth_stat: int | None = None
    low: int | None = None
    high: int | None = None
    body: bytes = b""


def parse_reply(message: bytes) -> Reply:
    """Decode an RPC reply message strictly; raise AssertionError if it is malformed.

    For SUCCESS, ``body`` holds the procedure's results; every other reply
    shape must end exactly where RFC 5531 says it does.
    """
    offset = 0

    def uint() -> int:
        nonlocal offset
        if offset + 4 > len(message):
            raise AssertionError(f"reply truncated at offset {offset}: {message!r}")
        (value,) = struct.unpack_from(">I", message, offset)
        offset += 4
        return value

    def done() -> None:
        if offset != len(message):
            raise AssertionError(f"{len(message) - offset} trailing bytes in reply")

    xid = uint()
    if uint() != 1:
        raise AssertionError("not a REPLY message")
    reply_stat = uint()
    if reply_stat == MSG_ACCEPTED:
        uint()  # verifier flavour
        verf_length = uint()
        if verf_length > 400:
            raise AssertionError("verifier longer than 400 bytes")
        offset += verf_length + (-verf_length % 4)
        accept_stat = uint()
        if accept_stat == SUCCESS:
            if offset > len(message):
                raise AssertionError("reply truncated in verifier")
            return Reply(xid, reply_stat, accept_stat, body=message[offset:])
        if accept_stat == PROG_MISMATCH:
            low, high = uint(), uint()
            done()
            return Reply(xid, reply_stat, accept_stat, low=low, high=high)
        if accept_stat not in (PROG_UNAVAIL, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR):
            raise AssertionError(f"unknown accept_stat {accept_stat}")
        done()
        return Reply(xid, reply_stat, accept_stat)
    if reply_stat == MSG_DENIED:
        reject_stat = uint()
        if reject_stat == RPC_MISMATCH:
            low, high = uint(), uint()
            done()
            return Reply(xid, reply_stat, reject_stat=reject_stat, low=low, high=high)
        if reject_stat == AUTH_ERROR:
            auth_stat = uint()
            if not 1 <= auth_stat <= 7:
                raise AssertionError(f"unknown auth_stat {auth_stat}")
            done()
            return Reply(xid, reply_stat, reject_stat=reject_stat, auth_stat=auth_stat)
        raise AssertionError(f"unknown reject_stat {reject_stat}")
    raise AssertionError(f"unknown reply_stat {reply_stat}")


class ParseCallTests(SynchronousTestCase):
    """``parse_call`` decodes headers and credentials of well-formed calls."""

    def test_auth_none(self) -> None:
        """An AUTH_NONE call yields its header, anonymous credentials and the argument offset."""
        record = build_call(0xDEADBEEF, 100003, 3, 1, args=struct.pack(">I", 99))
        header, reader = parse_call(record)
        self.assertEqual(
            (header.xid, header.program, header.version, header.procedure),
            (0xDEADBEEF, 100003, 3, 1),
        )
        self.assertEqual(header.credentials, ANONYMOUS)
        self.assertEqual(header.credentials.flavor, 0)
        self.assertIsNone(header.credentials.uid)
        self.assertEqual(header.args_offset, 40)
        self.assertEqual(reader.tell(), 40)
        self.assertEqual(reader.uint(), 99)

    def test_auth_sys(self) -> None:
        """AUTH_SYS credentials are decoded into uid, gid, groups, machine name and stamp."""
        body = auth_sys(stamp=12, machine=b"host.example", uid=501, gid=20, gids=(20, 12, 61))
        record = build_call(1, 100005, 3, 1, args=b"ARGS", cred=(1, body))
        header, reader = parse_call(record)
        credentials = header.credentials
        self.assertEqual(credentials.flavor, 1)
        self.assertEqual(credentials.uid, 501)
        self.assertEqual(credentials.gid, 20)
        self.assertEqual(credentials.gids, (20, 12, 61))
        self.assertEqual(credentials.machine_name, b"host.example")
        self.assertEqual(credentials.stamp, 12)
        self.assertEqual(header.args_offset, len(record) - 4)
        self.assertEqual(bytes(reader.fixed_opaque(4)), b"ARGS")

    def test_auth_sys_limits_accepted(self) -> None:
        """A 255-byte machine name and 16 groups are the RFC's maxima and are accepted."""
        body = auth_sys(machine=b"m" * 255, gids=range(16))
        header, _ = parse_call(build_call(2, 1, 1, 0, cred=(1, body)))
        self.assertEqual(len(header.credentials.machine_name), 255)
        self.assertEqual(header.credentials.gids, tuple(range(16)))

    def test_verifier_is_skipped(self) -> None:
        """A non-empty verifier is consumed, so arguments are found after it."""
        record = build_call(3, 1, 1, 0, args=b"\0\0\0\x05", verf=(1, b"abcde"))
        header, reader = parse_call(record)
        self.assertEqual(header.args_offset, len(record) - 4)
        self.assertEqual(reader.uint(), 5)

    @settings(max_examples=100, deadline=None, database=None)
    @given(
        xid=st.integers(0, 2**32 - 1),
        program=st.integers(0, 2**32 - 1),
        version=st.integers(0, 2**32 - 1),
        procedure=st.integers(0, 2**32 - 1),
        machine=st.binary(max_size=255),
        uid=st.integers(0, 2**32 - 1),
        gids=st.lists(st.integers(0, 2**32 - 1), max_size=16),
        args=st.binary(max_size=32),
    )
    def test_any_valid_call(
        self,
        xid: int,
        program: int,
        version: int,
        procedure: int,
        machine: bytes,
        uid: int,
        gids: list[int],
        args: bytes,
    ) -> None:
        """Every well-formed AUTH_SYS call decodes to exactly the values it carries."""
        args = pad(args)
        body = auth_sys(machine=machine, uid=uid, gid=uid ^ 1, gids=gids)
        record = build_call(xid, program, version, procedure, args=args, cred=(1, body))
        header, reader = parse_call(record)
        self.assertEqual(
            (header.xid, header.program, header.version, header.procedure),
            (xid, program, version, procedure),
        )
        self.assertEqual(header.credentials.machine_name, machine)
        self.assertEqual(header.credentials.uid, uid)
        self.assertEqual(header.credentials.gid, uid ^ 1)
        self.assertEqual(header.credentials.gids, tuple(gids))
        self.assertEqual(bytes(reader.fixed_opaque(len(args))), args)
        self.assertEqual(reader.remaining, 0)


class RejectedCallTests(SynchronousTestCase):
    """Calls that must be answered without running carry the right reply."""

    def assertRejected(self, record: bytes, xid: int) -> Reply:
        """Check *record* is rejected with a well-formed reply to *xid*; return that reply."""
        with self.assertRaises(CallRejected) as caught:
            parse_call(record)
        self.assertEqual(caught.exception.xid, xid)
        reply = parse_reply(caught.exception.reply.getvalue())
        self.assertEqual(reply.xid, xid)
        return reply

    def test_long_machine_name(self) -> None:
        """An AUTH_SYS machine name over 255 bytes is a bad credential (AUTH_BADCRED)."""
        record = build_call(10, 100003, 3, 0, cred=(1, auth_sys(machine=b"m" * 256)))
        reply = self.assertRejected(record, 10)
        self.assertEqual(
            (reply.reply_stat, reply.reject_stat, reply.auth_stat),
            (MSG_DENIED, AUTH_ERROR, AUTH_BADCRED),
        )

    def test_too_many_gids(self) -> None:
        """More than 16 supplementary groups is a bad credential (AUTH_BADCRED)."""
        record = build_call(11, 100003, 3, 0, cred=(1, auth_sys(gids=range(17))))
        reply = self.assertRejected(record, 11)
        self.assertEqual(
            (reply.reply_stat, reply.reject_stat, reply.auth_stat),
            (MSG_DENIED, AUTH_ERROR, AUTH_BADCRED),
        )

    def test_malformed_auth_sys_body(self) -> None:
        """A truncated or over-long AUTH_SYS body is AUTH_BADCRED, not a crash."""
        body = auth_sys()
        for bad in (body[:-4], body[:6], b"", body + b"\0\0\0\0"):
            with self.subTest(length=len(bad)):
                reply = self.assertRejected(build_call(12, 100003, 3, 0, cred=(1, bad)), 12)
                self.assertEqual((reply.reject_stat, reply.auth_stat), (AUTH_ERROR, AUTH_BADCRED))

    def test_unknown_flavours_too_weak(self) -> None:
        """AUTH_SHORT, AUTH_DH, RPCSEC_GSS and unknown flavours get AUTH_TOOWEAK."""
        for flavor in (2, 3, 6, 12345, 2**32 - 1):
            with self.subTest(flavor=flavor):
                record = build_call(13, 100003, 3, 0, cred=(flavor, b"opaque"))
                reply = self.assertRejected(record, 13)
                self.assertEqual(
                    (reply.reply_stat, reply.reject_stat, reply.auth_stat),
                    (MSG_DENIED, AUTH_ERROR, AUTH_TOOWEAK),
                )

    def test_wrong_rpc_version(self) -> None:
        """An RPC version other than 2 gets MSG_DENIED RPC_MISMATCH naming versions 2 to 2."""
        for rpcvers in (0, 1, 3, 2**32 - 1):
            with self.subTest(rpcvers=rpcvers):
                reply = self.assertRejected(build_call(14, 100003, 3, 0, rpcvers=rpcvers), 14)
                self.assertEqual(
                    (reply.reply_stat, reply.reject_stat, reply.low, reply.high),
                    (MSG_DENIED, RPC_MISMATCH, 2, 2),
                )

    def test_truncated_header(self) -> None:
        """A call cut anywhere after its XID and message type is answered GARBAGE_ARGS."""
        record = build_call(15, 100003, 3, 0, cred=(1, auth_sys()))
        for length in range(8, len(record)):
            with self.subTest(length=length):
                reply = self.assertRejected(record[:length], 15)
                self.assertEqual(
                    (reply.reply_stat, reply.accept_stat), (MSG_ACCEPTED, GARBAGE_ARGS)
                )

    def test_truncated_right_after_xid(self) -> None:
        """A record holding an XID but cut before or inside the message type is answered
        GARBAGE_ARGS: it has an XID to answer and is not a reply (only records too short
        for an XID, and replies, are left unanswered)."""
        record = build_call(17, 100003, 3, 0)
        for length in range(4, 8):
            with self.subTest(length=length):
                reply = self.assertRejected(record[:length], 17)
                self.assertEqual(
                    (reply.reply_stat, reply.accept_stat), (MSG_ACCEPTED, GARBAGE_ARGS)
                )

    def test_oversized_credential(self) -> None:
        """Credential bodies over RFC 5531's 400 bytes are malformed: GARBAGE_ARGS."""
        reply = self.assertRejected(build_call(16, 100003, 3, 0, cred=(1, b"\0" * 404)), 16)
        self.assertEqual(reply.accept_stat, GARBAGE_ARGS)

    def test_not_a_call(self) -> None:
        """A reply message, an unknown message type or a record without XID and type is
        not a call: XdrError, because there is nothing that can be answered."""
        for record in (
            b"",
            b"\0\0\0",
            struct.pack(">II", 1, 1) + b"\0" * 40,
            struct.pack(">II", 1, 2) + b"\0" * 40,
        ):
            with self.subTest(record=record):
                self.assertRaises(XdrError, parse_call, record)

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.binary(max_size=120))
    def test_random_bytes(self, record: bytes) -> None:
        """Arbitrary bytes either parse, raise XdrError, or are rejected with a valid reply.

        Nothing else may escape: the dispatcher handles exactly these outcomes.
        """
        try:
            header, reader = parse_call(record)
        except XdrError:
            return
        except CallRejected as rejected:
            reply = parse_reply(rejected.reply.getvalue())
            self.assertEqual(reply.xid, struct.unpack_from(">I", record)[0])
            return
        self.assertEqual(header.xid, struct.unpack_from(">I", record)[0])
        self.assertEqual(reader.tell(), header.args_offset)
        self.assertLessEqual(header.args_offset, len(record))


class ReplyEncodingTests(SynchronousTestCase):
    """The reply encoders produce exactly the RFC 5531 reply layouts."""

    def test_accepted_success(self) -> None:
        """A SUCCESS reply has a null verifier and is followed by the results."""
        writer = accepted_reply(0x01020304)
        writer.uint(42)
        encoded = writer.getvalue()
        self.assertEqual(encoded, struct.pack(">7I", 0x01020304, 1, 0, 0, 0, 0, 42))
        reply = parse_reply(encoded)
        self.assertEqual((reply.accept_stat, reply.body), (SUCCESS, struct.pack(">I", 42)))

    def test_accepted_errors(self) -> None:
        """Every non-SUCCESS accept_stat other than PROG_MISMATCH is a bare header."""
        for stat in (PROG_UNAVAIL, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR):
            with self.subTest(stat=stat):
                reply = parse_reply(accepted_reply(9, AcceptStat(stat)).getvalue())
                self.assertEqual((reply.xid, reply.accept_stat), (9, stat))

    def test_prog_mismatch(self) -> None:
        """PROG_MISMATCH carries the lowest and highest versions served."""
        reply = parse_reply(prog_mismatch_reply(5, 1, 3).getvalue())
        self.assertEqual(
            (reply.xid, reply.accept_stat, reply.low, reply.high), (5, PROG_MISMATCH, 1, 3)
        )

    def test_rpc_mismatch(self) -> None:
        """RPC_MISMATCH is a denied reply naming RPC version 2 as both low and high."""
        encoded = rpc_mismatch_reply(6).getvalue()
        self.assertEqual(encoded, struct.pack(">6I", 6, 1, 1, 0, 2, 2))

    def test_auth_error(self) -> None:
        """AUTH_ERROR is a denied reply carrying the auth_stat."""
        encoded = auth_error_reply(7, AuthStat.AUTH_TOOWEAK).getvalue()
        self.assertEqual(encoded, struct.pack(">5I", 7, 1, 1, 1, 5))

    def test_enum_values_match_rfc(self) -> None:
        """The enums carry RFC 5531's numbers, which are what goes on the wire."""
        self.assertEqual(
            [int(s) for s in AcceptStat],
            [SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR],
        )
        self.assertEqual((AuthStat.AUTH_BADCRED, AuthStat.AUTH_TOOWEAK), (1, 5))
        self.assertEqual(
            (AuthFlavor.AUTH_NONE, AuthFlavor.AUTH_SYS, AuthFlavor.RPCSEC_GSS), (0, 1, 6)
        )
