"""Every fenced listing in README.md and docs/*.md is proven, by a rule in one table.

:data:`RULES` says, listing by listing, how it is proven and by which test:
here for what needs no server, in ``tests/e2e/test_doc_listings.py`` for
what starts one.  :meth:`ListingRulesTests.test_every_listing_has_exactly_one_rule`
fails when a listing appears that no rule covers, or a rule is left without
its listing, so nothing in the documentation goes unexamined.

What "proven" means depends on the listing:

* Python runs, in a fresh namespace or as a program under ``twistd``.
* TOML goes through ``twistd dittofs --config`` (:class:`dittofs.tap.Options`),
  and each key must arrive as the value the file gives.
* Shell runs when it can, against a DittoFS the test starts on a free
  loopback port.  The only changes made to a command before it runs are
  named in its test (a port, a scratch directory for ``/srv``, a placeholder
  credential); the rest is as written, so an edit that breaks the command
  breaks the test.
* What cannot run on this host (a kernel or macOS ``mount``, ``apt-get``,
  systemd, Kubernetes, the minutes-long suites) is checked against what is
  proven elsewhere: mount options against the QEMU guest suite's
  (``tests/e2e/linux``), package lists against the README's test command
  (which CI runs), test commands by collecting what they select.
* Sample output and diagrams are compared with the code or with a real run.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import io
import re
import shlex
import shutil
import tempfile
import tomllib
import unittest
from pathlib import Path
from typing import Any

import attrs
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from dittofs import interfaces
from dittofs.tap import DEFAULTS, Options

ROOT = Path(__file__).resolve().parents[2]

# -- the listings ----------------------------------------------------------------------------


@attrs.frozen
class Listing:
    """One fenced code block: where it is, its info string, its text, and the lines above it."""

    doc: str
    line: int
    lang: str
    text: str
    lead: str
    """The paragraph (or comment) above the fence: it names a unit file, a marker..."""

    def lines(self) -> list[str]:
        """The listing's non-blank lines."""
        return [line for line in self.text.splitlines() if line.strip()]


_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


def documents() -> list[str]:
    """README.md and every page of the documentation site, relative to the repository."""
    return ["README.md", *sorted(f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md"))]


def extract(doc: str, root: Path = ROOT) -> list[Listing]:
    """The fenced listings of *doc* (a path below *root*), in order; an unclosed fence fails."""
    lines = (root / doc).read_text().splitlines()
    found: list[Listing] = []
    index = floor = 0  # floor: the first line after the previous listing
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening.group("fence")
        closing = re.compile(rf"\s*{re.escape(fence[0])}{{{len(fence)},}}\s*")
        start = index
        index += 1
        while index < len(lines) and not closing.fullmatch(lines[index]):
            index += 1
        assert index < len(lines), f"{doc}:{start + 1}: the fence opened here is never closed"
        end = start
        while end > floor and not lines[end - 1].strip():
            end -= 1
        above = end
        while above > floor and lines[above - 1].strip():
            above -= 1
        info = opening.group("info").split()
        found.append(
            Listing(
                doc,
                start + 1,
                info[0] if info else "",
                "\n".join(lines[start + 1 : index]),
                "\n".join(lines[above:end]),
            )
        )
        index += 1
        floor = index
    return found


# -- the table: how each listing is proven ---------------------------------------------------


@attrs.frozen
class Rule:
    """How one listing is proven.

    *marker* is text that occurs in this listing (with a newline after its
    last line) and in no other listing of the same document and language.
    *proof* names the test: ``e2e:NAME`` (tests/e2e/test_doc_listings.py),
    ``unit:NAME`` (this module), or ``PATH::NAME`` elsewhere; ``None`` only
    for a listing another module's test checks without naming it (*why* says which).
    """

    doc: str
    lang: str
    marker: str
    how: str
    proof: str | None
    why: str


RUN = "run"
PARSED = "parsed by its own tool"
PROVEN = "matched with what is proven"
CI = "run by CI itself"
COLLECTED = "collected, not run"
SAMPLE = "sample output, checked"
ELSEWHERE = "run by another test"

#: The listing of docs/writing-stores.md that includes the example store.
STORE_LISTING = '--8<-- "examples/compressed-store/compressed_store.py"'

RULES: tuple[Rule, ...] = (
    # README.md
    Rule("README.md", "sh", "pip install . && .venv/bin/twistd", RUN,
         "e2e:test_readme_server_command_serves_the_libnfs_listings",
         "apt-get/pip are CI's own setup; the twistd part is parsed by twistd and served, "
         "only --listen added (a free port)"),
    Rule("README.md", "text", "Twisted endpoint string", ELSEWHERE, None,
         "compared with dittofs.tap.Options both ways by tests/unit/test_config_docs.py "
         "(ReadmeTests.test_options_block); not duplicated here"),
    Rule("README.md", "sh", "mount -t nfs -o vers=3,proto=tcp", PROVEN,
         "unit:test_linux_mount_lines_are_the_guest_suites",
         "needs a kernel NFS client: its options are those tests/e2e/linux mounts with"),
    Rule("README.md", "sh", "mount -t nfs4 -o vers=4.1", PROVEN,
         "unit:test_v41_mount_lines_are_the_guest_suites",
         "needs a kernel NFSv4.1 client: its options are those tests/e2e/linux mounts with"),
    Rule("README.md", "sh", "/private/tmp/ditto", PROVEN,
         "unit:test_macos_mount_line_spells_the_proven_options",
         "macOS only: its options are the proven Linux ones in macOS's spelling"),
    Rule("README.md", "sh", "nfs-cp ./file", RUN,
         "e2e:test_readme_server_command_serves_the_libnfs_listings",
         "run by bash against the README's server command, the port changed to the free one"),
    Rule("README.md", "sh", "DEBIAN_FRONTEND=noninteractive apt-get install", CI,
         "e2e:test_readme_test_command_is_what_ci_runs",
         ".ci/run runs it; .ci/run's own extraction must yield exactly this line"),
    # docs/architecture.md
    Rule("docs/architecture.md", "text", "TCP bytes", SAMPLE,
         "unit:test_architecture_diagram_names_real_code",
         "a diagram: each class and method it names is defined in the file named under it"),
    # docs/benchmarks.md
    Rule("docs/benchmarks.md", "sh", "apt-get install -y gcc libnfs-dev", PROVEN,
         "unit:test_prerequisite_listings_are_installed_by_the_test_command",
         "root-only installs, not run: the README's test command installs the same"),
    Rule("docs/benchmarks.md", "sh", "python benchmarks/run --quick", PARSED,
         "unit:test_benchmark_command_lines_parse",
         "benchmarks take minutes: each line is accepted by benchmarks/run's parser; "
         "--quick itself is run by tests/e2e/test_benchmark.py"),
    Rule("docs/benchmarks.md", "", "python benchmarks/run --profile /tmp/benchout", PARSED,
         "unit:test_benchmark_command_lines_parse",
         "the recorded run's command line, accepted by benchmarks/run's parser"),
    Rule("docs/benchmarks.md", "", "python benchmarks/run --rounds 3\n", PARSED,
         "unit:test_benchmark_command_lines_parse",
         "a later recorded run's command line, accepted by benchmarks/run's parser"),
    # docs/configuration.md
    Rule("docs/configuration.md", "toml", 'log-level = "INFO"', PARSED,
         "unit:test_configuration_toml_examples_are_accepted",
         "loaded with --config; every key arrives as given"),
    Rule("docs/configuration.md", "toml", "[[exports]]", PARSED,
         "unit:test_configuration_toml_examples_are_accepted",
         "loaded with --config; every export and its keys arrive as given"),
    Rule("docs/configuration.md", "json", '"procedure": "MNT"', SAMPLE,
         "e2e:test_configuration_json_log_listings",
         "a shortened log line: a real MNT call, logged by the command below, has its fields, "
         "values and text shape"),
    Rule("docs/configuration.md", "sh", "--log-format json", RUN,
         "e2e:test_configuration_json_log_listings",
         "run with its log file in a scratch directory, --listen on a free port and --log-level "
         "DEBUG added; every line it logs is a JSON object"),
    Rule("docs/configuration.md", "text", "$ twistd -n dittofs --export data", RUN,
         "e2e:test_configuration_error_examples_print_what_they_show",
         "the documented invalid examples: each $ command is run, its output and status 2 match"),
    Rule("docs/configuration.md", "sh", "twistd -n dittofs --metadata memory", RUN,
         "e2e:test_configuration_store_examples_serve",
         "each line parsed; all but the placeholder PostgreSQL host served and listed, "
         "/var/lib and /srv moved into a scratch directory"),
    Rule("docs/configuration.md", "python", 'Application("my-app")', RUN,
         "e2e:test_configuration_embedding_listing_serves",
         "run as a .tac by twistd -y, its port changed to a free one; nfs-ls lists the export"),
    # docs/deployment.md
    Rule("docs/deployment.md", "ini", "ListenStream=", RUN,
         "e2e:test_systemd_units_serve_through_socket_activation",
         "systemd-analyze verify (when installed); its socket handed over as systemd does"),
    Rule("docs/deployment.md", "ini", "ExecStart=", RUN,
         "e2e:test_systemd_units_serve_through_socket_activation",
         "verified with the socket; ExecStart served, ExecReload and KillSignal act as documented"),
    Rule("docs/deployment.md", "yaml", "kind: Deployment", RUN,
         "e2e:test_kubernetes_manifest_serves_its_probes",
         "parsed; the container's args served (loopback ports, local PostgreSQL) and its probes "
         "answer; the PersistentVolume's mount options are the proven ones"),
    # docs/embedding.md
    Rule("docs/embedding.md", "python", '--8<-- "examples/embed.py"', ELSEWHERE,
         "tests/e2e/test_doc_examples.py::test_embedded_server_answers_libnfs_and_echo",
         "the included program is run there and listed with libnfs"),
    # docs/index.md
    Rule("docs/index.md", "sh", "pip install . && .venv/bin/twistd", RUN,
         "e2e:test_readme_server_command_serves_the_libnfs_listings",
         "the same line as the README's server command, which is run"),
    Rule("docs/index.md", "sh", "mount -t nfs", PROVEN,
         "unit:test_linux_mount_lines_are_the_guest_suites",
         "the same line as the README's, whose options the guest suite uses"),
    Rule("docs/index.md", "sh", "nfs-ls", RUN,
         "e2e:test_readme_server_command_serves_the_libnfs_listings",
         "run against the README's server command, the port changed to the free one"),
    # docs/s3.md
    Rule("docs/nfsv4.md", "sh", "mount -t nfs4 -o vers=4.1", PROVEN,
         "unit:test_v41_mount_lines_are_the_guest_suites",
         "the README's line, word for word"),
    Rule("docs/s3.md", "sh", "python -m twisted dittofs", RUN,
         "e2e:test_s3_listing_serves_from_seaweedfs",
         "run by bash against SeaweedFS on loopback: the credential placeholders, the endpoint's "
         "port and --listen filled in"),
    Rule("docs/s3.md", "", "prefix/dittofs-s3.json", SAMPLE,
         "e2e:test_s3_listing_serves_from_seaweedfs",
         "bucket layout: each object the run leaves matches a line; dittofs-s3.json is equal"),
    Rule("docs/s3.md", "", "cache_dir/owner.json", SAMPLE,
         "e2e:test_s3_listing_serves_from_seaweedfs",
         "cache layout: each file the run leaves in its cache matches a line"),
    # docs/testing-linux.md
    Rule("docs/testing-linux.md", "sh", "python -m pytest tests/e2e/linux -m linux_guest\n",
         COLLECTED, "e2e:test_test_suite_commands_select_tests",
         "boots QEMU for minutes: collected (--collect-only) and must select the guest tests"),
    Rule("docs/testing-linux.md", "sh", "apt-get install -y qemu-system-x86", PROVEN,
         "unit:test_prerequisite_listings_are_installed_by_the_test_command",
         "root-only installs, not run: in the README's test command, and cover the harness's"),
    Rule("docs/testing-linux.md", "", "QEMU guest", SAMPLE,
         "unit:test_linux_guest_diagram_matches_the_harness",
         "a diagram: its addresses, vCPUs, memory and mount point are guest.py's"),
    Rule("docs/testing-linux.md", "sh", "port=P,mountport=P", PROVEN,
         "unit:test_linux_mount_lines_are_the_guest_suites",
         "exactly the options and source guest.py gives the guest's mount"),
    Rule("docs/testing-linux.md", "", "rw,relatime,vers=3", SAMPLE,
         "unit:test_linux_mount_lines_are_the_guest_suites",
         "the kernel's /proc/mounts line: it shows every option the guest is given"),
    Rule("docs/testing-linux.md", "sh", "DITTOFS_E2E_SCENARIOS=rename", COLLECTED,
         "e2e:test_test_suite_commands_select_tests",
         "collected only: it selects the sqlite+fs tests, rename among them"),
    # docs/testing.md
    Rule("docs/testing.md", "sh", "DEBIAN_FRONTEND=noninteractive apt-get install", CI,
         "e2e:test_readme_test_command_is_what_ci_runs",
         "the same line as the README's test command, which CI runs"),
    Rule("docs/testing.md", "sh", "-m pytest tests/unit", COLLECTED,
         "e2e:test_test_suite_commands_select_tests",
         "the suites themselves: each line collected (trial: --dry-run) and must select tests"),
    Rule("docs/testing.md", "sh", "DITTOFS_DIFF_RANDOM=1", COLLECTED,
         "e2e:test_test_suite_commands_select_tests",
         "collected only (the long run takes hours): it must select the differential tests"),
    Rule("docs/testing.md", "python", "build_server()", RUN,
         "unit:test_testing_listing_runs",
         "exec'd in a fresh namespace; its own assert checks the read"),
    # docs/writing-stores.md
    Rule("docs/writing-stores.md", "python", STORE_LISTING, RUN,
         "unit:test_writing_stores_listings_pass_the_conformance_suite",
         "the included file exec'd, then the next listing's test case run on it "
         "(tests/unit/test_doc_examples.py runs it too)"),
    Rule("docs/writing-stores.md", "python", "class CompressedStoreTests", RUN,
         "unit:test_writing_stores_listings_pass_the_conformance_suite",
         "exec'd after the store listing; its test case passes the whole conformance suite"),
    Rule("docs/writing-stores.md", "python", "compressed_store_plugin.py", ELSEWHERE,
         "tests/e2e/test_packaging.py::test_a_store_from_another_package_serves",
         "installed with the package around it, then serving through twistd dittofs"),
    Rule("docs/writing-stores.md", "toml", "compressed-store/pyproject.toml", ELSEWHERE,
         "tests/e2e/test_packaging.py::test_a_store_from_another_package_serves",
         "the package is built from it and installed in a fresh virtual environment"),
    Rule("docs/writing-stores.md", "sh", "--content compressed:1073741824", RUN,
         "tests/e2e/test_packaging.py::test_a_store_from_another_package_serves",
         "pip install as written (into the fresh environment), twistd as written on a free port"),
)  # fmt: skip

#: Where the ``e2e:`` and ``unit:`` proofs of :data:`RULES` live.
PROOF_MODULES = {"e2e": "tests/e2e/test_doc_listings.py", "unit": "tests/unit/test_doc_listings.py"}


def _matches(rule: Rule, found: Listing) -> bool:
    return rule.doc == found.doc and rule.lang == found.lang and rule.marker in found.text + "\n"


def listing(doc: str, marker: str) -> Listing:
    """The one listing the rule for (*doc*, *marker*) covers."""
    rules = [rule for rule in RULES if rule.doc == doc and rule.marker == marker]
    assert len(rules) == 1, f"no single rule in RULES for {doc} {marker!r}"
    found = [each for each in extract(doc) if _matches(rules[0], each)]
    assert len(found) == 1, f"{len(found)} listings of {doc} match {marker!r}"
    return found[0]


def _proof_source(proof: str) -> tuple[str, str]:
    """The file a rule's proof lives in and the source of that test (``""`` if it is not there)."""
    module, _, name = proof.partition(":")
    path = PROOF_MODULES.get(module)
    if path is None:
        path, name = proof.split("::")
    if not (ROOT / path).is_file():
        return path, ""
    text = (ROOT / path).read_text()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return path, ast.get_source_segment(text, node) or ""
    return path, ""


# -- parsing helpers shared with the end-to-end module -----------------------------------------


def twistd_options(argv: list[str]) -> Options:
    """Parse ``[twistd options] dittofs [options]`` as twistd does; return dittofs's options."""
    config = ServerOptions()
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            config.parseOptions(argv)
    except (SystemExit, usage.UsageError) as error:
        message = errors.getvalue() or str(error)
        raise AssertionError(f"twistd refuses {shlex.join(argv)}: {message}") from None
    assert config.subCommand == "dittofs", f"{shlex.join(argv)} does not run dittofs"
    options: Options = config.subOptions
    return options


def dittofs_options(argv: list[str]) -> Options:
    """Parse ``twistd dittofs``'s own options, with no twistd around them to set logging up."""
    options = Options()
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            options.parseOptions(argv)
    except SystemExit:
        raise AssertionError(f"dittofs refuses {shlex.join(argv)}: {errors.getvalue()}") from None
    return options


def shell_command(line: str) -> tuple[dict[str, str], list[str]]:
    """One shell line as its ``NAME=value`` prefix and its argv (comments dropped)."""
    words = shlex.split(line, comments=True)
    assignments: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        assignments[name] = value
    return assignments, words


def apt_packages(text: str) -> set[str]:
    """The packages every ``apt-get install`` in *text* installs."""
    packages: set[str] = set()
    for part in re.split(r"&&|\n|;", text):
        _, words = shell_command(part)
        if words[:2] == ["apt-get", "install"]:
            packages |= {word for word in words[2:] if not word.startswith("-")}
    return packages


def mount_command(line: str, kind: str = "nfs") -> tuple[list[str], str, str]:
    """``mount -t KIND -o OPTIONS SOURCE TARGET``: the options, source and target."""
    words = shlex.split(line)
    assert words[:4] == ["mount", "-t", kind, "-o"] and len(words) == 7, line
    return words[4].split(","), words[5], words[6]


def default_port() -> int:
    """The port DittoFS listens on by default."""
    match = re.fullmatch(r"tcp:(\d+):interface=127\.0\.0\.1", DEFAULTS["listen"])
    assert match, DEFAULTS["listen"]
    return int(match.group(1))


def proven_mount_options(port: object) -> list[str]:
    """The options the QEMU guest's kernel mounts DittoFS with, on *port*."""
    from tests.e2e.linux import guest

    return str(guest.MOUNT_OPTIONS).format(port=port).split(",")


def _test_extra() -> set[str]:
    """The distributions ``pip install -e '.[test]'`` brings, nested extras resolved."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names: set[str] = set()
    pending = ["test"]
    while pending:
        for requirement in extras[pending.pop()]:
            name = re.match(r"[A-Za-z0-9_.-]+", requirement)
            assert name, requirement
            nested = re.fullmatch(r"dittofs\[(.+)\]", requirement)
            if nested:
                pending.extend(nested.group(1).split(","))
            names.add(name.group(0).lower())
    return names


# -- the tests -------------------------------------------------------------------------------


class ListingRulesTests(SynchronousTestCase):
    """The table covers every listing, once, and names tests that exist and fetch it."""

    def test_every_listing_has_exactly_one_rule(self) -> None:
        """A listing nobody proves, or a rule whose listing is gone, fails here.

        Each rule's test must exist and fetch the listing it is named for (its
        source mentions the marker); a snippet included from docs/examples and
        proven elsewhere must be loaded by that test.
        """
        unmatched = []
        for doc in documents():
            for found in extract(doc):
                count = sum(_matches(rule, found) for rule in RULES)
                if count != 1:
                    unmatched.append(f"{found.doc}:{found.line} [{found.lang}]: {count} rules")
        self.assertEqual(unmatched, [], "each listing needs exactly one rule in RULES")
        for rule in RULES:
            label = f"{rule.doc} {rule.marker!r}"
            matched = [found for found in extract(rule.doc) if _matches(rule, found)]
            self.assertEqual(len(matched), 1, f"{label} matches {len(matched)} listings")
            if rule.proof is None:
                self.assertEqual(rule.how, ELSEWHERE, f"{label} has no proof")
                continue
            path, source = _proof_source(rule.proof)
            self.assertTrue(source, f"{label}: {path} has no test {rule.proof}")
            included = re.fullmatch(r'--8<-- "(.+)"', matched[0].text.strip())
            if included and rule.how == ELSEWHERE:
                self.assertTrue((ROOT / "docs" / included.group(1)).is_file(), label)
                self.assertIn(Path(included.group(1)).stem, (ROOT / path).read_text(), label)
            else:
                self.assertIn(rule.marker.strip(), source, f"{rule.proof} never fetches {label}")

    def test_extraction_sees_every_fence(self) -> None:
        """Indented and tilde fences count, an unclosed one is an error, the lead is kept.

        A listing the extraction missed would escape the table, so its cases
        are pinned here on a made-up page.
        """
        scratch = Path(tempfile.mkdtemp(prefix="dittofs-listings-"))
        self.addCleanup(shutil.rmtree, scratch, True)
        page = scratch / "page.md"
        page.write_text(
            "Intro.\n\n```ini\n[A]\n```\n\n- item\n\n  ```sh\n  ls\n  ```\n\n~~~~\n```\n~~~~\n"
        )
        found = extract("page.md", scratch)
        self.assertEqual([(f.lang, f.text) for f in found], [
            ("ini", "[A]"), ("sh", "  ls"), ("", "```"),
        ])  # fmt: skip
        self.assertEqual([f.line for f in found], [3, 9, 13])
        self.assertEqual([f.lead for f in found], ["Intro.", "- item", ""])
        page.write_text("Text.\n\nMore\n`/etc/x`:\n```ini\n[A]\n```\n")
        self.assertEqual(extract("page.md", scratch)[0].lead, "More\n`/etc/x`:")
        page.write_text("```sh\nls\n")
        self.assertRaises(AssertionError, extract, "page.md", scratch)


class ListingTests(SynchronousTestCase):
    """The listings that need no server: parsed, compared with what is proven, or executed."""

    def test_linux_mount_lines_are_the_guest_suites(self) -> None:
        """The Linux mount lines use the options the QEMU guest suite proves with a real kernel.

        The guest also names the server's address (``addr``, ``mountaddr``)
        because its busybox ``mount`` has no ``mount.nfs`` to resolve it; every
        other option is the README's.  The kernel's /proc/mounts sample shows
        each option the guest gives, with the same value.
        """
        from tests.e2e.linux import guest

        readme = listing("README.md", "mount -t nfs -o vers=3,proto=tcp").text
        self.assertEqual(listing("docs/index.md", "mount -t nfs").text, readme)
        options, source, _ = mount_command(readme)
        added = [f"addr={guest.HOST_ADDRESS}", f"mountaddr={guest.HOST_ADDRESS}"]
        self.assertEqual(sorted(options + added), sorted(proven_mount_options(default_port())))
        self.assertEqual(source, f"127.0.0.1:{DEFAULTS['export']}")

        in_guest = listing("docs/testing-linux.md", "port=P,mountport=P").text
        options, source, _ = mount_command(in_guest)
        self.assertEqual(options, proven_mount_options("P"))
        self.assertEqual(source, f"{guest.HOST_ADDRESS}:{DEFAULTS['export']}")

        shown = listing("docs/testing-linux.md", "rw,relatime,vers=3").text.replace("\n", "")
        self.assertEqual(set(proven_mount_options("P")) - set(shown.split(",")), set())

    def test_v41_mount_lines_are_the_guest_suites(self) -> None:
        """The NFSv4.1 mount line asks for what the guest's v4.1 pairings mount with.

        The guest adds only the server's address (``addr``), which its kernel
        cannot resolve without ``mount.nfs``.
        """
        from tests.e2e.linux import guest

        readme = listing("README.md", "mount -t nfs4 -o vers=4.1").text
        self.assertEqual(listing("docs/nfsv4.md", "mount -t nfs4 -o vers=4.1").text, readme)
        options, source, _ = mount_command(readme, "nfs4")
        proven = str(guest.MOUNT_OPTIONS_V41).format(port=default_port()).split(",")
        self.assertEqual(sorted([*options, f"addr={guest.HOST_ADDRESS}"]), sorted(proven))
        self.assertEqual(source, f"127.0.0.1:{DEFAULTS['export']}")

    def test_macos_mount_line_spells_the_proven_options(self) -> None:
        """The macOS line asks for what the Linux line asks, in mount_nfs's words.

        ``tcp`` is NFS and MOUNT over TCP, ``nolocks`` is ``nolock``; the target
        made by ``mkdir -p`` is the one mounted on.
        """
        text = listing("README.md", "/private/tmp/ditto").text
        made, mounted = (part.strip() for part in text.split("&&"))
        options, source, target = mount_command(mounted)
        self.assertEqual(shlex.split(made), ["mkdir", "-p", target])
        spelled = {"tcp": ["proto=tcp", "mountproto=tcp"], "nolocks": ["nolock"]}
        as_linux = [linux for option in options for linux in spelled.get(option, [option])]
        linux_options, linux_source, _ = mount_command(
            listing("README.md", "mount -t nfs -o vers=3,proto=tcp").text
        )
        self.assertEqual(sorted(as_linux), sorted(linux_options))
        self.assertEqual(source, linux_source)

    def test_architecture_diagram_names_real_code(self) -> None:
        """Each box of the WRITE path is defined in the file printed under it.

        Names on the first line pair, in order, with the ``(path.py)`` under
        them; the store calls (``IContentStore.write``...) are methods of the
        contracts in dittofs/interfaces.py.
        """
        lines = listing("docs/architecture.md", "TCP bytes").text.splitlines()
        names = [n for n in re.findall(r"\b([A-Z][A-Za-z0-9]+(?:\.\w+)?)", lines[0]) if n != "TCP"]
        paths = re.findall(r"\(([\w/]+)\.py\)", lines[1])
        self.assertEqual(len(names), len(paths))
        self.assertGreaterEqual(len(names), 4)
        for name, path in zip(names, paths, strict=True):
            module = importlib.import_module("dittofs." + path.replace("/", "."))
            owner, _, method = name.partition(".")
            self.assertTrue(hasattr(module, owner), f"{owner} is not in dittofs/{path}.py")
            self.assertTrue(not method or hasattr(getattr(module, owner), method), name)
        calls = re.findall(r"\b(I[A-Z]\w+)\.(\w+)", "\n".join(lines[2:]))
        self.assertGreaterEqual(len(calls), 2)
        for interface, method in calls:
            self.assertIn(method, getattr(interfaces, interface).names(all=True), interface)

    def test_prerequisite_listings_are_installed_by_the_test_command(self) -> None:
        """Packages the docs tell people to install are ones CI installs, so they are exercised.

        apt-get is not run here (root, network).  Instead: the benchmark's and
        the Linux-guest suite's packages are all in the README's test command;
        the guest's also cover the host tools its harness demands; the pip
        lines name an extra that brings what their comment says, and py-spy is
        the profiler benchmarks/profile.py drives.
        """
        from tests.e2e.linux import guest

        ci = listing("README.md", "DEBIAN_FRONTEND=noninteractive apt-get install").text
        bench = listing("docs/benchmarks.md", "apt-get install -y gcc libnfs-dev").text
        linux = listing("docs/testing-linux.md", "apt-get install -y qemu-system-x86").text
        for text in (bench, linux):
            self.assertTrue(apt_packages(text), text)
            self.assertEqual(apt_packages(text) - apt_packages(ci), set())
        self.assertIn("apt-get update", linux.splitlines())
        harness = {*guest.HOST_TOOLS.values(), "busybox-static"} - {"apt", "dpkg"}
        self.assertEqual(harness - apt_packages(linux), set())

        pip = [shell_command(line)[1] for line in bench.splitlines() if "pip install" in line]
        self.assertEqual(pip, [["pip", "install", "-e", ".[test]"], ["pip", "install", "py-spy"]])
        self.assertEqual({"psycopg", "redis"} - _test_extra(), set())
        self.assertIn("py-spy", (ROOT / "benchmarks/profile.py").read_text())

    def test_benchmark_command_lines_parse(self) -> None:
        """Every benchmark command line is accepted by benchmarks/run's own argument parser.

        They take minutes and need root, so they are not run here; the
        ``--quick`` line is what tests/e2e/test_benchmark.py runs.
        """
        from benchmarks.bench import STORES, parse_arguments

        lines = [
            *listing("docs/benchmarks.md", "python benchmarks/run --quick").lines(),
            *listing("docs/benchmarks.md", "python benchmarks/run --profile /tmp/benchout").lines(),
            *listing("docs/benchmarks.md", "python benchmarks/run --rounds 3\n").lines(),
        ]
        self.assertGreaterEqual(len(lines), 8)
        for line in lines:
            _, argv = shell_command(line)
            self.assertEqual(argv[:2], ["python", "benchmarks/run"], line)
            errors = io.StringIO()
            try:
                with contextlib.redirect_stderr(errors):
                    arguments = parse_arguments(argv[2:])
            except SystemExit:
                self.fail(f"benchmarks/run refuses {line!r}: {errors.getvalue()}")
            if arguments.stores:
                self.assertEqual(set(arguments.stores.split(",")) - set(STORES), set(), line)
        self.assertIn('"--quick"', (ROOT / "tests/e2e/test_benchmark.py").read_text())

    def test_configuration_toml_examples_are_accepted(self) -> None:
        """Both example files load with ``--config``, and every key means what the file says.

        An accepted key that was silently ignored would pass a bare parse, so
        each value is compared with what the loader made of it.
        """
        scratch = Path(tempfile.mkdtemp(prefix="dittofs-listings-"))
        self.addCleanup(shutil.rmtree, scratch, True)
        simple = listing("docs/configuration.md", 'log-level = "INFO"').text
        (scratch / "simple.toml").write_text(simple)
        options = dittofs_options(["--config", str(scratch / "simple.toml")])
        table = tomllib.loads(simple)
        self.assertTrue(table)
        for key, value in table.items():
            self.assertEqual(options[key], value, key)
        [spec] = options.exports
        self.assertEqual(
            (spec.path, spec.metadata, spec.content),
            (table["export"], table["metadata"], table["content"]),
        )

        several = listing("docs/configuration.md", "[[exports]]").text
        (scratch / "several.toml").write_text(several)
        options = dittofs_options(["--config", str(scratch / "several.toml")])
        table = tomllib.loads(several)
        self.assertEqual(options["listen"], table["listen"])
        self.assertEqual([s.path for s in options.exports], [t["path"] for t in table["exports"]])
        for spec, given in zip(options.exports, table["exports"], strict=True):
            self.assertEqual(spec.metadata, given.get("metadata", spec.metadata))
            self.assertEqual(spec.content, given.get("content", spec.content))
            self.assertEqual([str(net) for net in spec.policy.clients], given["clients"])
            self.assertEqual(spec.policy.read_only, given.get("read-only", False))
            self.assertEqual(spec.policy.squash.value, given.get("squash", "root_squash"))

    def test_linux_guest_diagram_matches_the_harness(self) -> None:
        """The guest diagram's addresses, vCPUs, memory and mount point are the harness's own."""
        from tests.e2e.linux import guest

        text = listing("docs/testing-linux.md", "QEMU guest").text
        sizes = re.search(r"(\d+) vCPU, (\d+) GiB", text)
        assert sizes, text
        defaults = inspect.signature(guest.boot).parameters
        self.assertEqual(int(sizes.group(1)), defaults["cpus"].default)
        self.assertEqual(int(sizes.group(2)) * 1024, defaults["memory_mib"].default)
        self.assertIn(f"{guest.HOST_ADDRESS} = host loopback", text)
        self.assertIn(f"ip addr {guest.GUEST_ADDRESS}/24", text)
        mounted = re.search(r"mount -t nfs … (\S+) (\S+)", text)
        assert mounted, text
        self.assertEqual(mounted.group(1), f"{guest.HOST_ADDRESS}:{DEFAULTS['export']}")
        script = (ROOT / "tests/e2e/linux/scenarios.sh").read_text()
        self.assertIn(f"\nM={mounted.group(2)}\n", script)

    def test_testing_listing_runs(self) -> None:
        """The dittofs.testing example runs as printed, in a namespace of its own.

        Its last line asserts the file reads back; that is checked again here
        in case the listing loses its assert.
        """
        found = listing("docs/testing.md", "build_server()")
        namespace: dict[str, Any] = {"__name__": "docs_testing_listing"}
        exec(compile(found.text, f"{found.doc}:{found.line}", "exec"), namespace)
        self.assertEqual(namespace["client"].read_file(namespace["handle"]), b"hello")

    def test_writing_stores_listings_pass_the_conformance_suite(self) -> None:
        """The example store, then the test case shown after it, run together: every test passes.

        The second listing uses the first's class, as a reader would after
        pasting both into one module; it must run every test of
        ContentStoreConformance and pass each.
        """
        from dittofs.testing.conformance import ContentStoreConformance

        store = listing(
            "docs/writing-stores.md", '--8<-- "examples/compressed-store/compressed_store.py"'
        )
        included = re.fullmatch(r'--8<-- "(.+)"', store.text.strip())
        assert included, store.text
        source = (ROOT / "docs" / included.group(1)).read_text()
        case = listing("docs/writing-stores.md", "class CompressedStoreTests")
        namespace: dict[str, Any] = {"__name__": "docs_writing_stores_listing"}
        exec(compile(source, included.group(1), "exec"), namespace)
        exec(compile(case.text, f"{case.doc}:{case.line}", "exec"), namespace)
        loader = unittest.TestLoader()
        result = unittest.TestResult()
        loader.loadTestsFromTestCase(namespace["CompressedStoreTests"]).run(result)
        problems = [f"{test}: {trace}" for test, trace in result.failures + result.errors]
        self.assertEqual(problems, [])
        expected = loader.getTestCaseNames(ContentStoreConformance)  # type: ignore[arg-type]
        self.assertGreater(len(expected), 0)
        self.assertEqual(result.testsRun, len(expected))
