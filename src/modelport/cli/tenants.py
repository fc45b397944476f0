"""``modelport tenants …`` and ``modelport keys …``: operator commands on the database."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelport.cli.models import run_with_services
from modelport.settings import Settings

tenants_app = typer.Typer(help="Create, list and suspend tenants.", no_args_is_help=True)
keys_app = typer.Typer(help="Issue, list, rotate and revoke API keys.", no_args_is_help=True)
console = Console()
notes = Console(stderr=True)

TenantArg = Annotated[str, typer.Option("--tenant", help="The tenant the keys belong to.")]


@tenants_app.command("create")
def create_tenant(
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '-'.")],
) -> None:
    """Create a tenant."""
    record = run_with_services(Settings(), lambda s: s.tenancy.create_tenant(name))
    console.print(f"[green]created tenant[/green] {record.name}")


@tenants_app.command("list")
def list_tenants() -> None:
    """List tenants."""
    records = run_with_services(Settings(), lambda s: s.tenancy.list_tenants())
    table = Table("tenant", "status", "created")
    for r in records:
        table.add_row(r.name, r.status, r.created_at.isoformat(timespec="seconds"))
    console.print(table)


@tenants_app.command("suspend")
def suspend_tenant(name: str) -> None:
    """Suspend a tenant: its keys stop working on every replica within the cache TTL."""
    run_with_services(Settings(), lambda s: s.tenancy.set_suspended(name, True))
    console.print(f"suspended tenant {name}")


@tenants_app.command("resume")
def resume_tenant(name: str) -> None:
    """Let a suspended tenant's keys work again."""
    run_with_services(Settings(), lambda s: s.tenancy.set_suspended(name, False))
    console.print(f"resumed tenant {name}")


@tenants_app.command("quotas")
def set_quotas(
    name: str,
    rate: Annotated[float | None, typer.Option(help="Requests per second (0: unlimited).")] = None,
    burst: Annotated[
        int | None, typer.Option(help="Token-bucket size (0: twice the rate).")
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(help="In-flight inference requests per replica.")
    ] = None,
    max_rows: Annotated[int | None, typer.Option(help="Rows per inference request.")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Request body size.")] = None,
) -> None:
    """Set a tenant's quotas; options left out go back to the server defaults."""
    overrides = {
        "rate_limit_rps": rate,
        "rate_limit_burst": burst,
        "max_concurrency": max_concurrency,
        "max_rows": max_rows,
        "max_body_bytes": max_body_bytes,
    }
    record = run_with_services(Settings(), lambda s: s.tenancy.set_quotas(name, overrides))
    console.print(f"tenant {record.name} quotas: {record.overrides}")


@keys_app.command("create")
def create_key(
    tenant: TenantArg,
    scopes: Annotated[str, typer.Option(help="Comma-separated: infer,read,write,admin.")] = (
        "infer,read"
    ),
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    expires_in: Annotated[
        float | None, typer.Option(help="Seconds until the key expires (default: never).")
    ] = None,
) -> None:
    """Issue a key. It is printed once, on standard output; only its hash is stored."""
    issued = run_with_services(
        Settings(),
        lambda s: s.tenancy.create_key(
            tenant,
            [x.strip() for x in scopes.split(",") if x.strip()],
            name=name,
            expires_in_s=expires_in,
        ),
    )
    notes.print(
        f"key {issued.record.prefix} for tenant {tenant} ({', '.join(issued.record.scopes)})"
    )
    typer.echo(issued.secret)


@keys_app.command("list")
def list_keys(tenant: TenantArg) -> None:
    """List a tenant's keys (prefixes only: the secrets are not stored)."""
    records = run_with_services(Settings(), lambda s: s.tenancy.list_keys(tenant))
    table = Table("prefix", "name", "scopes", "expires", "revoked")
    for r in records:
        table.add_row(
            r.prefix,
            r.name,
            ",".join(r.scopes),
            r.expires_at.isoformat(timespec="seconds") if r.expires_at else "never",
            r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke_key(tenant: TenantArg, prefix: str) -> None:
    """Revoke a key now."""
    run_with_services(Settings(), lambda s: s.tenancy.revoke_key(tenant, prefix))
    console.print(f"revoked key {prefix}")


@keys_app.command("rotate")
def rotate_key(
    tenant: TenantArg,
    prefix: str,
    overlap: Annotated[
        float, typer.Option(help="Seconds the old key keeps working beside the new one.")
    ] = 3600,
) -> None:
    """Issue a replacement key; the old one expires after the overlap."""
    issued = run_with_services(Settings(), lambda s: s.tenancy.rotate_key(tenant, prefix, overlap))
    notes.print(f"new key {issued.record.prefix}; {prefix} expires in {overlap:g} s")
    typer.echo(issued.secret)
