"""Every NFSv3 data type codec in :mod:`dittofs.nfs3.types` round-trips, and decoders refuse junk.

The server encodes attributes and decodes ``sattr3``; a client (the one in
:mod:`dittofs.testing`) does the reverse.  Each direction's encoder must be
read back by the other direction's decoder as the value it was given, and
a decoder fed random bytes may only raise ``XdrError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from dittofs.model import Attributes, SetAttributes, WccAttributes
from dittofs.nfs3.types import (
    SERVER_TIME,
    Fattr,
    PreOpAttr,
    decode_fattr3,
    decode_nfstime3,
    decode_post_op_attr,
    decode_post_op_fh3,
    decode_sattr3_with_time_source,
    decode_wcc_data,
    encode_fattr3,
    encode_nfstime3,
    encode_post_op_attr,
    encode_post_op_fh3,
    encode_sattr3,
    encode_wcc_data,
)
from dittofs.rpc.xdr import XdrError, XdrReader, XdrWriter
from dittofs.vocabulary import FileType

UINT32 = st.integers(0, 2**32 - 1)
UINT64 = st.integers(0, 2**64 - 1)
#: Times nfstime3 can carry: unsigned 32-bit seconds, nanoseconds below one second.
TIMES = st.integers(0, 2**32 * 1_000_000_000 - 1)

ATTRIBUTES = st.builds(
    Attributes,
    fileid=UINT64,
    generation=UINT32,
    type=st.sampled_from(FileType),
    mode=st.integers(0, 0o7777),
    nlink=UINT32,
    uid=UINT32,
    gid=UINT32,
    size=UINT64,
    used=UINT64,
    rdev=st.tuples(UINT32, UINT32),
    atime=TIMES,
    mtime=TIMES,
    ctime=TIMES,
)


def encoded(encode: Callable[..., None], *args: Any) -> XdrReader:
    """A reader over what *encode* writes for *args*."""
    writer = XdrWriter()
    encode(writer, *args)
    return XdrReader(b"".join(writer.parts()))


def as_fattr(attributes: Attributes, fsid: int) -> Fattr:
    """The ``fattr3`` a client should decode for *attributes* on the export *fsid*."""
    a = attributes
    return Fattr(
        a.type, a.mode, a.nlink, a.uid, a.gid, a.size, a.used, a.rdev, fsid, a.fileid,
        a.atime, a.mtime, a.ctime,
    )  # fmt: skip


class RoundTripTests(SynchronousTestCase):
    """Encoder then decoder is the identity on what the wire can carry."""

    @given(TIMES)
    def test_nfstime3(self, ns: int) -> None:
        """``nfstime3`` keeps every nanosecond."""
        reader = encoded(encode_nfstime3, ns)
        self.assertEqual(decode_nfstime3(reader), ns)
        self.assertEqual(reader.remaining, 0)

    @given(ATTRIBUTES, UINT64)
    def test_fattr3(self, attributes: Attributes, fsid: int) -> None:
        """``fattr3`` carries everything but the generation, plus the export's fsid."""
        reader = encoded(encode_fattr3, attributes, fsid)
        self.assertEqual(decode_fattr3(reader), as_fattr(attributes, fsid))
        self.assertEqual(reader.remaining, 0)

    @given(st.none() | ATTRIBUTES, UINT64)
    def test_post_op_attr(self, attributes: Attributes | None, fsid: int) -> None:
        """``post_op_attr`` is attributes or nothing."""
        reader = encoded(encode_post_op_attr, attributes, fsid)
        expected = None if attributes is None else as_fattr(attributes, fsid)
        self.assertEqual(decode_post_op_attr(reader), expected)
        self.assertEqual(reader.remaining, 0)

    @given(st.none() | st.builds(WccAttributes, st.none() | ATTRIBUTES, ATTRIBUTES), UINT64)
    def test_wcc_data(self, wcc: WccAttributes | None, fsid: int) -> None:
        """``wcc_data``: size and times before, all attributes after; either may be missing."""
        decoded = decode_wcc_data(reader := encoded(encode_wcc_data, wcc, fsid))
        self.assertEqual(reader.remaining, 0)
        if wcc is None:
            self.assertEqual((decoded.before, decoded.after), (None, None))
            return
        before = wcc.before
        self.assertEqual(
            decoded.before,
            None if before is None else PreOpAttr(before.size, before.mtime, before.ctime),
        )
        self.assertEqual(decoded.after, as_fattr(wcc.after, fsid))

    @given(st.none() | st.binary(max_size=64))
    def test_post_op_fh3(self, handle: bytes | None) -> None:
        """``post_op_fh3`` is a handle of up to 64 bytes, or nothing."""
        reader = encoded(encode_post_op_fh3, handle)
        self.assertEqual(decode_post_op_fh3(reader), handle)
        self.assertEqual(reader.remaining, 0)

    @given(
        st.builds(
            SetAttributes,
            mode=st.none() | UINT32,
            uid=st.none() | UINT32,
            gid=st.none() | UINT32,
            size=st.none() | UINT64,
            atime=st.none() | st.just(SERVER_TIME) | TIMES,
            mtime=st.none() | st.just(SERVER_TIME) | TIMES,
        )
    )
    def test_sattr3(self, changes: SetAttributes) -> None:
        """``sattr3``: what is set arrives set; "server time" arrives as the server's clock."""
        reader = encoded(encode_sattr3, changes)
        decoded, client_time = decode_sattr3_with_time_source(reader)
        self.assertEqual(reader.remaining, 0)
        for field in ("mode", "uid", "gid", "size"):
            self.assertEqual(getattr(decoded, field), getattr(changes, field))
        for field in ("atime", "mtime"):
            sent, received = getattr(changes, field), getattr(decoded, field)
            if sent == SERVER_TIME:
                self.assertIsNotNone(received)
                self.assertGreater(received, 0)
            else:
                self.assertEqual(received, sent)
        self.assertEqual(client_time, any(t not in (None, SERVER_TIME) for t in (
            changes.atime, changes.mtime)))  # fmt: skip


class JunkTests(SynchronousTestCase):
    """A decoder given random bytes answers or raises ``XdrError``, nothing else."""

    @given(st.binary(max_size=200))
    def test_client_side_decoders(self, data: bytes) -> None:
        """The decoders a client uses on replies."""
        for decode in (decode_fattr3, decode_post_op_attr, decode_wcc_data, decode_post_op_fh3):
            with contextlib.suppress(XdrError):
                decode(XdrReader(data))
