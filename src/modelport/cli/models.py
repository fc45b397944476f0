"""``modelport models …``: push, list and describe model versions."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from modelport.cli.config import load_config, resolve_tenant
from modelport.cli.server_api import ServerUnreachable, wait_serving
from modelport.errors import ModelportError
from modelport.routing.policy import PRODUCTION
from modelport.serving.config import VersionConfig
from modelport.settings import Settings
from modelport.stores.registry import VersionRecord
from modelport.wiring import Services, build_services

app = typer.Typer(help="Register and inspect model versions.", no_args_is_help=True)
console = Console()
notes = Console(stderr=True)
T = TypeVar("T")

TenantOption = Annotated[
    str,
    typer.Option(
        envvar="MODELPORT_TENANT",
        callback=resolve_tenant,
        help="The tenant that owns the model (default: the one in var/cli.json, which "
        "`modelport demo` writes, else 'default').",
    ),
]


def run_with_services(settings: Settings, action: Callable[[Services], Awaitable[T]]) -> T:
    async def main() -> T:
        services = await build_services(settings)
        try:
            return await action(services)
        finally:
            await services.close()

    try:
        return asyncio.run(main())
    except ModelportError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def cli_actor() -> str:
    """How the history names a change made from this command line."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _csv_ints(raw: str | None) -> list[int] | None:
    if raw is None:
        return None
    try:
        return [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter("use comma-separated integers, e.g. 8,16,32") from None


def build_config(
    config_file: Path | None,
    runtime: str | None,
    max_batch_size: int | None,
    max_queue_delay_ms: float | None,
    preferred_batch_sizes: str | None,
    max_queue_size: int | None,
    threads: int | None,
    instances: int | None,
    warmup_file: Path | None,
) -> VersionConfig:
    raw: dict[str, Any] = json.loads(config_file.read_text()) if config_file else {}
    batching = raw.setdefault("batching", {})
    runtime_cfg = raw.setdefault("runtime", {})
    batching_overrides: dict[str, Any] = {
        "max_batch_size": max_batch_size,
        "max_queue_delay_ms": max_queue_delay_ms,
        "preferred_batch_sizes": _csv_ints(preferred_batch_sizes),
        "max_queue_size": max_queue_size,
    }
    runtime_overrides: dict[str, Any] = {
        "kind": runtime,
        "intra_op_threads": threads,
        "instances": instances,
    }
    batching.update({k: v for k, v in batching_overrides.items() if v is not None})
    runtime_cfg.update({k: v for k, v in runtime_overrides.items() if v is not None})
    if warmup_file is not None:
        raw["warmup"] = json.loads(warmup_file.read_text())
    try:
        return VersionConfig.model_validate(raw)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def push(
    name: Annotated[str, typer.Argument(help="Model name, e.g. ranker.")],
    source: Annotated[
        str,
        typer.Argument(
            help="An .onnx file, or a folder for text-embedding models: a local path or a URI "
            "(file://, s3://bucket/key with the s3 extra, gs://bucket/key with the gcs extra).",
        ),
    ],
    tenant: TenantOption = "default",
    runtime: Annotated[str | None, typer.Option(help="onnx (default) or text-embedding.")] = None,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Most rows per runtime call (0: no batching).")
    ] = None,
    max_queue_delay_ms: Annotated[
        float | None, typer.Option(help="Longest wait for a batch to fill.")
    ] = None,
    preferred_batch_sizes: Annotated[
        str | None, typer.Option(help="Comma-separated, e.g. 8,16,32.")
    ] = None,
    max_queue_size: Annotated[
        int | None, typer.Option(help="Rows allowed to wait before 503.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime intra-op threads (0: one per core).")
    ] = None,
    instances: Annotated[
        int | None, typer.Option(help="Batches computed at the same time.")
    ] = None,
    warmup: Annotated[
        Path | None, typer.Option(help="JSON file: a list of OIP request bodies.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="JSON file with the whole version config.")
    ] = None,
    required: Annotated[
        bool | None,
        typer.Option("--required/--optional", help="Whether server readiness waits for it."),
    ] = None,
    breaking: Annotated[
        bool,
        typer.Option(
            "--breaking",
            help="The signature changes on purpose: it becomes the model's new interface "
            "(golden examples of the old one are dropped).",
        ),
    ] = False,
    created_by: Annotated[
        str | None, typer.Option(help="Who pushes (kept in the history); default cli:<user>.")
    ] = None,
    load: Annotated[
        bool,
        typer.Option(
            "--load",
            help="Serve this version: point the 'production' alias at it (after loading it "
            "here to check it); every running replica follows, loading and warming it before "
            "it takes traffic. Waits until the server in var/cli.json serves it.",
        ),
    ] = False,
    wait_s: Annotated[
        float, typer.Option(help="With --load: how long to wait for the server to serve it.")
    ] = 60.0,
) -> None:
    """Register SOURCE as the next version of NAME (and with --load, serve it)."""
    if "://" not in source and not Path(source).exists():
        raise typer.BadParameter(
            f"{source} does not exist (no such file or folder)", param_hint="'source'"
        )
    version_config = build_config(
        config,
        runtime,
        max_batch_size,
        max_queue_delay_ms,
        preferred_batch_sizes,
        max_queue_size,
        threads,
        instances,
        warmup,
    )
    actor = created_by or cli_actor()

    async def action(s: Services) -> VersionRecord:
        record = await s.registry.push(
            tenant,
            name,
            source,
            version_config,
            required=required,
            breaking=breaking,
            created_by=actor,
        )
        console.print(
            f"[green]registered[/green] {record.model} version {record.version} "
            f"(sha256 {record.sha256[:12]}…)"
        )
        if load:
            await s.releases.set_alias(
                tenant, name, PRODUCTION, record.version, actor, "models push --load"
            )
        return record

    record = run_with_services(Settings(), action)
    _print_signature(record.signature)
    if load:
        _wait_serving(record, wait_s)


def _wait_serving(record: VersionRecord, wait_s: float) -> None:
    console.print(f"'{PRODUCTION}' points at version {record.version}: replicas load it")
    config = load_config()
    if config.server is None or config.tenant != record.tenant:
        return  # no server named, or its key is another tenant's
    try:
        serving = wait_serving(config, record.model, record.version, wait_s)
    except ServerUnreachable:
        notes.print(f"note: no server answered at {config.server}; replicas load it as they start")
        return
    if not serving:
        console.print(
            f"[red]error:[/red] {config.server} does not serve {record.model} version "
            f"{record.version} after {wait_s:g} s; see GET /v1/models/{record.model}/routing"
        )
        raise typer.Exit(1)
    console.print(
        f"[green]serving[/green] {record.model} version {record.version} on {config.server}"
    )


def _print_signature(signature: dict[str, Any]) -> None:
    table = Table("", "name", "datatype", "shape")
    for kind in ("inputs", "outputs"):
        for spec in signature[kind]:
            table.add_row(kind[:-1], spec["name"], spec["datatype"], str(spec["shape"]))
    console.print(table)


@app.command("list")
def list_models(tenant: TenantOption = "default") -> None:
    """List a tenant's models and their versions."""
    models = run_with_services(Settings(), lambda s: s.registry.list_models(tenant))
    table = Table("model", "versions", "latest sha256", "required")
    for item in models:
        latest = item.versions[-1] if item.versions else None
        table.add_row(
            item.model.name,
            ", ".join(v.version for v in item.versions),
            latest.sha256[:12] if latest else "",
            "yes" if item.model.required else "no",
        )
    console.print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[str | None, typer.Argument(help="Defaults to the newest version.")] = None,
    tenant: TenantOption = "default",
) -> None:
    """Describe one version: artifact, checksum, signature and config."""
    record = run_with_services(Settings(), lambda s: s.registry.version(tenant, name, version))
    console.print(f"[bold]{record.model}[/bold] version {record.version}")
    console.print(f"artifact  {record.artifact_uri}")
    console.print(f"sha256    {record.sha256}")
    console.print(f"created   {record.created_at.isoformat()} by {record.created_by}")
    _print_signature(record.signature)
    console.print_json(json.dumps(record.config))
