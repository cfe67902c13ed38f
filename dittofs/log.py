"""DittoFS's logging: the level and format chosen by options, and the secrets kept out of it.

Every DittoFS module logs through a ``Logger`` bound to :data:`observer`,
which filters by the level chosen with ``--log-level``, replaces passwords in
each event with ``***`` (:func:`redact`), and then hands events to Twisted's
global publisher (and so to whatever twistd or the embedding program set
up).  Twisted's own messages are left alone.

The format (``--log-format``) belongs to the program that runs DittoFS: it
opens the log file and starts logging after it has parsed the plugin's
options but before the service starts.  :func:`configure_runner` is how the
parsed options reach it, through the same keys of the runner's own options
that its command line sets: ``--logger`` for twistd, ``--log-format`` and
``--log-level`` for twist (``python -m twisted``).  An embedding program
keeps its own logging.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import attrs
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsText,
    globalLogPublisher,
    jsonFileLogObserver,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from zope.interface import implementer, provider

LEVELS = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARN": LogLevel.warn,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
    "CRITICAL": LogLevel.critical,
}
FORMATS = ("text", "json")

# Both patterns bound every repetition that could be retried from many starting points,
# so a long hostile string in a message costs linear time, not quadratic.
#: ``scheme://NETLOC``: a URL's authority, where ``user:password@`` goes.
_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<netloc>[^/?#\s]*)")
#: The ``password=VALUE`` of a query string or libpq keyword string, and kin
#: (``sslpassword=``, ``aws_secret_access_key=``, an OTLP ``authorization=`` header).
#: The value runs to the next ``&`` or space (a password may hold a comma), but leaves
#: a closing quote, comma or bracket at its end, so the message around it stays whole.
_SECRET_PARAMETER = re.compile(
    r"(?i)((?:password|passwd|secret|token|authorization|api[_-]?key)[\w.-]{0,64}=)"
    r"(?:[^&\s]*[^&\s'\",)\]}])?"
)


def redact(text: str) -> str:
    """*text* with every URL password and every ``password=``-like value replaced by ``***``.

    Store specifications are URLs that may carry credentials
    (``postgresql://user:PASSWORD@host/db``, ``redis://:PASSWORD@host``,
    ``?password=``), and they reach messages from many sides: a mistyped
    ``--metadata``, libpq quoting the URI it could not parse, botocore naming
    its endpoint.  So the places DittoFS writes to pass everything through
    here, whoever made the message: :data:`observer` (every DittoFS log
    event), the one-line usage error, the ``dittofs`` command's failures and
    the ``/ready`` body.  User names and hosts stay: they say which store is
    meant.
    """
    return _SECRET_PARAMETER.sub(r"\1***", _AUTHORITY.sub(_hide_password, text))


def error_line(error: BaseException) -> str:
    """*error* as one line: its type and the first line of its message.

    Database drivers add lines (libpq quotes the statement and points at
    it with a caret); the first says what went wrong, and a message that
    names a failure keeps to one line of the log.
    """
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


def _hide_password(match: re.Match[str]) -> str:
    # The last "@" ends the user information, as urllib.parse and libpq read it.
    userinfo, at, host = match["netloc"].rpartition("@")
    user, colon, _password = userinfo.partition(":")
    if not (at and colon):
        return match[0]
    return f"{match['scheme']}{user}:***@{host}"


def _redacted_failure(failure: Failure) -> Failure:
    """*failure*, or a copy whose message (shown under its traceback) is redacted."""
    message = failure.getErrorMessage()
    clean = redact(message)
    if clean == message:
        return failure
    redacted = copy.copy(failure)
    redacted.value = Exception(clean)  # the traceback still names the original type
    return redacted


@provider(ILogObserver)
def _publish_redacted(event: LogEvent) -> None:
    """Hand a DittoFS event to Twisted's publisher with its strings and failure redacted."""
    clean = {key: redact(text) if isinstance(text, str) else text for key, text in event.items()}
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        clean["log_failure"] = _redacted_failure(failure)
    globalLogPublisher(clean)


_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
observer = FilteringLogObserver(_publish_redacted, [_predicate])


class _Switches:
    """Flags hot paths test before building a log event nobody will see."""

    debugging = False


switches = _Switches()


def set_level(name: str) -> None:
    """Set the lowest level of DittoFS message that is logged (DEBUG ... CRITICAL)."""
    level = LEVELS[name.upper()]
    _predicate.setLogLevelForNamespace("", level)
    switches.debugging = level == LogLevel.debug


@implementer(ILogObserver)
class JsonLinesObserver:
    """Writes each event to a file as one line of JSON.

    The line is Twisted's :func:`~twisted.logger.eventAsJSON`, so every field
    of the event (``xid``, ``procedure``, ``status``, ``ms``, ``host``...) is
    a JSON field of its own, with no RFC 7464 record separator (log shippers
    read JSON lines).  A ``text`` field adds the message as the text log would
    show it, traceback included: ``eventAsJSON`` keeps a failure's frames and
    type but not its message.
    """

    def __init__(self, out: IO[Any]) -> None:
        self._lines = jsonFileLogObserver(out, recordSeparator="")

    def __call__(self, event: LogEvent) -> None:
        """Write *event* (a copy: encoding it adds keys)."""
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        self._lines({**event, "text": text})


@attrs.define
class TwistdJsonLog:
    """twistd's ``--logger`` factory for ``--log-format json``: JSON lines where twistd logs.

    twistd calls a ``--logger`` factory with no arguments, so where twistd
    would have written text (its ``--logfile``, or stdout with ``-n``) is
    recorded here by :func:`configure_runner` when the options are parsed.
    The file is twistd's own :class:`~twisted.python.logfile.LogFile`, which
    rotates at 1 MB as twistd's text log does.
    """

    logfile: str | None = None

    def __call__(self) -> ILogObserver:
        """Open the log (stdout when no file was chosen) and return the observer writing it."""
        if self.logfile is None:
            return JsonLinesObserver(sys.stdout)
        return JsonLinesObserver(LogFile.fromFullPath(self.logfile))


twistd_json_log = TwistdJsonLog()


def configure_runner(runner: MutableMapping[str, Any] | None, level: str, log_format: str) -> None:
    """Make the program that parsed DittoFS's options log in *log_format* at *level*.

    *runner* is the parent of DittoFS's options: twistd's or twist's own
    options, which they read when they start logging (``None`` when DittoFS
    is embedded or its options are parsed alone).  ``text`` leaves the
    runner's own format.  Raises ``ValueError`` for a combination of runner
    options that cannot write JSON.
    """
    if runner is None:
        return
    wants_json = log_format.lower() == "json"
    if "fileLogObserverFactory" in runner:  # twist: its own level filter sees DittoFS's events
        threshold = LEVELS[level.upper()]
        runner["logLevel"] = min(runner["logLevel"], threshold)
        if wants_json:
            runner["fileLogObserverFactory"] = JsonLinesObserver
            runner["logFormat"] = "json"
    elif "logger" in runner and wants_json:  # twistd
        if runner["logger"] or runner.get("syslog"):
            raise ValueError("twistd's --logger or --syslog already chooses how to log")
        # twistd's own choice: --logfile, else stdout with -n, else twistd.log.
        logfile = runner.get("logfile") or ("-" if runner.get("nodaemon") else "twistd.log")
        if logfile == "-" and not runner.get("nodaemon"):
            raise ValueError("twistd cannot log to stdout once it has daemonized")
        twistd_json_log.logfile = None if logfile == "-" else logfile
        runner["logger"] = f"{__name__}.twistd_json_log"
