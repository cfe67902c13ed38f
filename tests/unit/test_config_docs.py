"""The configuration reference and README's options block list exactly the options that exist.

An option added without a line in docs/configuration.md, or a line left
behind after an option is renamed, is a user reading about a DittoFS that
is not the one they run.  So each check goes both ways: every option
``dittofs.tap.Options`` declares (long and short), every key the config
file accepts and every key of an ``[[exports]]`` table is documented, and
everything documented exists.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from dittofs import tap
from dittofs.config import EXPORT_KEYS

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"


def declared_options() -> set[str]:
    """Every option ``twistd dittofs`` takes, spelled as typed: ``--long`` and ``-s``."""
    spelled = set()
    for name, short, *_ in [*tap.Options.optParameters, *tap.Options.optFlags]:
        spelled.add(f"--{name}")
        if short:
            spelled.add(f"-{short}")
    return spelled


def table_keys(markdown: str, header: str) -> list[set[str]]:
    """The backquoted names in the first cell of each row of the table under *header*."""
    lines = markdown.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        first_cell = line.split("|")[1]
        rows.append(set(re.findall(r"`([^`]+)`", first_cell)))
    return rows


def options_block(markdown: str) -> str:
    """README's options block: the ``text`` code block after the line introducing it."""
    after = markdown[markdown.index("\nOptions (") :]
    return after.split("```text\n", 1)[1].split("```", 1)[0]


class ReferenceTests(SynchronousTestCase):
    """docs/configuration.md against the options and the config file's keys."""

    def setUp(self) -> None:
        self.rows = table_keys(REFERENCE.read_text(), "| option / key | value | default |")

    def test_options(self) -> None:
        """The reference's table names every option, long and short, and no other."""
        documented = {name for row in self.rows for name in row if name.startswith("-")}
        self.assertEqual(
            sorted(documented - declared_options()), [], "documented but no such option"
        )
        self.assertEqual(sorted(declared_options() - documented), [], "options not documented")

    def test_config_keys(self) -> None:
        """The table names every key of the config file, and no other."""
        documented = {name for row in self.rows for name in row if not name.startswith("-")}
        # The loader's own table of keys and types: what _load_config accepts.
        accepted = set(tap._CONFIG_TYPES)
        self.assertEqual(sorted(documented - accepted), [], "documented but no such key")
        self.assertEqual(sorted(accepted - documented), [], "keys not documented")

    def test_option_and_key_share_a_row(self) -> None:
        """Where an option has a config key they are one row, so they cannot drift apart."""
        for row in self.rows:
            longs = {name.removeprefix("--") for name in row if name.startswith("--")}
            keys = {name for name in row if not name.startswith("-")}
            if longs and keys:
                self.assertEqual(longs, keys, row)

    def test_export_table_keys(self) -> None:
        """The ``[[exports]]`` table of the reference has every key the loader accepts."""
        rows = table_keys(REFERENCE.read_text(), "| key | value | default |")
        documented = {name for row in rows for name in row}
        self.assertEqual(sorted(documented - EXPORT_KEYS), [], "documented but no such key")
        self.assertEqual(sorted(EXPORT_KEYS - documented), [], "keys not documented")


class ReadmeTests(SynchronousTestCase):
    """README.md's options block against the options."""

    def test_options_block(self) -> None:
        """Each line of the block starts with an option that exists; every option has one."""
        documented = set()
        for line in options_block(README.read_text()).splitlines():
            names = re.match(r"(--[\w-]+)(?:, (-\w))?", line)
            self.assertIsNotNone(names, f"not an option line: {line!r}")
            assert names is not None
            documented.update(name for name in names.groups() if name)
        self.assertEqual(
            sorted(documented - declared_options()), [], "in README but no such option"
        )
        self.assertEqual(sorted(declared_options() - documented), [], "options not in README")
