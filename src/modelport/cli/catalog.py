"""``modelport catalog import FILE``: load products from NDJSON, with a progress bar.

The file is sent in chunks of ``--chunk-lines`` lines, each answered per line like
``POST /v1/catalog/import``: to the database the settings name (through the catalog service,
as a server would), or with ``--server`` through the API of the server in ``var/cli.json``.
Through the API each chunk carries an ``Idempotency-Key`` made from the file's content and the
chunk's place in it, so running the command again after a dropped connection writes nothing
twice. Line numbers in the report are the file's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from modelport.cli.config import CliConfig, load_config
from modelport.cli.models import TenantOption
from modelport.errors import ModelportError
from modelport.settings import Settings
from modelport.wiring import build_services

catalog_app = typer.Typer(help="The product catalog.", no_args_is_help=True)
console = Console()
#: Failed lines printed (all of them go to --report).
SHOWN_FAILURES = 20


def _chunks(lines: list[bytes], size: int) -> list[tuple[int, bytes]]:
    """(offset of the chunk's first line in the file, the chunk's bytes)."""
    return [
        (start, b"\n".join(lines[start : start + size])) for start in range(0, len(lines), size)
    ]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]importing[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeRemainingColumn(),
        console=console,
    )


def _through_server(config: CliConfig, chunk: bytes, key: str) -> dict[str, Any]:
    if config.server is None:
        raise typer.BadParameter("--server needs a server in var/cli.json (modelport demo)")
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": key}
    token = config.key()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 - the URL is the configured server's
        config.server + "/v1/catalog/import", method="POST", data=chunk, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            detail = json.loads(raw).get("error", raw)
        except ValueError:
            detail = raw.decode(errors="replace")
        console.print(f"[red]error:[/red] {config.server} answered {exc.code}: {detail}")
        raise typer.Exit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"[red]error:[/red] no server answered at {config.server}: {exc}")
        raise typer.Exit(1) from None


@catalog_app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="NDJSON: one product with its id per line.")],
    tenant: TenantOption = "default",
    chunk_lines: Annotated[
        int, typer.Option(min=1, max=100_000, help="Lines per import call.")
    ] = 5000,
    server: Annotated[
        bool, typer.Option("--server", help="Through the API of the server in var/cli.json.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="Write every line's answer here, as NDJSON.")
    ] = None,
) -> None:
    """Create or replace the products of FILE; bad lines are reported and skipped."""
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"{file}: {exc}") from None
    lines = content.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()
    chunks = _chunks(lines, chunk_lines)
    digest = hashlib.sha256(content).hexdigest()[:32]
    config = load_config()
    results: list[dict[str, Any]] = []
    counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}

    def take(offset: int, answer: dict[str, Any]) -> None:
        for name in counts:
            counts[name] += int(answer[name])
        for result in answer["results"]:
            results.append({**result, "line": int(result["line"]) + offset})

    with _progress() as progress:
        task = progress.add_task("import", total=len(lines))
        if server:
            for offset, chunk in chunks:
                key = f"catalog-import-{digest}-{offset}-{chunk_lines}"
                take(offset, _through_server(config, chunk, key))
                progress.advance(task, chunk.count(b"\n") + 1)
        else:

            async def main() -> None:
                services = await build_services(Settings())
                try:
                    for offset, chunk in chunks:
                        answer = await services.catalog.import_ndjson(tenant, chunk)
                        take(offset, answer.to_json())
                        progress.advance(task, chunk.count(b"\n") + 1)
                finally:
                    await services.close()

            try:
                asyncio.run(main())
            except ModelportError as exc:
                console.print(f"[red]error:[/red] {exc.message}")
                raise typer.Exit(1) from None

    console.print(
        f"{file}: {counts['created']} created, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged, {counts['failed']} failed"
    )
    failed = [r for r in results if r["status"] == "failed"]
    for result in failed[:SHOWN_FAILURES]:
        console.print(f"  line {result['line']}: {result['reason']}", highlight=False)
    if len(failed) > SHOWN_FAILURES:
        console.print(f"  … and {len(failed) - SHOWN_FAILURES} more (--report FILE lists all)")
    if report is not None:
        report.write_text("".join(json.dumps(r) + "\n" for r in results))
    if failed:
        raise typer.Exit(1)
