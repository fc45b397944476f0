"""``modelport events dlq …``: a tenant's dead letters (messages a consumer gave up on).

``list`` shows them with their last error; ``replay`` publishes them to their topic again
(after the cause is fixed), ``drop`` deletes them. A tenant sees and touches only its own:
another tenant's ids answer as missing ones do.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from modelport.cli.models import TenantOption, run_with_services
from modelport.settings import Settings
from modelport.stores.streams import DeadLetter
from modelport.wiring import Services

dlq_app = typer.Typer(
    help="Dead letters: messages a consumer gave up on after its attempts.", no_args_is_help=True
)
console = Console()
notes = Console(stderr=True)

#: Most dead letters one ``list`` shows, and ids per call of ``--all``.
PAGE = 1000
#: Most dead letters one ``--all`` acts on.
MOST = 100_000
_DONE = {"replay": "replayed", "drop": "dropped"}

TopicOption = Annotated[str | None, typer.Option(help="Only this topic (events, catalog).")]
GroupOption = Annotated[str | None, typer.Option(help="Only this consumer group.")]
IdsArgument = Annotated[
    list[str] | None, typer.Argument(help="Dead letter ids, as `dlq list` shows them.")
]
AllOption = Annotated[
    bool, typer.Option("--all", help="Every dead letter of the tenant (within --topic/--group).")
]


@dlq_app.command("list")
def list_dead_letters(
    tenant: TenantOption = "default",
    topic: TopicOption = None,
    group: GroupOption = None,
    limit: Annotated[int, typer.Option(min=1, max=PAGE)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the tenant's dead letters, oldest first, with the error of their last attempt."""

    async def action(s: Services) -> list[DeadLetter]:
        return await s.stream.dead_letters(tenant, topic, group, limit)

    letters = run_with_services(Settings(), action)
    if as_json:
        for letter in letters:
            typer.echo(json.dumps(_as_dict(letter)))
        return
    table = Table("id", "topic", "group", "key", "attempts", "failed at", "error")
    for letter in letters:
        table.add_row(
            letter.id,
            letter.topic,
            letter.group,
            letter.key,
            str(letter.attempts),
            letter.failed_at.isoformat(timespec="seconds"),
            letter.error,
        )
    console.print(table)


@dlq_app.command("replay")
def replay(
    ids: IdsArgument = None,
    tenant: TenantOption = "default",
    every: AllOption = False,
    topic: TopicOption = None,
    group: GroupOption = None,
) -> None:
    """Publish dead letters to their topic again; each counts its attempts from zero."""
    done = _act(tenant, ids, every, topic, group, "replay")
    typer.echo(f"replayed {done} dead letter{'s' * (done != 1)}")


@dlq_app.command("drop")
def drop(
    ids: IdsArgument = None,
    tenant: TenantOption = "default",
    every: AllOption = False,
    topic: TopicOption = None,
    group: GroupOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good."""
    _check_choice(ids, every, topic, group)
    if not yes:
        what = "every dead letter" if every else f"{len(ids or [])} dead letter(s)"
        typer.confirm(f"Delete {what} of tenant {tenant}?", abort=True)
    done = _act(tenant, ids, every, topic, group, "drop")
    typer.echo(f"dropped {done} dead letter{'s' * (done != 1)}")


def _act(
    tenant: str,
    ids: list[str] | None,
    every: bool,
    topic: str | None,
    group: str | None,
    verb: str,
) -> int:
    _check_choice(ids, every, topic, group)

    async def action(s: Services) -> int:
        act = s.stream.replay if verb == "replay" else s.stream.drop
        if ids:
            return await act(tenant, ids)
        # One snapshot: a replayed message that fails again comes back as a new dead letter,
        # which this command must not chase.
        chosen = [d.id for d in await s.stream.dead_letters(tenant, topic, group, MOST)]
        return sum([await act(tenant, chosen[i : i + PAGE]) for i in range(0, len(chosen), PAGE)])

    done = run_with_services(Settings(), action)
    if ids and done < len(set(ids)):
        notes.print(
            f"[red]error:[/red] {len(set(ids)) - done} of the ids are not dead letters of "
            f"tenant {tenant}"
        )
        typer.echo(f"{_DONE[verb]} {done} dead letter{'s' * (done != 1)}")
        raise typer.Exit(1)
    return done


def _check_choice(ids: list[str] | None, every: bool, topic: str | None, group: str | None) -> None:
    if bool(ids) == every:
        raise typer.BadParameter("give dead letter ids or --all (one of them)")
    if ids and (topic or group):
        raise typer.BadParameter("--topic and --group go with --all")


def _as_dict(letter: DeadLetter) -> dict[str, object]:
    return {
        "id": letter.id,
        "topic": letter.topic,
        "group": letter.group,
        "tenant": letter.tenant,
        "key": letter.key,
        "attempts": letter.attempts,
        "error": letter.error,
        "failed_at": letter.failed_at.isoformat(),
        "payload": letter.payload,
    }
