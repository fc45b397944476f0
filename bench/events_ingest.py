"""Event intake: ``POST /v1/events`` in batches of 100 at -c16, against the store's raw limit.

    .venv/bin/python bench/events_ingest.py            # full run (docs/benchmarks/events.md)
    .venv/bin/python bench/events_ingest.py --quick    # smoke run

What it does, in one run, on the same machine:

1. writes ``--bodies`` request bodies of ``--batch`` events each, every event id unique, the
   events spread over ``--users`` users and ``--items`` items (views, carts, purchases); by
   default enough for 60,000 events/s over ``--seconds``, since wrk cycles through the bodies
   and a body sent twice stores nothing new (a point that ran through them all is flagged
   ``wrapped`` in the report: its figure is a floor);
2. **raw limit**: redis-py (asyncio, hiredis) appends the same events to a Redis stream with
   ``XADD``, one pipeline of ``--batch`` commands per batch, ``--connections`` pipelines in
   flight, for ``--seconds``: what the stream itself takes from one Python process;
3. **modelport on Redis**: ``python -m modelport serve`` with ``MODELPORT_REDIS_URL`` (the
   production layout: workers run elsewhere, so the server's work is intake: check, store the
   raw events and their outbox rows in one transaction, and relay the outbox to the stream),
   loaded by wrk with ``--connections`` connections for ``--seconds``; its stream keys have a
   prefix of their own, deleted afterwards, and the report says how many events had reached
   the stream when wrk stopped;
4. **the embedded default**: the same without Redis (SQLite, the stream in SQL, the feature
   consumer in the server process);
5. events/s for each point is what the server *accepted* (rows in its ``events`` table after
   the run, over wrk's duration), not requests x batch; repeats ``--runs`` times, interleaved,
   and reports medians; writes ``docs/benchmarks/events.md`` and ``events.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import platform
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import harness
import orjson
from harness import Processes
from harness.cli import parse, parser
from harness.servers import start_modelport
from harness.wrk import run_wrk

TARGET = 0.5


def bodies(args: argparse.Namespace, run: str) -> list[bytes]:
    now = time.time()
    kinds = ["view"] * 8 + ["add_to_cart", "purchase"]
    out = []
    for b in range(args.bodies):
        events = []
        for e in range(args.batch):
            n = b * args.batch + e
            events.append(
                {
                    "event_id": f"{run}-{n}",
                    "type": kinds[n % len(kinds)],
                    "user_id": f"u{n * 7919 % args.users}",
                    "session_id": f"s{n * 7919 % args.users}-{n // 5000}",
                    "item_ids": [f"p{n * 104_729 % args.items}"],
                    "timestamp": round(now - 60 + n / 10_000, 3),
                    "properties": {"page": "pdp"},
                }
            )
        out.append(orjson.dumps({"events": events}))
    return out


async def raw_xadd(args: argparse.Namespace, batches: list[bytes]) -> dict[str, Any]:
    """XADD of the same events (each as one JSON field), pipelined per batch."""
    from redis.asyncio import Redis

    client = Redis.from_url(args.redis_url)
    stream = f"mp-bench-{secrets.token_hex(4)}"
    encoded = [[orjson.dumps(event) for event in orjson.loads(body)["events"]] for body in batches]
    sent = 0
    deadline = time.perf_counter() + args.seconds

    async def one(worker: int) -> None:
        nonlocal sent
        i = worker
        while time.perf_counter() < deadline:
            pipe = client.pipeline(transaction=False)
            for event in encoded[i % len(encoded)]:
                pipe.xadd(stream, {"e": event})
            await pipe.execute()
            sent += len(encoded[i % len(encoded)])
            i += args.connections

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(w) for w in range(args.connections)))
        seconds = time.perf_counter() - started
        stored = int(await client.xlen(stream))
    finally:
        await client.delete(stream)
        await client.aclose()
    return {"events": stored, "seconds": round(seconds, 3), "events_s": round(stored / seconds)}


def accepted(workdir: Path) -> int:
    with sqlite3.connect(workdir / "modelport.db") as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


async def stream_length(args: argparse.Namespace, prefix: str, *, delete: bool = False) -> int:
    """Messages in the server's events stream (``{prefix}:events``); ``delete``: then delete
    every key under ``prefix``."""
    from redis.asyncio import Redis

    client = Redis.from_url(args.redis_url)
    try:
        length = int(await client.xlen(f"{prefix}:events"))
        if delete:
            keys = [key async for key in client.scan_iter(f"{prefix}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        return length
    finally:
        await client.aclose()


def intake(
    args: argparse.Namespace,
    procs: Processes,
    workdir: Path,
    body_file: Path,
    bodies: int,
    **settings: str,
) -> dict[str, Any]:
    async def setup(services: Any) -> str:
        return await harness.issue_key(services, ["write", "read"])

    key = harness.in_registry(workdir, setup)
    prefix = f"mp-bench-{secrets.token_hex(4)}:s"
    if "redis_url" in settings:
        settings = {**settings, "stream_key_prefix": prefix}
    server = start_modelport(
        procs, workdir, tenant_key=key, ready_path="/v2/health/live", **settings
    )
    published: int | None = None
    try:
        before = accepted(workdir)
        result = run_wrk(
            server.url("/v1/events"), body_file, args.connections, args.seconds, key=key
        )
        stored = accepted(workdir) - before
        if "redis_url" in settings:
            published = asyncio.run(stream_length(args, prefix))
    finally:
        procs.stop_all()
        if "redis_url" in settings:
            asyncio.run(stream_length(args, prefix, delete=True))
    result["events"] = stored
    result["events_s"] = round(stored / result["seconds"])
    # wrk cycles through the bodies: past the last one, every event is a duplicate.
    result["wrapped"] = result["requests"] > bodies
    if published is not None:
        result["published"] = published
    return result


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    points: list[dict[str, Any]] = []
    for run in range(args.runs):
        tag = f"r{run}-{secrets.token_hex(3)}"
        batches = bodies(args, tag)
        body_file = workdir / f"bodies-{tag}.ndjson"
        body_file.write_bytes(b"\n".join(batches) + b"\n")
        raw = asyncio.run(raw_xadd(args, batches))
        points.append({"run": run, "point": "raw XADD (redis-py pipelined)", **raw})
        print(f"run {run}: raw XADD {raw['events_s']} events/s", flush=True)
        for name, settings in (
            ("modelport on Redis", {"redis_url": args.redis_url}),
            ("modelport embedded (SQLite)", {}),
        ):
            folder = workdir / f"{tag}-{len(points)}"
            folder.mkdir()
            result = intake(args, procs, folder, body_file, len(batches), **settings)
            points.append({"run": run, "point": name, **result})
            wrapped = " (ran through every body: a floor)" if result["wrapped"] else ""
            print(f"run {run}: {name} {result['events_s']} events/s{wrapped}", flush=True)
    summary = {
        point: harness.median([p["events_s"] for p in points if p["point"] == point])
        for point in dict.fromkeys(p["point"] for p in points)
    }
    raw_limit = summary["raw XADD (redis-py pipelined)"]
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": harness.command_line(),
        "machine": {
            "usable_cpus": len(os.sched_getaffinity(0)),
            "cpu_model": harness.cpu_model(),
            "python": platform.python_version(),
            "redis_py": harness.package_version("redis"),
            "load_average_at_start": load_at_start,
        },
        "settings": {
            k: getattr(args, k)
            for k in ("batch", "connections", "seconds", "bodies", "users", "items", "runs")
        },
        "summary": summary,
        "ratio_redis": round(summary["modelport on Redis"] / raw_limit, 3),
        "target": TARGET,
        "raw": points,
    }


def render(result: dict[str, Any]) -> str:
    s, settings = result["summary"], result["settings"]
    lines = [
        "# Event intake",
        "",
        f"`{result['command']}`, started {result['started']} on "
        f"{result['machine']['usable_cpus']} CPUs ({result['machine']['cpu_model']}), load "
        f"average {result['machine']['load_average_at_start']} at the start (other work on the "
        "machine takes CPU from every point alike).",
        "",
        f"`POST /v1/events` with batches of {settings['batch']} events at "
        f"-c{settings['connections']} for {settings['seconds']} s, against redis-py pipelined "
        f"`XADD` of the same events in the same run; medians of {settings['runs']} runs. "
        "Events/s counts the events the server stored (its `events` table), every id unique.",
        "",
        "| point | events/s |",
        "|---|---:|",
        *(f"| {point} | {value:,.0f} |" for point, value in s.items()),
        "",
        f"modelport on Redis reaches **{result['ratio_redis']:.0%}** of the raw `XADD` rate "
        f"(target: {result['target']:.0%}).",
        "",
        "Published: the events in the server's stream when wrk stopped (the rest were "
        "still in the outbox, on their way).",
        "",
        "| run | point | events/s | published | p50 ms | p99 ms | non-2xx |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in result["raw"]:
        published = f"{p['published']:,}" if "published" in p else ""
        wrapped = " (wrapped: a floor)" if p.get("wrapped") else ""
        lines.append(
            f"| {p['run']} | {p['point']} | {p['events_s']:,}{wrapped} | {published} "
            f"| {harness.fmt(p.get('p50_ms', ''))} | {harness.fmt(p.get('p99_ms', ''))} "
            f"| {p.get('non_2xx', '')} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__, runs=2)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--batch", type=int, default=100, help="events per request (100)")
    p.add_argument("--connections", type=int, default=16, help="connections / pipelines (16)")
    p.add_argument("--seconds", type=float, default=15.0, help="per point (15)")
    p.add_argument(
        "--bodies",
        type=int,
        default=None,
        help="distinct bodies (default: enough for 60,000 events/s over --seconds)",
    )
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=2000)
    quick = {"seconds": 3.0, "runs": 1}
    args = parse(p, argv, quick)
    if args.bodies is None:
        args.bodies = math.ceil(60_000 * args.seconds / args.batch)
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "events")


if __name__ == "__main__":
    raise SystemExit(main())
