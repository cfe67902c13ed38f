"""Tests for :mod:`dittofs.tap`: options, TOML configuration and the service they build.

A bad value must stop DittoFS with one line naming the option or file and exit
status 2, before anything listens; ``makeService`` is driven with a
``MemoryReactorClock`` so "listens where asked" is checked without sockets.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import platform
import shutil
import signal
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.copyright import version as twisted_version
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogLevel, capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dittofs import cli, tap
from dittofs import log as dittofs_log
from dittofs.config import default_export_id
from dittofs.rpc.protocol import RpcServerFactory
from dittofs.stores import build_store
from dittofs.stores.content.memory import MemoryContentStore
from dittofs.stores.metadata.memory import MemoryMetadataStore
from tests.unit.test_message import (
    SUCCESS,
    build_call,
    parse_reply,
    record_mark,
    split_records,
    xdr_opaque,
)

MEMORY = ["--metadata", "memory", "--content", "memory"]
ROOT = Path(__file__).resolve().parents[2]


class TempDirMixin(SynchronousTestCase):
    """A private temporary directory, removed after the test (never in the source tree)."""

    def tempdir(self) -> str:
        """Create and return a temporary directory for this test."""
        path = tempfile.mkdtemp(prefix="dittofs-tap-test-")
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path

    def write_config(self, text: str) -> str:
        """Write a TOML config file and return its path."""
        path = os.path.join(self.tempdir(), "dittofs.toml")
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        return path


def parse(argv: list[str]) -> tap.Options:
    """Parse *argv* with a fresh Options."""
    options = tap.Options()
    options.parseOptions(argv)
    return options


class OptionsTests(TempDirMixin):
    """Defaults, the config file and the command line merge in that order of precedence."""

    def test_defaults(self) -> None:
        """With no arguments every key takes its documented default."""
        options = parse([])
        self.assertEqual(options["listen"], "tcp:12049:interface=127.0.0.1")
        self.assertEqual(options["export"], "/export")
        self.assertEqual(options["log-level"], "INFO")
        for key, value in tap.DEFAULTS.items():
            if key != "workers":  # auto, resolved to a count: see test_workers_...
                self.assertEqual(options[key], value, key)

    def test_command_line(self) -> None:
        """Every long option sets its key."""
        options = parse(
            [
                "--listen",
                "tcp:2049:interface=0.0.0.0",
                "--export",
                "/data",
                "--metadata",
                "memory",
                "--content",
                "memory",
                "--log-level",
                "debug",
            ]
        )
        self.assertEqual(options["listen"], "tcp:2049:interface=0.0.0.0")
        self.assertEqual(options["export"], "/data")
        self.assertEqual((options["metadata"], options["content"]), ("memory", "memory"))
        self.assertEqual(options["log-level"].upper(), "DEBUG")

    def test_short_options(self) -> None:
        """The short forms -l, -e and -m work as their long forms."""
        options = parse(["-l", "tcp:2050", "-e", "/short", "-m", "memory"])
        self.assertEqual(
            (options["listen"], options["export"], options["metadata"]),
            ("tcp:2050", "/short", "memory"),
        )

    def test_config_file(self) -> None:
        """Every key of the TOML file is used when the command line does not set it."""
        path = self.write_config(
            'listen = "tcp:3049:interface=127.0.0.2"\n'
            'export = "/from-config"\n'
            'metadata = "memory"\n'
            'content = "memory"\n'
            'log-level = "WARN"\n'
        )
        options = parse(["--config", path])
        self.assertEqual(options["listen"], "tcp:3049:interface=127.0.0.2")
        self.assertEqual(options["export"], "/from-config")
        self.assertEqual((options["metadata"], options["content"]), ("memory", "memory"))
        self.assertEqual(options["log-level"], "WARN")

    def test_command_line_wins_over_config(self) -> None:
        """An option given on the command line overrides the same key in the file."""
        path = self.write_config(
            'listen = "tcp:3049"\nexport = "/from-config"\nlog-level = "WARN"\n'
        )
        options = parse(["--config", path, "--listen", "tcp:4049", "--log-level", "ERROR"])
        self.assertEqual(options["listen"], "tcp:4049")
        self.assertEqual(options["log-level"], "ERROR")
        self.assertEqual(options["export"], "/from-config")

    def test_content_path_from_config(self) -> None:
        """``content-path`` in the file is shorthand for ``content = "fs:PATH"``."""
        directory = self.tempdir()
        path = self.write_config(f'content-path = "{directory}"\n')
        self.assertEqual(parse(["--config", path])["content"], f"fs:{directory}")

    def test_content_path_on_command_line(self) -> None:
        """``--content-path`` on the command line overrides ``content`` from the file."""
        directory = self.tempdir()
        path = self.write_config('content = "memory"\n')
        options = parse(["--config", path, "--content-path", directory])
        self.assertEqual(options["content"], f"fs:{directory}")

    def test_command_line_content_wins_over_config_content_path(self) -> None:
        """``--content`` on the command line beats ``content-path`` from the file.

        The documented rule is that the command line wins over the file,
        whichever spelling of the content store each uses.
        """
        path = self.write_config(f'content-path = "{self.tempdir()}"\n')
        options = parse(["--config", path, "--content", "memory"])
        self.assertEqual(options["content"], "memory")


class VersionTests(SynchronousTestCase):
    """``--version`` prints DittoFS's version (from its package metadata), not Twisted's."""

    def version_line(self, options: usage.Options, argv: list[str]) -> str:
        """What parsing *argv* prints on stdout; it must exit 0."""
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        with self.assertRaises(SystemExit) as exited:
            options.parseOptions(argv)
        self.assertEqual(exited.exception.code, 0)
        return stdout.getvalue()

    def test_version_is_dittofs_own(self) -> None:
        """``twistd dittofs --version``, ``dittofs --version`` and ``dittofs fsck --version``
        print the installed distribution's version, the one pyproject.toml declares."""
        with open(ROOT / "pyproject.toml", "rb") as file:
            declared = tomllib.load(file)["project"]["version"]
        self.assertEqual(importlib.metadata.version("dittofs"), declared)
        expected = (
            f"dittofs {declared} (Twisted {twisted_version}, Python {platform.python_version()})\n"
        )
        self.assertEqual(self.version_line(tap.Options(), ["--version"]), expected)
        self.assertEqual(self.version_line(cli.CommandOptions(), ["--version"]), expected)
        self.assertEqual(self.version_line(cli.CommandOptions(), ["fsck", "--version"]), expected)

    def test_help_says_whose_version(self) -> None:
        """The option's help no longer promises Twisted's version."""
        self.assertIn("Display DittoFS's version and exit.", str(tap.Options()))
        self.assertIn("Display DittoFS's version and exit.", str(cli.CommandOptions()))


class UsageErrorTests(TempDirMixin):
    """Bad values exit with status 2 and exactly one line naming what is wrong."""

    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def assertUsageError(self, argv: list[str], *names: str) -> str:
        """Parsing *argv* exits 2 with one stderr line that contains every one of *names*."""
        try:
            parse(argv)
        except SystemExit as exit_:
            self.assertEqual(exit_.code, 2)
        except Exception as error:  # report, rather than crash on, a leaked exception
            self.fail(f"{type(error).__name__} escaped instead of a usage error: {error}")
        else:
            self.fail(f"{argv} was accepted")
        output = self.stderr.getvalue()
        self.assertEqual(output.count("\n"), 1, output)
        self.assertTrue(output.endswith("\n"), output)
        self.assertTrue(output.startswith("dittofs: "), output)
        for name in names:
            self.assertIn(name, output)
        return output

    def test_relative_export(self) -> None:
        """An export path must be absolute."""
        self.assertUsageError(["--export", "data"], "--export")

    def test_overlong_export(self) -> None:
        """An export path longer than MOUNT's 1024 bytes could never be mounted."""
        self.assertUsageError(["--export", "/" + "x" * 1024], "--export")

    def test_unknown_metadata_store(self) -> None:
        """An unknown metadata backend is named as a bad --metadata."""
        self.assertUsageError(["--metadata", "floppy"], "--metadata")

    def test_unknown_content_store(self) -> None:
        """An unknown content backend is named as a bad --content."""
        self.assertUsageError(["--content", "floppy"], "--content")

    def test_bad_log_level(self) -> None:
        """Log levels are DEBUG, INFO, WARN, ERROR (and CRITICAL)."""
        self.assertUsageError(["--log-level", "LOUD"], "--log-level")

    def test_unknown_option(self) -> None:
        """An unknown command-line option is one line, not the whole usage text."""
        self.assertUsageError(["--lissen", "tcp:1"], "lissen")

    def test_unknown_endpoint_type(self) -> None:
        """An endpoint type Twisted does not know is reported against --listen."""
        self.assertUsageError(["--listen", "bogus:1"], "--listen")

    def test_endpoint_bad_port(self) -> None:
        """A port that is not a number is reported against --listen."""
        self.assertUsageError(["--listen", "tcp:notaport"], "--listen")

    def test_endpoint_missing_port(self) -> None:
        """``tcp`` without a port is reported against --listen, not as a traceback."""
        self.assertUsageError(["--listen", "tcp"], "--listen")

    def test_endpoint_unknown_argument(self) -> None:
        """A misspelt endpoint argument is reported against --listen, not as a traceback."""
        self.assertUsageError(["--listen", "tcp:2049:interfce=127.0.0.1"], "--listen")

    def test_missing_config_file(self) -> None:
        """A config file that does not exist is named."""
        path = os.path.join(self.tempdir(), "absent.toml")
        self.assertUsageError(["--config", path], path)

    def test_config_syntax_error(self) -> None:
        """A TOML syntax error names the file."""
        path = self.write_config('listen = "tcp:1\nexport = \n')
        self.assertUsageError(["--config", path], path)

    def test_config_unknown_key(self) -> None:
        """A misspelt key names the file and the key."""
        path = self.write_config('lissen = "tcp:1"\n')
        self.assertUsageError(["--config", path], path, "lissen")

    def test_config_non_string_value(self) -> None:
        """Values are strings; a number or a table is refused with file and key."""
        for text in ("listen = 2049\n", "export = true\n", "[metadata]\nkind = 'memory'\n"):
            with self.subTest(text=text):
                self.stderr.seek(0)
                self.stderr.truncate()
                path = self.write_config(text)
                key = text.split()[0].strip("[]")
                self.assertUsageError(["--config", path], path, key)

    def test_config_bad_value(self) -> None:
        """A bad value from the file names the file and the key, not a command-line option."""
        path = self.write_config('export = "relative"\n')
        output = self.assertUsageError(["--config", path], path, "export")
        self.assertNotIn("--export", output)

    def test_metadata_cache_must_be_a_whole_number(self) -> None:
        """--metadata-cache takes a count of entries (0: no cache); -1 or 1.5 is refused."""
        self.assertEqual(parse(["--metadata-cache", "0"])["metadata-cache"], 0)
        self.assertEqual(parse(["--metadata-cache", "100"])["metadata-cache"], 100)
        for value in ("-1", "1.5", "many"):
            with self.subTest(value=value):
                self.stderr.seek(0)
                self.stderr.truncate()
                self.assertUsageError(["--metadata-cache", value], "--metadata-cache", value)
        for text in ('metadata-cache = "lots"\n', "metadata-cache = -5\n"):
            with self.subTest(text=text):
                path = self.write_config(text)
                self.stderr.seek(0)
                self.stderr.truncate()
                self.assertUsageError(["--config", path], path, "metadata-cache")

    def test_workers_need_shareable_stores_and_a_tcp_endpoint(self) -> None:
        """--workers 2 is refused, in one line naming --workers, where it cannot work."""
        self.assertEqual(parse(["--workers", "2"])["workers"], 2)
        cores = len(os.sched_getaffinity(0))
        self.assertEqual(parse([])["workers"], cores)  # auto, the default
        self.assertEqual(parse(["--workers", "1", "--metadata", "memory"])["workers"], 1)
        self.assertEqual(parse(["--workers", "auto"])["workers"], cores)
        affinity = os.sched_getaffinity
        del os.sched_getaffinity  # as on macOS, where SO_REUSEPORT does not balance
        self.addCleanup(setattr, os, "sched_getaffinity", affinity)
        self.assertEqual(parse(["--workers", "auto"])["workers"], 1)
        os.sched_getaffinity = affinity
        for single in (["--metadata", "memory"], ["--listen", "unix:/tmp/dittofs.sock"]):
            with self.subTest(single=single):
                self.assertEqual(parse(["--workers", "auto", *single])["workers"], 1)
        for argv, why in (
            (["--workers", "0"], "at least 1"),
            (["--workers", "2", "--metadata", "memory"], "memory metadata"),
            (["--workers", "2", "--content", "memory"], "memory content"),
            (["--workers", "2", "--content", "s3://bucket/p?endpoint=http://127.0.0.1:1"], "s3"),
            (["--workers", "2", "--listen", "unix:/tmp/dittofs.sock"], "tcp"),
        ):
            with self.subTest(argv=argv):
                self.stderr.seek(0)
                self.stderr.truncate()
                self.assertUsageError(argv, "--workers", why)

    def test_config_bad_value_overridden(self) -> None:
        """A bad value in the file does not matter when the command line replaces it."""
        path = self.write_config('export = "relative"\n')
        self.assertEqual(parse(["--config", path, "--export", "/ok"])["export"], "/ok")
        self.assertEqual(self.stderr.getvalue(), "")


class RecordingMetadataStore(MemoryMetadataStore):
    """A memory store that notes, at open and close, whether the server was listening."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        super().__init__()
        self.reactor = reactor
        self.events: list[tuple[str, int]] = []

    def open(self) -> Deferred[None]:
        """Record the number of listeners when opened."""
        self.events.append(("open", len(self.reactor.tcpServers)))
        return super().open()

    def close(self) -> Deferred[None]:
        """Record that the store was closed."""
        self.events.append(("close", len(self.reactor.tcpServers)))
        return super().close()


class StrictRunningReactor(MemoryReactorClock):
    """A running memory reactor that, like a real one, cannot be stopped twice."""

    def __init__(self) -> None:
        super().__init__()
        self.running = True
        self.hasRun = True

    def callFromThread(self, callable: Any, *args: Any, **kwargs: Any) -> None:
        """Signal handlers hand their work to the reactor thread: here, at once."""
        callable(*args, **kwargs)

    def stop(self) -> None:
        """Stop, or raise ReactorNotRunning as a real reactor does once it is stopping."""
        if self.hasStopped:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")
        super().stop()


def _with_content(metadata: Any) -> Any:
    """A stand-in for ``tap.store_pair``: *metadata*, and the content store the options name."""

    def pair(metadata_spec: str, content_spec: str, data_dir: Path, reactor: Any) -> Any:
        return metadata, build_store("content", content_spec, data_dir, reactor)

    return pair


class MakeServiceTests(TempDirMixin):
    """``makeService`` builds a service that listens where asked on the injected reactor."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.addCleanup(dittofs_log.set_level, "INFO")

    def make(self, argv: list[str]) -> Any:
        """Parse *argv* (memory stores) and build the service on the memory reactor."""
        return tap.makeService(parse([*MEMORY, *argv]), reactor=self.reactor)

    def test_is_a_service(self) -> None:
        """The result provides IService, so it can join any Twisted application."""
        service = self.make([])
        self.assertTrue(verifyObject(IService, service))

    def test_listens_where_asked(self) -> None:
        """After startService the reactor listens on the requested port and interface."""
        service = self.make(["--listen", "tcp:2049:interface=192.0.2.1"])
        self.assertEqual(self.reactor.tcpServers, [])
        service.startService()
        self.assertTrue(service.running)
        ((port, factory, _backlog, interface),) = self.reactor.tcpServers
        self.assertEqual((port, interface), (2049, "192.0.2.1"))
        self.assertIsInstance(factory, RpcServerFactory)
        stopped = service.stopService()
        self.assertIsInstance(stopped, Deferred)
        self.successResultOf(stopped)
        self.assertFalse(service.running)

    def test_default_listen(self) -> None:
        """By default DittoFS listens on 127.0.0.1:12049 only, not on every interface."""
        service = self.make([])
        service.startService()
        ((port, _factory, _backlog, interface),) = self.reactor.tcpServers
        self.assertEqual((port, interface), (12049, "127.0.0.1"))
        self.successResultOf(service.stopService())

    def test_ipv6_listen(self) -> None:
        """An IPv6 interface (with the endpoint syntax's escaped colons) is honoured."""
        service = self.make(["--listen", r"tcp6:2049:interface=\:\:1"])
        service.startService()
        ((port, _factory, _backlog, interface),) = self.reactor.tcpServers
        self.assertEqual((port, interface), (2049, "::1"))
        self.successResultOf(service.stopService())

    def test_stop_without_start(self) -> None:
        """Stopping a service that never started still fires (twistd may do this on errors)."""
        service = self.make([])
        self.successResultOf(service.stopService())

    def test_serves_mount_and_nfs_on_one_port(self) -> None:
        """The listening factory answers MOUNT MNT for the export and NFS NULL."""
        service = self.make(["--export", "/srv", "--listen", "tcp:2049"])
        service.startService()
        ((_port, factory, _backlog, _interface),) = self.reactor.tcpServers
        peer = IPv4Address("TCP", "127.0.0.1", 800)  # loopback: admitted by default
        protocol = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(
            record_mark(build_call(1, 100005, 3, 1, args=xdr_opaque(b"/srv")))
            + record_mark(build_call(2, 100003, 3, 0))
        )
        mnt, null = (parse_reply(m) for m in split_records(transport.value()))
        self.assertEqual((mnt.xid, mnt.accept_stat), (1, SUCCESS))
        self.assertEqual(mnt.body[:4], b"\0\0\0\0")  # MNT3_OK
        self.assertEqual((null.xid, null.accept_stat, null.body), (2, SUCCESS, b""))
        stopped = service.stopService()
        self.assertTrue(transport.disconnecting)  # open connections are closed on stop...
        self.reactor.advance(1)  # ...and, after a grace period, cut if still open
        self.successResultOf(stopped)

    def test_stores_open_before_listening_and_close_after(self) -> None:
        """Stores are opened before the port listens and closed when the service stops."""
        store = RecordingMetadataStore(self.reactor)
        self.patch(tap, "store_pair", _with_content(store))
        service = self.make([])
        self.assertEqual(store.events, [])
        service.startService()
        self.assertEqual(store.events, [("open", 0)])
        self.assertEqual(len(self.reactor.tcpServers), 1)
        self.successResultOf(service.stopService())
        self.assertEqual([event for event, _ in store.events], ["open", "close"])

    def failing_start(self, argv: list[str]) -> tuple[list[dict[str, Any]], list[Any]]:
        """Start the service on a running reactor; return what it logged, and what it will
        call once the reactor has shut down.

        Signal handlers are not installed in the test process.
        """
        self.patch(signal, "signal", lambda *args: None)
        service = self.make(argv)
        self.reactor.running = True  # a store fails after the reactor has started
        with capturedLogs() as events:
            service.startService()
        after_shutdown = self.reactor.triggers.get("after", {}).get("shutdown", [])
        return events, [hook for hook, _args, _kwargs in after_shutdown]

    def test_store_open_failure_is_one_line_then_exit_1(self) -> None:
        """A store that cannot open: nothing listens, one CRITICAL line names it, exit status 1.

        The line names the export, the store and where it keeps its data,
        and the reason; the traceback is logged only at DEBUG, so the
        default log shows one line.  twistd and twist would exit 0 once the
        reactor stops, so the process leaves with 1 after the shutdown.
        """
        store = MemoryMetadataStore()
        self.patch(store, "open", lambda: fail(OSError("disk on fire")))
        self.patch(tap, "store_pair", _with_content(store))
        events, exits = self.failing_start(["--export", "/srv"])
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["Could not open memory metadata for /srv: OSError: disk on fire"],
        )
        self.assertEqual(events[0]["log_level"], LogLevel.critical)
        statuses: list[int] = []
        self.patch(os, "_exit", statuses.append)
        (exit_after_shutdown,) = exits
        exit_after_shutdown()
        self.assertEqual(statuses, [1])

    def test_failed_start_under_twistd_removes_its_pidfile(self) -> None:
        """Leaving before twistd returns, the process removes the pidfile twistd would have."""
        pidfile = os.path.join(self.tempdir(), "twistd.pid")
        with open(pidfile, "w") as file:
            file.write(f"{os.getpid()}\n")
        store = MemoryMetadataStore()
        self.patch(store, "open", lambda: fail(OSError("disk on fire")))
        self.patch(tap, "store_pair", _with_content(store))
        self.patch(signal, "signal", lambda *args: None)
        options = parse(MEMORY)
        options.parent = {"pidfile": pidfile}
        service = tap.makeService(options, reactor=self.reactor)
        self.reactor.running = True
        with capturedLogs():
            service.startService()
        self.patch(os, "_exit", lambda status: None)
        ((exit_after_shutdown, _args, _kwargs),) = self.reactor.triggers["after"]["shutdown"]
        exit_after_shutdown()
        self.assertFalse(os.path.exists(pidfile))

    def test_failing_store_traceback_at_debug_level(self) -> None:
        """With ``--log-level DEBUG`` the failure's traceback follows the line."""
        store = MemoryMetadataStore()
        self.patch(store, "open", lambda: fail(OSError("disk on fire")))
        self.patch(tap, "store_pair", _with_content(store))
        events, _ = self.failing_start(["--log-level", "DEBUG"])
        line, traceback = events
        self.assertEqual(line["log_level"], LogLevel.critical)
        self.assertEqual(traceback["log_level"], LogLevel.debug)
        self.assertIn("disk on fire", traceback["log_failure"].getTraceback())
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_failing_store_is_named_with_its_location_redacted(self) -> None:
        """The line names the store the way it was configured, its password replaced by ***."""
        store = MemoryMetadataStore()
        self.patch(store, "open", lambda: fail(RuntimeError("no schema\nLINE 1: CREATE")))
        self.patch(tap, "store_pair", lambda *args: (store, MemoryContentStore()))
        url = "postgresql://dittofs:hunter2@db.example/dittofs?options=-csearch_path%3Dx"
        events, _ = self.failing_start(["--metadata", url])
        critical = [formatEvent(e) for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual(
            critical,
            [
                "Could not open postgresql metadata (postgresql://dittofs:***@db.example/dittofs"
                "?options=-csearch_path%3Dx) for /export: RuntimeError: no schema"
            ],
        )

    def test_stop_after_a_failed_open_leaves_unopened_stores_alone(self) -> None:
        """Stopping after the metadata store failed does not wait for the content store.

        A store that never opened may never finish closing (the filesystem
        store's close waits for its I/O threads, which only open starts); a
        stop that waited for it kept the process alive until kill -9.
        """
        metadata = MemoryMetadataStore()
        self.patch(metadata, "open", lambda: fail(OSError("disk on fire")))
        content = MemoryContentStore()
        self.patch(content, "close", Deferred)  # would never fire
        self.patch(tap, "store_pair", lambda *args: (metadata, content))
        service = self.make([])
        with capturedLogs():
            service.startService()
        self.successResultOf(service.stopService())

    def test_endpoint_that_cannot_listen_is_one_line_then_exit_1(self) -> None:
        """A port already in use (or any endpoint that fails) stops the server like a store.

        Twisted's listener would log the error and the service would run on,
        saying it serves while nothing listens.
        """

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise CannotListenError("127.0.0.1", 2049, OSError(98, "Address already in use"))

        self.patch(self.reactor, "listenTCP", refuse)
        events, exits = self.failing_start(["--listen", "tcp:2049:interface=127.0.0.1"])
        critical = [formatEvent(e) for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual(len(critical), 1, critical)
        self.assertTrue(
            critical[0].startswith(
                "Could not listen on tcp:2049:interface=127.0.0.1: CannotListenError: "
            ),
            critical,
        )
        self.assertIn("Address already in use", critical[0])
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(len(exits), 1)

    def test_nothing_listens_until_the_stores_are_open(self) -> None:
        """twistd's privilegedStartService binds nothing; the port is bound once the stores open.

        So no client can connect to a server whose stores are not open (a
        call read then would find no export), and a store that fails to open
        never leaves a port open.
        """
        store = MemoryMetadataStore()
        opening: Deferred[None] = Deferred()
        self.patch(store, "open", lambda: opening)
        self.patch(tap, "store_pair", _with_content(store))
        service = self.make(["--listen", "tcp:2049", "--metrics", "tcp:9108"])
        service.privilegedStartService()
        self.assertEqual(self.reactor.tcpServers, [])
        with capturedLogs() as events:
            service.startService()
            self.assertEqual(self.reactor.tcpServers, [])
            self.assertEqual(events, [])
            opening.callback(None)
        self.assertEqual([port for port, *_ in self.reactor.tcpServers], [2049, 9108])
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "DittoFS listens on tcp:2049 (metrics on tcp:9108) and serves /export "
                "with memory metadata and memory content"
            ],
        )
        self.successResultOf(service.stopService())

    def test_start_up_line_names_each_export_and_where_its_stores_keep_data(self) -> None:
        """The start-up line says where DittoFS listens, and each export's two stores.

        Paths are those the stores use, resolved from the data directory, so
        a reader of the log knows which files hold the filesystem.
        """
        data = self.tempdir()
        config = self.write_config(
            '[[exports]]\npath = "/a"\n'
            '[[exports]]\npath = "/b"\nmetadata = "memory"\ncontent = "fs:/srv/b"\n'
        )
        options = tap.Options()
        options.parseOptions(["--config", config, "--data-dir", data, "--listen", "tcp:2049"])
        service = tap.makeService(options, reactor=self.reactor)
        own = f"{data}/export-{default_export_id('/a')}"
        self.assertEqual(
            service.description.serving(),
            f"DittoFS listens on tcp:2049 and serves /a with sqlite metadata "
            f"({own}/metadata.db) and fs content ({own}/content); "
            f"/b with memory metadata and fs content (/srv/b)",
        )

    def test_default_stores_are_named_by_their_paths(self) -> None:
        """The defaults (sqlite and fs, no path given) are named by the files they use."""
        data = self.tempdir()
        argv = ["--data-dir", data, "--workers", "1"]  # one process: its service describes
        service = tap.makeService(parse(argv), reactor=self.reactor)
        self.assertEqual(
            service.description.serving(),
            f"DittoFS listens on tcp:12049:interface=127.0.0.1 and serves /export with "
            f"sqlite metadata ({data}/metadata.db) and fs content ({data}/content)",
        )

    def test_second_sigterm_while_stopping_exits_at_once(self) -> None:
        """SIGTERM stops gracefully; another while the stop is under way exits with status 1.

        A real reactor refuses to stop twice (ReactorNotRunning); before, the
        second SIGTERM logged that error and a stop that hung could only be
        ended with kill -9.
        """
        reactor = StrictRunningReactor()
        service = tap.makeService(parse(MEMORY), reactor=reactor)
        statuses: list[int] = []
        self.patch(os, "_exit", statuses.append)
        with capturedLogs() as events:
            service._on_sigterm(signal.SIGTERM, None)
            self.assertTrue(reactor.hasStopped)
            self.assertEqual(statuses, [])
            service._on_sigterm(signal.SIGTERM, None)
        self.assertEqual(statuses, [1])
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "SIGTERM: finishing calls in flight, then stopping",
                "SIGTERM while stopping: exiting now, with status 1",
            ],
        )

    def test_log_level_applied(self) -> None:
        """``--log-level ERROR`` silences DittoFS warnings but keeps its errors."""
        self.make(["--log-level", "ERROR"])
        logger = Logger(observer=dittofs_log.observer)
        with capturedLogs() as events:
            logger.warn("a warning")
            logger.error("an error")
        self.assertEqual([event["log_format"] for event in events], ["an error"])
