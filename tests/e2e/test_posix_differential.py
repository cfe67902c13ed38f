"""POSIX through the wire: DittoFS against the host's own filesystem, operation by operation.

See :mod:`tests.e2e.posix`.  Each store pairing runs with root squashing off
and on; the number of operations is bounded (``DITTOFS_DIFF_OPERATIONS`` per
pairing and squash mode), which bounds the time too.  A long run
(``DITTOFS_DIFF_RANDOM=1``) may also be bounded in time
(``DITTOFS_DIFF_SECONDS``): it stops between examples, so it ends green when
nothing differed.  ``docs/testing.md`` says how to run the long version and
what it has found.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.e2e.posix.machine import Budget, machine_for
from tests.e2e.posix.reference import Identity, reference_tree
from tests.e2e.posix.remote import Remote
from tests.e2e.server import dittofs_server
from tests.e2e.storm import metadata_spec

OPERATIONS = int(os.environ.get("DITTOFS_DIFF_OPERATIONS", "1500"))
#: Long runs draw new examples every time and shrink what fails; CI replays the same
#: examples (a red CI is reproducible) and does not shrink (its time stays bounded).
LONG = os.environ.get("DITTOFS_DIFF_RANDOM", "") == "1"
#: A long run's time budget in seconds (0: none), checked between batches of examples.
SECONDS = float(os.environ.get("DITTOFS_DIFF_SECONDS", "0"))
STEPS = 100
#: Examples a long run draws between two looks at its budgets.
BATCH = 10
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)

ALICE = Identity("alice", 1001, 1001, (1001, 1003))
BOB = Identity("bob", 1002, 1002, (1002, 1003))
ROOT = Identity("root", 0, 0, (0,))
SQUASHED_ROOT = Identity("root", 65534, 65534, (65534,))
SETUP = Identity("setup", 0, 0, (0,))


@contextlib.contextmanager
def _s3_content(workdir: Path) -> Iterator[str]:
    from tests.e2e.seaweedfs import credentials_env, seaweedfs

    with seaweedfs(workdir / "seaweedfs") as weed, pytest.MonkeyPatch.context() as patch:
        for key, value in credentials_env().items():
            patch.setenv(key, value)
        weed.create_bucket("differential")
        yield weed.spec("differential", "posix", cache_dir=workdir / "cache", cache_size="64MiB")


@contextlib.contextmanager
def _fs_content(workdir: Path) -> Iterator[str]:
    yield f"fs:{workdir / 'content'}"


@contextlib.contextmanager
def _memory_metadata(workdir: Path) -> Iterator[str]:
    yield "memory"


def _metadata(kind: str) -> Callable[[Path], contextlib.AbstractContextManager[str]]:
    return lambda workdir: metadata_spec(kind, workdir)


PAIRINGS = {
    "memory+fs": (_memory_metadata, _fs_content),
    "sqlite+fs": (_metadata("sqlite"), _fs_content),
    "postgresql+fs": (_metadata("postgresql"), _fs_content),
    "redis+fs": (_metadata("redis"), _fs_content),
    "sqlite+s3": (_metadata("sqlite"), _s3_content),
}


@pytest.mark.parametrize("squash", ["no_root_squash", "root_squash"])
@pytest.mark.parametrize("pairing", sorted(PAIRINGS))
def test_posix_semantics_agree_with_the_local_filesystem(
    pairing: str, squash: str, tmp_path: Path
) -> None:
    """Every random operation answers as the host's own filesystem does, errno for errno."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the reference mounts a tmpfs and acts as three users")
    root = ROOT if squash == "no_root_squash" else SQUASHED_ROOT
    metadata_of, content_of = PAIRINGS[pairing]
    with (
        metadata_of(tmp_path) as metadata,
        content_of(tmp_path) as content,
        dittofs_server(
            tmp_path, "--metadata", metadata, "--content", content, "--squash", squash
        ) as server,
        reference_tree([root, ALICE, BOB, SETUP]) as reference,
    ):
        remote = Remote(
            server.port, [ROOT, ALICE, BOB], {"root": root.uid, "alice": 1001, "bob": 1002}
        )
        budget = Budget()
        started = time.monotonic()
        machine = machine_for(reference, remote, budget)
        deadline = started + SECONDS if SECONDS else float("inf")

        def examples(count: int) -> None:
            run_state_machine_as_test(
                machine,
                settings=settings(
                    max_examples=count,
                    stateful_step_count=STEPS,
                    deadline=None,
                    database=None,
                    derandomize=not LONG,
                    phases=PHASES if LONG else PHASES[:-1],
                    suppress_health_check=list(HealthCheck),
                ),
            )

        try:
            if not LONG:
                examples(max(1, OPERATIONS // STEPS))  # the same examples every time
            for _ in range(max(1, OPERATIONS // (STEPS * BATCH) + 1)):
                if not LONG or budget.total >= OPERATIONS or time.monotonic() >= deadline:
                    break
                examples(BATCH)  # new examples each batch
        finally:
            remote.close()
        elapsed = time.monotonic() - started
        print(
            f"\n{pairing} {squash}: {budget.total} operations ({budget.observations} lstat "
            f"observations) compared in {elapsed:.0f} s, no difference; "
            f"not issued: {dict(budget.skipped)}\n{budget.summary()}"
        )
        assert "Traceback" not in server.log(), server.log()[-20_000:]
        assert budget.total > 0
