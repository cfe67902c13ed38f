"""Tests for :mod:`dittofs.stores.s3.gc`'s walk and progress, over an in-memory bucket.

``dittofs gc`` walks every key the block maps name beside the bucket's
listing: minutes on a large filesystem, so it reports each phase to a
progress bar as ``dittofs fsck`` does.  What it collects is tested against a
real S3 in ``tests/unit/test_s3_content.py`` and ``tests/e2e/test_s3_e2e.py``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from dittofs import progress
from dittofs.stores.s3 import gc as s3_gc
from dittofs.stores.s3.gc import NothingNamed, check_blocks, collect_garbage
from dittofs.stores.s3.objects import ListedObject
from dittofs.stores.s3.settings import parse_s3_spec

SETTINGS = parse_s3_spec("s3://bucket/fs")
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


class MemoryBucket:
    """The three calls gc makes of an ``ObjectStore``, over a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.delete_requests = 0

    def list(self, prefix: str) -> Iterator[ListedObject]:
        """Every object below *prefix*, all of them old."""
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ListedObject(key, len(self.objects[key]), LONG_AGO)

    def get(self, key: str) -> bytes:
        """The object's bytes."""
        return self.objects[key]

    def delete(self, keys: list[str]) -> None:
        """Delete *keys* in one request."""
        self.delete_requests += 1
        for key in keys:
            del self.objects[key]


def bucket_with(files: int, strays: int) -> tuple[MemoryBucket, list[str]]:
    """*files* files of one block each, and *strays* objects no map names; the named keys."""
    bucket = MemoryBucket()
    named = []
    for fileid in range(1, files + 1):
        key = SETTINGS.block_key(fileid, 0, "v1")
        bucket.objects[key] = b"x" * 10
        named.append(key)
    for stray in range(strays):
        bucket.objects[SETTINGS.block_key(10_000 + stray, 0, "lost")] = b"y"
    return bucket, sorted(named)


class ProgressTests(SynchronousTestCase):
    """Each phase of a collection is reported with its total and every item counted once."""

    def test_every_phase_is_reported(self) -> None:
        """Listing and reading the manifests, listing and deleting the blocks: each counts all.

        The totals are known where they can be (after a listing), so the bars
        for reading and deleting show how far there is to go.
        """
        phases: list[tuple[str, int | None, str, list[int]]] = []

        @contextlib.contextmanager
        def record(description: str, total: int | None, unit: str) -> Iterator[Any]:
            counted: list[int] = []
            phases.append((description, total, unit, counted))
            yield counted.append

        bucket, named = bucket_with(files=3, strays=2)
        report = collect_garbage(bucket, SETTINGS, lambda: named, grace=0.0, progress=record)
        self.assertEqual((report.named, report.blocks, report.deleted), (3, 5, 2))
        self.assertEqual(
            [
                (description, total, unit, sum(counted))
                for description, total, unit, counted in phases
            ],
            [
                ("walking the maps and the bucket", None, "object", 5),
                ("deleting objects", 2, "object", 2),
            ],
        )

    def test_deletes_are_counted_per_request(self) -> None:
        """Blocks are deleted 1000 a request, and the bar moves after each request."""
        self.patch(s3_gc, "DELETE_BATCH", 2)
        bucket, named = bucket_with(files=1, strays=5)
        advances: list[int] = []

        @contextlib.contextmanager
        def record(description: str, total: int | None, unit: str) -> Iterator[Any]:
            yield advances.append if description == "deleting objects" else (lambda count: None)

        collect_garbage(bucket, SETTINGS, lambda: named, grace=0.0, progress=record)
        self.assertEqual(advances, [2, 2, 1])
        self.assertEqual(bucket.delete_requests, 3)
        self.assertEqual(list(bucket.objects), named)

    def test_maps_that_name_nothing_delete_nothing(self) -> None:
        """Old objects and empty maps: the wrong metadata store, surely; nothing goes."""
        bucket, _ = bucket_with(files=2, strays=1)
        before = dict(bucket.objects)
        with self.assertRaises(NothingNamed) as raised:
            collect_garbage(bucket, SETTINGS, list, grace=0.0)
        self.assertIn("is the metadata store the gateways' own?", str(raised.exception))
        self.assertEqual(bucket.objects, before)

    def test_bar_draws_each_phase_on_stderr(self) -> None:
        """:func:`dittofs.progress.bar` (what ``dittofs gc`` passes) draws a labelled bar."""
        stderr = io.StringIO()
        self.patch(progress.sys, "stderr", stderr)
        bucket, named = bucket_with(files=2, strays=1)
        collect_garbage(bucket, SETTINGS, lambda: named, grace=0.0, progress=progress.bar)
        drawn = stderr.getvalue()
        self.assertIn("walking the maps and the bucket", drawn)
        self.assertIn("deleting objects: 100%", drawn)

    def test_quiet_bar_draws_nothing(self) -> None:
        """``--quiet`` (``shown=False``) leaves stderr empty."""
        stderr = io.StringIO()
        self.patch(progress.sys, "stderr", stderr)
        with progress.bar("checking", 10, "item", shown=False) as advance:
            advance(10)
        self.assertEqual(stderr.getvalue(), "")

    def test_unwatched_by_default(self) -> None:
        """The server's own collection (no *progress*) draws nothing."""
        stderr = io.StringIO()
        self.patch(progress.sys, "stderr", stderr)
        bucket, named = bucket_with(files=1, strays=1)
        report = collect_garbage(bucket, SETTINGS, lambda: named, grace=0.0)
        self.assertEqual(report.deleted, 1)
        self.assertEqual(stderr.getvalue(), "")


class WalkTests(SynchronousTestCase):
    """The maps' keys and the bucket's listing are merged in byte order, never held whole."""

    def test_named_listed_and_both(self) -> None:
        """A named key S3 lacks is missing; a listed key no map names is unowned."""
        bucket, named = bucket_with(files=3, strays=2)
        lost = SETTINGS.block_key(5, 0, "gone")
        del bucket.objects[named[1]]
        found = check_blocks(bucket, SETTINGS, lambda: sorted([*named, lost]))
        self.assertEqual(
            found.missing, sorted([(2, 0, named[1]), (5, 0, lost)], key=lambda m: m[2])
        )
        self.assertEqual((found.named, found.blocks, found.unowned), (4, 4, 2))
        self.assertEqual(found.unowned_bytes, 2)

    def test_byte_order_with_upper_case(self) -> None:
        """Keys are compared as bytes, as S3 lists them (``B`` before ``a``)."""
        bucket = MemoryBucket()
        keys = sorted([SETTINGS.block_key(1, 0, "a"), SETTINGS.block_key(1, 0, "B")])
        for key in keys:
            bucket.objects[key] = b"z"
        found = check_blocks(bucket, SETTINGS, lambda: sorted(keys, key=str.encode))
        self.assertEqual((found.missing, found.unowned), ([], 0))
