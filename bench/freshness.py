"""Freshness: from an event accepted by ``POST /v1/events`` to its feature visible in
``POST /v1/features/get``, under a steady 1,000 events/s.

    .venv/bin/python bench/freshness.py            # full run (docs/benchmarks/freshness.md)
    .venv/bin/python bench/freshness.py --quick    # smoke run

What it does, for each layout (one after the other, each on a fresh registry):

1. **Redis**: ``python -m modelport serve`` with ``MODELPORT_REDIS_URL`` (intake and relay
   only) and one ``python -m modelport worker`` beside it (the feature consumer);
2. **embedded**: ``python -m modelport serve`` alone (SQLite; the server runs the consumer);
3. sends ``--rate`` events/s in batches of ``--batch`` (views over ``--users`` users and
   ``--items`` items) for ``--seconds``; every batch carries one probe: a view of a new item by
   a probe user of its own. A probe's clock starts when its batch's answer arrives (the event
   is accepted) and stops when ``user_recent:view`` of its user first names its item, asked
   for every ``--poll-ms`` in one ``/v1/features/get`` for all probes still waiting;
4. reports p50, p99 and the worst probe per layout against the target (p99 <= 1 s), and the
   events/s actually sent.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import harness
import httpx
import orjson
from harness import Processes, Server
from harness.cli import parse, parser
from harness.redis_keys import forget_prefix
from harness.servers import modelport_env, start_modelport

TARGET_S = 1.0


async def load(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.tenant_key}", "Content-Type": "application/json"}
    waiting: dict[str, tuple[str, float]] = {}  # probe user -> (item, accepted at)
    seen: list[float] = []
    sent = 0
    async with httpx.AsyncClient(base_url=server.url(""), headers=headers, timeout=30) as http:
        # The feature views are defined by the tenant's first events: send one and wait.
        await _post(http, [_event("warmup", "warm-user", "warm-item", time.time())])
        await _until_visible(http, {"warm-user": ("warm-item", time.monotonic())}, [], args)

        interval = args.batch / args.rate
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set() or waiting:
                await _until_visible(http, waiting, seen, args, once=True)
                await asyncio.sleep(args.poll_ms / 1000)

        poller = asyncio.create_task(poll())
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < args.seconds:
            due = started + n * interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.time()
            events = [
                _event(
                    f"e{n}-{i}", f"u{(n * args.batch + i) % args.users}", f"i{i % args.items}", now
                )
                for i in range(args.batch - 1)
            ]
            probe_user, probe_item = f"probe-{n}", f"probe-item-{n}"
            events.append(_event(f"p{n}", probe_user, probe_item, now))
            await _post(http, events)
            waiting[probe_user] = (probe_item, time.monotonic())
            sent += len(events)
            n += 1
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(poller, 60)
    summary = harness.latency_summary(seen)
    return {
        **summary,
        "max_ms": round(max(seen) * 1000, 3),
        "events_sent": sent,
        "events_s": round(sent / elapsed),
    }


def _event(event_id: str, user: str, item: str, at: float) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "view",
        "user_id": user,
        "session_id": f"s-{user}",
        "item_ids": [item],
        "timestamp": at,
    }


async def _post(http: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    answer = await http.post("/v1/events", content=orjson.dumps({"events": events}))
    if answer.status_code != 200 or len(answer.json()["accepted"]) != len(events):
        raise RuntimeError(f"POST /v1/events answered {answer.status_code}: {answer.text[:300]}")


async def _until_visible(
    http: httpx.AsyncClient,
    waiting: dict[str, tuple[str, float]],
    seen: list[float],
    args: argparse.Namespace,
    *,
    once: bool = False,
) -> None:
    """Ask for every waiting probe user's recent views; record and forget those visible."""
    deadline = time.monotonic() + 60
    while waiting:
        users = list(waiting)[:200]
        answer = await http.post(
            "/v1/features/get",
            content=orjson.dumps({"features": ["user_recent:view"], "entities": {"user": users}}),
        )
        now = time.monotonic()
        if answer.status_code == 200:
            for result in answer.json()["results"]:
                item, accepted = waiting[result["key"]]
                value = result["features"]["user_recent:view"]["value"]
                if value is not None and item in orjson.loads(value):
                    seen.append(now - accepted)
                    del waiting[result["key"]]
        elif answer.status_code != 404:  # 404: the views are not defined yet
            raise RuntimeError(f"features/get answered {answer.status_code}: {answer.text[:300]}")
        if once:
            return
        if now > deadline:
            raise RuntimeError(f"{len(waiting)} probe(s) never became visible")
        await asyncio.sleep(args.poll_ms / 1000)


def layout(
    args: argparse.Namespace, procs: Processes, workdir: Path, name: str, **settings: str
) -> dict[str, Any]:
    async def setup(services: Any) -> str:
        return await harness.issue_key(services, ["write", "read"])

    key = harness.in_registry(workdir, setup)
    server = start_modelport(
        procs, workdir, tenant_key=key, ready_path="/v2/health/live", **settings
    )
    if "redis_url" in settings:
        env = modelport_env(workdir, 0, **settings)
        procs.start(
            "worker",
            [sys.executable, "-m", "modelport", "worker"],
            0,
            env,
            workdir,
            workdir / "worker.log",
        )
    try:
        result = asyncio.run(load(args, server))
    except RuntimeError as exc:
        raise RuntimeError(f"{name}: {exc}\n{server.log_tail()}") from None
    finally:
        procs.stop_all()
    print(
        f"{name}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, worst "
        f"{result['max_ms']} ms over {result['n']} probes at {result['events_s']} events/s",
        flush=True,
    )
    return {"layout": name, **result}


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    prefix = f"mp:bench:fresh:{os.getpid()}"
    points = []
    for name, settings in (
        (
            "Redis: modelport serve + modelport worker",
            {
                "redis_url": args.redis_url,
                "stream_key_prefix": f"{prefix}:s",
                "feature_key_prefix": f"{prefix}:f",
            },
        ),
        ("embedded: modelport serve alone (SQLite)", {}),
    ):
        folder = workdir / f"point-{len(points)}"
        folder.mkdir()
        try:
            points.append(layout(args, procs, folder, name, **settings))
        finally:
            if "redis_url" in settings:
                asyncio.run(forget_prefix(args.redis_url, prefix))
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": harness.command_line(),
        "machine": {
            "usable_cpus": len(os.sched_getaffinity(0)),
            "cpu_model": harness.cpu_model(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
        },
        "settings": {
            k: getattr(args, k) for k in ("rate", "batch", "seconds", "users", "items", "poll_ms")
        },
        "target_p99_ms": TARGET_S * 1000,
        "points": points,
    }


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "# Freshness: event accepted -> feature visible",
        "",
        f"`{result['command']}`, started {result['started']} on "
        f"{result['machine']['usable_cpus']} CPUs ({result['machine']['cpu_model']}), load "
        f"average {result['machine']['load_average_at_start']} at the start; the servers, the "
        "worker, Redis and this load generator share the machine.",
        "",
        f"{s['rate']:.0f} events/s in batches of {s['batch']} for {s['seconds']} s; one probe per "
        f"batch, timed from its batch's answer to the first `/v1/features/get` that shows it "
        f"(asked every {s['poll_ms']} ms, so the figures are at most that much late).",
        "",
        "| layout | events/s sent | probes | p50 ms | p99 ms | worst ms | p99 <= 1 s |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for p in result["points"]:
        ok = "yes" if p["p99_ms"] <= result["target_p99_ms"] else "**no**"
        lines.append(
            f"| {p['layout']} | {p['events_s']:,} | {p['n']} | {p['p50_ms']:.0f} | "
            f"{p['p99_ms']:.0f} | {p['max_ms']:.0f} | {ok} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__, runs=1)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--rate", type=float, default=1000.0, help="events per second (1000)")
    p.add_argument("--batch", type=int, default=50, help="events per request (50)")
    p.add_argument("--seconds", type=float, default=30.0, help="per layout (30)")
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--poll-ms", type=float, default=20.0, help="probe polling period (20)")
    return parse(p, argv, {"seconds": 5.0})


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "freshness", needs_wrk=False)


if __name__ == "__main__":
    raise SystemExit(main())
