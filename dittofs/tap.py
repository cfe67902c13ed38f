"""``twistd dittofs``: command-line and TOML configuration, and the service they build.

:class:`Options` merges, in increasing precedence, built-in defaults, a TOML
file given with ``--config`` (same keys as the long options) and the command
line.  Every value is checked in ``postOptions``; a bad one is reported as a
single line naming the option or the file and key, and the process exits
with status 2 instead of printing the whole usage text.

:func:`makeService` returns a ``MultiService`` that another Twisted program
can add to its own application: it opens the stores, then starts listening;
on stop it stops listening, then closes the stores.
"""

from __future__ import annotations

import functools
import os
import platform
import signal
import sys
import threading
import tomllib
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.copyright import version as twisted_version
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import Interface

import dittofs
from dittofs import allocator, runner
from dittofs import log as dittofs_log
from dittofs import tracing as dittofs_tracing
from dittofs import workers as workers_module
from dittofs.config import (
    ConfigError,
    ExportSpec,
    check_export_path,
    default_export_id,
    exports_from_tables,
    policy_from,
)
from dittofs.exports import Export, ExportTable, StoreOpenError
from dittofs.interfaces import IContentStore, IFileRegions, IMetadataStore
from dittofs.metrics import Metrics, metered
from dittofs.mount import MountProgram
from dittofs.nfs3.service import NFSv3Program
from dittofs.nfs4.service import NFSv41Program
from dittofs.rpc.dispatch import RpcDispatcher, RpcProgram
from dittofs.rpc.observe import RpcObserver
from dittofs.rpc.protocol import Limits, RpcServerFactory
from dittofs.stores import (
    StoreSpecError,
    check_spec,
    choices,
    describe_store,
    factory_for,
    store_pair,
    with_cache,
)
from dittofs.stores.metadata.cache import DEFAULT_ENTRIES
from dittofs.web import UnloggedSite, web_root

log = Logger(observer=dittofs_log.observer)


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "dittofs")


DEFAULT_SHUTDOWN_TIMEOUT = 30.0

DEFAULTS: dict[str, Any] = {
    "listen": "tcp:12049:interface=127.0.0.1",
    "export": "/export",
    "data-dir": _default_data_dir(),
    "metadata": "sqlite",
    "content": "fs",
    "log-level": "INFO",
    "log-format": "text",
    "shutdown-timeout": DEFAULT_SHUTDOWN_TIMEOUT,
    "metrics": None,
    "metadata-cache": DEFAULT_ENTRIES,
    "workers": "auto",
    "nfs4": False,
}
#: Resource limits: option/config key -> (Limits field, smallest value allowed).
_LIMITS: dict[str, tuple[str, float]] = {
    "max-connections": ("max_connections", 1),
    "max-client-connections": ("max_connections_per_client", 1),
    "max-in-flight": ("max_in_flight", 1),
    "max-record": ("max_record", 65536),
    "idle-timeout": ("idle_timeout", 1),
    "record-deadline": ("record_deadline", 1),
}
#: Keys of the config file and the type each must have there.
_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    **{key: str for key in DEFAULTS},
    "shutdown-timeout": (int, float),
    "metadata-cache": int,
    "workers": (int, str),
    "metrics": str,
    "content-path": str,
    "clients": list,
    "squash": str,
    "anonuid": int,
    "anongid": int,
    "read-only": bool,
    "secure": bool,
    "nfs4": bool,
    "exports": list,
    **{key: (int, float) for key in _LIMITS},
}
#: Keys that describe the single export given by options (not [[exports]]).
_EXPORT_OPTION_KEYS = frozenset(
    {"export", "metadata", "content", "content-path", "clients", "squash"}
    | {"anonuid", "anongid", "read-only", "secure"}
)


def _check_log_level(value: str) -> None:
    if value.upper() not in dittofs_log.LEVELS:
        raise ValueError(f"must be one of {', '.join(dittofs_log.LEVELS)}, got {value!r}")


def _check_log_format(value: str) -> None:
    if value.lower() not in dittofs_log.FORMATS:
        raise ValueError(f"must be one of {', '.join(dittofs_log.FORMATS)}, got {value!r}")


def _check_listen(value: str) -> None:
    from twisted.internet import reactor

    try:
        endpoint = endpoints.serverFromString(reactor, value)
    except Exception as error:
        # Twisted reports a malformed description as ValueError, TypeError (missing or
        # unknown arguments) or ImportError (an endpoint type whose library is absent).
        raise ValueError(f"not a usable endpoint description ({error})") from None
    port = getattr(endpoint, "_port", 0)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")


def _check_metrics(value: str | None) -> None:
    if value is not None:
        _check_listen(value)


def _check_data_dir(value: str) -> None:
    if not value:
        raise ValueError("must name a directory")


_CHECKS: dict[str, Callable[[str], None]] = {
    "listen": _check_listen,
    "export": check_export_path,
    "data-dir": _check_data_dir,
    "metadata": functools.partial(check_spec, "metadata"),
    "content": functools.partial(check_spec, "content"),
    "log-level": _check_log_level,
    "log-format": _check_log_format,
    "metrics": _check_metrics,
}


class Options(usage.Options):
    """Options of ``twistd dittofs``."""

    synopsis = "[options]"
    longdesc = "Serve an NFSv3 export (and MOUNT v3) on one TCP port, without a portmapper."

    optParameters = [
        ["config", "c", None, "TOML file with the same keys as these long options."],
        ["listen", "l", None, f"Endpoint to listen on [default: {DEFAULTS['listen']}]."],
        ["export", "e", None, f"Path clients mount [default: {DEFAULTS['export']}]."],
        [
            "data-dir",
            "d",
            None,
            "Where sqlite and fs keep their files [default: ~/.local/share/dittofs].",
        ],
        ["metadata", "m", None, f"Metadata store: {choices('metadata')} [default: sqlite]."],
        ["content", None, None, f"Content store: {choices('content')} [default: fs]."],
        ["content-path", None, None, "Keep content in this directory (same as --content fs:PATH)."],
        ["log-level", None, None, "DEBUG, INFO, WARN or ERROR [default: INFO]."],
        ["log-format", None, None, "text, or json for one JSON object a line [default: text]."],
        [
            "clients",
            None,
            None,
            "Comma-separated addresses/CIDRs that may mount [default: loopback].",
        ],
        ["squash", None, None, "root_squash, all_squash or no_root_squash [default: root_squash]."],
        ["anonuid", None, None, "uid squashed callers act as [default: 65534]."],
        ["anongid", None, None, "gid squashed callers act as [default: 65534]."],
        ["max-connections", None, None, "Connections open at once [default: 4096]."],
        ["max-client-connections", None, None, "Connections from one address [default: 256]."],
        ["max-in-flight", None, None, "Calls running per connection [default: 64]."],
        ["max-record", None, None, "Largest RPC record in bytes [default: 1114112]."],
        ["idle-timeout", None, None, "Seconds before an idle connection closes [default: 900]."],
        ["record-deadline", None, None, "Seconds a record may take to arrive [default: 60]."],
        ["shutdown-timeout", None, None, "Seconds to let calls finish on stop [default: 30]."],
        ["metrics", None, None, "Endpoint for /metrics, /health and /ready [default: off]."],
        [
            "workers",
            "w",
            None,
            "Processes serving the endpoint over shared stores, one core each; auto: one per "
            "core where the stores allow [default: auto].",
        ],
        [
            "metadata-cache",
            None,
            None,
            f"Entries of each export's metadata cache, 0 for none [default: {DEFAULT_ENTRIES}].",
        ],
    ]
    optFlags = [
        ["read-only", None, "Refuse every change (NFS3ERR_ROFS)."],
        ["secure", None, "Only admit clients from privileged ports (below 1024)."],
        ["nfs4", None, "Serve NFSv4.1 too, on the same port (experimental, one worker)."],
    ]

    def opt_version(self) -> None:
        """Display DittoFS's version and exit."""
        sys.stdout.write(
            f"dittofs {dittofs.__version__} (Twisted {twisted_version}, "
            f"Python {platform.python_version()})\n"
        )
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, and turn any usage error into one line on stderr and exit status 2."""
        self._argv = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            sys.stderr.write(f"dittofs: {dittofs_log.redact(str(error))}\n")
            raise SystemExit(2) from None

    def postOptions(self) -> None:
        """Merge defaults, config file and command line, check every value, build export specs."""
        merged: dict[str, Any] = dict(DEFAULTS)
        origin = {key: f"default {key}" for key in DEFAULTS}
        layers: list[tuple[dict[str, Any], Callable[[str], str]]] = []
        if self["config"]:
            config_file = _load_config(self["config"])
            layers.append((config_file, lambda key: f"config {self['config']}: key '{key}'"))
        command_line = {
            key: self[key]
            for key in _CONFIG_TYPES
            if key in self and self[key] not in (None, 0) and key != "exports"
        }
        layers.append((command_line, lambda key: f"--{key}"))
        for values, where in layers:
            # content-path is shorthand for content = "fs:PATH", within its own layer.
            if "content-path" in values and "content" in values:
                raise usage.UsageError(
                    f"{where('content-path')}: give content or content-path, not both"
                )
            for key, value in values.items():
                target = "content" if key == "content-path" else key
                merged[target] = f"fs:{value}" if key == "content-path" else value
                origin[target] = where(key)
        for key, check in _CHECKS.items():
            if key in ("export", "metadata", "content") and "exports" in merged:
                continue
            try:
                check(merged[key])
            except (ValueError, StoreSpecError) as error:
                raise usage.UsageError(f"{origin[key]}: {error}") from None
        try:
            self.exports = self._export_specs(merged, origin, command_line)
            self.limits = _limits(merged, origin)
            merged["shutdown-timeout"] = _number(merged, origin, "shutdown-timeout", 0)
            merged["metadata-cache"] = _whole(merged, origin, "metadata-cache", 0)
            merged["workers"] = _workers(merged, origin, self.exports)
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None
        try:
            # twistd and twist start logging after parsing, from their own options.
            dittofs_log.configure_runner(self.parent, merged["log-level"], merged["log-format"])
        except ValueError as error:
            raise usage.UsageError(f"{origin['log-format']}: {error}") from None
        self.argv = list(self._argv)
        self.update(merged)

    def parseArgs(self, *args: str) -> None:
        """No positional arguments."""
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r}")

    def _export_specs(
        self, merged: dict[str, Any], origin: dict[str, str], command_line: dict[str, Any]
    ) -> list[ExportSpec]:
        """The exports to serve: the config's [[exports]], or the one the options describe."""
        if "exports" in merged:
            given = sorted(_EXPORT_OPTION_KEYS & set(command_line))
            if given:
                raise ConfigError(
                    f"--{given[0]}: the config file defines [[exports]]; configure exports there"
                )
            return exports_from_tables(
                merged["exports"], f"config {self['config']}", Path(merged["data-dir"])
            )
        policy = policy_from(merged, lambda key: origin.get(key, f"--{key}"))
        export = merged["export"]
        spec = ExportSpec(
            default_export_id(export), export, merged["metadata"], merged["content"], policy
        )
        return [spec]


def _number(values: dict[str, Any], origin: dict[str, str], key: str, smallest: float) -> float:
    value = values[key]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin.get(key, '--' + key)}: {value!r} is not a number") from None
    if number < smallest:
        raise ConfigError(f"{origin.get(key, '--' + key)}: must be at least {smallest:g}")
    return number


def _whole(values: dict[str, Any], origin: dict[str, str], key: str, smallest: int) -> int:
    """A count of at least *smallest*: an integer in the config file, digits on the command line."""
    value = values[key]
    where = origin.get(key, "--" + key)
    if not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise ConfigError(f"{where}: {value!r} is not a whole number")
    if int(value) < smallest:
        raise ConfigError(f"{where}: must be at least {smallest}")
    return int(value)


#: Stores a worker cannot share with the others, and why.
_SINGLE_PROCESS = {
    ("metadata", "memory"): "the memory metadata store lives in one process",
    ("content", "memory"): "the memory content store lives in one process",
    ("content", "s3"): (
        "the s3 content store's cache directory belongs to one process "
        "(run one gateway per cache instead, docs/s3.md)"
    ),
}


def _workers(values: dict[str, Any], origin: dict[str, str], exports: list[ExportSpec]) -> int:
    """How many worker processes: a count, or ``auto``, one per core where several can work.

    Several workers need a TCP endpoint and stores that several processes
    can share; a count above one that cannot work is refused in one line,
    ``auto`` settles for one process then.
    """
    where = origin.get("workers", "--workers")
    if values["workers"] == "auto":
        alone = values["nfs4"] or _one_process(exports, values["listen"])
        return 1 if alone else _cores()
    count = _whole(values, origin, "workers", 1)
    why = None if count == 1 else _one_process(exports, values["listen"])
    if count > 1 and values["nfs4"]:
        # Sessions, opens and locks live in one process's memory for now.
        why = "serve NFSv4.1 (--nfs4), whose state is kept in one process"
    if why is not None:
        raise ConfigError(f"{where}: {count} workers cannot {why}")
    return count


def _cores() -> int:
    """The cores this process may run on, where ``auto`` may spread workers: Linux, whose
    ``SO_REUSEPORT`` shares a port's connections out between sockets; 1 elsewhere."""
    if not hasattr(os, "sched_getaffinity"):  # macOS, the BSDs: no balancing either
        return 1
    return len(os.sched_getaffinity(0))


def _one_process(exports: list[ExportSpec], listen: str) -> str | None:
    """Why these exports on *listen* need one process (None: several can serve them)."""
    from twisted.internet import reactor

    try:
        workers_module.listen_family(listen, reactor)
    except ValueError as error:
        return f"listen on {listen!r}: {error}"
    for spec in exports:
        for role, store in (("metadata", spec.metadata), ("content", spec.content)):
            why = _SINGLE_PROCESS.get((role, factory_for(role, store).schemes[0]))
            if why is not None:
                return f"share {spec.path}: {why}"
    return None


def _limits(values: dict[str, Any], origin: dict[str, str]) -> Limits:
    """Build the resource limits from option/config values (missing ones keep defaults)."""
    chosen: dict[str, float] = {}
    for key, (field, smallest) in _LIMITS.items():
        if key in values:
            number = _number(values, origin, key, smallest)
            chosen[field] = number if field.endswith(("timeout", "deadline")) else int(number)
    return Limits(**chosen)  # type: ignore[arg-type]


def _load_config(path: str) -> dict[str, Any]:
    """Read a TOML config; any problem is a UsageError naming the file (and line or key)."""
    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except OSError as error:
        raise usage.UsageError(f"config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise usage.UsageError(f"config {path}: {error}") from None
    for key, value in table.items():
        kind = _CONFIG_TYPES.get(key)
        if kind is None:
            raise usage.UsageError(f"config {path}: unknown key '{key}'")
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            names = {str: "a string", bool: "a boolean", int: "an integer", list: "a list"}
            name = "a number" if isinstance(kind, tuple) else names[kind]
            raise usage.UsageError(f"config {path}: key '{key}' must be {name}")
    return table


@attrs.frozen
class Description:
    """How the log names this server: where it listens, and each export's stores.

    Every store is described by :func:`~dittofs.stores.describe_store`, so
    passwords are already hidden wherever these lines go (twistd's parent
    prints a failure on stderr, which no log filter sees).
    """

    listen: str
    #: Export id -> (path, metadata store, content store).
    exports: Mapping[int, tuple[str, str, str]]
    metrics: str | None = None
    #: The worker's index, for a worker of ``--workers N``.
    worker: int | None = None

    def serving(self) -> str:
        """The start-up line: the endpoints, then each export with its two stores.

        A worker's line names it, so that "DittoFS listens" is only ever the
        line of a server that serves: one process's, or the supervisor's once
        every worker serves.
        """
        who = "DittoFS" if self.worker is None else f"DittoFS worker {self.worker}"
        metrics = f" (metrics on {self.metrics})" if self.metrics else ""
        exports = "; ".join(
            f"{path} with {metadata} and {content}"
            for path, metadata, content in self.exports.values()
        )
        return f"{who} listens on {self.listen}{metrics} and serves {exports}"

    def open_failed(self, error: StoreOpenError) -> str:
        """The line for a store that would not open: which (or, when the failure is shared,
        both) for which export, and why."""
        path, metadata, content = self.exports[error.export.export_id]
        stores = metadata if error.role == "metadata" else content
        if error.role is None:
            stores = f"{metadata} and {content}"
        return f"Could not open {stores} for {path}: {dittofs_log.error_line(error.error)}"


class DittoService(MultiService):
    """Opens the stores, then listens; stops listening, then closes the stores.

    Nothing is bound before every store is open: ``privilegedStartService``
    (twistd calls it first) binds nothing, and the listeners start only once
    the stores have opened, so no client ever reaches a server whose stores
    are not open.  A store that cannot open, or an endpoint that cannot be
    bound, is one CRITICAL line naming it and why (the traceback follows at
    DEBUG level); the process then stops and exits with status 1, and a
    daemonising twistd's first process (or a worker's supervisor) hears why.

    Stopping (SIGTERM, or the embedding program stopping it) stops listening,
    lets calls in flight finish for up to ``shutdown_timeout`` seconds, closes
    the connections, then closes (flushes) the stores and exports the last
    spans if tracing is on.  Under twistd it also owns SIGTERM, so a clean
    stop exits with status 0 rather than re-raising the signal (a second
    SIGTERM while stopping exits at once, with status 1), and SIGHUP, which
    re-reads access rules and the log level.
    """

    def __init__(
        self,
        exports: ExportTable,
        reactor: Any,
        factory: RpcServerFactory,
        description: Description,
        *,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        reload: Callable[[], None] | None = None,
        tracing: dittofs_tracing.Tracing = dittofs_tracing.DISABLED,
        runner: MutableMapping[str, Any] | None = None,
        status_pipe: int | None = None,
    ) -> None:
        super().__init__()
        self.exports = exports
        self.factory = factory
        self.description = description
        self.shutdown_timeout = shutdown_timeout
        self._reactor = reactor
        self._reload = reload
        self._runner = runner
        #: Where to say that DittoFS serves: a worker's pipe, else twistd's (taken at start).
        self._status_pipe = status_pipe
        self.tracing = tracing
        #: Each listener, with the endpoint description it was given.
        self._listeners: list[tuple[str, StreamServerEndpointService]] = []

    def listen(
        self, where: str, endpoint: IStreamServerEndpoint, factory: IProtocolFactory
    ) -> None:
        """Serve *factory* on *endpoint* (described by *where*) once the stores are open."""
        listener = StreamServerEndpointService(endpoint, factory)
        # As twisted.application.strports.service does: an endpoint that cannot be bound
        # raises from startService, rather than being logged while the service runs on.
        listener._raiseSynchronously = True
        listener.setServiceParent(self)
        self._listeners.append((where, listener))

    def privilegedStartService(self) -> None:
        """Bind nothing yet: the listeners start once the stores are open (see startService)."""

    def startService(self) -> None:
        """Open every store, then listen; a store or endpoint that fails stops the process."""
        Service.startService(self)
        status_pipe = self._status_pipe
        if status_pipe is None:
            status_pipe = runner.take_status_pipe(self._runner)
        # After the reactor has installed its own handlers (it does so while starting).
        self._reactor.callWhenRunning(self._take_signals)

        def listen(_: None) -> None:
            if not self.running:  # stopped while the stores were opening
                return
            for where, listener in self._listeners:
                try:
                    listener.startService()
                except Exception as error:
                    line = f"Could not listen on {where}: {dittofs_log.error_line(error)}"
                    self._failed(line, Failure(), status_pipe)
                    return
            log.info("{line}", line=self.description.serving())
            runner.answer_status_pipe(status_pipe, None)

        def not_opened(reason: Failure) -> Failure | None:
            error = reason.value
            if not isinstance(error, StoreOpenError):  # ExportTable.open raises nothing else
                return reason
            if not self.running:  # stopped while the stores were opening: nothing to undo
                return None
            self._failed(self.description.open_failed(error), error.cause(), status_pipe)
            return None

        self.exports.open().addCallbacks(listen, not_opened)

    def _failed(self, line: str, reason: Failure, status_pipe: int | None) -> None:
        """Say what failed in one line, then stop the reactor and exit with status 1."""
        log.critical("{line}", line=line)
        log.failure("The failure above, with its traceback", reason, level=LogLevel.debug)
        runner.answer_status_pipe(status_pipe, dittofs_log.redact(line))
        exit_failed = functools.partial(runner.exit_failed, self._runner)
        self._reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        # Under twistd and twist the stores may fail before the reactor runs.
        self._reactor.callWhenRunning(self._reactor.stop)

    def _take_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if self._reload is not None:
            signal.signal(signal.SIGHUP, self._on_sighup)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._stop)

    def _stop(self) -> None:
        """SIGTERM: stop gracefully; when a stop is already under way, leave at once."""
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            log.warn("SIGTERM while stopping: exiting now, with status 1")
            runner.exit_failed(self._runner)
            return
        log.info("SIGTERM: finishing calls in flight, then stopping")

    def _on_sighup(self, signum: int, frame: object) -> None:
        assert self._reload is not None
        self._reactor.callFromThread(self._reload)

    def stopService(self) -> Deferred[None]:
        """Stop listening, let running calls finish (bounded), close connections and stores."""
        self.running = 0
        stopping = [
            maybeDeferred(child.stopService) for child in reversed(list(self)) if child.running
        ]

        async def stop() -> None:
            await DeferredList(stopping, consumeErrors=True)
            await self.factory.drain(self.shutdown_timeout)
            await self.factory.close_all()
            await self.exports.close()
            self.tracing.shutdown()
            log.info("DittoFS stopped")

        return Deferred.fromCoroutine(stop())


def _reloader(config: Options, exports: ExportTable) -> Callable[[], None]:
    """SIGHUP: re-read the config file; apply new access rules and the log level.

    Stores cannot change under running clients, so an export added, removed or
    given other stores is reported and waits for a restart.
    """

    def reload() -> None:
        fresh = Options()
        try:
            fresh.parseOptions(config.argv)
        except SystemExit:
            log.error("SIGHUP: the configuration has errors; keeping the running one")
            return
        dittofs_log.set_level(fresh["log-level"])
        specs = {spec.path.rstrip("/") or "/": spec for spec in fresh.exports}
        for export in exports:
            spec = specs.pop(export.path.decode().rstrip("/") or "/", None)
            if spec is None:
                log.warn(
                    "SIGHUP: {path} is no longer configured; restart to remove it",
                    path=export.path.decode(),
                )
            elif spec.policy != export.policy:
                export.policy = spec.policy
                log.info("SIGHUP: new access rules for {path}", path=export.path.decode())
        for path in specs:
            log.warn("SIGHUP: {path} is new; restart to serve it", path=path)
        log.info("SIGHUP: configuration re-read")

    return reload


def makeService(config: Options, reactor: Any = None) -> IService:
    """Build the DittoFS service from parsed options; *reactor* is injectable for tests."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    dittofs_log.set_level(config["log-level"])
    seat = workers_module.seat_from_environment()
    if seat is None and config["workers"] > 1:
        return _supervisor(config, reactor)
    allocator.return_large_buffers()
    metrics = Metrics()
    tracing = dittofs_tracing.from_environment()

    def instrumented(store: Any, interface: type[Interface], kind: str) -> Any:
        return tracing.store(metered(store, interface, kind, metrics), interface, kind)

    def serving(metadata: IMetadataStore, content: IContentStore) -> tuple[Any, Any]:
        # The cache in front of the metrics: they count what reaches the store.
        cached = with_cache(
            instrumented(metadata, IMetadataStore, "metadata"), content, config["metadata-cache"]
        )
        # A store lending file regions has them counted too (read_lent, beside read).
        contract = IFileRegions if IFileRegions.providedBy(content) else IContentStore
        return cached, instrumented(content, contract, "content")

    exports = _export_table(config, reactor, serving)
    metrics.watch_caches(exports)
    verifier = None if seat is None else seat.verifier
    nfs = NFSv3Program(exports, write_verifier=verifier, metrics=metrics)
    programs: list[RpcProgram] = [MountProgram(exports), nfs]
    if config["nfs4"]:
        record = Path(config["data-dir"]) / "nfsv4-clients"
        programs.append(
            NFSv41Program(
                exports,
                nfs.write_verifier,
                metrics,
                record=record,
                operation_spans=tracing.operations(),
            )
        )
    spans = tracing.observer()
    observers: list[RpcObserver] = [metrics] if spans is None else [metrics, spans]
    dispatcher = RpcDispatcher(programs, observers=observers)
    factory = RpcServerFactory(dispatcher, limits=config.limits, clock=reactor)
    listen = config["listen"] if seat is None else f"{config['listen']} (worker {seat.index})"
    metrics_endpoint = config["metrics"]
    if seat is not None:
        metrics_endpoint = None if seat.metrics is None else f"unix:{seat.metrics}"
        seat.watch_supervisor(reactor)
    description = _description(config, metrics_endpoint, None if seat is None else seat.index)
    service = DittoService(
        exports,
        reactor,
        factory,
        description,
        shutdown_timeout=float(config["shutdown-timeout"]),
        reload=_reloader(config, exports),
        tracing=tracing,
        runner=config.parent,
        status_pipe=None if seat is None else workers_module.STATUS_FD,
    )
    endpoint = (
        endpoints.serverFromString(reactor, config["listen"])
        if seat is None
        else seat.endpoint(reactor)
    )
    service.listen(listen, endpoint, factory)
    if metrics_endpoint:
        site_class = Site if seat is None else UnloggedSite
        site = site_class(web_root(metrics, exports, reactor))
        service.listen(
            metrics_endpoint, endpoints.serverFromString(reactor, metrics_endpoint), site
        )
    return service


def _export_table(
    config: Options,
    reactor: Any,
    serving: Callable[[IMetadataStore, IContentStore], tuple[Any, Any]] | None = None,
) -> ExportTable:
    """Every export of *config* with its two stores built, not opened; *serving* wraps each
    pair in what answering calls needs (metrics, tracing, the cache)."""
    data_dir = Path(config["data-dir"])
    exports = []
    for spec in config.exports:
        metadata, content = store_pair(spec.metadata, spec.content, data_dir, reactor)
        if serving is not None:
            metadata, content = serving(metadata, content)
        exports.append(Export(spec.export_id, spec.path.encode(), metadata, content, spec.policy))
    return ExportTable(exports)


def _description(config: Options, metrics: str | None, worker: int | None = None) -> Description:
    data_dir = Path(config["data-dir"])
    stores = {
        spec.export_id: (
            spec.path,
            describe_store("metadata", spec.metadata, data_dir),
            describe_store("content", spec.content, data_dir),
        )
        for spec in config.exports
    }
    return Description(config["listen"], stores, metrics, worker)


def _stores_open(config: Options, reactor: Any) -> Deferred[None]:
    """Open every export's stores, then close them: a supervisor's check before it binds.

    Its workers open the same stores; a store that cannot open fails with
    :class:`~dittofs.workers.StartFailed`, the one line saying which and why,
    before any port listens.  Schema creation and upgrades happen here too,
    once, rather than in every worker at the same time.
    """
    exports = _export_table(config, reactor)
    description = _description(config, config["metrics"])

    async def check() -> None:
        try:
            await exports.open()
        except StoreOpenError as error:
            reason = error.cause()
            log.failure("The failure below, with its traceback", reason, level=LogLevel.debug)
            raise workers_module.StartFailed(description.open_failed(error)) from error.error
        finally:
            await exports.close()

    return Deferred.fromCoroutine(check())


def _supervisor(config: Options, reactor: Any) -> IService:
    """The supervisor of ``--workers N``: each worker runs this program again, under twist.

    A worker writes its log as JSON lines to the supervisor, which logs each
    event where and how it logs its own (twistd's rotating file, say): one
    writer, whole lines, one format.
    """
    command = ["-m", "twisted", "--log-format", "json"]
    return workers_module.Supervisor(
        reactor,
        count=config["workers"],
        listen=config["listen"],
        metrics=config["metrics"],
        command=[*command, "dittofs", *config.argv, "--log-format", "json"],
        runner_options=config.parent,
        shutdown_timeout=float(config["shutdown-timeout"]),
        check=functools.partial(_stores_open, config, reactor),
    )
