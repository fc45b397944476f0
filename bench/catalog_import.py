"""Catalog import: a 100k-product NDJSON file into a fresh catalog, in products/s.

    .venv/bin/python bench/catalog_import.py           # full run (docs/benchmarks/catalog.md)
    .venv/bin/python bench/catalog_import.py --quick   # smoke run

What it does, on each database (SQLite, the embedded default, and the PostgreSQL server at
``--postgres-url``, where each run creates a database of its own and drops it afterwards):

1. writes ``--products`` products of the demo catalog generator (``modelport.demo.catalog``,
   realistic titles, descriptions, attributes, 2 image URLs; about 560 bytes a line) to one
   NDJSON file;
2. **HTTP, chunked**: ``python -m modelport serve`` on a fresh registry; the file goes to
   ``POST /v1/catalog/import`` in requests of ``--chunk`` lines, one after the other, each with
   an ``Idempotency-Key`` (what ``modelport catalog import --server`` sends); the server relays
   the outbox to its stream meanwhile, as it always does;
3. **HTTP, again**: the same file once more, to the same catalog: every line answers
   ``unchanged`` (no write, no outbox message);
4. **in-process**: the catalog service on a fresh registry without a server (what
   ``modelport catalog import FILE`` does by default), the same chunks;
5. checks every answer (all lines created, then unchanged) and the products stored, repeats
   ``--runs`` times and reports medians; writes ``docs/benchmarks/catalog.md`` and
   ``catalog.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import os
import platform
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import harness
import orjson
from harness import Processes
from harness.cli import parse, parser
from harness.servers import start_modelport

T = TypeVar("T")


def write_file(path: Path, count: int) -> int:
    from modelport.demo.catalog import products

    path.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in products(count, seed=11)))
    return path.stat().st_size


def chunks(path: Path, size: int) -> list[bytes]:
    lines = path.read_bytes().splitlines()
    return [b"\n".join(lines[i : i + size]) for i in range(0, len(lines), size)]


def expect(answer: dict[str, Any], status: str, lines: int) -> None:
    if answer[status] != lines or answer["failed"]:
        raise RuntimeError(f"expected {lines} lines {status}, got {answer}")


def over_http(server: harness.Server, parts: list[bytes], status: str, tag: str) -> float:
    """Seconds to import every part, one request after the other on one connection."""
    conn = http.client.HTTPConnection(harness.HOST, server.port, timeout=600)
    started = time.perf_counter()
    for n, part in enumerate(parts):
        conn.request(
            "POST",
            "/v1/catalog/import",
            body=part,
            headers={
                "Authorization": f"Bearer {server.tenant_key}",
                "Content-Type": "application/x-ndjson",
                "Idempotency-Key": f"bench-{tag}-{n}",
            },
        )
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"import answered {response.status}: {body[:300]!r}")
        expect(orjson.loads(body), status, part.count(b"\n") + 1)
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


@contextlib.contextmanager
def database(backend: str, folder: Path, postgres_url: str) -> Iterator[str]:
    """A fresh database: SQLite in ``folder``, or a database of its own on PostgreSQL."""
    if backend == "SQLite":
        yield f"sqlite+aiosqlite:///{folder / 'modelport.db'}"
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"modelport_bench_{secrets.token_hex(4)}"

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(postgres_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def settings_for(folder: Path, url: str) -> Any:
    from modelport.settings import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=url,  # type: ignore[arg-type]
        artifacts_uri=str(folder / "artifacts"),
        cache_dir=folder / "cache",
    )


def with_services(folder: Path, url: str, action: Callable[[Any], Awaitable[T]]) -> T:
    from modelport.wiring import build_services

    async def main() -> T:
        services = await build_services(settings_for(folder, url))
        try:
            await services.tenancy.ensure_tenant(harness.BENCH_TENANT)
            return await action(services)
        finally:
            await services.close()

    return asyncio.run(main())


def in_process(folder: Path, url: str, parts: list[bytes]) -> float:
    async def run(services: Any) -> float:
        started = time.perf_counter()
        for part in parts:
            report = await services.catalog.import_ndjson(harness.BENCH_TENANT, part)
            expect(report.to_json(), "created", part.count(b"\n") + 1)
        return time.perf_counter() - started

    return with_services(folder, url, run)


def stored(folder: Path, url: str) -> int:
    async def count(services: Any) -> int:
        page = await services.catalog.list(harness.BENCH_TENANT, Filters(), None, 1000)
        total = len(page.items)
        while page.next_cursor is not None:
            page = await services.catalog.list(
                harness.BENCH_TENANT, Filters(), page.next_cursor, 1000
            )
            total += len(page.items)
        return total

    from modelport.stores.catalog import Filters

    return with_services(folder, url, count)


def one_backend(
    args: argparse.Namespace, procs: Processes, workdir: Path, parts: list[bytes], run: int,
    backend: str, busy: float,
) -> list[dict[str, Any]]:  # fmt: skip
    timings: list[tuple[str, float]] = []
    folder = workdir / f"{backend}-http-{run}"
    folder.mkdir()
    with database(backend, folder, args.postgres_url) as url:

        async def setup(services: Any) -> str:
            return await harness.issue_key(services, ["write", "read"])

        key = with_services(folder, url, setup)
        server = start_modelport(
            procs, folder, tenant_key=key, ready_path="/v2/health/live", database_url=url
        )
        try:
            timings.append(("HTTP (new products)", over_http(server, parts, "created", "a")))
            timings.append(("HTTP (unchanged)", over_http(server, parts, "unchanged", "b")))
        finally:
            procs.stop_all()
        if stored(folder, url) != args.products:
            raise RuntimeError(f"{stored(folder, url)} products stored, not {args.products}")
    local = workdir / f"{backend}-local-{run}"
    local.mkdir()
    with database(backend, local, args.postgres_url) as url:
        timings.append(("service in-process (new products)", in_process(local, url, parts)))
    points = []
    for point, seconds in timings:
        rate = round(args.products / seconds)
        points.append(
            {
                "run": run,
                "backend": backend,
                "point": point,
                "seconds": round(seconds, 2),
                "products_s": rate,
                "busy_cores_before": round(busy, 2),
            }
        )
        print(f"run {run}: {backend} {point}: {seconds:.1f} s, {rate:,} products/s", flush=True)
    return points


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    source = workdir / "catalog.ndjson"
    size = write_file(source, args.products)
    parts = chunks(source, args.chunk)
    backends = ["SQLite"] + ([] if args.postgres_url == "none" else ["PostgreSQL"])
    points: list[dict[str, Any]] = []
    for run in range(args.runs):
        for backend in backends:
            busy = harness.wait_for_quiet(args.quiet_wait)
            points += one_backend(args, procs, workdir, parts, run, backend, busy)
    keys = dict.fromkeys((p["backend"], p["point"]) for p in points)
    summary = [
        {
            "backend": backend,
            "point": point,
            "products_s": harness.median(
                [p["products_s"] for p in points if (p["backend"], p["point"]) == (backend, point)]
            ),
        }
        for backend, point in keys
    ]
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": harness.command_line(),
        "machine": {
            "usable_cpus": len(os.sched_getaffinity(0)),
            "cpu_model": harness.cpu_model(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
        },
        "settings": {
            "products": args.products,
            "chunk": args.chunk,
            "file_bytes": size,
            "runs": args.runs,
            "backends": backends,
        },
        "summary": summary,
        "raw": points,
    }


def render(result: dict[str, Any]) -> str:
    settings = result["settings"]
    lines = [
        "# Catalog import",
        "",
        f"`{result['command']}`, started {result['started']} on "
        f"{result['machine']['usable_cpus']} CPUs ({result['machine']['cpu_model']}), "
        f"SQLite {result['machine']['sqlite']}.",
        "",
        f"{settings['products']:,} products of the demo catalog generator "
        f"({settings['file_bytes'] / 1e6:.1f} MB of NDJSON) into a fresh catalog, each line "
        "checked, written with its outbox message and answered, in requests (or service "
        f"calls) of {settings['chunk']:,} lines; medians of {settings['runs']} runs. The server "
        "runs as `modelport serve` ships (uvloop, its garbage-collector settings) and "
        "meanwhile relays the outbox messages of the import to its stream, as it always does; "
        "the in-process point runs the catalog service in the benchmark's own process under "
        "plain asyncio, with no relay. *busy* is the cores other processes kept busy just "
        "before the run (the machine has 2).",
        "",
        "| database | point | products/s |",
        "|---|---|---:|",
        *(f"| {p['backend']} | {p['point']} | {p['products_s']:,.0f} |" for p in result["summary"]),
        "",
        "| run | database | point | seconds | products/s | busy |",
        "|---:|---|---|---:|---:|---:|",
        *(
            f"| {p['run']} | {p['backend']} | {p['point']} | {p['seconds']} "
            f"| {p['products_s']:,} | {harness.fmt(p['busy_cores_before'])} |"
            for p in result["raw"]
        ),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__, runs=2, quiet_wait=10)
    p.add_argument("--products", type=int, default=100_000, help="products in the file")
    p.add_argument("--chunk", type=int, default=5000, help="lines per import request (5000)")
    p.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server to create a database on for the second backend ('none': skip)",
    )
    return parse(p, argv, {"products": 5000, "runs": 1})


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "catalog", needs_wrk=False)


if __name__ == "__main__":
    raise SystemExit(main())
