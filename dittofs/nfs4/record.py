"""The clients an NFSv4.1 server served, kept in a file so that they may reclaim after a restart.

RFC 8881 section 8.4.3 asks a server to remember, across restarts, which
clients held state, so that after a restart it lets exactly those reclaim
their opens and locks during the grace period, and no grace period is
needed when there were none.  The record is one file in the data directory:
a client owner (hexadecimal) a line, replaced whole (written beside it, then
renamed) whenever the set changes, which is when a client first creates a
session, or goes.  It is not ``fsync``ed: a killed server's record survives in
the page cache; after a machine's crash the clients find no grace and their
locks are lost, as if there had been no record.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.logger import Logger

from dittofs import log as dittofs_log

log = Logger(observer=dittofs_log.observer)


class ClientRecord:
    """The record file of one server: read at start, rewritten when clients come and go."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> frozenset[bytes]:
        """The owners the last instance recorded (none if there is no record)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return frozenset()
        owners = set()
        for number, line in enumerate(text.splitlines(), 1):
            try:
                owners.add(bytes.fromhex(line))
            except ValueError:
                log.warn(
                    "{path}:{number}: not a client owner, ignored", path=self.path, number=number
                )
        return frozenset(owners)

    def save(self, owners: frozenset[bytes]) -> None:
        """Replace the record with *owners* (a failure is logged: it costs only a grace)."""
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text("".join(f"{owner.hex()}\n" for owner in sorted(owners)))
            os.replace(partial, self.path)
        except OSError as error:
            log.error(
                "Could not record the NFSv4.1 clients in {path}: {error}; after a restart"
                " they will not be able to reclaim their locks",
                path=self.path,
                error=str(error),
            )
