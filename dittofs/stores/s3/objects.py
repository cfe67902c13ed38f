"""Blocking S3 access for the S3 content store: one boto3 client, three kinds of failure.

Everything here blocks and is called from the store's worker threads, never
from the reactor.  botocore's many exceptions are sorted into three, because
the store reacts to each differently:

* :class:`S3Unavailable`: the service could not be reached or said "later"
  (connection refused or reset, timeouts, 5xx, SlowDown).  Data stays in the
  cache and clients are told NFS3ERR_JUKEBOX ("try again soon").
* :class:`S3NotFound`: the object does not exist (a file never written).
* :class:`S3Failure`: anything else (access denied, no such bucket); retrying
  will not help, so clients get NFS3ERR_IO and the log says why.

The manifest codec lives here too, for ``dittofs s3-migrate``: before block
maps, a manifest was the small JSON object in the bucket that listed, for one
file, its size and the object holding each block.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import attrs

from dittofs.stores.s3.settings import S3Settings

#: S3 error codes that mean "the service is there but cannot answer now".
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "503",
        "500",
        "502",
        "504",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

MANIFEST_VERSION = 1

_session: Any = None
_session_lock = threading.Lock()


class S3Unavailable(Exception):
    """S3 could not be reached or asked us to come back later."""


class S3NotFound(Exception):
    """The object asked for does not exist."""


class S3Failure(Exception):
    """S3 refused the request for a reason retrying will not fix."""


@attrs.frozen
class ListedObject:
    """One object from a listing: its key, size and last-modified time (UTC)."""

    key: str
    size: int
    modified: datetime


@attrs.define
class Manifest:
    """A file's size and, for each block index that has content, the version naming its object.

    Indices missing from ``blocks`` are holes (zeros up to ``size``).
    ``block_size`` is recorded so a store reopened with another block size
    still reads old files correctly.
    """

    size: int
    block_size: int
    blocks: dict[int, str] = attrs.field(factory=dict)

    def encode(self) -> bytes:
        """Compact JSON: ``{"v":1,"size":..,"block_size":..,"blocks":[[index,"version"],..]}``."""
        body = {
            "v": MANIFEST_VERSION,
            "size": self.size,
            "block_size": self.block_size,
            "blocks": sorted([index, version] for index, version in self.blocks.items()),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse a manifest; :class:`S3Failure` if it is not one this code wrote."""
        try:
            body = json.loads(data)
            if body["v"] != MANIFEST_VERSION:
                raise S3Failure(f"manifest version {body['v']} is not {MANIFEST_VERSION}")
            return cls(
                size=int(body["size"]),
                block_size=int(body["block_size"]),
                blocks={int(index): str(version) for index, version in body["blocks"]},
            )
        except (ValueError, KeyError, TypeError) as error:
            raise S3Failure(f"unreadable manifest: {error}") from error


def _classify(error: Exception) -> Exception:
    """Turn a botocore/urllib3 exception into one of our three kinds."""
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    if isinstance(error, ClientError):
        response: dict[str, Any] = error.response
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
            return S3NotFound(code or "404")
        if code in _TRANSIENT_CODES or status >= 500:
            return S3Unavailable(f"{code or status}: {error}")
        return S3Failure(str(error))
    return S3Unavailable(f"{type(error).__name__}: {error}")


class ObjectStore:
    """A thread-safe boto3 S3 client bound to one bucket, raising only our three errors."""

    def __init__(self, settings: S3Settings, max_connections: int) -> None:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        self.settings = settings
        self.bucket = settings.bucket
        config = Config(
            connect_timeout=settings.timeout,
            read_timeout=settings.timeout,
            retries={"max_attempts": settings.attempts, "mode": "standard"},
            max_pool_connections=max_connections,
            s3={"addressing_style": "path"} if settings.endpoint else {},
            tcp_keepalive=True,
        )
        # Sessions are not thread-safe, and building one reloads botocore's service models
        # (a quarter of a second): one shared session, used under a lock, makes the clients.
        global _session  # noqa: PLW0603 - a process-wide cache, guarded by _session_lock
        with _session_lock:
            if _session is None:
                _session = boto3.session.Session()
            self._client: Any = _session.client(
                "s3", endpoint_url=settings.endpoint, region_name=settings.region, config=config
            )

    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError, OSError) as error:
            raise _classify(error) from error
        except Exception as error:
            # urllib3 errors surface as themselves when botocore does not wrap them.
            if type(error).__module__.startswith("urllib3"):
                raise _classify(error) from error
            raise

    def probe(self) -> None:
        """Cheaply check that the bucket answers (HEAD bucket)."""
        self._call("head_bucket")

    def put(self, key: str, data: bytes | memoryview) -> None:
        """Store *data* as *key* in one PUT (atomic: readers see the old or the new object)."""
        self._call("put_object", Key=key, Body=bytes(data))

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or bytes ``start``..``end`` (exclusive) with a ranged GET."""
        kwargs: dict[str, Any] = {"Key": key}
        if start is not None and end is not None:
            if end <= start:
                return b""
            kwargs["Range"] = f"bytes={start}-{end - 1}"
        response = self._call("get_object", **kwargs)
        try:
            body: bytes = response["Body"].read()
        except Exception as error:
            raise _classify(error) from error
        return body

    def delete(self, keys: list[str]) -> None:
        """Delete *keys* (absent ones are fine), 1000 per request as S3 allows."""
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            if len(batch) == 1:
                self._call("delete_object", Key=batch[0])
                continue
            response = self._call(
                "delete_objects",
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                raise S3Failure(f"could not delete {len(errors)} objects: {errors[0]}")

    def list(self, prefix: str) -> Iterator[ListedObject]:
        """Every object below *prefix*, page by page (1000 keys per request)."""
        token: str | None = None
        for _ in range(10_000_000):
            kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            response = self._call("list_objects_v2", **kwargs)
            for item in response.get("Contents", []):
                yield ListedObject(item["Key"], int(item["Size"]), item["LastModified"])
            if not response.get("IsTruncated"):
                return
            token = response.get("NextContinuationToken")
            if not token:
                return

    def create_bucket(self) -> None:
        """Create the bucket (for tests and first runs); an existing one of ours is fine."""
        try:
            self._call("create_bucket")
        except S3Failure as error:
            if "BucketAlreadyOwnedByYou" not in str(error) and "BucketAlreadyExists" not in str(
                error
            ):
                raise
