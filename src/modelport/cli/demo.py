"""``modelport demo``: build the demo models, register them once, and serve.

The demo runs with authentication on, like production: it creates the ``demo`` tenant that owns
the demo models, a platform admin key (``var/admin.key``) unless one is configured, and a demo
key (``var/demo.key``, scopes infer, read and write). Both files are mode 0600 and are reused on
the next start while the key still works. It also writes ``var/cli.json``, so the CLI acts in the
demo tenant and talks to this server without being told (``modelport.cli.config``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from modelport.cli.config import CliConfig, save_config
from modelport.cli.models import run_with_services
from modelport.cli.serve import run_server
from modelport.demo import catalog as demo_catalog
from modelport.demo.events import BATCH as EVENTS_BATCH
from modelport.demo.events import events as demo_events
from modelport.demo.models import build_minilm, build_ranker, minilm_config, ranker_config
from modelport.errors import Unauthenticated
from modelport.settings import Settings
from modelport.wiring import Services

console = Console()
TENANT = "demo"


async def _register(services: Services, build_dir: Path, key_file: Path) -> tuple[list[str], str]:
    await services.tenancy.ensure_tenant(TENANT)
    registered = {d.model.name for d in await services.registry.list_models(TENANT) if d.versions}
    done = []
    if "ranker" not in registered:
        path = build_ranker(build_dir / "ranker.onnx")
        await services.registry.push(TENANT, "ranker", path, ranker_config(), required=True)
        done.append("ranker")
    if "minilm" not in registered:
        folder = build_minilm(build_dir / "minilm")
        await services.registry.push(TENANT, "minilm", folder, minilm_config(), required=True)
        done.append("minilm")
    if await services.catalog.is_empty(TENANT):
        lines = b"\n".join(orjson.dumps(p) for p in demo_catalog.products())
        report = await services.catalog.import_ndjson(TENANT, lines)
        done.append(f"catalog ({report.counts['created']} products)")
    await _load_events(services)
    return done, await _demo_key(services, key_file)


async def _load_events(services: Services) -> None:
    """Demo shoppers' events over the demo catalog (a no-op the second time: their ids are
    fixed, so they come back as duplicates); the feature consumer turns them into
    ``user_recent``, ``item_popularity`` and ``item_cooccurrence`` once the server runs."""
    batch: list[dict[str, object]] = []
    accepted = 0
    for event in demo_events([p["id"] for p in demo_catalog.products()]):
        batch.append(event)
        if len(batch) == EVENTS_BATCH:
            accepted += len((await services.events.ingest(TENANT, {"events": batch})).accepted)
            batch = []
    if batch:
        accepted += len((await services.events.ingest(TENANT, {"events": batch})).accepted)
    if accepted:
        console.print(f"[green]loaded {accepted} demo events[/green] (tenant {TENANT})")


def _read_key(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


async def _demo_key(services: Services, key_file: Path) -> str:
    key = await asyncio.to_thread(_read_key, key_file)
    if key:
        try:
            caller = await services.authenticator.authenticate(f"Bearer {key}")
        except Unauthenticated:
            pass
        else:
            if caller.tenant == TENANT:
                return key
    issued = await services.tenancy.create_key(
        TENANT, ["infer", "read", "write"], name="demo (make run)"
    )
    await asyncio.to_thread(_write_secret, key_file, issued.secret)
    return issued.secret


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    path.chmod(0o600)


def demo(
    build_dir: Annotated[Path, typer.Option(help="Where the demo models are built.")] = Path(
        "var/demo-models"
    ),
    key_file: Annotated[Path, typer.Option(help="Where the demo key is kept.")] = Path(
        "var/demo.key"
    ),
    serve: Annotated[bool, typer.Option(help="Start the server after registering.")] = True,
) -> None:
    """Build and register the demo models (once), then serve them."""
    settings = Settings()
    if settings.admin_key is None and settings.admin_key_file is None:
        admin_file = Path("var/admin.key")
        if not admin_file.exists():
            _write_secret(admin_file, "mpadmin_" + secrets.token_urlsafe(32))
        settings = settings.model_copy(update={"admin_key_file": admin_file})
    pushed, key = run_with_services(settings, lambda s: _register(s, build_dir, key_file))
    for name in pushed:
        console.print(f"[green]registered demo[/green] {name} (tenant {TENANT})")
    base = f"http://{settings.host}:{settings.port}"
    # The CLI's defaults: commands act in the demo tenant without --tenant, and reach this
    # server for what only it holds (see modelport.cli.config).
    config_file = save_config(CliConfig(TENANT, base, key_file))
    console.print(f"\n[bold]modelport[/bold] serving on {base}")
    console.print(f"  health   {base}/v2/health/ready")
    console.print(f"  API docs {base}/docs")
    console.print(f"  demo key {key_file} (tenant {TENANT}): {key}")
    if settings.admin_key_file is not None:
        console.print(f"  admin key {settings.admin_key_file} (tenants, keys, /metrics)")
    console.print(f"  CLI      {config_file}: tenant {TENANT} and this server by default\n")
    auth = f'-H "Authorization: Bearer $(cat {key_file})"'
    ranker_body = (
        '{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":['
        + ",".join(["0.1"] * 64)
        + "]}]}"
    )
    console.print("[bold]ranker[/bold]:", soft_wrap=True)
    console.print(
        f"curl -s {base}/v2/models/ranker/infer {auth} -H 'Content-Type: application/json' "
        f"-d '{ranker_body}'",
        soft_wrap=True,
        highlight=False,
    )
    console.print("[bold]minilm[/bold]:")
    console.print(
        f"curl -s {base}/v2/models/minilm/infer {auth} -H 'Content-Type: application/json' "
        '-d \'{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES",'
        '"data":["a cat sits on the mat","stock markets fell today"]}]}\'\n',
        soft_wrap=True,
        highlight=False,
    )
    console.print("[bold]search[/bold] (hybrid, filtered, with facets):")
    console.print(
        f"curl -s {base}/v1/search {auth} -H 'Content-Type: application/json' "
        '-d \'{"query":"comfy grey couch for a small flat","filters":{"category":["Home",'
        '"Furniture"],"availability":["in_stock"]},"facets":["brand","attributes.color"],'
        '"k":5}\'\n',
        soft_wrap=True,
        highlight=False,
    )
    if serve:
        run_server(settings)
