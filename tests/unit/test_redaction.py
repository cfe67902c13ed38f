"""No password DittoFS is given is written back out: :func:`dittofs.log.redact` and its users.

Store specifications are URLs that may carry credentials, and they come back
in messages from many sides: a mistyped ``--metadata``, libpq quoting the URI
it could not parse, botocore naming its endpoint.  These tests check the one
filter, then each door it guards: DittoFS's log events (strings and
failures), the one-line usage errors of ``twistd dittofs`` and ``dittofs
fsck``, and the ``/ready`` body.  tests/e2e/test_secrets.py does the same
against running processes.
"""

from __future__ import annotations

import io
import json
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from dittofs import cli, tap
from dittofs import log as dittofs_log
from dittofs.errors import NFSError, Status
from dittofs.exports import Export, ExportTable
from dittofs.log import redact
from dittofs.metrics import Metrics
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.web import web_root
from tests.unit.test_log import write_config

SECRET = "Tr0ub4dor3"


class RedactTests(SynchronousTestCase):
    """The filter hides passwords and leaves everything else as it was."""

    def test_url_passwords(self) -> None:
        """The password of ``scheme://user:password@host`` goes; user, host and path stay."""
        cases = {
            f"postgresql://dittofs:{SECRET}@db.example/dittofs": "postgresql://dittofs:***@db.example/dittofs",
            f"redis://:{SECRET}@127.0.0.1:6379/0?prefix=a": "redis://:***@127.0.0.1:6379/0?prefix=a",
            f"rediss://default:{SECRET}@cache": "rediss://default:***@cache",
            # libpq's own error quotes the whole URI, brackets and all.
            f'in URI: "postgres://u:{SECRET}@[::1:5432/test"': 'in URI: "postgres://u:***@[::1:5432/test"',
            # An unencoded "@" in a password: the last "@" ends it, as urllib and libpq read it.
            f"postgresql://u:p@{SECRET}@host/db": "postgresql://u:***@host/db",
            # A URL inside a URL: an S3 spec's endpoint.
            f"s3://bucket/p?endpoint=http://AKID:{SECRET}@127.0.0.1:8333&region=x": (
                "s3://bucket/p?endpoint=http://AKID:***@127.0.0.1:8333&region=x"
            ),
            # Quotes around the URL survive, whatever the password holds.
            f"store 'redis://u:{SECRET}'s@host' failed": "store 'redis://u:***@host' failed",
        }
        for text, expected in cases.items():
            self.assertEqual(redact(text), expected, text)

    def test_secret_parameters(self) -> None:
        """``password=``-like values go, in query strings and libpq keyword strings alike."""
        cases = {
            f"redis://127.0.0.1/0?password={SECRET}&prefix=a": "redis://127.0.0.1/0?password=***&prefix=a",
            f"host=db password={SECRET} dbname=x": "host=db password=*** dbname=x",
            f"'postgresql://db/x?sslpassword={SECRET}'": "'postgresql://db/x?sslpassword=***'",
            f"aws_secret_access_key={SECRET}, region": "aws_secret_access_key=***, region",
            f"(token={SECRET})": "(token=***)",
            # A value runs to the next "&" or space: better hide a neighbour than show a part.
            f"headers x-api-key={SECRET},b=1": "headers x-api-key=***",
            f"Authorization={SECRET} sent": "Authorization=*** sent",
        }
        for text, expected in cases.items():
            self.assertEqual(redact(text), expected, text)

    def test_everything_else_is_untouched(self) -> None:
        """Text without a password comes back identical, user names and addresses included."""
        for text in [
            "postgresql://dittofs@db.example/dittofs",
            "redis://127.0.0.1:6379/0?prefix=export1",
            "s3://bucket/prefix?endpoint=http://127.0.0.1:8333&cache_size=4GiB",
            "Connection from 127.0.0.1:850 closed",
            "user@host:path and a:b, 'quoted'",
            "fs:/srv/content",
        ]:
            self.assertEqual(redact(text), text)

    def test_linear_time(self) -> None:
        """A megabyte of hostile text is redacted in well under a second, not hours.

        Every DittoFS message passes through the filter, and some quote what
        a client sent; a pattern retried from every dot of ``a.a.a...`` would
        make one such message a denial of service (40 KB took 30 s).
        """
        for hostile in ["a." * 500_000, "a://" * 250_000, "password" * 125_000, "ab-" * 333_333]:
            started = time.perf_counter()
            redact(hostile)
            self.assertLess(time.perf_counter() - started, 5.0, hostile[:20])


class LogChainTests(SynchronousTestCase):
    """Events logged by DittoFS reach Twisted's publisher already redacted."""

    def setUp(self) -> None:
        self.log = Logger(observer=dittofs_log.observer, namespace="dittofs.test")

    def test_string_fields(self) -> None:
        """A URL given as a field is redacted in the field and so in the formatted message."""
        url = f"postgresql://u:{SECRET}@h/db"
        with capturedLogs() as events:
            self.log.info("Opening {url} ({count} tries)", url=url, count=2)
        (event,) = events
        self.assertEqual(event["url"], "postgresql://u:***@h/db")
        self.assertEqual(event["count"], 2)
        self.assertEqual(formatEvent(event), "Opening postgresql://u:***@h/db (2 tries)")

    def test_failure_message(self) -> None:
        """A failure quoting the URL is logged with its message redacted and its type kept."""
        error = ValueError(f'invalid URI: "postgres://u:{SECRET}@[::1"')
        with capturedLogs() as events:
            self.log.failure("Could not open the stores", Failure(error))
        (event,) = events
        traceback = event["log_failure"].getTraceback()
        self.assertIn('builtins.ValueError: invalid URI: "postgres://u:***@[::1"', traceback)
        self.assertNotIn(SECRET, traceback)
        self.assertIn(SECRET, str(error))  # the caller's exception itself is not altered
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_clean_events_pass_unchanged(self) -> None:
        """An event with nothing to hide keeps every value, failure included."""
        failure = Failure(ValueError("no such table"))
        with capturedLogs() as events:
            self.log.failure("{procedure} failed", failure, procedure="READ")
        (event,) = events
        self.assertIs(event["log_failure"], failure)
        self.assertEqual(event["procedure"], "READ")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class UsageErrorTests(SynchronousTestCase):
    """A bad spec is quoted back in its usage error, with the password hidden."""

    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def refused(self, run: Any, argv: list[str]) -> str:
        """Run *argv*; it must exit 2 with one line, which must not hold the secret."""
        with self.assertRaises(SystemExit) as raised:
            run(argv)
        self.assertEqual(raised.exception.code, 2)
        output = self.stderr.getvalue()
        self.assertEqual(output.count("\n"), 1, output)
        self.assertNotIn(SECRET, output)
        return output

    def test_option(self) -> None:
        """A mistyped ``--metadata`` URL is named, without its password."""
        options = tap.Options()
        output = self.refused(options.parseOptions, ["--metadata", f"postgresq://u:{SECRET}@h/db"])
        self.assertIn("--metadata: unknown metadata store 'postgresq://u:***@h/db'", output)

    def test_config_file_export(self) -> None:
        """The same for a store of an ``[[exports]]`` table in the config file."""
        path = write_config(
            self, f'[[exports]]\npath = "/a"\nmetadata = "rediss+x://:{SECRET}@cache/0"\n'
        )
        options = tap.Options()
        output = self.refused(options.parseOptions, ["--config", path])
        self.assertIn(f"config {path}: exports[1]: unknown metadata store", output)
        self.assertIn("'rediss+x://:***@cache/0'", output)

    def test_fsck(self) -> None:
        """``dittofs fsck`` takes the server's options and hides the password the same way."""
        output = self.refused(cli.main, ["fsck", "--metadata", f"mysql://u:{SECRET}@h/db"])
        self.assertIn("'mysql://u:***@h/db'", output)


class _Unparsable:
    """A metadata store whose every call fails the way psycopg does on a URL it cannot parse."""

    name = "postgresql"

    def root(self) -> Deferred[None]:
        """Fail, quoting the URL as libpq does."""
        message = f'postgresql: invalid URI: "postgresql://u:{SECRET}@[::1"'
        return fail(NFSError(Status.JUKEBOX, message))


class ReadyTests(SynchronousTestCase):
    """``/ready`` explains a failing store with its error, minus the password."""

    def test_failed_check_is_redacted(self) -> None:
        """The 503 body names the store and its error; the password is not in it."""
        export = Export(1, b"/export", _Unparsable(), MemoryContentStore())  # type: ignore[arg-type]
        root = web_root(Metrics(), ExportTable([export]), Clock())
        request = DummyRequest([b"ready"])
        self.assertEqual(getChildForRequest(root, request).render(request), NOT_DONE_YET)
        self.assertEqual(request.responseCode, 503)
        body = json.loads(b"".join(request.written))
        check = body["checks"]["/export metadata (postgresql)"]
        self.assertTrue(check.startswith("failed: NFSError: "), check)
        self.assertIn('"postgresql://u:***@[::1"', check)
        self.assertNotIn(SECRET, check)
