"""Online feature reads from Redis: in-process (``read`` and ``read_blocking``) and over HTTP.

    .venv/bin/python bench/features.py                        # full run (make bench-features)
    .venv/bin/python bench/features.py --reads 500 --runs 1   # quick smoke run

What it does, against the Redis at ``--redis-url`` (keys under a fresh prefix, deleted after):

1. defines ``--views`` feature views of ``--features`` float features each, all keyed by
   ``user``, and writes one row per view for each of ``--entities`` users;
2. in-process, through ``RedisOnlineStore``: ``--reads`` reads of every feature of every view for
   all the users (100 x 20 = 2,000 values by default), one at a time, with ``read`` on the event
   loop (also followed by looking at every value it returned), with ``read_blocking`` in a
   worker thread (as the batch runtime calls it) and as the feature join of inference; the
   collector's generations are frozen after setup and the loop is uvloop, as in
   ``modelport serve``;
3. over HTTP: starts ``python -m modelport serve`` with ``MODELPORT_REDIS_URL`` (authentication
   on, as shipped), applies the views and pushes the rows through the API, then sends
   ``--http-requests`` sequential ``POST /v1/features/get`` for the same 2,000 values on one
   keep-alive connection;
4. repeats 2 and 3 ``--runs`` times and reports medians of the per-run p50/p99/mean; writes
   ``docs/benchmarks/features.md`` and ``features.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import http.client
import json
import os
import platform
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import numpy as np
import uvloop
from features_report import TARGET_P99_MS, median_of, render
from harness import BENCH_TENANT, Processes
from harness.cli import parse, parser

TENANT = BENCH_TENANT


def views_and_rows(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(view name, definition) for each view."""
    return [
        (
            f"stats_{v}",
            {
                "entity": "user",
                "ttl_s": 86_400,
                "features": [
                    {"name": f"f{i}", "dtype": "float", "default": 0.0}
                    for i in range(args.features)
                ],
            },
        )
        for v in range(args.views)
    ]


def users(args: argparse.Namespace) -> list[str]:
    return [f"user-{k:05d}" for k in range(args.entities)]


def row_values(args: argparse.Namespace, view: int, user: int) -> dict[str, float]:
    return {f"f{i}": round(view * 1000 + user + i / 10, 3) for i in range(args.features)}


# --------------------------------------------------------------------------- in-process


async def in_process(args: argparse.Namespace, prefix: str) -> list[dict[str, Any]]:
    from modelport.serving.config import FeatureInput, FeaturesConfig
    from modelport.serving.features import FeatureJoin
    from modelport.stores.online import FeatureRow, FeatureSpec, FeatureView, ViewRead
    from modelport.stores.online_redis import RedisOnlineStore

    store = RedisOnlineStore.from_url(args.redis_url, prefix=prefix)
    now = time.time()
    keys = users(args)
    reads = []
    for v, (name, body) in enumerate(views_and_rows(args)):
        specs = tuple(FeatureSpec(f["name"], "float", 0.0) for f in body["features"])
        view = FeatureView(TENANT, name, 1, "user", specs, float(body["ttl_s"]))
        rows = [FeatureRow(u, row_values(args, v, k), now) for k, u in enumerate(keys)]
        await store.write(view, rows)
        reads.append(ViewRead(view, tuple(s.name for s in specs), tuple(keys)))
    # The same values as inference reads them: a feature join filling an FP32 tensor from
    # both views for the 100 entities of a batch (one MGET of the numbers keys into arrays).
    join = FeatureJoin(
        FeaturesConfig(
            entities={"user": "user_id"},
            inputs={
                "input": FeatureInput(
                    features=[f"{r.view.name}:{f}" for r in reads for f in r.features]
                )
            },
        ),
        {r.view.name: r.view for r in reads},
        store,
    )
    arrays = {"user_id": np.array([k.encode() for k in keys], dtype=object)}
    first = await store.read(reads)
    assert all(v.status == "present" for rows in first for row in rows for v in row.values())
    assert first[0][1]["f1"].value == row_values(args, 0, 1)["f1"]

    runs: list[dict[str, Any]] = []
    gc.collect()
    gc.freeze()
    try:
        for run in range(args.runs):
            harness.wait_for_quiet(args.quiet_wait)
            for _ in range(args.warmup):
                await store.read(reads)
            samples = []
            with harness.OtherLoad() as other:
                for _ in range(args.reads):
                    began = time.perf_counter()
                    await store.read(reads)
                    samples.append(time.perf_counter() - began)
            async_point = {
                "run": run,
                "call": "read",
                **harness.latency_summary(samples),
                "other_cores": other.cores,
            }
            # The same read, then every one of its values looked at (a FeatureValue each): what
            # a caller pays that uses all of them.
            every: list[float] = []
            with harness.OtherLoad() as other:
                for _ in range(args.reads):
                    began = time.perf_counter()
                    looked_at = sum(
                        1 for rows in await store.read(reads) for row in rows for _ in row.values()
                    )
                    every.append(time.perf_counter() - began)
            assert looked_at == args.entities * args.views * args.features
            every_point = {
                "run": run,
                "call": "read_every_value",
                **harness.latency_summary(every),
                "other_cores": other.cores,
            }

            blocking: list[float] = []
            thread = threading.Thread(target=blocking_reads, args=(store, reads, args, blocking))
            with harness.OtherLoad() as other:
                thread.start()
                thread.join()
            blocking_point = {
                "run": run,
                "call": "read_blocking",
                **harness.latency_summary(blocking),
                "other_cores": other.cores,
            }
            joined: list[float] = []
            thread = threading.Thread(target=join_reads, args=(join, arrays, args, joined))
            with harness.OtherLoad() as other:
                thread.start()
                thread.join()
            join_point = {
                "run": run,
                "call": "join",
                **harness.latency_summary(joined),
                "other_cores": other.cores,
            }
            points = (async_point, every_point, blocking_point, join_point)
            runs += points
            for point in points:
                print(
                    f"run {run}: in-process {point['call']:<16} p50 {point['p50_ms']:.3f} "
                    f"p99 {point['p99_ms']:.3f} mean {point['mean_ms']:.3f} ms "
                    f"(other load {point['other_cores']:.2f} cores)"
                )
    finally:
        gc.unfreeze()
        await store.close()
    return runs


def join_reads(
    join: Any, arrays: dict[str, Any], args: argparse.Namespace, out: list[float]
) -> None:
    """In a worker thread: a whole batch's features into its tensor, as inference does."""
    for _ in range(args.warmup):
        join.fetch_blocking(arrays)
    for _ in range(args.reads):
        began = time.perf_counter()
        join.fetch_blocking(arrays)
        out.append(time.perf_counter() - began)


def blocking_reads(
    store: Any, reads: list[Any], args: argparse.Namespace, out: list[float]
) -> None:
    """In a worker thread, as the batch runtime calls it."""
    for _ in range(args.warmup):
        store.read_blocking(reads)
    for _ in range(args.reads):
        began = time.perf_counter()
        store.read_blocking(reads)
        out.append(time.perf_counter() - began)


# --------------------------------------------------------------------------- HTTP


def issue_key(workdir: Path) -> str:
    async def create(services: Any) -> str:
        return await harness.issue_key(services, ["read", "write"], name="bench")

    return harness.in_registry(workdir, create)


class Client:
    """One keep-alive HTTP connection with the tenant's key."""

    def __init__(self, port: int, key: str) -> None:
        self.conn = http.client.HTTPConnection(harness.HOST, port, timeout=30)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def json(self, method: str, path: str, body: Any) -> Any:
        status, data = self.call(method, path, json.dumps(body).encode())
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {data[:500]!r}")
        return json.loads(data)


def over_http(
    args: argparse.Namespace, procs: Processes, workdir: Path, prefix: str
) -> list[dict[str, Any]]:
    key = issue_key(workdir)
    server = harness.start_modelport(
        procs,
        workdir,
        tenant_key=key,
        ready_path="/v2/health/live",
        redis_url=args.redis_url,
        feature_key_prefix=prefix,
    )
    client = Client(server.port, key)
    now = time.time()
    names = []
    for v, (name, body) in enumerate(views_and_rows(args)):
        client.json("PUT", f"/v1/features/views/{name}", body)
        rows = [
            {"entity": u, "values": row_values(args, v, k), "event_timestamp": now}
            for k, u in enumerate(users(args))
        ]
        assert client.json("POST", f"/v1/features/{name}/push", {"rows": rows})["written"] == len(
            rows
        )
        names.append(name)
    request = {"features": [f"{n}:*" for n in names], "entities": {"user": users(args)}}
    payload = json.dumps(request).encode()
    answer = client.json("POST", "/v1/features/get", request)
    assert len(answer["results"]) == args.entities
    assert len(answer["results"][0]["features"]) == args.views * args.features
    statuses = {f["status"] for r in answer["results"] for f in r["features"].values()}
    assert statuses == {"present"}, statuses

    def once() -> None:
        status, _ = client.call("POST", "/v1/features/get", payload)
        if status != 200:
            raise RuntimeError(f"POST /v1/features/get answered {status}")

    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        harness.wait_for_quiet(args.quiet_wait)
        client.conn.close()  # the server closes idle keep-alive connections after 5 s
        point = {"run": run, "call": "POST /v1/features/get", **timed(once, args)}
        runs.append(point)
        print(
            f"run {run}: HTTP get            p50 {point['p50_ms']:.3f} p99 {point['p99_ms']:.3f} "
            f"mean {point['mean_ms']:.3f} ms"
        )
    return runs


def timed(call: Callable[[], None], args: argparse.Namespace) -> dict[str, float]:
    for _ in range(args.warmup):
        call()
    samples = []
    for _ in range(args.http_requests):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return harness.latency_summary(samples)


# --------------------------------------------------------------------------- report


def machine(args: argparse.Namespace) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(args.redis_url)
    try:
        server_version = str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()
    return {
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": harness.cpu_model(),
        "python": platform.python_version(),
        "redis_server": server_version,
        "redis_py": harness.package_version("redis"),
        "hiredis": harness.package_version("hiredis"),
        "orjson": harness.package_version("orjson"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--entities", type=int, default=100, help="entity keys per read (100)")
    p.add_argument("--views", type=int, default=2, help="feature views (2)")
    p.add_argument("--features", type=int, default=10, help="features per view (10)")
    p.add_argument("--reads", type=int, default=2000, help="in-process reads per call (2000)")
    p.add_argument("--http-requests", type=int, default=2000, help="HTTP requests per run (2000)")
    p.add_argument("--warmup", type=int, default=100, help="unmeasured calls first (100)")
    quick = {"reads": 200, "http_requests": 200, "warmup": 10, "runs": 1}
    return parse(p, argv, quick)


def cleanup(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    prefix = f"mp-bench-{secrets.token_hex(4)}:f"
    try:
        # On uvloop, the event loop modelport serve runs on.
        local = uvloop.run(in_process(args, prefix))
        remote = over_http(args, procs, workdir, prefix + "-http")
    finally:
        procs.stop_all()
        cleanup(args.redis_url, prefix)
        cleanup(args.redis_url, prefix + "-http")
    points = local + remote
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": harness.command_line(),
        "machine": machine(args),
        "settings": {
            k: getattr(args, k)
            for k in ("entities", "views", "features", "reads", "http_requests", "warmup", "runs")
        },
        "summary": {
            "read": median_of(points, "read"),
            "read_every_value": median_of(points, "read_every_value"),
            "read_blocking": median_of(points, "read_blocking"),
            "join": median_of(points, "join"),
            "http": median_of(points, "POST /v1/features/get"),
        },
        "target_p99_ms": TARGET_P99_MS,
        "raw": points,
    }


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "features", needs_wrk=False)


if __name__ == "__main__":
    raise SystemExit(main())
