"""Catalog import: a 100k-product NDJSON file into a fresh catalog, in products/s.

    .venv/bin/python bench/catalog_import.py           # full run (docs/benchmarks/catalog.md)
    .venv/bin/python bench/catalog_import.py --quick   # smoke run

What it does, on the embedded default (SQLite; the relay and the catalog consumer run in the
server process, as ``modelport serve`` ships):

1. writes ``--products`` products of the demo catalog generator (``modelport.demo.catalog``,
   realistic titles, descriptions, attributes, 2 image URLs; about 560 bytes a line) to one
   NDJSON file;
2. **HTTP, chunked**: ``python -m modelport serve`` on a fresh registry; the file goes to
   ``POST /v1/catalog/import`` in requests of ``--chunk`` lines, one after the other, each with
   an ``Idempotency-Key`` (what ``modelport catalog import --server`` sends);
3. **HTTP, again**: the same file once more, to the same catalog: every line answers
   ``unchanged`` (no write, no outbox message);
4. **in-process**: the catalog service on a fresh registry without a server (what
   ``modelport catalog import FILE`` does by default), the same chunks;
5. checks every answer (all lines created, then unchanged), repeats ``--runs`` times and
   reports medians; writes ``docs/benchmarks/catalog.md`` and ``catalog.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import os
import platform
import sqlite3
import time
from pathlib import Path
from typing import Any

import harness
import orjson
from harness import Processes
from harness.cli import parse, parser
from harness.servers import start_modelport


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


def in_process(workdir: Path, parts: list[bytes]) -> float:
    async def main() -> float:
        async with harness.open_services(workdir) as services:
            started = time.perf_counter()
            for part in parts:
                report = await services.catalog.import_ndjson(harness.BENCH_TENANT, part)
                expect(report.to_json(), "created", part.count(b"\n") + 1)
            return time.perf_counter() - started

    return asyncio.run(main())


def stored(workdir: Path) -> int:
    with sqlite3.connect(workdir / "modelport.db") as db:
        return int(db.execute("SELECT count(*) FROM catalog_products").fetchone()[0])


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    source = workdir / "catalog.ndjson"
    size = write_file(source, args.products)
    parts = chunks(source, args.chunk)
    points: list[dict[str, Any]] = []
    for run in range(args.runs):
        busy = harness.wait_for_quiet(args.quiet_wait)
        folder = workdir / f"http-{run}"
        folder.mkdir()

        async def setup(services: Any) -> str:
            return await harness.issue_key(services, ["write", "read"])

        key = harness.in_registry(folder, setup)
        server = start_modelport(procs, folder, tenant_key=key, ready_path="/v2/health/live")
        try:
            first = over_http(server, parts, "created", f"{run}-a")
            again = over_http(server, parts, "unchanged", f"{run}-b")
        finally:
            procs.stop_all()
        if stored(folder) != args.products:
            raise RuntimeError(f"{stored(folder)} products stored, not {args.products}")
        local = workdir / f"local-{run}"
        local.mkdir()
        harness.in_registry(local, lambda services: asyncio.sleep(0))
        direct = in_process(local, parts)
        for point, seconds in (
            (f"HTTP, {args.chunk:,}-line requests (new products)", first),
            (f"HTTP, {args.chunk:,}-line requests (unchanged)", again),
            ("catalog service in-process (new products)", direct),
        ):
            rate = round(args.products / seconds)
            points.append(
                {
                    "run": run,
                    "point": point,
                    "seconds": round(seconds, 2),
                    "products_s": rate,
                    "busy_cores_before": round(busy, 2),
                }
            )
            print(f"run {run}: {point}: {seconds:.1f} s, {rate:,} products/s", flush=True)
    summary = {
        point: harness.median([p["products_s"] for p in points if p["point"] == point])
        for point in dict.fromkeys(p["point"] for p in points)
    }
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
        },
        "summary": summary,
        "raw": points,
    }


def render(result: dict[str, Any]) -> str:
    s, settings = result["summary"], result["settings"]
    lines = [
        "# Catalog import",
        "",
        f"`{result['command']}`, started {result['started']} on "
        f"{result['machine']['usable_cpus']} CPUs ({result['machine']['cpu_model']}), "
        f"SQLite {result['machine']['sqlite']}.",
        "",
        f"{settings['products']:,} products of the demo catalog generator "
        f"({settings['file_bytes'] / 1e6:.1f} MB of NDJSON) into a fresh catalog on the "
        "embedded default (SQLite), each line checked, written with its outbox message and "
        f"answered; medians of {settings['runs']} runs. The server runs as `modelport serve` "
        "ships (uvloop, its garbage-collector settings); the in-process point runs the catalog "
        "service in the benchmark's own process under plain asyncio. *busy* is the cores other "
        "processes kept busy just before the run (the machine has 2).",
        "",
        "| point | products/s |",
        "|---|---:|",
        *(f"| {point} | {value:,.0f} |" for point, value in s.items()),
        "",
        "| run | point | seconds | products/s | busy |",
        "|---:|---|---:|---:|---:|",
        *(
            f"| {p['run']} | {p['point']} | {p['seconds']} | {p['products_s']:,} "
            f"| {harness.fmt(p['busy_cores_before'])} |"
            for p in result["raw"]
        ),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__, runs=2, quiet_wait=10)
    p.add_argument("--products", type=int, default=100_000, help="products in the file")
    p.add_argument("--chunk", type=int, default=5000, help="lines per import request (5000)")
    return parse(p, argv, {"products": 5000, "runs": 1})


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "catalog", needs_wrk=False)


if __name__ == "__main__":
    raise SystemExit(main())
