"""DittoFS as users install it: a wheel in a fresh virtual environment, a store from elsewhere.

The module builds DittoFS's wheel from a copy of this checkout and the
example store package of ``docs/writing-stores.md``
(``docs/examples/compressed-store``: ``compressed_store.py``, its
``pyproject.toml`` and ``twisted/plugins/compressed_store_plugin.py``), and
installs both with pip into a new virtual environment.  That environment
borrows the libraries DittoFS depends on from the one running the tests
(a ``.pth`` line naming its site-packages, whose own ``.pth`` files, and so
the editable install of this checkout, are not read), so it needs no index;
the tests check that ``dittofs`` there is the wheel's, not this checkout.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import attrs
import pytest

from dittofs.testing.conformance import ContentStoreConformance
from tests.e2e.clients import libnfs
from tests.e2e.server import dittofs_server

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "compressed-store"
#: What docs/writing-stores.md tells a user to run; the test adds a port and a data directory.
DOC_INSTALL = "pip install ./compressed-store"
#: twistd of the fresh environment (which has no scripts of its own: Twisted is borrowed).
TWISTD = "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"
#: Files of this checkout a wheel is not built from.
NOT_BUILT = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "_trial_temp*", ".e2e-cache", "tests", "docs", "benchmarks", "dropin.cache",
)  # fmt: skip

#: A content store written here, outside the repository's tests/, for the shipped suite.
STORE_MODULE = '''
from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from dittofs.interfaces import IContentStore
from dittofs.model import SpaceUsage
from dittofs.testing.conformance import ContentStoreConformance


@implementer(IContentStore)
class BytesStore:
    name = "bytes"

    def __init__(self):
        self.files = {}

    def open(self):
        return succeed(None)

    def close(self):
        return succeed(None)

    def read(self, fileid, offset, count):
        return succeed(bytes(self.files.get(fileid, b"")[offset : offset + count]))

    def write(self, fileid, offset, data, stable):
        content = self.files.setdefault(fileid, bytearray())
        if offset > len(content):
            content.extend(bytes(offset - len(content)))
        content[offset : offset + len(data)] = data
        return succeed(None)

    def truncate(self, fileid, size):
        del self.files.setdefault(fileid, bytearray())[size:]
        return succeed(None)

    def delete(self, fileid):
        self.files.pop(fileid, None)
        return succeed(None)

    def commit(self, fileid):
        return succeed(None)

    def space(self):
        used = sum(len(content) for content in self.files.values())
        return succeed(SpaceUsage(2**30, 2**30 - used))


class ForgetfulStore(BytesStore):
    """Truncation that keeps the bytes: the suite must catch it."""

    def truncate(self, fileid, size):
        return succeed(None)


class BytesStoreTests(ContentStoreConformance, SynchronousTestCase):
    def make_store(self):
        return BytesStore()


class ForgetfulStoreTests(ContentStoreConformance, SynchronousTestCase):
    def make_store(self):
        return ForgetfulStore()
'''


@attrs.frozen
class Installed:
    """A fresh virtual environment with DittoFS's wheel and the example store installed."""

    python: Path
    work: Path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the environment's python with *args* in the scratch directory (not this checkout)."""
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _pip(*args: str | Path, cwd: Path) -> None:
    """Run this environment's pip; fail the test with pip's own words if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"pip {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel, make the environment, install the wheel and the example package."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "dittofs-source"
    shutil.copytree(REPO, source, ignore=NOT_BUILT)
    shutil.copytree(EXAMPLE, work / "compressed-store", ignore=NOT_BUILT)
    _pip("wheel", "--no-deps", "-w", work / "wheels", source, cwd=work)
    (wheel,) = (work / "wheels").glob("dittofs-*.whl")

    environment = work / "venv"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "borrowed-dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))

    _pip("--python", python, "install", "--no-deps", wheel, cwd=work)
    # The documentation's command; --python and --no-deps because the environment
    # has no pip of its own and borrows DittoFS's dependencies.
    _pip("--python", python, *shlex.split(DOC_INSTALL)[1:], "--no-deps", cwd=work)
    return Installed(python, work)


def test_the_wheel_is_what_runs(installed: Installed) -> None:
    """``dittofs`` and its testing kit come from the installed wheel, not from this checkout."""
    found = installed.run(
        "-c",
        "import dittofs, dittofs.testing.conformance as c, compressed_store as s;"
        "print(dittofs.__file__); print(c.__file__); print(s.__file__)",
    )
    assert found.returncode == 0, found.stderr
    for path in found.stdout.split():
        assert Path(path).is_relative_to(installed.python.parents[1]), path
        assert not Path(path).is_relative_to(REPO), path


def test_the_shipped_conformance_suite_judges_a_store_written_elsewhere(
    installed: Installed,
) -> None:
    """A store defined here passes the wheel's suite, all of it; a broken one fails it."""
    (installed.work / "check_store.py").write_text(STORE_MODULE)
    tests = len([name for name in dir(ContentStoreConformance) if name.startswith("test_")])
    assert tests > 10

    passed = installed.run("-m", "twisted.trial", "check_store.BytesStoreTests")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert f"PASSED (successes={tests})" in passed.stdout, passed.stdout

    failed = installed.run("-m", "twisted.trial", "check_store.ForgetfulStoreTests")
    assert failed.returncode != 0, failed.stdout
    assert "FAILED (failures=" in failed.stdout, failed.stdout
    assert "test_truncate" in failed.stdout


def test_a_store_from_another_package_serves(installed: Installed, tmp_path: Path) -> None:
    """``--content compressed:...`` from the example package serves files through twistd.

    The package was built from ``compressed_store_plugin.py`` and its
    ``pyproject.toml`` and installed by the documentation's ``pip install``;
    ``twistd`` then runs the documentation's command, on a free port.
    """
    words = shlex.split("twistd -n dittofs --metadata memory --content compressed:1073741824")
    assert words[:3] == ["twistd", "-n", "dittofs"]
    launcher = [str(installed.python), "-c", TWISTD, "-n", "--pidfile="]
    with dittofs_server(tmp_path, *words[3:], launcher=launcher) as server:
        assert "with memory metadata and compressed content" in server.log()
        data = bytes(range(256)) * 400
        local = tmp_path / "in.bin"
        local.write_bytes(data)
        copied_in = libnfs("nfs-cp", str(local), server.url("file.bin"))
        assert copied_in.returncode == 0, copied_in.stderr
        back = tmp_path / "out.bin"
        copied_out = libnfs("nfs-cp", server.url("file.bin"), str(back))
        assert copied_out.returncode == 0, copied_out.stderr
        assert back.read_bytes() == data

    listed = installed.run("-c", TWISTD, "dittofs", "--help")
    assert "compressed[:CAPACITY]" in listed.stdout, listed.stdout
    refused = installed.run("-c", TWISTD, "-n", "dittofs", "--content", "compressed:lots")
    assert refused.returncode != 0
    assert "CAPACITY must be a number of bytes" in refused.stdout + refused.stderr
