"""The ``modelport`` command line (Typer + rich)."""

from __future__ import annotations

import typer

from modelport.cli import (
    catalog,
    demo,
    events,
    features,
    models,
    releases,
    search,
    serve,
    tenants,
    worker,
)

app = typer.Typer(
    name="modelport",
    help="Serve trained models over the Open Inference Protocol v2.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# ``releases`` adds its commands to ``models.app`` when imported.
_ = releases
app.add_typer(models.app, name="models")
app.add_typer(tenants.tenants_app, name="tenants")
app.add_typer(tenants.keys_app, name="keys")
app.add_typer(features.features_app, name="features")
app.add_typer(catalog.catalog_app, name="catalog")
app.add_typer(events.events_app, name="events")
app.add_typer(search.search_app, name="search")
app.command("serve")(serve.serve)
app.command("demo")(demo.demo)
app.command("migrate")(serve.migrate_command)
app.command("worker")(worker.worker)


def main() -> None:
    app()


__all__ = ["app", "main"]
