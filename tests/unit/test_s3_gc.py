"""Tests for :func:`dittofs.stores.s3.gc.collect_garbage`'s progress, over an in-memory bucket.

``dittofs gc`` reads one manifest per file and lists every block: minutes on
a large filesystem, so it reports each phase to a progress bar as
``dittofs fsck`` does.  What it collects is tested against a real S3 in
``tests/unit/test_s3_content.py`` and ``tests/e2e/test_s3_e2e.py``.
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
from dittofs.stores.s3.gc import collect_garbage
from dittofs.stores.s3.objects import ListedObject, Manifest
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


def bucket_with(files: int, strays: int) -> MemoryBucket:
    """*files* files of one block each, and *strays* blocks no manifest names."""
    bucket = MemoryBucket()
    for fileid in range(1, files + 1):
        manifest = Manifest(size=10, block_size=4096, blocks={0: "v1"})
        bucket.objects[SETTINGS.manifest_key(fileid)] = manifest.encode()
        bucket.objects[SETTINGS.block_key(fileid, 0, "v1")] = b"x" * 10
    for stray in range(strays):
        bucket.objects[SETTINGS.block_key(10_000 + stray, 0, "lost")] = b"y"
    return bucket


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

        bucket = bucket_with(files=3, strays=2)
        report = collect_garbage(bucket, SETTINGS, 0.0, progress=record)
        self.assertEqual((report.manifests, report.blocks, report.deleted), (3, 5, 2))
        self.assertEqual(
            [
                (description, total, unit, sum(counted))
                for description, total, unit, counted in phases
            ],
            [
                ("listing manifests", None, "manifest", 3),
                ("reading manifests", 3, "manifest", 3),
                ("listing blocks", None, "block", 5),
                ("deleting blocks", 2, "block", 2),
            ],
        )

    def test_deletes_are_counted_per_request(self) -> None:
        """Blocks are deleted 1000 a request, and the bar moves after each request."""
        self.patch(s3_gc, "DELETE_BATCH", 2)
        bucket = bucket_with(files=0, strays=5)
        advances: list[int] = []

        @contextlib.contextmanager
        def record(description: str, total: int | None, unit: str) -> Iterator[Any]:
            yield advances.append if description == "deleting blocks" else (lambda count: None)

        collect_garbage(bucket, SETTINGS, 0.0, progress=record)
        self.assertEqual(advances, [2, 2, 1])
        self.assertEqual(bucket.delete_requests, 3)
        self.assertEqual(bucket.objects, {})

    def test_bar_draws_each_phase_on_stderr(self) -> None:
        """:func:`dittofs.progress.bar` (what ``dittofs gc`` passes) draws a labelled bar."""
        stderr = io.StringIO()
        self.patch(progress.sys, "stderr", stderr)
        collect_garbage(bucket_with(files=2, strays=1), SETTINGS, 0.0, progress=progress.bar)
        drawn = stderr.getvalue()
        for phase in ("listing manifests", "reading manifests", "listing blocks"):
            self.assertIn(phase, drawn)
        self.assertIn("deleting blocks: 100%", drawn)

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
        bucket = bucket_with(files=1, strays=1)
        report = collect_garbage(bucket, SETTINGS, 0.0)
        self.assertEqual(report.deleted, 1)
        self.assertEqual(stderr.getvalue(), "")
