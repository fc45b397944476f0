"""``modelport search eval DATASET``: relevance of each search mode on a judged collection.

It runs on a scratch registry of its own (a temporary folder: SQLite, the demo ``minilm``
model, the search defaults of the settings), never on the configured one, and prints a table
or, with ``--json``, one JSON document for CI.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from modelport.demo.models import build_minilm, minilm_config
from modelport.services.relevance_data import load_collection
from modelport.services.search_eval import evaluate
from modelport.settings import Settings
from modelport.wiring import build_services

search_app = typer.Typer(help="Search: relevance evaluation.", no_args_is_help=True)
console = Console(stderr=True)
TENANT = "eval"


@search_app.command("eval")
def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="A BEIR folder or a SMART collection folder.", exists=True)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON here.")] = None,
) -> None:
    """Load DATASET into a scratch tenant, run every query in each mode, print nDCG@10,
    recall@100 and MRR@10 per mode."""
    collection = load_collection(dataset)
    with tempfile.TemporaryDirectory(prefix="modelport-eval-") as folder:
        result = asyncio.run(_run(Path(folder), collection))
    document = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if out is not None:
        out.write_text(document + "\n")
    if as_json:
        typer.echo(document)
        return
    table = Table(
        title=f"{result['collection']}: {result['documents']} documents, "
        f"{result['queries']} judged queries"
    )
    for column in ("mode", "nDCG@10", "recall@100", "MRR@10", "queries/s"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, m in result["modes"].items():
        table.add_row(
            mode,
            f"{m['ndcg@10']:.4f}",
            f"{m['recall@100']:.4f}",
            f"{m['mrr@10']:.4f}",
            f"{m['queries_s']:.1f}",
        )
    Console().print(table)


async def _run(folder: Path, collection: Any) -> dict[str, Any]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite+aiosqlite:///{folder / 'eval.db'}",  # type: ignore[arg-type]
        artifacts_uri=str(folder / "artifacts"),
        cache_dir=folder / "cache",
        search_snapshot_interval_s=0,
        log_level="WARNING",
    )
    services = await build_services(settings, server=True)
    try:
        await services.tenancy.ensure_tenant(TENANT)
        model = build_minilm(folder / "build" / "minilm")
        await services.registry.push(TENANT, "minilm", model, minilm_config(), required=True)
        await services.repository.load(TENANT, "minilm")
        services.start_pipeline()
        services.start_search()

        def progress(stage: str, done: int, total: int) -> None:
            console.print(f"{stage}: {done}/{total}", highlight=False)

        return await evaluate(services, collection, TENANT, progress)
    finally:
        await services.close()
