"""The ``dittofs`` console command: maintenance of a filesystem's stores.

``dittofs fsck`` takes the same store options (and ``--config`` file) as
``twistd dittofs``, so it checks exactly what a gateway would serve.  Run it
while no gateway serves the stores when repairing.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import react
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.python import usage
from twisted.python.failure import Failure

from dittofs import fsck, progress
from dittofs.interfaces import IBlockMaps, IMetadataStore
from dittofs.log import redact
from dittofs.model import BlockChange, Slice
from dittofs.stores import store_pair
from dittofs.tap import Options as ServerOptions

if TYPE_CHECKING:
    from dittofs.stores.s3.settings import S3Settings


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


class MigrateOptions(ServerOptions):
    """Options of ``dittofs s3-migrate``: the server's store options."""

    synopsis = "[--config FILE] [--metadata SPEC] --content s3://BUCKET/PREFIX?..."
    longdesc = (
        "Move an S3 prefix's manifests (DittoFS before block maps) into the metadata store's "
        "block maps, once, with no gateway serving it."
    )
    optFlags = [["quiet", "q", "Show no progress bar."]]


class CommandOptions(usage.Options):
    """``dittofs COMMAND``."""

    synopsis = "COMMAND [options]"
    subCommands = [
        ["fsck", None, FsckOptions, "Check (and repair) a filesystem's stores."],
        ["gc", None, GcOptions, "Collect S3 blocks no file points to."],
        ["s3-migrate", None, MigrateOptions, "Move an S3 prefix's manifests into block maps."],
    ]
    opt_version = ServerOptions.opt_version

    def postOptions(self) -> None:
        """A command is required."""
        if self.subCommand is None:
            raise usage.UsageError("name a command: fsck, gc or s3-migrate")


def _fsck(reactor: Any, options: FsckOptions) -> Deferred[int]:
    metadata, content = store_pair(
        options["metadata"], options["content"], Path(options["data-dir"]), reactor
    )
    run = fsck.run(
        metadata, content, repair=bool(options["repair"]), show_progress=not options["quiet"]
    )
    return Deferred.fromCoroutine(run)


def _s3_maps(
    reactor: Any, options: ServerOptions, command: str
) -> tuple[S3Settings, IBlockMaps] | None:
    """The S3 settings and the (unopened) metadata store of a command on an S3 prefix.

    None, after saying so, when the content store is not S3.
    """
    spec = options["content"]
    if not spec.startswith("s3:"):
        sys.stdout.write(f"{command}: the {spec.split(':')[0]} content store has nothing to do\n")
        return None
    from dittofs.stores.s3.settings import parse_s3_spec

    metadata, _ = store_pair(options["metadata"], spec, Path(options["data-dir"]), reactor)
    return parse_s3_spec(spec, Path(options["data-dir"])), IBlockMaps(metadata)


async def _on_s3(
    reactor: Any, options: ServerOptions, command: str, work: Callable[..., int]
) -> int:
    """Open the metadata store, run *work(settings, maps, phases)* in a thread, close it."""
    found = _s3_maps(reactor, options, command)
    if found is None:
        return 0
    settings, maps = found
    metadata = IMetadataStore(maps)
    await metadata.open()
    try:
        phases = functools.partial(progress.bar, shown=not options["quiet"])
        status: int = await deferToThread(work, settings, maps, phases)
        return status
    finally:
        await metadata.close()


def _gc(reactor: Any, options: GcOptions) -> Deferred[int]:
    """Collect garbage in an S3 content store; other stores have none to collect."""
    from dittofs.stores.s3.gc import NothingNamed, collect_garbage
    from dittofs.stores.s3.objects import ObjectStore

    grace = float(options["grace"])

    def collect(settings: S3Settings, maps: IBlockMaps, phases: progress.Phases) -> int:
        def named() -> Iterator[str]:
            after = ""
            for _ in range(2**62):
                ask: Any = maps.object_keys
                page: list[str] = blockingCallFromThread(reactor, ask, after, 1000)
                yield from page
                if len(page) < 1000:
                    return
                after = page[-1]

        s3 = ObjectStore(settings, 16)
        try:
            report = collect_garbage(s3, settings, named, grace=grace, progress=phases)
        except NothingNamed as error:
            sys.stderr.write(f"gc: {error}\n")
            return 1
        sys.stdout.write(
            f"gc: {report.named} objects named by the block maps, {report.blocks} block "
            f"objects, {report.referenced} in use, {report.deleted} deleted "
            f"({report.deleted_bytes} bytes), {report.spared} spared as younger than "
            f"{grace:g} s\n"
        )
        return 0

    return Deferred.fromCoroutine(_on_s3(reactor, options, "gc", collect))


def _migrate(reactor: Any, options: MigrateOptions) -> Deferred[int]:
    """Move an S3 prefix's manifests into the block maps."""
    from dittofs.stores.s3.migrate import migrate
    from dittofs.stores.s3.objects import ObjectStore

    def move(settings: S3Settings, maps: IBlockMaps, phases: progress.Phases) -> int:
        def change_map(
            fileid: int, add: list[Slice], drop_from: int | None, length: int
        ) -> BlockChange:
            change: Any = maps.change_blocks
            changed: BlockChange = blockingCallFromThread(
                reactor, change, fileid, add, drop_from, length
            )
            return changed

        report = migrate(ObjectStore(settings, 16), settings, change_map, phases)
        if report.already:
            sys.stdout.write("s3-migrate: the prefix keeps its block lists in the maps already\n")
        else:
            sys.stdout.write(
                f"s3-migrate: {report.files} files, {report.blocks} blocks moved into the "
                "block maps\n"
            )
        return 0

    return Deferred.fromCoroutine(_on_s3(reactor, options, "s3-migrate", move))


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

        commands: dict[str, Callable[[Any, Any], Deferred[int]]] = {
            "fsck": _fsck, "gc": _gc, "s3-migrate": _migrate,
        }  # fmt: skip
        run = commands[str(options.subCommand)]
        return maybeDeferred(run, reactor, sub).addCallbacks(finish, failed)

    react(command)


if __name__ == "__main__":
    main()
