"""``modelport demo``: build the demo models, register them once, and serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from modelport.cli.models import run_with_services
from modelport.cli.serve import run_server
from modelport.container import Services
from modelport.demo.models import build_minilm, build_ranker, minilm_config, ranker_config
from modelport.settings import Settings

console = Console()


async def _register(services: Services, build_dir: Path) -> list[str]:
    registered = {d.model.name for d in await services.registry.list_models() if d.versions}
    done = []
    if "ranker" not in registered:
        path = build_ranker(build_dir / "ranker.onnx")
        await services.registry.push("ranker", path, ranker_config(), required=True)
        done.append("ranker")
    if "minilm" not in registered:
        folder = build_minilm(build_dir / "minilm")
        await services.registry.push("minilm", folder, minilm_config(), required=True)
        done.append("minilm")
    return done


def demo(
    build_dir: Annotated[Path, typer.Option(help="Where the demo models are built.")] = Path(
        "var/demo-models"
    ),
    serve: Annotated[bool, typer.Option(help="Start the server after registering.")] = True,
) -> None:
    """Build and register the demo models (once), then serve them."""
    settings = Settings()
    pushed = run_with_services(settings, lambda s: _register(s, build_dir))
    for name in pushed:
        console.print(f"[green]registered demo model[/green] {name}")
    base = f"http://{settings.host}:{settings.port}"
    console.print(f"\n[bold]modelport[/bold] serving on {base}")
    console.print(f"  health   {base}/v2/health/ready")
    console.print(f"  metrics  {base}/metrics")
    console.print(f"  API docs {base}/docs\n")
    ranker_body = (
        '{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":['
        + ",".join(["0.1"] * 64)
        + "]}]}"
    )
    console.print("[bold]ranker[/bold]:", soft_wrap=True)
    console.print(
        f"curl -s {base}/v2/models/ranker/infer -H 'Content-Type: application/json' "
        f"-d '{ranker_body}'",
        soft_wrap=True,
        highlight=False,
    )
    console.print("[bold]minilm[/bold]:")
    console.print(
        f"curl -s {base}/v2/models/minilm/infer -H 'Content-Type: application/json' "
        '-d \'{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES",'
        '"data":["a cat sits on the mat","stock markets fell today"]}]}\'\n',
        soft_wrap=True,
        highlight=False,
    )
    if serve:
        run_server(settings)
