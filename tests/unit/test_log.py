"""Tests for :mod:`dittofs.log`: ``--log-format``, the runners it reaches, and JSON lines.

``--log-format json`` only matters if twistd and twist really pick it up, so
the runner tests parse a command line with the runners' own option classes,
exactly as ``twistd dittofs ...`` and ``python -m twisted dittofs ...`` do,
and look at what those runners will read when they start logging.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.application.twist._options import TwistOptions
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel, textFileLogObserver
from twisted.python.failure import Failure
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from dittofs import log as dittofs_log
from tests.unit.test_tap import MEMORY, parse


class ExitCapture(SynchronousTestCase):
    """Runs a parse expected to fail and returns its one stderr line."""

    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def usage_error(self, parse: Callable[[list[str]], object], argv: list[str]) -> str:
        """Parse *argv* with *parse*; it must exit 2 after exactly one line on stderr."""
        with self.assertRaises(SystemExit) as raised:
            parse(argv)
        self.assertEqual(raised.exception.code, 2)
        output = self.stderr.getvalue()
        self.assertEqual(output.count("\n"), 1, output)
        self.assertTrue(output.startswith("dittofs: "), output)
        return output


def write_config(case: SynchronousTestCase, text: str) -> str:
    """Write a TOML config file in a private temporary directory; return its path."""
    descriptor, path = tempfile.mkstemp(prefix="dittofs-log-test-", suffix=".toml")
    case.addCleanup(os.remove, path)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    return path


class LogFormatOptionTests(ExitCapture):
    """``--log-format`` and the ``log-format`` key are checked like every other option."""

    def test_default_is_text(self) -> None:
        """With nothing said the format is ``text``: today's human-readable twistd output."""
        self.assertEqual(parse(MEMORY)["log-format"], "text")

    def test_json_accepted_in_any_case(self) -> None:
        """``json`` is accepted on the command line (any case, as levels are) and as a key."""
        self.assertEqual(parse(["--log-format", "JSON"])["log-format"], "JSON")
        path = write_config(self, 'log-format = "json"\n')
        self.assertEqual(parse(["--config", path])["log-format"], "json")

    def test_bad_value_on_the_command_line(self) -> None:
        """A format that does not exist is one line naming the option and the choices."""
        output = self.usage_error(parse, ["--log-format", "xml"])
        self.assertEqual(output, "dittofs: --log-format: must be one of text, json, got 'xml'\n")

    def test_bad_value_in_the_config_file(self) -> None:
        """In the config file the line names the file and the key."""
        path = write_config(self, 'log-format = "yaml"\n')
        output = self.usage_error(parse, ["--config", path])
        self.assertEqual(
            output,
            f"dittofs: config {path}: key 'log-format': must be one of text, json, got 'yaml'\n",
        )

    def test_config_value_must_be_a_string(self) -> None:
        """``log-format = true`` is refused for its type before its value is looked at."""
        path = write_config(self, "log-format = true\n")
        output = self.usage_error(parse, ["--config", path])
        self.assertIn(f"config {path}: key 'log-format' must be a string", output)


def parse_twistd(argv: list[str]) -> ServerOptions:
    """Parse a ``twistd`` command line with twistd's own options class."""
    options = ServerOptions()
    options.parseOptions(argv)
    return options


class TwistdTests(ExitCapture):
    """``twistd ... dittofs --log-format json`` hands twistd a ``--logger`` writing JSON lines."""

    def setUp(self) -> None:
        super().setUp()
        # The factory twistd will call records where to log; keep each test's to itself.
        self.patch(dittofs_log.twistd_json_log, "logfile", None)

    def test_json_takes_twistds_logfile(self) -> None:
        """The logger factory writes where twistd's ``--logfile`` says."""
        argv = [
            "-n",
            "--pidfile=",
            "--logfile",
            "/var/log/d.json",
            "dittofs",
            "--log-format",
            "json",
        ]
        options = parse_twistd(argv + MEMORY)
        self.assertIs(options["logger"], dittofs_log.twistd_json_log)
        self.assertEqual(dittofs_log.twistd_json_log.logfile, "/var/log/d.json")

    def test_json_on_stdout_with_nodaemon(self) -> None:
        """With ``-n`` and no ``--logfile`` the JSON lines go to stdout, as twistd's text does."""
        options = parse_twistd(["-n", "--pidfile=", "dittofs", "--log-format", "json", *MEMORY])
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        observer = options["logger"]()
        Logger(observer=observer).info("hello {who}", who="world")
        (line,) = stdout.getvalue().splitlines()
        self.assertEqual(json.loads(line)["who"], "world")

    def test_daemon_defaults_to_twistd_log(self) -> None:
        """A daemonizing twistd with no ``--logfile`` logs to ``twistd.log``, JSON or not."""
        parse_twistd(["--pidfile=", "dittofs", "--log-format", "json", *MEMORY])
        self.assertEqual(dittofs_log.twistd_json_log.logfile, "twistd.log")

    def test_daemon_cannot_log_json_to_stdout(self) -> None:
        """twistd refuses ``--logfile -`` when it daemonizes; so does ``--log-format json``."""
        argv = ["--logfile", "-", "--pidfile=", "dittofs", "--log-format", "json", *MEMORY]
        output = self.usage_error(parse_twistd, argv)
        self.assertIn("--log-format: twistd cannot log to stdout once it has daemonized", output)

    def test_json_with_syslog_is_refused(self) -> None:
        """twistd's ``--syslog`` writes text: asking for JSON too is a usage error."""
        argv = ["-n", "--syslog", "--pidfile=", "dittofs", "--log-format", "json", *MEMORY]
        output = self.usage_error(parse_twistd, argv)
        self.assertIn("--log-format: twistd's --logger or --syslog already chooses", output)

    def test_text_leaves_twistd_alone(self) -> None:
        """The default format changes nothing: twistd keeps its own text observer."""
        options = parse_twistd(["-n", "--pidfile=", "dittofs", *MEMORY])
        self.assertIsNone(options["logger"])


def parse_twist(argv: list[str]) -> TwistOptions:
    """Parse a ``python -m twisted`` command line with twist's own options class."""
    options = TwistOptions()
    options["reactor"] = MemoryReactorClock()  # twist would install the global reactor
    options.parseOptions(argv)
    return options


class TwistTests(SynchronousTestCase):
    """``python -m twisted ... dittofs`` gets the format and a level that lets DEBUG through."""

    def test_json_overrides_twists_format(self) -> None:
        """DittoFS's ``--log-format json`` wins over twist's own ``--log-format text``."""
        options = parse_twist(["--log-format", "text", "dittofs", "--log-format", "json", *MEMORY])
        self.assertIs(options["fileLogObserverFactory"], dittofs_log.JsonLinesObserver)

    def test_debug_lowers_twists_level(self) -> None:
        """twist filters every event at its own level (info): ``--log-level DEBUG`` lowers it."""
        options = parse_twist(["dittofs", "--log-level", "DEBUG", *MEMORY])
        self.assertEqual(options["logLevel"], LogLevel.debug)

    def test_quieter_level_keeps_twists(self) -> None:
        """A DittoFS level above twist's leaves twist's threshold for Twisted's own messages."""
        options = parse_twist(["--log-level", "debug", "dittofs", "--log-level", "ERROR", *MEMORY])
        self.assertEqual(options["logLevel"], LogLevel.debug)

    def test_text_leaves_twists_format(self) -> None:
        """The default format is whatever twist was told."""
        options = parse_twist(["--log-format", "text", "dittofs", *MEMORY])
        self.assertIs(options["fileLogObserverFactory"], textFileLogObserver)


class JsonLinesObserverTests(SynchronousTestCase):
    """Each event is one line of JSON whose values are fields of their own."""

    def setUp(self) -> None:
        self.out = io.StringIO()
        self.log = Logger(observer=dittofs_log.JsonLinesObserver(self.out), namespace="test")

    def lines(self) -> list[dict[str, Any]]:
        """Every line written, each parsed as JSON (a line that is not JSON fails the test)."""
        text = self.out.getvalue()
        self.assertTrue(text.endswith("\n"))
        self.assertNotIn("\x1e", text)  # JSON lines, not RFC 7464 sequences
        return [json.loads(line) for line in text.splitlines()]

    def test_fields_are_fields(self) -> None:
        """A per-call event keeps xid, procedure, status and duration as typed JSON values."""
        self.log.debug(
            "{host} xid {xid} {program} {procedure}: status {status} in {ms:.3f} ms",
            host="127.0.0.1",
            xid=7,
            program="nfs",
            procedure="GETATTR",
            status=0,
            ms=0.25,
        )
        (line,) = self.lines()
        self.assertEqual(
            (line["xid"], line["procedure"], line["status"], line["ms"], line["host"]),
            (7, "GETATTR", 0, 0.25, "127.0.0.1"),
        )
        self.assertEqual(line["log_level"]["name"], "debug")
        self.assertEqual(line["log_namespace"], "test")
        self.assertEqual(line["text"], "127.0.0.1 xid 7 nfs GETATTR: status 0 in 0.250 ms")

    def test_failure_keeps_its_message(self) -> None:
        """A failure's message (which eventAsJSON drops) is in ``text``, under its traceback."""
        self.log.failure("Could not open the stores", Failure(ValueError("the disk is on fire")))
        (line,) = self.lines()
        self.assertIn("Could not open the stores\nTraceback", line["text"])
        self.assertIn("builtins.ValueError: the disk is on fire", line["text"])
        self.assertEqual(line["log_failure"]["type"]["__name__"], "ValueError")

    def test_unserializable_values_do_not_break_the_line(self) -> None:
        """Objects JSON cannot hold become markers; the line is still one JSON object."""
        self.log.info("object {thing!r}", thing=object())
        (line,) = self.lines()
        self.assertEqual(line["thing"], {"unpersistable": True})
        self.assertTrue(str(line["text"]).startswith("object <object object at "))
