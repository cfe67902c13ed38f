"""The ``s3://`` content spec: every option parses, and mistakes are usage errors, not crashes.

Pure parsing: no S3, no boto3 import, so ``dittofs --content s3://...`` is
checked before any store is built.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from dittofs.stores import StoreSpecError, check_spec
from dittofs.stores.s3.objects import Manifest, S3Failure
from dittofs.stores.s3.settings import GiB, MiB, S3SpecError, parse_s3_spec


class S3SpecTests(SynchronousTestCase):
    """Parsing ``s3://bucket/prefix?options``."""

    def test_defaults(self) -> None:
        """A bare bucket gets 4 MiB blocks, a 1 GiB cache in the data dir, local durability."""
        settings = parse_s3_spec("s3://my-bucket", Path("/var/lib/dittofs"))
        self.assertEqual(settings.bucket, "my-bucket")
        self.assertEqual(settings.prefix, "")
        self.assertEqual(settings.block_size, 4 * MiB)
        self.assertEqual(settings.cache_size, 1 * GiB)
        self.assertEqual(settings.cache_dir, Path("/var/lib/dittofs/s3-cache"))
        self.assertEqual(settings.durability, "local")
        self.assertEqual(settings.uploads, 16)
        self.assertIsNone(settings.endpoint)

    def test_every_option(self) -> None:
        """The options the docs list all land in the settings, with units."""
        settings = parse_s3_spec(
            "s3://b-1/some/prefix/?endpoint=http://127.0.0.1:8333&region=eu-west-1"
            "&cache_dir=/c&cache_size=2GiB&block_size=8MiB&durability=remote&uploads=32"
            "&readahead=8&flush_delay=500ms&write_wait=1m&io_error_after=2m"
            "&close_timeout=5s&capacity=10TiB&timeout=3&attempts=2&usage_interval=1h"
        )
        self.assertEqual(settings.prefix, "some/prefix/")
        self.assertEqual(settings.endpoint, "http://127.0.0.1:8333")
        self.assertEqual(settings.region, "eu-west-1")
        self.assertEqual(settings.cache_dir, Path("/c"))
        self.assertEqual((settings.cache_size, settings.block_size), (2 * GiB, 8 * MiB))
        self.assertEqual(
            (settings.durability, settings.uploads, settings.readahead), ("remote", 32, 8)
        )
        self.assertEqual((settings.flush_delay, settings.write_wait), (0.5, 60.0))
        self.assertEqual((settings.io_error_after, settings.close_timeout), (120.0, 5.0))
        self.assertEqual(
            (settings.capacity, settings.timeout, settings.attempts), (10 * 1024 * GiB, 3.0, 2)
        )
        self.assertEqual(settings.usage_interval, 3600.0)

    def test_keys(self) -> None:
        """Manifests and blocks live under the prefix, named by hex file id and index."""
        settings = parse_s3_spec("s3://bucket/fs1")
        self.assertEqual(settings.manifest_key(255), "fs1/manifests/00000000000000ff")
        self.assertEqual(
            settings.block_key(255, 3, "abcd"), "fs1/blocks/00000000000000ff/00000003-abcd"
        )

    def test_mistakes(self) -> None:
        """Bad values raise S3SpecError naming what is wrong."""
        for spec, words in [
            ("s3://", "bucket"),
            ("s3://Bad_Bucket", "bucket"),
            ("s3://bucket?colour=blue", "unknown s3 option"),
            ("s3://bucket?block_size=4 furlongs", "block_size"),
            ("s3://bucket?block_size=1KiB", "block_size"),
            ("s3://bucket?cache_size=1MiB", "cache_size"),
            ("s3://bucket?durability=sometimes", "durability"),
            ("s3://bucket?uploads=0", "uploads"),
            ("s3://bucket?endpoint=ftp://x", "endpoint"),
            ("s3://bucket?write_wait=soon", "write_wait"),
        ]:
            with self.assertRaises(S3SpecError) as raised:
                parse_s3_spec(spec)
            self.assertIn(words, str(raised.exception), spec)

    def test_check_content_spec(self) -> None:
        """The command line check accepts good s3 specs and reports bad ones as usage errors."""
        check_spec("content", "s3://bucket/prefix?block_size=1MiB")
        with self.assertRaises(StoreSpecError):
            check_spec("content", "s3://bucket?block_size=lots")


class ManifestTests(SynchronousTestCase):
    """The manifest codec."""

    def test_round_trip(self) -> None:
        """A manifest encodes to compact JSON and decodes to the same thing."""
        manifest = Manifest(size=10 * MiB, block_size=4 * MiB, blocks={0: "aa", 2: "bb"})
        self.assertEqual(Manifest.decode(manifest.encode()), manifest)

    def test_garbage_is_a_failure(self) -> None:
        """Anything that is not a manifest we wrote is S3Failure, never a crash."""
        for data in (b"", b"{}", b"[1]", b'{"v": 9, "size": 1, "block_size": 1, "blocks": []}'):
            with self.assertRaises(S3Failure):
                Manifest.decode(data)
