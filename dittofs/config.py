"""Export definitions: from command-line options or ``[[exports]]`` tables of the TOML file.

Every problem is a :class:`ConfigError` whose message says what and where
(``config FILE: exports[2]: key 'clients': ...``), which ``twistd dittofs``
prints as its single line before exiting with status 2.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from dittofs.policy import AccessPolicy, Squash, parse_clients
from dittofs.stores import StoreSpecError, check_spec

#: Keys an ``[[exports]]`` table may have.
EXPORT_KEYS = frozenset(
    [
        "path",
        "id",
        "metadata",
        "content",
        "read-only",
        "clients",
        "squash",
        "anonuid",
        "anongid",
        "secure",
    ]
)
_SQUASH = {squash.value: squash for squash in Squash}


class ConfigError(ValueError):
    """A configuration value is wrong; the message says what and where."""


@attrs.frozen
class ExportSpec:
    """One export as configured, before its stores are built."""

    export_id: int
    path: str
    metadata: str
    content: str
    policy: AccessPolicy


def default_export_id(path: str) -> int:
    """A stable 16-bit id from the path, so handles survive reordering the config."""
    return zlib.crc32(path.encode()) & 0xFFFF or 1


def check_export_path(value: str) -> None:
    """Export paths are absolute and fit MOUNT's 1024-byte limit."""
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    if len(value.encode()) > 1024:
        raise ValueError("is longer than MOUNT's 1024-byte limit")


def _typed(where: str, key: str, value: Any, kind: type) -> Any:
    if kind is int and isinstance(value, bool):
        raise ConfigError(f"{where}: key '{key}' must be an integer")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: key '{key}' must be {'a ' + kind.__name__}")
    return value


def policy_from(values: Mapping[str, Any], label: Callable[[str], str]) -> AccessPolicy:
    """Build an access policy from option/config values (missing keys keep the defaults).

    *label* names where a key came from, for error messages.
    """
    defaults = AccessPolicy()
    clients = values.get("clients")
    if isinstance(clients, str):
        clients = [entry for entry in clients.split(",") if entry.strip()]
    try:
        networks = defaults.clients if clients is None else parse_clients(clients)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{label('clients')}: {error}") from None
    squash_name = values.get("squash", defaults.squash.value)
    if squash_name not in _SQUASH:
        choices = ", ".join(_SQUASH)
        raise ConfigError(f"{label('squash')}: must be one of {choices}, got {squash_name!r}")
    ids = {}
    for key in ("anonuid", "anongid"):
        value = values.get(key, getattr(defaults, key))
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{label(key)}: {value!r} is not an integer") from None
        if not 0 <= number <= 0xFFFFFFFF:
            raise ConfigError(f"{label(key)}: {number} is not a 32-bit id")
        ids[key] = number
    return AccessPolicy(
        clients=networks,
        read_only=bool(values.get("read-only", False)),
        squash=_SQUASH[squash_name],
        anonuid=ids["anonuid"],
        anongid=ids["anongid"],
        secure=bool(values.get("secure", False)),
    )


def exports_from_tables(tables: Any, source: str, data_dir: Path) -> list[ExportSpec]:
    """Read ``[[exports]]``; stores default to files of their own below the data directory."""
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{source}: 'exports' must be a list of tables ([[exports]])")
    specs: list[ExportSpec] = []
    for index, table in enumerate(tables, 1):
        where = f"{source}: exports[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(table) - EXPORT_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}'")
        if "path" not in table:
            raise ConfigError(f"{where}: key 'path' is required")
        path = _typed(where, "path", table["path"], str)
        try:
            check_export_path(path)
        except ValueError as error:
            raise ConfigError(f"{where}: key 'path': {error}") from None
        export_id = _typed(where, "id", table.get("id", default_export_id(path)), int)
        if not 1 <= export_id <= 0xFFFF:
            raise ConfigError(f"{where}: key 'id': must be from 1 to 65535")
        for key in ("read-only", "secure"):
            if key in table:
                _typed(where, key, table[key], bool)
        own = data_dir / f"export-{export_id}"
        metadata = _typed(
            where, "metadata", table.get("metadata", f"sqlite:{own / 'metadata.db'}"), str
        )
        content = _typed(where, "content", table.get("content", f"fs:{own / 'content'}"), str)
        try:
            check_spec("metadata", metadata)
            check_spec("content", content)
        except StoreSpecError as error:
            raise ConfigError(f"{where}: {error}") from None
        policy = policy_from(table, _table_label(where))
        specs.append(ExportSpec(export_id, path, metadata, content, policy))
    _check_unique(specs, source)
    return specs


def _table_label(where: str) -> Callable[[str], str]:
    return lambda key: f"{where}: key '{key}'"


def _check_unique(specs: list[ExportSpec], source: str) -> None:
    seen_ids: dict[int, str] = {}
    seen_paths: set[str] = set()
    for spec in specs:
        if spec.export_id in seen_ids:
            raise ConfigError(
                f"{source}: exports {seen_ids[spec.export_id]!r} and {spec.path!r} have "
                f"the same id {spec.export_id}; give one an explicit 'id'"
            )
        if spec.path.rstrip("/") in seen_paths:
            raise ConfigError(f"{source}: export path {spec.path!r} is listed twice")
        seen_ids[spec.export_id] = spec.path
        seen_paths.add(spec.path.rstrip("/"))
