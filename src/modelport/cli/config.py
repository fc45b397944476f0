"""Defaults of the command line, kept in a small JSON file (``var/cli.json``).

``modelport demo`` writes it: the tenant the commands act in when ``--tenant`` and
``MODELPORT_TENANT`` are not given, and the running server with the key the CLI uses for what only
the server can do (values of the embedded online store live in its memory; ``models push
--load`` waits until it serves the model). ``MODELPORT_CLI_CONFIG`` names another file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import typer

DEFAULT_PATH = Path("var/cli.json")
#: The tenant when nothing else names one.
FALLBACK_TENANT = "default"


@dataclass(frozen=True, slots=True)
class CliConfig:
    tenant: str | None = None
    """The tenant the commands act in by default."""
    server: str | None = None
    """Base URL of the running server, e.g. ``http://127.0.0.1:8080``."""
    key_file: Path | None = None
    """File holding the API key used on ``server``."""

    def key(self) -> str | None:
        if self.key_file is None or not self.key_file.exists():
            return None
        return self.key_file.read_text().strip() or None


def config_path() -> Path:
    return Path(os.environ.get("MODELPORT_CLI_CONFIG") or DEFAULT_PATH)


def load_config(path: Path | None = None) -> CliConfig:
    """The saved defaults; none when the file is missing or unreadable."""
    path = path or config_path()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return CliConfig()
    if not isinstance(raw, dict):
        return CliConfig()
    tenant, server, key_file = raw.get("tenant"), raw.get("server"), raw.get("key_file")
    return CliConfig(
        tenant if isinstance(tenant, str) and tenant else None,
        server.rstrip("/") if isinstance(server, str) and server else None,
        Path(key_file) if isinstance(key_file, str) and key_file else None,
    )


def save_config(config: CliConfig, path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = {
        "tenant": config.tenant,
        "server": config.server,
        "key_file": None if config.key_file is None else str(config.key_file),
    }
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return path


def resolve_tenant(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """``--tenant``, else ``MODELPORT_TENANT``, else the saved default, else ``default``."""
    source = ctx.get_parameter_source(param.name or "tenant")
    # Compared by name: Typer ships its own copy of click, with its own enum.
    if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
        return load_config().tenant or FALLBACK_TENANT
    return value


__all__ = [
    "CliConfig",
    "config_path",
    "load_config",
    "resolve_tenant",
    "save_config",
]
