"""``modelport features …``: define feature views from YAML, push values, read them back.

The commands work on the registry database and the online store the settings name (Redis when
``MODELPORT_REDIS_URL`` is set). The embedded store (no Redis) keeps values in the server's
memory, so ``features push`` sends them through the API of the server named in ``var/cli.json``
(``modelport demo`` writes it) when the tenant is that file's; if no server answers there, the
values go to the database, which a server reads when it starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from modelport.cli.config import CliConfig, load_config
from modelport.cli.models import TenantOption, cli_actor, run_with_services
from modelport.cli.server_api import ServerUnreachable, call
from modelport.services.features import MAX_PUSH_ROWS
from modelport.settings import Settings
from modelport.stores.features import AppliedView
from modelport.stores.online import FeatureSpec, WriteResult

features_app = typer.Typer(help="Feature views and online feature values.", no_args_is_help=True)
console = Console()
notes = Console(stderr=True)

_VIEW_KEYS = {"name", "entity", "ttl_s", "features"}
_FEATURE_KEYS = {"name", "dtype", "default"}


def _load_views(path: Path) -> list[dict[str, Any]]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from None
    views = raw.get("views") if isinstance(raw, Mapping) else None
    if not isinstance(views, list) or not views:
        raise typer.BadParameter(
            f"{path}: expected 'views:' with a list of {{name, entity, ttl_s, features}}"
        )
    for i, view in enumerate(views):
        where = f"{path}: views[{i}]"
        if not isinstance(view, Mapping) or set(view) != _VIEW_KEYS:
            raise typer.BadParameter(f"{where}: give exactly {', '.join(sorted(_VIEW_KEYS))}")
        features = view["features"]
        if not isinstance(features, list) or not all(
            isinstance(f, Mapping) and {"name", "dtype"} <= set(f) <= _FEATURE_KEYS
            for f in features
        ):
            raise typer.BadParameter(f"{where}.features: a list of {{name, dtype, default}}")
    return views


@features_app.command("apply")
def apply(
    file: Annotated[Path, typer.Argument(help="YAML: views: [{name, entity, ttl_s, features}].")],
    tenant: TenantOption = "default",
) -> None:
    """Define the feature views of FILE; an unchanged view keeps its version."""
    views = _load_views(file)

    async def action(s: Any) -> list[AppliedView]:
        return [
            await s.features.apply_view(
                tenant,
                v["name"],
                v["entity"],
                [FeatureSpec(f["name"], f["dtype"], f.get("default")) for f in v["features"]],
                v["ttl_s"],
                cli_actor(),
            )
            for v in views
        ]

    for applied in run_with_services(Settings(), action):
        state = "[green]created[/green]" if applied.created else "unchanged"
        console.print(f"{applied.view.name}: version {applied.view.version} ({state})")


@features_app.command("list")
def list_views(tenant: TenantOption = "default") -> None:
    """The feature views (latest versions)."""
    views = run_with_services(Settings(), lambda s: s.features.list_views(tenant))
    table = Table("view", "version", "entity", "ttl_s", "features")
    for v in views:
        names = ", ".join(f"{f.name}:{f.dtype}" for f in v.features)
        table.add_row(v.name, str(v.version), v.entity, f"{v.ttl_s:g}", names)
    console.print(table)


@features_app.command("push")
def push(
    view: Annotated[str, typer.Argument(help="Feature view name.")],
    file: Annotated[
        Path,
        typer.Argument(help='JSON: a list of {"entity", "values", "event_timestamp"} rows.'),
    ],
    tenant: TenantOption = "default",
) -> None:
    """Write the rows of FILE to VIEW (in calls of at most 10,000 rows)."""
    try:
        raw = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{file}: {exc}") from None
    rows = raw.get("rows") if isinstance(raw, dict) else raw
    if not isinstance(rows, list):
        raise typer.BadParameter(f"{file}: expected a JSON list of rows (or {{'rows': [...]}})")
    settings = Settings()
    config = load_config()
    if settings.redis_url is None and config.server is not None and config.tenant == tenant:
        try:
            result = _push_through(config, view, rows)
        except ServerUnreachable:
            notes.print(
                f"note: no server answered at {config.server}; the values go to the database "
                "and a server reads them when it starts"
            )
        else:
            console.print(f"{view}: {result.written} written, {result.stale} stale")
            return

    async def action(s: Any) -> WriteResult:
        written = stale = 0
        for start in range(0, len(rows), MAX_PUSH_ROWS):
            result = await s.features.push(tenant, view, rows[start : start + MAX_PUSH_ROWS])
            written += result.written
            stale += result.stale
        return WriteResult(written, stale)

    result = run_with_services(settings, action)
    console.print(f"{view}: {result.written} written, {result.stale} stale")
    if settings.redis_url is None:
        notes.print(
            "note: the embedded online store keeps values in each server's memory; a running "
            "server sees these after a restart (push through its API, or set MODELPORT_REDIS_URL)"
        )


def _push_through(config: CliConfig, view: str, rows: list[Any]) -> WriteResult:
    """The rows through the server's API, so its in-process store holds them at once."""
    written = stale = 0
    for start in range(0, len(rows), MAX_PUSH_ROWS):
        answer = call(
            config,
            "POST",
            f"/v1/features/{view}/push",
            {"rows": rows[start : start + MAX_PUSH_ROWS]},
        )
        if answer.status != 200 or not isinstance(answer.body, dict):
            detail = answer.body.get("error") if isinstance(answer.body, dict) else answer.body
            console.print(f"[red]error:[/red] {config.server} answered {answer.status}: {detail}")
            raise typer.Exit(1)
        written += int(answer.body["written"])
        stale += int(answer.body["stale"])
    return WriteResult(written, stale)


def _entities(raw: list[str]) -> dict[str, list[str]]:
    entities: dict[str, list[str]] = {}
    for item in raw:
        entity, sep, keys = item.partition("=")
        if not sep or not entity or not keys:
            raise typer.BadParameter(f"{item!r}: use ENTITY=KEY[,KEY…], e.g. user=u1,u2")
        entities.setdefault(entity, []).extend(keys.split(","))
    return entities


@features_app.command("get")
def get(
    feature: Annotated[
        list[str], typer.Option("--feature", "-f", help="view:feature or view:*, repeatable.")
    ],
    entity: Annotated[
        list[str], typer.Option("--entity", "-e", help="ENTITY=KEY[,KEY…], repeatable.")
    ],
    tenant: TenantOption = "default",
) -> None:
    """Read features for entity keys (JSON, one result per key)."""
    entities = _entities(entity)
    results = run_with_services(
        Settings(), lambda s: s.features.get_features(tenant, feature, entities)
    )
    console.print_json(json.dumps([r.to_dict() for r in results]))
