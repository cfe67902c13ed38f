"""The documentation's listings that need a real server, a shell or a subprocess, run for real.

Which listing is proven where, and how, is the table
``tests.unit.test_doc_listings.RULES``; its ``e2e:`` rows name the tests
here.  Each test runs its listing as written, except for the changes it
names (a free loopback port instead of 12049, a scratch directory instead of
``/srv``, the test server's credentials instead of ``...``), so an edit that
breaks a listing breaks its test.  The servers started here listen on
loopback only and are stopped by the documented signal, which must end them
with status 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis
import yaml

from dittofs.tap import DEFAULTS
from tests.e2e.seaweedfs import ACCESS_KEY, SECRET_KEY, credentials_env, seaweedfs
from tests.e2e.server import free_port
from tests.unit import backends
from tests.unit.test_doc_listings import (
    ROOT,
    Listing,
    default_port,
    dittofs_options,
    listing,
    proven_mount_options,
    shell_command,
    twistd_options,
)

#: The ``python`` and ``twistd`` of the environment running the tests: the ``.venv`` the
#: README's commands create.
VENV_BIN = Path(sys.executable).parent
STARTUP_SECONDS = 30.0
STOP_SECONDS = 30.0
COMMAND_SECONDS = 120.0


def rewritten(text: str, *changes: tuple[str, str]) -> str:
    """*text* with each ``(old, new)`` change made; each old part must be there."""
    for old, new in changes:
        assert old in text, f"{old!r} is no longer in the listing:\n{text}"
        text = text.replace(old, new)
    return text


def environment(home: Path, **extra: str) -> dict[str, str]:
    """The test's environment, with a scratch HOME and this environment's tools first on PATH.

    ``XDG_DATA_HOME`` goes, so the data directory is the documented
    ``~/.local/share/dittofs``; so do AWS and socket-activation variables.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LISTEN_", "AWS_", "XDG_DATA_HOME"))
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def run(
    command: Sequence[str] | str, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an argv, or a bash script (``-euo pipefail``), and capture its output."""
    argv = ["bash", "-euo", "pipefail", "-c", command] if isinstance(command, str) else command
    return subprocess.run(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        check=False,
    )


def nfs_url(port: int, path: str = "") -> str:
    """A libnfs URL for *path* in /export on this port, for MOUNT and NFS."""
    return f"nfs://127.0.0.1/export/{path}?nfsport={port}&mountport={port}"


def nfs_cat(url: str) -> bytes:
    """A file's bytes, read with libnfs."""
    read = subprocess.run(["nfs-cat", url], capture_output=True, timeout=60, check=False)
    assert read.returncode == 0, read.stderr
    return read.stdout


def loopback(port: int) -> str:
    """A listen endpoint on loopback."""
    return f"tcp:{port}:interface=127.0.0.1"


@attrs.define
class Served:
    """A DittoFS process started from a listing, and where its output and log go."""

    process: subprocess.Popen[bytes]
    logs: tuple[Path, ...]

    def log(self) -> str:
        """What the server has written so far: its output, then its log file if it has one."""
        return "".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    def wait_for(self, text: str, seconds: float = STARTUP_SECONDS) -> None:
        """Wait until the log shows *text*; fail if the process ends or time runs out first."""
        deadline = time.monotonic() + seconds
        while text not in self.log():
            if self.process.poll() is not None:
                pytest.fail(f"DittoFS exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} in the log within {seconds:g} s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self, signum: int = signal.SIGTERM, seconds: float = STOP_SECONDS) -> int:
        """Send *signum* (SIGTERM: the documented way to stop) and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"DittoFS did not stop within {seconds:g} s:\n{self.log()}")


@contextlib.contextmanager
def serving(
    command: Sequence[str],
    workdir: Path,
    env: Mapping[str, str],
    log_file: Path | None = None,
    **popen: Any,
) -> Iterator[Served]:
    """Start *command*; yield once it says it serves; kill it if it is still running after.

    Its output is kept in *workdir*; *log_file* is where it logs, if not there.

    Readiness is the start-up line, which DittoFS logs once its stores are
    open and its port bound.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"dittofs-{secrets.token_hex(3)}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command), cwd=workdir, env=dict(env), stdout=log, stderr=subprocess.STDOUT, **popen
        )
    served = Served(process, (log_path,) if log_file is None else (log_path, log_file))
    try:
        served.wait_for("DittoFS listens")
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- README.md and its copies ------------------------------------------------------------------


def test_readme_server_command_serves_the_libnfs_listings(tmp_path: Path) -> None:
    """The README's server command serves /export on the defaults, and its libnfs lines work.

    The twistd part is parsed by twistd's own options, then run as written
    (from a directory whose ``.venv`` is this environment) with one
    addition: ``--listen`` on a free loopback port, which the libnfs lines
    are then pointed at instead of 12049.  The data must land under
    ``~/.local/share/dittofs``, as the README says.  docs/index.md repeats
    the command and the ``nfs-ls`` line; both are checked and run too.
    """
    command = listing("README.md", "pip install . && .venv/bin/twistd")
    assert "<!-- server-command -->" in command.lead
    assert listing("docs/index.md", "pip install . && .venv/bin/twistd").text == command.text
    twistd = shlex.split(command.text.split("&&")[-1])
    assert twistd[0] == ".venv/bin/twistd", twistd
    options = twistd_options(twistd[1:])
    assert options["listen"] == f"tcp:{default_port()}:interface=127.0.0.1"
    stores = (options["export"], options["metadata"], options["content"])
    assert stores == ("/export", "sqlite", "fs")

    port = free_port()
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    env = environment(home)
    data = secrets.token_bytes(200_000)
    (work / "file").write_bytes(data)
    libnfs = listing("README.md", "nfs-cp ./file").text
    index_ls = listing("docs/index.md", "nfs-ls").text
    ports = (
        f"nfsport={default_port()}&mountport={default_port()}",
        f"nfsport={port}&mountport={port}",
    )
    with serving([*twistd, "--listen", loopback(port)], work, env) as server:
        copied = run(rewritten(libnfs, ports), work, env)
        assert copied.returncode == 0, copied.stderr + server.log()
        listed = run(rewritten(index_ls, ports), work, env)
        assert listed.returncode == 0, listed.stderr
        assert re.search(r"\sfile$", listed.stdout, re.MULTILINE), listed.stdout
        assert nfs_cat(nfs_url(port, "file")) == data
        assert server.stop() == 0, server.log()
    assert (home / ".local/share/dittofs/metadata.db").is_file()
    assert (home / ".local/share/dittofs/content").is_dir()


def test_readme_test_command_is_what_ci_runs() -> None:
    """.ci/run extracts exactly the README's test command and runs it; testing.md repeats it.

    The extraction is .ci/run's own line, run here on the README, so a
    change to either that loses the command fails here rather than in CI.
    """
    command = listing("README.md", "DEBIAN_FRONTEND=noninteractive apt-get install")
    assert "<!-- test-command -->" in command.lead
    script = (ROOT / ".ci/run").read_text()
    extraction = re.search(r"^command=\$\(.*\)$", script, re.MULTILINE)
    assert extraction, ".ci/run no longer reads the command into $command"
    assert 'bash -euo pipefail -c "$command"' in script[extraction.end() :]
    extracted = run(f'{extraction.group(0)}\nprintf %s "$command"', ROOT)
    assert extracted.returncode == 0, extracted.stderr
    assert extracted.stdout == command.text
    copy = listing("docs/testing.md", "DEBIAN_FRONTEND=noninteractive apt-get install")
    assert copy.text == command.text


# -- docs/configuration.md -------------------------------------------------------------------


def test_configuration_error_examples_print_what_they_show(tmp_path: Path) -> None:
    """The documented invalid examples are refused with exactly the line shown, and status 2.

    ``bad.toml`` is not shown in the docs; it is written with the one key the
    shown message calls unknown.
    """
    text = listing("docs/configuration.md", "$ twistd -n dittofs --export data").text
    examples: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            examples.append((line[2:], []))
        else:
            assert examples, f"output before any command: {line!r}"
            examples[-1][1].append(line)
    assert len(examples) >= 2, text
    env = environment(tmp_path / "home")
    for command, shown in examples:
        for name in re.findall(r"(\S+\.toml)", command):
            key = re.search(rf"config {re.escape(name)}: unknown key '(\w+)'", "\n".join(shown))
            assert key, f"teach this test to write {name} for {command!r}"
            (tmp_path / name).write_text(f'{key.group(1)} = "{DEFAULTS["listen"]}"\n')
        result = run(command, tmp_path, env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert (result.stdout + result.stderr).splitlines() == shown, command


def test_configuration_store_examples_serve(tmp_path: Path) -> None:
    """Each store example is accepted; those that can run here serve /export to nfs-ls.

    Changes before running: ``/var/lib/dittofs`` and ``/srv`` move into a
    scratch directory, the Redis prefix is a fresh one (deleted afterwards),
    and ``--listen`` names a free loopback port.  The PostgreSQL line's host
    is a placeholder, so that line is only parsed.  Afterwards every path the
    line names exists, and Redis holds keys under the prefix: the stores kept
    their data where the line says.
    """
    lines = listing("docs/configuration.md", "twistd -n dittofs --metadata memory").lines()
    assert len(lines) >= 5, lines
    served = 0
    for number, line in enumerate(lines):
        _, argv = shell_command(line)
        assert argv[:3] == ["twistd", "-n", "dittofs"], line
        options = dittofs_options(argv[3:])
        if "(the default)" in line:
            assert (options["metadata"], options["content"]) == ("sqlite", "fs"), line
        if "db.example" in line:
            continue
        scratch = tmp_path / f"line-{number}"
        with backends.redis_prefix("docs") as prefix:
            moved = line
            for old, new in (
                ("/var/lib/dittofs", f"{scratch}/var/lib/dittofs"),
                ("/srv/", f"{scratch}/srv/"),
                ("prefix=export1", f"prefix={prefix}"),
            ):
                moved = moved.replace(old, new)
            _, argv = shell_command(moved)
            port = free_port()
            env = environment(scratch / "home")
            command = [str(VENV_BIN / "twistd"), *argv[1:], "--listen", loopback(port)]
            with serving(command, scratch / "run", env) as server:
                listed = run(["nfs-ls", nfs_url(port)], scratch, env)
                assert listed.returncode == 0, listed.stderr + server.log()
                assert server.stop() == 0, server.log()
            for path in re.findall(r"(?:sqlite:|fs:|--data-dir )(/\S+)", moved):
                assert Path(path).exists(), f"{line}: nothing at {path}"
            for data_dir in re.findall(r"--data-dir (\S+)", moved):
                assert (Path(data_dir) / "metadata.db").is_file(), line
            if "redis://" in moved:
                client = redis.Redis.from_url(backends.REDIS)
                try:
                    assert list(client.scan_iter(match=f"dittofs:{prefix}:*", count=100)), line
                finally:
                    client.close()
        served += 1
    assert served >= 4


def test_configuration_embedding_listing_serves(tmp_path: Path) -> None:
    """The embedding listing is a complete application: twistd runs it as a .tac and it serves.

    Its port becomes a free one; it keeps the default stores, under the
    scratch HOME.
    """
    text = listing("docs/configuration.md", 'Application("my-app")').text
    port = free_port()
    (tmp_path / "app.tac").write_text(rewritten(text, (DEFAULTS["listen"], loopback(port))))
    env = environment(tmp_path / "home")
    command = [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "-y", "app.tac"]
    with serving(command, tmp_path, env) as server:
        listed = run(["nfs-ls", nfs_url(port)], tmp_path, env)
        assert listed.returncode == 0, listed.stderr + server.log()
        assert server.stop() == 0, server.log()
    assert (tmp_path / "home/.local/share/dittofs/metadata.db").is_file()


def test_configuration_json_log_listings(tmp_path: Path) -> None:
    """The JSON-log command writes one JSON object a line, and calls look like the sample line.

    The command runs with its log file in a scratch directory, ``--listen``
    on a free port and ``--log-level DEBUG`` (the sample is a DEBUG call
    line).  After nfs-ls, every line of the file is a JSON object, and the
    MNT call's line has every field the (shortened) sample shows, with the
    sample's values where they do not vary from call to call, and a ``text``
    shaped like the sample's.
    """
    sample = json.loads(listing("docs/configuration.md", '"procedure": "MNT"').text)
    text = listing("docs/configuration.md", "--log-format json").text
    logfile = re.search(r"--logfile=(\S+)", text)
    assert logfile, text
    port = free_port()
    written = tmp_path / "dittofs.json"
    _, argv = shell_command(rewritten(text, (logfile.group(1), str(written))))
    assert argv[0] == "twistd", argv
    env = environment(tmp_path / "home")
    command = [
        str(VENV_BIN / "twistd"),
        *argv[1:],
        "--listen",
        loopback(port),
        "--log-level",
        "DEBUG",
    ]
    with serving(command, tmp_path, env, log_file=written) as server:
        listed = run(["nfs-ls", nfs_url(port)], tmp_path, env)
        assert listed.returncode == 0, listed.stderr + server.log()
        assert server.stop() == 0, server.log()
    events = [json.loads(line) for line in written.read_text().splitlines()]
    assert all(isinstance(event, dict) for event in events)
    calls = [event for event in events if event.get("procedure") == sample["procedure"]]
    assert calls, written.read_text()[-3000:]
    call = calls[0]
    assert set(sample) <= set(call), set(sample) - set(call)
    for key in set(sample) - {"xid", "ms", "log_time", "text"}:
        shown, logged = sample[key], call[key]
        if isinstance(shown, dict):  # shortened: the sample leaves out some of the fields
            logged = {name: value for name, value in logged.items() if name in shown}
        assert logged == shown, key
    shape = re.escape(sample["text"])
    shape = shape.replace(str(sample["xid"]), r"\d+").replace(
        re.escape(str(sample["ms"])), r"[\d.]+"
    )
    assert re.fullmatch(shape, call["text"]), call["text"]


# -- docs/deployment.md ------------------------------------------------------------------------


def _unit_file(found: Listing) -> str:
    """A unit listing's file name, from the line above it."""
    named = re.fullmatch(r"`/etc/systemd/system/([\w.@-]+)`:", found.lead.strip())
    assert named, f"{found.doc}:{found.line}: say which unit file this is, above it"
    return named.group(1)


def _unit_keys(found: Listing) -> dict[str, dict[str, str]]:
    """A unit listing's sections and keys (strict: a key given twice is an error here)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(found.text)
    return {name: dict(parser[name]) for name in parser.sections()}


def test_systemd_units_serve_through_socket_activation(tmp_path: Path) -> None:
    """The socket and service units work together as deployment.md says.

    ``systemd-analyze verify`` accepts both, with no warning (when systemd is
    installed; the service's ``twistd`` path becomes this environment's,
    which verify requires to exist).  Then the service's ExecStart runs with
    a listening socket handed over exactly as systemd hands it (fd 3,
    ``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``), on loopback and a
    free port instead of ``0.0.0.0:2049``, with a minimal
    ``/etc/dittofs.toml`` in a scratch directory.  nfs-ls lists the export;
    ExecReload makes DittoFS re-read its configuration; KillSignal stops it
    with status 0 within TimeoutStopSec.
    """
    socket_listing = listing("docs/deployment.md", "ListenStream=")
    service_listing = listing("docs/deployment.md", "ExecStart=")
    socket_name, service_name = _unit_file(socket_listing), _unit_file(service_listing)
    assert socket_name.endswith(".socket") and service_name.endswith(".service")
    assert Path(socket_name).stem == Path(service_name).stem, "systemd pairs them by name"
    listen = _unit_keys(socket_listing)["Socket"]["ListenStream"]
    assert re.fullmatch(r"[\d.]+:\d+", listen), listen
    service = _unit_keys(service_listing)["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[0].endswith("/bin/twistd"), exec_start
    assert "systemd:domain=INET:index=0" in exec_start, "the service takes systemd's socket"
    config = tmp_path / "dittofs.toml"
    config.write_text(f'data-dir = "{tmp_path / "data"}"\n')
    twistd = str(VENV_BIN / "twistd")
    arguments = rewritten(shlex.join(exec_start[1:]), ("/etc/dittofs.toml", str(config)))
    command = [twistd, *shlex.split(arguments)]

    if shutil.which("systemd-analyze"):
        units = tmp_path / "units"
        units.mkdir()
        (units / socket_name).write_text(socket_listing.text)
        (units / service_name).write_text(rewritten(service_listing.text, (exec_start[0], twistd)))
        paths = [str(units / socket_name), str(units / service_name)]
        verified = run(["systemd-analyze", "verify", "--man=no", *paths], units)
        assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        fd = listener.fileno()
        assert fd != 3
        activate = f'exec 3<&{fd} {fd}<&-; export LISTEN_PID=$$; exec "$@"'
        env = environment(tmp_path / "home", LISTEN_FDS="1", LISTEN_FDNAMES=socket_name)
        with serving(
            ["bash", "-c", activate, "systemd", *command], tmp_path, env, pass_fds=(fd,)
        ) as server:
            listener.close()  # the service owns the socket now, as under systemd
            listed = run(["nfs-ls", nfs_url(port)], tmp_path, env)
            assert listed.returncode == 0, listed.stderr + server.log()
            reloaded = run(
                service["ExecReload"], tmp_path, {**env, "MAINPID": str(server.process.pid)}
            )
            assert reloaded.returncode == 0, reloaded.stderr
            server.wait_for("SIGHUP: configuration re-read")
            stop = getattr(signal, service["KillSignal"])
            assert server.stop(stop, min(float(service["TimeoutStopSec"]), STOP_SECONDS)) == 0
    assert (tmp_path / "data/metadata.db").is_file()


def _everywhere_port(endpoint: str) -> int:
    """The port of a ``tcp:PORT:interface=0.0.0.0`` endpoint (a pod listens on all addresses)."""
    match = re.fullmatch(r"tcp:(\d+):interface=0\.0\.0\.0", endpoint)
    assert match, endpoint
    return int(match.group(1))


def test_kubernetes_manifest_serves_its_probes(tmp_path: Path) -> None:
    """The manifest parses, its parts agree, its container serves, and its probes answer.

    Checked without a cluster: twistd accepts the container's args; the NFS
    port is the one the container, the Service and the PersistentVolume's
    mount options name; the probes ask the --metrics port; the content volume
    is mounted where --content points; the PersistentVolume's mount options
    are the proven ones (``nfsvers`` is ``vers``).  Then the args run with
    their ports on loopback, the PostgreSQL URL on a fresh schema of the
    local database and the content in a scratch directory: both probes
    answer 200, and ``--clients 10.0.0.0/8`` refuses this loopback client.
    """
    manifests = list(yaml.safe_load_all(listing("docs/deployment.md", "kind: Deployment").text))
    kinds = {manifest["kind"]: manifest for manifest in manifests}
    assert set(kinds) == {"Deployment", "Service", "PersistentVolume"}, set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = container["args"]
    assert args[0] == "twistd", args
    options = twistd_options(args[1:])
    nfs_port, metrics_port = (_everywhere_port(options[key]) for key in ("listen", "metrics"))
    assert [port["containerPort"] for port in container["ports"]] == [nfs_port, metrics_port]
    assert [port["port"] for port in kinds["Service"]["spec"]["ports"]] == [nfs_port]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == metrics_port, probe
    [mount] = container["volumeMounts"]
    assert options["content"] == f"fs:{mount['mountPath']}"
    assert [volume["name"] for volume in pod["volumes"]] == [mount["name"]]

    volume = kinds["PersistentVolume"]["spec"]
    assert volume["nfs"]["path"] == options["export"]
    assert volume["nfs"]["server"].split(".")[0] == kinds["Service"]["metadata"]["name"]
    mount_options = [option.replace("nfsvers=", "vers=") for option in volume["mountOptions"]]
    proven = [o for o in proven_mount_options(nfs_port) if not o.startswith(("addr", "mountaddr"))]
    assert sorted(mount_options) == sorted(proven)

    port, web = free_port(), free_port()
    with backends.postgres_schema("docs") as schema:
        changes = {
            options["listen"]: loopback(port),
            options["metrics"]: loopback(web),
            options["metadata"]: backends.postgres_url(schema),
            options["content"]: f"fs:{tmp_path / 'content'}",
        }
        command = [str(VENV_BIN / "twistd"), *(changes.get(arg, arg) for arg in args[1:])]
        env = environment(tmp_path / "home")
        with serving(command, tmp_path, env) as server:
            for probe in ("livenessProbe", "readinessProbe"):
                url = f"http://127.0.0.1:{web}{container[probe]['httpGet']['path']}"
                with urllib.request.urlopen(url, timeout=15) as answer:
                    assert answer.status == 200, probe
            refused = run(["nfs-ls", nfs_url(port)], tmp_path, env)
            assert refused.returncode != 0, refused.stdout
            assert "MNT3ERR_ACCES" in refused.stderr, refused.stderr
            assert server.stop() == 0, server.log()


# -- docs/s3.md ------------------------------------------------------------------------------


def _layout(found: Listing, root: str) -> list[re.Pattern[str]]:
    """Patterns for the path column of a layout listing, its first part replaced by *root*."""
    patterns = []
    for line in found.lines():
        first, _, rest = line.split()[0].partition("/")
        assert first in ("prefix", "cache_dir"), line
        pattern = re.escape(root + "/")
        for literal, name, width in re.findall(r"([^<]*)(?:<(\w+)(?::(\w+))?>)?", rest):
            pattern += re.escape(literal)
            if name:
                assert name in ("fileid", "index", "version", "seq"), f"teach this test <{name}>"
                digits = re.fullmatch(r"0(\d+)x", width)
                assert digits or not width, f"teach this test <{name}:{width}>"
                if name == "seq":  # a sequence number, in decimal
                    pattern += "[0-9]+"
                    continue
                pattern += "[0-9a-f]" + (f"{{{digits.group(1)}}}" if digits else "+")
        patterns.append(re.compile(pattern))
    return patterns


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    """The object keys under *prefix*/ (one page is plenty for a few files)."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_s3_listing_serves_from_seaweedfs(tmp_path: Path) -> None:
    """The S3 listing serves files from real S3, laid out as the two layout listings say.

    The listing runs in bash against SeaweedFS on loopback.  Changes: the
    ``...`` credentials become the test server's key pair (nothing else
    gives them: the environment has none), the endpoint's port becomes its
    port, and ``--listen`` a free loopback port (with ``exec``, so the test
    can signal the server).  The bucket it names is created first, as the
    docs require.  A file is copied in and read back; once it is uploaded and
    the server stopped, every object in the prefix and every file in the
    cache matches a line of the layout listings, each bucket line matches
    something, and ``dittofs-s3.json`` is what the listing shows.
    """
    text = listing("docs/s3.md", "python -m twisted dittofs").text
    spec = re.search(r"'(s3://[^']+)'", text)
    assert spec, text
    where = urllib.parse.urlsplit(spec.group(1))
    bucket, prefix = where.netloc, where.path.strip("/")
    endpoint = urllib.parse.parse_qs(where.query)["endpoint"][0]
    port = free_port()
    data = secrets.token_bytes(5 * 1024 * 1024 + 4321)
    (tmp_path / "big").write_bytes(data)
    hidden = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # the listing exports these
    env = environment(
        tmp_path / "home",
        **{name: value for name, value in credentials_env().items() if name not in hidden},
    )
    with seaweedfs(tmp_path / "weed") as weed:
        weed.create_bucket(bucket)
        client = weed.client()
        served = f"exec python -m twisted dittofs --listen {loopback(port)}"
        script = rewritten(
            text,
            ("AWS_ACCESS_KEY_ID=...", f"AWS_ACCESS_KEY_ID={ACCESS_KEY}"),
            ("AWS_SECRET_ACCESS_KEY=...", f"AWS_SECRET_ACCESS_KEY={SECRET_KEY}"),
            (endpoint, weed.endpoint),
            ("python -m twisted dittofs", served),
        )
        with serving(["bash", "-euo", "pipefail", "-c", script], tmp_path, env) as server:
            copied = run(["nfs-cp", str(tmp_path / "big"), nfs_url(port, "big")], tmp_path, env)
            assert copied.returncode == 0, copied.stderr + server.log()
            assert nfs_cat(nfs_url(port, "big")) == data
            deadline = time.monotonic() + 60
            while not any("/blocks/" in key for key in _keys(client, bucket, prefix)):
                assert time.monotonic() < deadline, f"nothing uploaded:\n{server.log()}"
                time.sleep(0.5)
            assert server.stop() == 0, server.log()
        keys = _keys(client, bucket, prefix)
        bucket_layout = listing("docs/s3.md", "prefix/dittofs-s3.json")
        patterns = _layout(bucket_layout, prefix)
        for key in keys:
            assert any(p.fullmatch(key) for p in patterns), f"{key} is not in the layout"
        for pattern in patterns:
            assert any(pattern.fullmatch(key) for key in keys), f"no object {pattern.pattern}"
        shown = json.loads(bucket_layout.lines()[0].split(None, 1)[1])
        stored = client.get_object(Bucket=bucket, Key=f"{prefix}/dittofs-s3.json")["Body"]
        assert json.loads(stored.read()) == shown

    cache = tmp_path / "home/.local/share/dittofs/s3-cache"
    patterns = _layout(listing("docs/s3.md", "cache_dir/owner.json"), str(cache))
    files = [str(path) for path in cache.rglob("*") if path.is_file()]
    assert str(cache / "owner.json") in files, files
    assert any("/clean/" in name for name in files), files
    for name in files:
        assert any(p.fullmatch(name) for p in patterns), f"{name} is not in the layout"


# -- docs/testing.md and docs/testing-linux.md -----------------------------------------------


def _collected(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The test ids ``pytest --collect-only -q`` printed (it must have succeeded)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    count = re.search(r"^(\d+)(?:/\d+)? tests? collected", result.stdout, re.MULTILINE)
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    assert count and int(count.group(1)) == len(ids) > 0, result.stdout[-3000:]
    return ids


def test_test_suite_commands_select_tests() -> None:
    """Each command that runs a suite is valid and selects tests, without running them.

    The suites are what CI runs (the Linux guest one takes minutes), so the
    commands are checked by collecting: pytest with ``--collect-only``, trial
    with ``--dry-run``, which must find as many unit tests as pytest, as the
    listing's comment promises.  The guest lines select only guest tests; the
    one-scenario line only ``sqlite+fs`` ones, its scenario among them;
    the long differential run only differential tests.
    """
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    lines = [
        *listing("docs/testing.md", "-m pytest tests/unit").lines(),
        *listing(
            "docs/testing-linux.md", "python -m pytest tests/e2e/linux -m linux_guest\n"
        ).lines(),
        *listing("docs/testing-linux.md", "DITTOFS_E2E_SCENARIOS=rename").lines(),
        *listing("docs/testing.md", "DITTOFS_DIFF_RANDOM=1").lines(),
    ]
    unit_tests: int | None = None
    dry_run: int | None = None
    for line in lines:
        assigned, argv = shell_command(line)
        assert argv[1:3] in (["-m", "pytest"], ["-m", "twisted.trial"]), line
        if argv[2] == "twisted.trial":
            result = run([*argv[:3], "--dry-run", *argv[3:]], ROOT, {**env, **assigned})
            passed = re.search(r"PASSED \(successes=(\d+)\)", result.stdout)
            assert result.returncode == 0 and passed, result.stdout[-3000:] + result.stderr
            dry_run = int(passed.group(1))
            continue
        ids = _collected(run([*argv, "--collect-only", "-q"], ROOT, {**env, **assigned}))
        if argv[3:] == ["tests/unit"]:
            unit_tests = len(ids)
        if "DITTOFS_DIFF_RANDOM" in assigned:
            assert ids and all("test_posix_differential" in test for test in ids), ids[:5]
        if "linux_guest" in argv:
            assert all(test.startswith("tests/e2e/linux/") for test in ids), ids[:5]
        if "-k" in argv:
            assert all("sqlite+fs" in test for test in ids), ids[:5]
            scenario = assigned["DITTOFS_E2E_SCENARIOS"]
            assert any(test.endswith(f"[sqlite+fs-{scenario}]") for test in ids), ids
    assert unit_tests is not None and unit_tests == dry_run, (unit_tests, dry_run)
