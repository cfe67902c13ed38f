"""DittoFS's log level, applied to DittoFS's own messages only.

Every DittoFS module logs through a ``Logger`` bound to :data:`observer`,
which filters by the level chosen with ``--log-level`` and then hands events
to Twisted's global publisher (and so to whatever twistd or the embedding
program set up).  Twisted's own messages are left alone.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

LEVELS = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARN": LogLevel.warn,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
    "CRITICAL": LogLevel.critical,
}

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
observer = FilteringLogObserver(globalLogPublisher, [_predicate])



class _Switches:
    """Flags hot paths test before building a log event nobody will see."""

    debugging = False


switches = _Switches()


def set_level(name: str) -> None:
    """Set the lowest level of DittoFS message that is logged (DEBUG ... CRITICAL)."""
    level = LEVELS[name.upper()]
    _predicate.setLogLevelForNamespace("", level)
    switches.debugging = level == LogLevel.debug
