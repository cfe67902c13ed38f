"""The ``s3://bucket/prefix?option=value&...`` content store specification, parsed and checked.

Every option of the S3 store travels in the specification's query string, so
the store needs no command-line options of its own and ``--content`` (or the
config file's ``content`` key) says everything.  Parsing is pure and imports
neither boto3 nor the store, so ``dittofs --content s3://...`` is checked
before anything is built.  Credentials never go here: boto3's default chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``~/.aws/credentials``, instance roles) finds them, so they stay out of
process listings and config files.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import attrs

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: The largest NFS WRITE (FSINFO wtmax); the cache must hold a few of them at once.
_MAX_WRITE = 1 * MiB

_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
    "t": 1024 * GiB,
    "tb": 1024 * GiB,
    "tib": 1024 * GiB,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

DURABILITY_LOCAL = "local"
DURABILITY_REMOTE = "remote"


class S3SpecError(ValueError):
    """An ``s3://`` specification is malformed; the message says which part and why."""


def parse_size(text: str, what: str) -> int:
    """Parse ``4MiB``, ``512k``, ``1GiB`` or a plain byte count (binary units throughout)."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise S3SpecError(f"{what}={text!r} is not a size like 4MiB, 512KiB or 1GiB")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def parse_duration(text: str, what: str) -> float:
    """Parse ``30``, ``30s``, ``500ms``, ``5m`` or ``1h`` as seconds."""
    match = _DURATION.match(text)
    if not match:
        raise S3SpecError(f"{what}={text!r} is not a duration like 30s, 500ms, 5m or 1h")
    return float(match.group(1)) * _SECONDS[match.group(2)]


@attrs.frozen(kw_only=True)
class S3Settings:
    """Everything an :class:`~dittofs.stores.s3.content.S3ContentStore` is configured with.

    Sizes are bytes and durations seconds.  ``endpoint`` None means AWS's own
    endpoint for ``region``; ``region`` None lets boto3 decide (environment or
    config file).
    """

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    cache_dir: Path | None = None
    cache_size: int = 1 * GiB
    block_size: int = 4 * MiB
    durability: str = DURABILITY_LOCAL
    #: Block uploads in flight at once (and upload rounds, and block fetches).
    uploads: int = 16
    #: Blocks fetched ahead of a sequential reader.
    readahead: int = 4
    #: How long a partly written block may sit in the cache before it is uploaded anyway.
    flush_delay: float = 2.0
    #: How long a writer waits for cache space while S3 is reachable before NFS3ERR_JUKEBOX.
    write_wait: float = 30.0
    #: How long into an outage a read of uncached data is JUKEBOX ("try later") before IO.
    io_error_after: float = 60.0
    #: How long ``close`` tries to upload what is still only in the cache.
    close_timeout: float = 10.0
    #: What FSSTAT reports as the filesystem's size: object storage has no natural one.
    capacity: int = 1024 * 1024 * GiB
    #: How often, at most, the block objects are listed to recount the space used.
    usage_interval: float = 300.0
    #: Seconds before an S3 request is given up (connect and read each).
    timeout: float = 10.0
    #: Tries per S3 request (botocore's "standard" retries, with backoff) before it fails.
    attempts: int = 3

    def block_key_prefix(self, fileid: int | None = None) -> str:
        """Where block objects live: ``prefix/blocks/`` or one file's ``prefix/blocks/<id>/``."""
        base = f"{self.prefix}blocks/"
        return base if fileid is None else f"{base}{fileid:016x}/"

    def manifest_key(self, fileid: int | None = None) -> str:
        """``prefix/manifests/<id>``, or the folder of all manifests."""
        base = f"{self.prefix}manifests/"
        return base if fileid is None else f"{base}{fileid:016x}"

    def block_key(self, fileid: int, index: int, version: str) -> str:
        """The immutable object holding one version of block *index* of *fileid*."""
        return f"{self.block_key_prefix(fileid)}{index:08x}-{version}"

    @property
    def format_key(self) -> str:
        """The object recording the block size a bucket prefix was created with."""
        return f"{self.prefix}dittofs-s3.json"


_OPTIONS = {
    "endpoint",
    "region",
    "cache_dir",
    "cache_size",
    "block_size",
    "durability",
    "uploads",
    "readahead",
    "flush_delay",
    "write_wait",
    "io_error_after",
    "close_timeout",
    "capacity",
    "usage_interval",
    "timeout",
    "attempts",
}


#: Options given as durations (``30s``, ``5m``).
_DURATIONS = (
    "flush_delay",
    "write_wait",
    "io_error_after",
    "close_timeout",
    "usage_interval",
    "timeout",
)


def _int_option(text: str, what: str, low: int, high: int) -> int:
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise S3SpecError(f"{what}={text!r} must be a whole number from {low} to {high}")
    return int(text)


def parse_s3_spec(spec: str, data_dir: Path | None = None) -> S3Settings:
    """Parse ``s3://bucket[/prefix][?option=value&...]`` into :class:`S3Settings`.

    *data_dir* supplies the default cache directory (``<data-dir>/s3-cache``).
    Raises :class:`S3SpecError` naming the first thing that is wrong.
    """
    parts = urlsplit(spec.strip())
    if parts.scheme.lower() != "s3":
        raise S3SpecError(f"{spec!r} does not start with s3://")
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise S3SpecError(f"{bucket!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
    prefix = parts.path.strip("/")
    if prefix:
        prefix += "/"
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in _OPTIONS:
            raise S3SpecError(f"unknown s3 option {key!r} (known: {', '.join(sorted(_OPTIONS))})")
        options[key] = value
    values: dict[str, object] = {"bucket": bucket, "prefix": prefix}
    if "endpoint" in options:
        endpoint = urlsplit(options["endpoint"])
        if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
            raise S3SpecError(f"endpoint={options['endpoint']!r} is not an http(s) URL")
        values["endpoint"] = options["endpoint"]
    if options.get("region"):
        values["region"] = options["region"]
    if options.get("cache_dir"):
        values["cache_dir"] = Path(options["cache_dir"])
    elif data_dir is not None:
        values["cache_dir"] = Path(data_dir) / "s3-cache"
    for name in ("cache_size", "block_size", "capacity"):
        if name in options:
            values[name] = parse_size(options[name], name)
    for name in _DURATIONS:
        if name in options:
            values[name] = parse_duration(options[name], name)
    if "durability" in options:
        if options["durability"] not in (DURABILITY_LOCAL, DURABILITY_REMOTE):
            raise S3SpecError(f"durability={options['durability']!r} must be local or remote")
        values["durability"] = options["durability"]
    if "uploads" in options:
        values["uploads"] = _int_option(options["uploads"], "uploads", 1, 256)
    if "attempts" in options:
        values["attempts"] = _int_option(options["attempts"], "attempts", 1, 10)
    if "readahead" in options:
        values["readahead"] = _int_option(options["readahead"], "readahead", 0, 64)
    settings = S3Settings(**values)  # type: ignore[arg-type]
    if not 64 * KiB <= settings.block_size <= 1 * GiB:
        raise S3SpecError(f"block_size={settings.block_size} must be from 64KiB to 1GiB")
    floor = 4 * settings.block_size + 4 * _MAX_WRITE
    if settings.cache_size < floor:
        raise S3SpecError(
            f"cache_size={settings.cache_size} must hold at least four blocks and writes "
            f"({floor} bytes with block_size={settings.block_size})"
        )
    if settings.timeout <= 0:
        raise S3SpecError("timeout must be positive")
    return settings
