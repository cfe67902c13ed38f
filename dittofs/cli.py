"""The ``dittofs`` console command: maintenance of a filesystem's stores.

``dittofs fsck`` takes the same store options (and ``--config`` file) as
``twistd dittofs``, so it checks exactly what a gateway would serve.  Run it
while no gateway serves the stores when repairing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.python import usage

from dittofs import fsck
from dittofs.stores import content_store, metadata_store
from dittofs.tap import Options as ServerOptions


class FsckOptions(ServerOptions):
    """Options of ``dittofs fsck``: the server's store options plus ``--repair``."""

    synopsis = "[--config FILE] [--data-dir DIR] [--metadata SPEC] [--content SPEC] [--repair]"
    longdesc = "Check a filesystem's metadata and content; mend what is wrong with --repair."
    optFlags = [
        ["repair", None, "Fix the problems found."],
        ["quiet", "q", "Show no progress bar."],
    ]


class CommandOptions(usage.Options):
    """``dittofs COMMAND``."""

    synopsis = "COMMAND [options]"
    subCommands = [["fsck", None, FsckOptions, "Check (and repair) a filesystem's stores."]]

    def postOptions(self) -> None:
        """A command is required."""
        if self.subCommand is None:
            raise usage.UsageError("name a command: fsck")


def _fsck(reactor: Any, options: FsckOptions) -> Deferred[int]:
    data_dir = Path(options["data-dir"])
    metadata = metadata_store(options["metadata"], data_dir, reactor)
    content = content_store(options["content"], data_dir, reactor)
    run = fsck.run(
        metadata, content, repair=bool(options["repair"]), show_progress=not options["quiet"]
    )
    return Deferred.fromCoroutine(run)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dittofs`` console script."""
    options = CommandOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as error:
        sys.stderr.write(f"dittofs: {error}\n")
        raise SystemExit(2) from None
    sub = options.subOptions

    def command(reactor: Any) -> Deferred[None]:
        def finish(status: int) -> None:
            if status:
                raise SystemExit(status)

        return _fsck(reactor, sub).addCallback(finish)

    react(command)
