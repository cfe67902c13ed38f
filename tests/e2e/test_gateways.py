"""Several DittoFS gateways on one set of stores: they must behave as one filesystem.

Two server processes share one metadata store (a SQLite file, a PostgreSQL
schema or a Redis prefix) and one content directory, each on its own port.  Clients of both
change the same directories at once; afterwards the stores must be
consistent (``dittofs fsck`` finds nothing) and both gateways must show the
same tree, down to file ids, sizes and link counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.clients import NFS3_OK, AnfsNfs3, run
from tests.e2e.server import RunningServer, dittofs_server
from tests.e2e.storm import (
    JUKEBOX,
    NOENT,
    STALE,
    coherence_rounds,
    fsck,
    link_count_problems,
    log_problems,
    lookup,
    make_dir,
    make_file,
    metadata_spec,
    must,
    shared_storm,
    walk,
)

GATEWAYS = 2
CLIENTS_PER_GATEWAY = 3
STORM_OPERATIONS = 300
STORM_SECONDS = 45.0
TOP_DIRECTORIES = 3
RACE_ROUNDS = 40
JUKEBOX_RETRIES = 20


@contextlib.contextmanager
def gateways(kind: str, workdir: Path) -> Iterator[tuple[list[RunningServer], str, str]]:
    """Two gateways on one fresh metadata store and one content directory.

    Yields the servers and the ``--metadata`` and ``--content`` specifications.
    """
    content = f"fs:{workdir / 'shared-content'}"
    with metadata_spec(kind, workdir) as metadata, contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                dittofs_server(workdir, "--metadata", metadata, "--content", content)
            )
            for _ in range(GATEWAYS)
        ]
        yield servers, metadata, content


async def rename(nfs: AnfsNfs3, directory: bytes, name: str, target: str) -> dict[str, Any]:
    """RENAME within *directory*, retried while the server answers JUKEBOX, as clients do."""
    for _ in range(JUKEBOX_RETRIES):
        reply: dict[str, Any] = await nfs.rename(
            directory, name.encode(), directory, target.encode()
        )
        if reply["status"] != JUKEBOX:
            break
        await asyncio.sleep(0.05)
    return reply


async def race_round(
    first: AnfsNfs3, second: AnfsNfs3, race: bytes, round_: int, winners: dict[str, int]
) -> list[str]:
    """One round of the rename race; what went wrong in it (nothing, when all is well)."""
    target = f"t{round_}"
    mine = await make_file(first, race, f"a{round_}", b"from the first")
    theirs = await make_file(second, race, f"b{round_}", b"from the second")
    old = await make_file(first, race, target, b"old") if round_ % 2 else None
    replies = await asyncio.gather(
        rename(first, race, f"a{round_}", target),
        rename(second, race, f"b{round_}", target),
    )
    where = f"round {round_} (target {'existed' if old else 'new'})"
    problems = [
        f"{where}: RENAME via the {who} gateway answered {reply['status']}, not NFS3_OK"
        for who, reply in zip(("first", "second"), replies, strict=True)
        if reply["status"] != NFS3_OK
    ]
    if problems:
        return problems  # what else differs follows from the failed rename
    survivors: set[bytes] = set()
    for who, nfs in (("first", first), ("second", second)):
        status, survivor = await lookup(nfs, race, target)
        if status != NFS3_OK:
            problems.append(f"{where}: LOOKUP {target} via the {who} gateway: {status}")
            continue
        if survivor not in (mine, theirs):
            problems.append(f"{where}: {target} names neither renamed file ({who} gateway)")
            continue
        for gone in (f"a{round_}", f"b{round_}"):
            status, _ = await lookup(nfs, race, gone)
            if status != NOENT:
                problems.append(f"{where}: source {gone} still answers {status} ({who})")
        attributes = (await must(nfs.getattr(survivor)))["attributes"]
        if attributes["nlink"] != 1:
            problems.append(f"{where}: survivor has nlink {attributes['nlink']} ({who})")
        loser = theirs if survivor == mine else mine
        for dead in (loser, old):
            if dead is not None:
                status = (await nfs.getattr(dead))["status"]
                if status != STALE:
                    problems.append(f"{where}: a replaced file answers GETATTR {status} ({who})")
        survivors.add(survivor)
        if who == "first":
            winners["first" if survivor == mine else "second"] += 1
    if len(survivors) > 1:
        problems.append(f"{where}: the gateways disagree on which file {target} names")
    return problems


def quiet_and_consistent(
    servers: list[RunningServer], metadata: str, content: str, workdir: Path
) -> list[str]:
    """What is wrong with the gateways (dead, tracebacks) or the shared stores (fsck)."""
    problems = [
        f"a gateway died:\n{server.log()[-4000:]}"
        for server in servers
        if server.process.poll() is not None
    ]
    if log_problems(*servers):
        problems.append(f"a gateway logged a traceback:\n{log_problems(*servers)}")
    status, output = fsck(metadata, content, workdir)
    if status != 0:
        problems.append(f"fsck exit {status} on the shared stores:\n{output}")
    return problems


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
def test_storm_from_two_gateways(kind: str, tmp_path: Path) -> None:
    """Creates, renames and removes from clients of two gateways at once leave one tree.

    The clients share a small pool of names in a few directories, so their
    calls collide all the time: renames over files another client just
    created, directories moved while another client fills them, removes of
    names just renamed away.  Every status must be one some interleaving
    explains, and afterwards fsck finds nothing and both gateways list the
    very same tree (paths, types, sizes, file ids, link counts).
    """
    with gateways(kind, tmp_path) as (servers, metadata, content):

        async def main() -> list[str]:
            async with (
                AnfsNfs3(servers[0].port) as first,
                AnfsNfs3(servers[1].port) as second,
            ):
                storm_root = await make_dir(first, first.root, "storm")
                top = [await make_dir(first, storm_root, f"d{n}") for n in range(TOP_DIRECTORIES)]
                report = await shared_storm(
                    servers,
                    top,
                    clients_per_server=CLIENTS_PER_GATEWAY,
                    operations=STORM_OPERATIONS,
                    seconds=STORM_SECONDS,
                    seed=random.randrange(1 << 30),
                )
                print(report.summary())
                problems = [f"unexplained reply: {line}" for line in report.unexpected]
                # The storm must really have happened, not bounced off errors.
                problems += [
                    f"no {operation} ever succeeded"
                    for operation in ("create", "rename", "rename-dir", "remove", "mkdir")
                    if not report.ok(operation)
                ]
                seen_first = await walk(first, storm_root)
                seen_second = await walk(second, storm_root)
                if seen_first != seen_second:
                    only_first = sorted(set(seen_first.items()) - set(seen_second.items()))
                    only_second = sorted(set(seen_second.items()) - set(seen_first.items()))
                    problems.append(
                        f"the gateways disagree: only via the first {only_first[:20]}, "
                        f"only via the second {only_second[:20]}"
                    )
                if not set(seen_first) >= {f"d{n}" for n in range(TOP_DIRECTORIES)}:
                    problems.append("a top directory is gone")
                problems += link_count_problems(seen_first)[:20]
                return problems

        problems = run(main(), timeout=240)
        problems += quiet_and_consistent(servers, metadata, content, tmp_path)
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
def test_racing_renames_onto_one_name(kind: str, tmp_path: Path) -> None:
    """Two gateways renaming different files onto one name at once: exactly one survives.

    POSIX rename-over: both renames succeed, one after the other, and the
    later one replaces the file the earlier one put there.  So afterwards the
    target names one of the two files with nlink 1, the other file is gone
    (its handle is stale), both source names are gone, and no directory
    lists a name twice.  Every other round the target already exists, so
    both renames replace something.
    """
    with gateways(kind, tmp_path) as (servers, metadata, content):

        async def main() -> list[str]:
            async with (
                AnfsNfs3(servers[0].port) as first,
                AnfsNfs3(servers[1].port) as second,
            ):
                race = await make_dir(first, first.root, "race")
                problems: list[str] = []
                winners = {"first": 0, "second": 0}
                for round_ in range(RACE_ROUNDS):
                    problems += await race_round(first, second, race, round_, winners)
                print(f"last rename won: {winners}")
                targets = {f"t{n}" for n in range(RACE_ROUNDS)}
                for who, nfs in (("first", first), ("second", second)):
                    tree = await walk(nfs, race)  # fails on a name listed twice
                    if not targets <= set(tree):
                        problems.append(f"{who} lists no {sorted(targets - set(tree))}")
                    if not problems and set(tree) != targets:
                        problems.append(f"{who} lists leftovers {sorted(set(tree) - targets)}")
                    problems += link_count_problems(tree)
                return problems

        problems = run(main(), timeout=180)
        problems += quiet_and_consistent(servers, metadata, content, tmp_path)
        assert not problems, f"{len(problems)} problems in {RACE_ROUNDS} rounds:\n" + "\n".join(
            problems[:30]
        )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
def test_a_change_through_one_gateway_is_seen_by_the_next_call_through_the_other(
    kind: str, tmp_path: Path
) -> None:
    """1,000 rounds: a change answered by one gateway, then LOOKUP/GETATTR/READDIR via the other.

    Both gateways keep a metadata cache, and on one host they share its
    change table (beside the SQLite file; in the temporary directory for
    PostgreSQL and Redis); the reads come right after the change is
    answered, and what the reader kept from before the change must never be
    served: strict coherence.  The gateways swap roles every round.
    """
    with gateways(kind, tmp_path) as (servers, metadata, content):

        async def main() -> list[str]:
            async with (
                AnfsNfs3(servers[0].port) as first,
                AnfsNfs3(servers[1].port) as second,
            ):
                return await coherence_rounds(first, second)

        problems = run(main(), timeout=300)
        problems += quiet_and_consistent(servers, metadata, content, tmp_path)
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])
