"""No secret given to a running DittoFS ever appears in what it writes, at DEBUG level.

Each test hands a process a password (in a PostgreSQL or Redis URL, in an S3
endpoint, in ``AWS_SECRET_ACCESS_KEY``), takes it down a path that quotes
the URL back — libpq naming a URI it cannot parse, botocore naming the
endpoint it cannot reach, ``/ready`` explaining a failed check, a mistyped
option, ``dittofs fsck`` failing — and then searches stdout, stderr, the
log file and the HTTP body for the secret.  Where a path quotes the URL, the
test also finds its redacted form (``user:***@``), so it cannot pass by
never reaching the place that would have printed the secret.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.clients import libnfs
from tests.e2e.server import dittofs_server, fetch, free_port
from tests.unit.backends import REDIS, postgres_schema, postgres_url, redis_prefix

STOP_SECONDS = 60.0


def secret() -> str:
    """A password nothing else in any log could contain by chance."""
    return f"S3cret{secrets.token_hex(8)}"


def twistd(workdir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``twistd -n dittofs`` with *options* until it stops by itself; capture its output."""
    command = [
        str(Path(sys.executable).with_name("twistd")), "-n", "--pidfile=", "dittofs",
        "--listen", f"tcp:{free_port()}:interface=127.0.0.1", "--log-level", "DEBUG", *options,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=STOP_SECONDS, check=False
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_postgresql_uri_libpq_quotes(tmp_path: Path, log_format: str) -> None:
    """libpq quotes a URI it cannot parse in its error; the store failure is logged redacted.

    The bracket of an IPv6 host is left open, so opening the store fails with
    psycopg's ``ProgrammingError`` holding the whole URI, password included;
    DittoFS logs one line naming the store by its URL (the traceback follows
    at DEBUG level) and stops with status 1.
    """
    password = secret()
    url = f"postgresql://dittofs:{password}@[::1:5432/test"
    run = twistd(tmp_path, "--metadata", url, "--content", "memory", "--log-format", log_format)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert (
        "Could not open postgresql metadata (postgresql://dittofs:***@[::1:5432/test) "
        "for /export: ProgrammingError: "
    ) in output, output
    assert "Traceback" in output, output
    assert password not in output


def test_redis_password_refused(tmp_path: Path) -> None:
    """A Redis URL whose user and password are refused: the failure is logged, not the password."""
    password = secret()
    url = f"redis://no-such-user:{password}@127.0.0.1:6379/0?prefix=secrets-test"
    run = twistd(tmp_path, "--metadata", url, "--content", "memory", "--log-format", "json")
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "Could not open redis metadata (redis://no-such-user:***@127.0.0.1" in output, output
    assert "invalid username-password pair" in output, output
    assert password not in output


def test_bad_option_quotes_the_url_redacted(tmp_path: Path) -> None:
    """A mistyped scheme is one line on stderr naming the URL, exit status 2, no password."""
    password = secret()
    run = twistd(tmp_path, "--metadata", f"postgresq://dittofs:{password}@db/dittofs")
    assert run.returncode == 2
    assert run.stderr == (
        "dittofs: --metadata: unknown metadata store 'postgresq://dittofs:***@db/dittofs' "
        "(choose from memory, sqlite[:PATH], postgresql://URL, redis://URL)\n"
    )
    assert password not in run.stdout


def test_bad_config_file_quotes_the_url_redacted(tmp_path: Path) -> None:
    """The same from an ``[[exports]]`` table of a config file, with ``?password=`` this time."""
    password = secret()
    config = tmp_path / "dittofs.toml"
    config.write_text(
        f'[[exports]]\npath = "/a"\nmetadata = "redis+x://cache/0?password={password}"\n'
    )
    run = twistd(tmp_path, "--config", str(config))
    assert run.returncode == 2
    assert "exports[1]: unknown metadata store 'redis+x://cache/0?password=***'" in run.stderr
    assert password not in run.stdout + run.stderr


def test_fsck_failure_redacted(tmp_path: Path) -> None:
    """``dittofs fsck`` on a URI libpq cannot parse fails with a traceback, exit 1, no password."""
    password = secret()
    url = f"postgresql://dittofs:{password}@[::1:5432/test"
    command = [str(Path(sys.executable).with_name("dittofs")), "fsck", "-q", "--metadata", url]
    run = subprocess.run(
        [*command, "--content", "memory"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=STOP_SECONDS,
        check=False,
    )
    assert run.returncode == 1
    assert "ProgrammingError: end of string reached" in run.stderr, run.stderr
    assert "dittofs:***@[::1:5432/test" in run.stderr
    assert password not in run.stdout + run.stderr


@pytest.mark.parametrize("store", ["postgresql", "redis"])
def test_serving_with_a_password_url(tmp_path: Path, store: str) -> None:
    """A server whose metadata URL carries a password serves calls and /ready without quoting it.

    The local PostgreSQL trusts loopback and the local Redis's default user
    takes any password, so both URLs work; everything DittoFS logs at DEBUG
    while serving libnfs's calls, and the /ready body, are then searched.
    """
    password = secret()
    metrics = free_port()
    with contextlib.ExitStack() as stack:
        if store == "postgresql":
            schema = stack.enter_context(postgres_schema("secrets"))
            url = postgres_url(schema).replace("://postgres@", f"://postgres:{password}@", 1)
        else:
            prefix = stack.enter_context(redis_prefix("secrets"))
            url = f"{REDIS.replace('redis://', f'redis://:{password}@', 1)}?prefix={prefix}"
        assert password in url
        with dittofs_server(
            tmp_path, "--metadata", url, "--content", "memory", "--log-level", "DEBUG",
            "--log-format", "json", "--metrics", f"tcp:{metrics}:interface=127.0.0.1",
        ) as server:  # fmt: skip
            listing = libnfs("nfs-ls", server.url())
            assert listing.returncode == 0, listing.stderr.decode(errors="replace")
            status, body = fetch(f"http://127.0.0.1:{metrics}/ready")
            assert status == 200, body
    log = server.log()
    assert '"procedure": "READDIRPLUS"' in log  # the DEBUG calls were logged
    assert password not in log
    assert password not in body


def test_s3_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 credentials in the environment and in the endpoint's URL are never logged or served.

    The endpoint has no server behind it, so the store logs that S3 is
    unreachable (botocore's message names the endpoint URL) and /ready fails
    its content check with the same message.
    """
    environment_secret = secret()
    endpoint_secret = secret()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRETSTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", environment_secret)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = f"http://AKID:{endpoint_secret}@127.0.0.1:{free_port()}"
    spec = (
        f"s3://dittofs-secrets/test?endpoint={endpoint}&region=us-east-1"
        f"&attempts=1&timeout=1s&cache_dir={tmp_path / 'cache'}"
    )
    metrics = free_port()
    with dittofs_server(
        tmp_path, "--metadata", "memory", "--content", spec, "--log-level", "DEBUG",
        "--metrics", f"tcp:{metrics}:interface=127.0.0.1",
    ) as server:  # fmt: skip
        deadline = time.monotonic() + 30
        while "S3 is unreachable" not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        status, body = fetch(f"http://127.0.0.1:{metrics}/ready")
        assert status == 503, body
    log = server.log()
    for text in (log, body):
        assert "AKID:***@127.0.0.1" in text, text
        assert endpoint_secret not in text
        assert environment_secret not in text
