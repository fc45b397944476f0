"""``modelport models …`` release commands: aliases, routing, rollouts, golden examples,
history and deleting versions.

They write the release state in the registry database; running servers follow it within
``MODELPORT_RELEASE_SYNC_INTERVAL_S`` (at once on PostgreSQL). A version an alias or a policy
would send traffic to is first loaded and warmed here, so a broken artifact is refused before
any replica tries it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from modelport.cli.models import TenantOption, app, cli_actor, console, run_with_services
from modelport.routing.guard import RolloutPlan
from modelport.routing.policy import RoutingPolicy, ShadowSpec, Split
from modelport.settings import Settings
from modelport.stores.audit import AuditRecord
from modelport.stores.rollouts import RolloutRecord

rollout_app = typer.Typer(help="SLO-guarded canary rollouts.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

Reason = Annotated[str, typer.Option(help="Why (kept in the history).")]


@app.command()
def alias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. production.")],
    version: Annotated[str, typer.Argument(help="The version to point at.")],
    tenant: TenantOption = "default",
    reason: Reason = "",
) -> None:
    """Point ALIAS of NAME at VERSION (after checking that VERSION loads)."""
    move = run_with_services(
        Settings(),
        lambda s: s.releases.set_alias(tenant, name, alias_name, version, cli_actor(), reason),
    )
    before = f" (was {move.previous})" if move.previous else ""
    console.print(f"[green]{name}@{move.alias}[/green] -> version {move.version}{before}")


@app.command()
def unalias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
    tenant: TenantOption = "default",
    reason: Reason = "",
) -> None:
    """Remove ALIAS of NAME."""
    previous = run_with_services(
        Settings(),
        lambda s: s.releases.delete_alias(tenant, name, alias_name, cli_actor(), reason),
    )
    console.print(f"removed {name}@{alias_name} (was version {previous})")


def _split(raw: str) -> Split:
    target, sep, weight = raw.partition("=")
    try:
        value = float(weight) if sep else 1.0
    except ValueError:
        raise typer.BadParameter(f"{raw!r}: use TARGET=WEIGHT, e.g. production=90") from None
    if not target or value <= 0:
        raise typer.BadParameter(f"{raw!r}: use TARGET=WEIGHT with a positive weight")
    return Split(target, value)


@app.command()
def route(
    name: Annotated[str, typer.Argument(help="Model name.")],
    split: Annotated[
        list[str] | None,
        typer.Option(help="TARGET=WEIGHT, repeatable; a target is an alias or a version."),
    ] = None,
    sticky_key: Annotated[
        str | None, typer.Option(help="Request parameter that keeps a caller on one version.")
    ] = None,
    shadow: Annotated[str | None, typer.Option(help="Mirror to this target.")] = None,
    shadow_percent: Annotated[float, typer.Option(min=0, max=100)] = 100.0,
    shadow_tolerance: Annotated[float, typer.Option(min=0)] = 1e-4,
    fallback: Annotated[str | None, typer.Option(help="Retry a failure once here.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the policy.")] = False,
    tenant: TenantOption = "default",
    reason: Reason = "",
) -> None:
    """Set (or --clear) the routing policy of NAME."""
    policy: RoutingPolicy | None = None
    if not clear:
        policy = RoutingPolicy(
            splits=tuple(_split(s) for s in split or []),
            sticky_key=sticky_key,
            shadow=None if shadow is None else ShadowSpec(shadow, shadow_percent, shadow_tolerance),
            fallback=fallback,
        )
    run_with_services(
        Settings(), lambda s: s.releases.set_policy(tenant, name, policy, cli_actor(), reason)
    )
    console.print_json(json.dumps(None if policy is None else policy.to_dict()))


@app.command()
def routing(
    name: Annotated[str, typer.Argument(help="Model name.")], tenant: TenantOption = "default"
) -> None:
    """Show the aliases, routing policy and rollout of NAME."""
    releases = run_with_services(Settings(), lambda s: s.releases.releases(tenant, name))
    console.print_json(
        json.dumps(
            {
                "aliases": releases.aliases,
                "policy": None if releases.policy is None else releases.policy.to_dict(),
                "rollout": None if releases.rollout is None else _rollout_dict(releases.rollout),
            }
        )
    )


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    tenant: TenantOption = "default",
) -> None:
    """What changed for NAME: who, when, from, to and why (newest first)."""
    records = run_with_services(Settings(), lambda s: s.releases.history(tenant, name, limit))
    table = Table("when", "action", "who", "from", "to", "why")
    for record in records:
        table.add_row(*_audit_row(record))
    console.print(table)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[
        str | None, typer.Argument(help="Version number; omit to delete the whole model.")
    ] = None,
    tenant: TenantOption = "default",
    reason: Reason = "",
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Delete a whole model without asking.")
    ] = False,
) -> None:
    """Delete VERSION of NAME (refused while an alias, the routing or a rollout uses it), or
    without VERSION the whole model: every version, alias, routing policy and rollout, and the
    artifacts no other version uses (refused while a rollout is in progress). Running replicas
    unload what is deleted."""
    if version is not None:
        run_with_services(
            Settings(),
            lambda s: s.releases.delete_version(tenant, name, version, cli_actor(), reason),
        )
        console.print(f"deleted {name} version {version}")
        return
    if not yes:
        typer.confirm(
            f"Delete model '{name}' of tenant '{tenant}' with all its versions?", abort=True
        )
    deleted = run_with_services(
        Settings(), lambda s: s.repository.delete_model(tenant, name, cli_actor(), reason)
    )
    console.print(f"[green]deleted[/green] {name} (versions {', '.join(deleted) or 'none'})")


@app.command()
def golden(
    name: Annotated[str, typer.Argument(help="Model name.")],
    examples: Annotated[
        Path | None,
        typer.Argument(
            help='JSON file: a list of {"request": <OIP infer body>, "expected": '
            '{output: data}, "tolerance": number}. Omit to show the current ones.'
        ),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the examples.")] = False,
    tenant: TenantOption = "default",
) -> None:
    """Set the golden examples every new version of NAME must reproduce."""
    if examples is None and not clear:
        description = run_with_services(Settings(), lambda s: s.registry.describe(tenant, name))
        console.print_json(json.dumps(description.model.golden or []))
        return
    raw: list[dict[str, Any]] = []
    if examples is not None:
        try:
            raw = json.loads(examples.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise typer.BadParameter(f"{examples}: {exc}") from None
        if not isinstance(raw, list):
            raise typer.BadParameter(f"{examples}: expected a JSON list of examples")
    count = run_with_services(
        Settings(), lambda s: s.registry.set_golden(tenant, name, raw, cli_actor())
    )
    console.print(f"{name}: {count} golden example(s)")


@rollout_app.command("start")
def rollout_start(
    name: Annotated[str, typer.Argument(help="Model name.")],
    candidate: Annotated[str, typer.Argument(help="Candidate version.")],
    baseline: Annotated[
        str | None, typer.Option(help="Default: the version production points at.")
    ] = None,
    steps: Annotated[str, typer.Option(help="Percent per step, e.g. 5,25,50,100.")] = "5,25,50,100",
    hold_s: Annotated[float, typer.Option(help="Minimum seconds per step.")] = 60.0,
    min_requests: Annotated[int, typer.Option(help="Candidate requests per step.")] = 100,
    max_error_rate_increase: Annotated[float, typer.Option()] = 0.01,
    max_p99_ratio: Annotated[float, typer.Option()] = 1.5,
    p99_slack_ms: Annotated[float, typer.Option()] = 2.0,
    tenant: TenantOption = "default",
    reason: Reason = "",
) -> None:
    """Roll NAME out to CANDIDATE step by step; the guard promotes or rolls back."""
    try:
        plan = RolloutPlan(
            steps=[float(x) for x in steps.split(",") if x.strip()],
            hold_s=hold_s,
            min_requests=min_requests,
            max_error_rate_increase=max_error_rate_increase,
            max_p99_ratio=max_p99_ratio,
            p99_slack_ms=p99_slack_ms,
        )
    except (ValueError, ValidationError) as exc:
        raise typer.BadParameter(str(exc)) from None
    rollout = run_with_services(
        Settings(),
        lambda s: s.releases.start_rollout(
            tenant, name, candidate, plan, cli_actor(), reason, baseline=baseline
        ),
    )
    console.print_json(json.dumps(_rollout_dict(rollout)))


def _act(action: str, name: str, tenant: str, reason: str) -> None:
    def call(s: Any) -> Any:
        handler = getattr(s.releases, action)
        return handler(tenant, name, cli_actor(), reason)

    rollout = run_with_services(Settings(), call)
    console.print_json(json.dumps(_rollout_dict(rollout)))


@rollout_app.command("status")
def rollout_status(
    name: Annotated[str, typer.Argument(help="Model name.")], tenant: TenantOption = "default"
) -> None:
    """The rollouts of NAME, newest first."""
    rollouts = run_with_services(Settings(), lambda s: s.releases.rollouts(tenant, name))
    console.print_json(json.dumps([_rollout_dict(r) for r in rollouts]))


@rollout_app.command("pause")
def rollout_pause(
    name: Annotated[str, typer.Argument()], tenant: TenantOption = "default", reason: Reason = ""
) -> None:
    """Hold the current split; the guard stops judging until resumed."""
    _act("pause", name, tenant, reason)


@rollout_app.command("resume")
def rollout_resume(
    name: Annotated[str, typer.Argument()], tenant: TenantOption = "default", reason: Reason = ""
) -> None:
    """Resume a paused rollout (its current step starts over)."""
    _act("resume", name, tenant, reason)


@rollout_app.command("abort")
def rollout_abort(
    name: Annotated[str, typer.Argument()], tenant: TenantOption = "default", reason: Reason = ""
) -> None:
    """Stop the rollout; all traffic goes back to the baseline."""
    _act("abort", name, tenant, reason)


@rollout_app.command("promote")
def rollout_promote(
    name: Annotated[str, typer.Argument()], tenant: TenantOption = "default", reason: Reason = ""
) -> None:
    """Finish now: production moves to the candidate."""
    _act("promote", name, tenant, reason)


def _rollout_dict(rollout: RolloutRecord) -> dict[str, Any]:
    steps = rollout.plan.get("steps") or [100]
    return {
        "id": rollout.id,
        "baseline": rollout.baseline,
        "candidate": rollout.candidate,
        "state": rollout.state,
        "step": rollout.step,
        "percent": steps[min(rollout.step, len(steps) - 1)],
        "reason": rollout.reason,
        "verdict": rollout.verdict,
        "plan": rollout.plan,
        "started_at": rollout.started_at.isoformat(),
        "updated_at": rollout.updated_at.isoformat(),
    }


def _audit_row(record: AuditRecord) -> tuple[str, ...]:
    return (
        record.at.isoformat(timespec="seconds"),
        record.action,
        record.actor,
        record.from_ref or "",
        record.to_ref or "",
        record.reason,
    )
