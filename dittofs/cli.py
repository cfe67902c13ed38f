"""The ``dittofs`` console command: maintenance of a filesystem's stores.

``dittofs fsck`` takes the same store options (and ``--config`` file) as
``twistd dittofs``, so it checks exactly what a gateway would serve.  Run it
while no gateway serves the stores when repairing.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import react
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.python.failure import Failure

from dittofs import fsck, progress
from dittofs.log import redact
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


class GcOptions(ServerOptions):
    """Options of ``dittofs gc``: the server's store options plus the grace period."""

    synopsis = "[--config FILE] [--content s3://BUCKET/PREFIX?...] [--grace SECONDS]"
    longdesc = "Delete S3 blocks no file points to any more (safe beside a running gateway)."
    optParameters = [["grace", None, "3600", "Spare unreferenced blocks younger than this (s)."]]
    optFlags = [["quiet", "q", "Show no progress bar."]]


class CommandOptions(usage.Options):
    """``dittofs COMMAND``."""

    synopsis = "COMMAND [options]"
    subCommands = [
        ["fsck", None, FsckOptions, "Check (and repair) a filesystem's stores."],
        ["gc", None, GcOptions, "Collect S3 blocks no file points to."],
    ]
    opt_version = ServerOptions.opt_version

    def postOptions(self) -> None:
        """A command is required."""
        if self.subCommand is None:
            raise usage.UsageError("name a command: fsck or gc")


def _fsck(reactor: Any, options: FsckOptions) -> Deferred[int]:
    data_dir = Path(options["data-dir"])
    metadata = metadata_store(options["metadata"], data_dir, reactor)
    content = content_store(options["content"], data_dir, reactor)
    run = fsck.run(
        metadata, content, repair=bool(options["repair"]), show_progress=not options["quiet"]
    )
    return Deferred.fromCoroutine(run)


def _gc(reactor: Any, options: GcOptions) -> Deferred[int]:
    """Collect garbage in an S3 content store; other stores have none to collect."""
    spec = options["content"]
    if not spec.startswith("s3:"):
        sys.stdout.write(
            f"gc: the {spec.split(':')[0]} content store keeps no unreferenced blocks\n"
        )
        return succeed(0)
    from dittofs.stores.s3.gc import collect_garbage
    from dittofs.stores.s3.objects import ObjectStore
    from dittofs.stores.s3.settings import parse_s3_spec

    settings = parse_s3_spec(spec, Path(options["data-dir"]))
    grace = float(options["grace"])

    def collect() -> int:
        phases = functools.partial(progress.bar, shown=not options["quiet"])
        report = collect_garbage(ObjectStore(settings, 16), settings, grace, progress=phases)
        sys.stdout.write(
            f"gc: {report.manifests} manifests, {report.blocks} blocks, "
            f"{report.referenced} in use, {report.deleted} deleted ({report.deleted_bytes} bytes), "
            f"{report.spared} spared as younger than {grace:g} s\n"
        )
        return 0

    return deferToThread(collect)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dittofs`` console script."""
    options = CommandOptions()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as error:
        sys.stderr.write(f"dittofs: {redact(str(error))}\n")
        raise SystemExit(2) from None
    sub = options.subOptions

    def command(reactor: Any) -> Deferred[None]:
        def finish(status: int) -> None:
            if status:
                raise SystemExit(status)

        def failed(reason: Failure) -> None:
            # Written here rather than by react: a store's error may quote its URL.
            sys.stderr.write(redact(reason.getTraceback()))
            raise SystemExit(1)

        command = _gc if options.subCommand == "gc" else _fsck
        return maybeDeferred(command, reactor, sub).addCallbacks(finish, failed)

    react(command)


if __name__ == "__main__":
    main()
