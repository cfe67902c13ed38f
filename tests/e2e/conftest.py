"""Fixtures for the end-to-end tests: real DittoFS processes, one per store pairing.

A server is started once per test module and pairing (starting Twisted costs
about a second); tests share it and keep out of each other's way by working
in directories named after themselves.  After every test the part of the
server log written during it is checked for tracebacks, and a failing test's
report carries the tail of the log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import RunningServer, dittofs_server

#: Store pairings, as server options given a scratch directory.
PAIRINGS: dict[str, Callable[[Path], tuple[str, ...]]] = {
    "memory+memory": lambda workdir: ("--metadata", "memory", "--content", "memory"),
    "memory+fs": lambda workdir: (
        "--metadata",
        "memory",
        "--content",
        f"fs:{workdir / 'content'}",
    ),
}

LOG_TAIL = 20_000


def _start(tmp_path_factory: pytest.TempPathFactory, pairing: str) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp(f"dittofs-{pairing.replace('+', '-')}")
    (workdir / "content").mkdir()
    # These suites exercise every procedure as root (chown, device nodes), so root keeps
    # its powers here; root squashing, the default, is tested in tests/unit/test_policy.py
    # and tests/e2e/test_anfs.py::test_root_is_squashed_by_default.
    options = (*PAIRINGS[pairing](workdir), "--squash", "no_root_squash")
    with dittofs_server(workdir, *options) as running:
        yield running


@pytest.fixture(scope="module", params=sorted(PAIRINGS))
def pairing_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A DittoFS process for each store pairing, shared by one test module."""
    yield from _start(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def memory_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A DittoFS process with in-memory stores, shared by one test module."""
    yield from _start(tmp_path_factory, "memory+memory")


def _checked(running: RunningServer) -> Iterator[RunningServer]:
    start = len(running.log())
    yield running
    assert running.process.poll() is None, f"DittoFS exited:\n{running.log()[-LOG_TAIL:]}"
    written = running.log()[start:]
    assert "Traceback" not in written, f"DittoFS logged a traceback:\n{written[-LOG_TAIL:]}"


@pytest.fixture
def server(pairing_server: RunningServer) -> Iterator[RunningServer]:
    """The pairing's server; the test fails if it dies or logs a traceback meanwhile."""
    yield from _checked(pairing_server)


@pytest.fixture
def memory_server(memory_server_process: RunningServer) -> Iterator[RunningServer]:
    """The in-memory server; the test fails if it dies or logs a traceback meanwhile."""
    yield from _checked(memory_server_process)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A file name unique to this test (and pairing), for work on a shared server."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:200]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """Attach the tail of the server log to the report of a failing test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for fixture in ("server", "memory_server"):
        running = funcargs.get(fixture)
        if isinstance(running, RunningServer):
            report.sections.append((f"DittoFS log ({fixture})", running.log()[-LOG_TAIL:]))
