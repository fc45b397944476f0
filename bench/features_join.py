"""Inference with features joined from the online store, against the same model fed directly.

The demo ``ranker`` (64 FP32 inputs) is registered twice on one server backed by Redis:

- ``ranker``: callers send the 64 values (the tensor) themselves;
- ``ranker_features``: callers send a ``user_id`` and an ``item_id``; the server reads 32
  features from a ``user_stats`` view and 32 from an ``item_stats`` view for every row of a
  dynamic batch in one Redis round trip, assembles the same kind of tensor and runs the model.

``wrk -t1 -c64`` on each, interleaved ``--runs`` times; bodies cycle over ``--entities``
different users and items (so the store is really read). Reported: req/s of both, the ratio
(target: the joined model keeps ≥ 70 % of the direct one's throughput), p50/p99, mean batch.
Needs ``wrk`` and Redis (``--redis-url``). Writes ``docs/benchmarks/features_join.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import infer_throughput as base

DEFAULT_OUT = base.REPO / "docs" / "benchmarks"
VIEWS = {"user_stats": "user", "item_stats": "item"}
PER_VIEW = 32
WRITE_KEY: dict[str, str] = {}


def register(workdir: Path, redis_url: str, args_instances: int) -> None:
    from modelport.container import build_services
    from modelport.demo.models import build_ranker, ranker_config
    from modelport.serving.config import FeatureInput, FeaturesConfig
    from modelport.settings import Settings
    from modelport.stores.online import FeatureSpec

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'modelport.db'}",
        artifacts_uri=str(workdir / "artifacts"),
        cache_dir=workdir / "cache",
        redis_url=redis_url,
    )
    path = build_ranker(workdir / "build" / "ranker.onnx")
    refs = [f"{view}:f{i}" for view in VIEWS for i in range(PER_VIEW)]

    async def push() -> None:
        services = await build_services(settings)
        try:
            await services.tenancy.ensure_tenant(base.BENCH_TENANT)
            for view, entity in VIEWS.items():
                await services.features.apply_view(
                    base.BENCH_TENANT,
                    view,
                    entity,
                    [FeatureSpec(f"f{i}", "float", 0.0) for i in range(PER_VIEW)],
                    ttl_s=86_400,
                    actor="bench",
                )
            # Both versions get two compute instances: while one batch waits for its features
            # (a network round trip) another can run. Same config for both, so the comparison
            # stays like for like.
            config = ranker_config()
            config.runtime.instances = args_instances
            await services.registry.push(
                base.BENCH_TENANT, "ranker", path, config, created_by="bench"
            )
            joined = config.model_copy(
                update={
                    "features": FeaturesConfig(
                        entities={"user": "user_id", "item": "item_id"},
                        inputs={"input": FeatureInput(features=refs)},
                    )
                }
            )
            await services.registry.push(
                base.BENCH_TENANT, "ranker_features", path, joined, created_by="bench"
            )
            issued = await services.tenancy.create_key(base.BENCH_TENANT, ["infer", "read"])
            base.KEYS["tenant"] = issued.secret
            writer = await services.tenancy.create_key(base.BENCH_TENANT, ["read", "write"])
            WRITE_KEY["key"] = writer.secret
        finally:
            await services.close()

    asyncio.run(push())


def post(server: base.Server, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback only
        server.url(path),
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {WRITE_KEY['key']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return json.loads(response.read())


def fill_store(server: base.Server, entities: int) -> None:
    rng = np.random.default_rng(3)
    now = dt.datetime.now(dt.UTC).timestamp()
    for view, entity in VIEWS.items():
        for start in range(0, entities, 1000):
            rows = [
                {
                    "entity": f"{entity}-{i}",
                    "values": {f"f{j}": round(float(x), 5) for j, x in enumerate(values)},
                    "event_timestamp": now,
                }
                for i, values in zip(
                    range(start, min(entities, start + 1000)),
                    rng.standard_normal((min(1000, entities - start), PER_VIEW)),
                    strict=True,
                )
            ]
            post(server, f"/v1/features/{view}/push", {"rows": rows})


def bodies(entities: int, count: int) -> tuple[list[bytes], list[bytes]]:
    """Joined bodies (ids) and direct bodies (64 values) for the same rows."""
    rng = np.random.default_rng(11)
    joined, direct = [], []
    for _ in range(count):
        user, item = int(rng.integers(entities)), int(rng.integers(entities))
        joined.append(
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "user_id",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": [f"user-{user}"],
                        },
                        {
                            "name": "item_id",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": [f"item-{item}"],
                        },
                    ]
                },
                separators=(",", ":"),
            ).encode()
        )
        row = [round(float(x), 5) for x in rng.standard_normal(2 * PER_VIEW)]
        direct.append(
            json.dumps(
                {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]},
                separators=(",", ":"),
            ).encode()
        )
    return joined, direct


def bench(args: argparse.Namespace, procs: base.Processes, workdir: Path) -> dict[str, Any]:
    machine = base.machine_info()
    started = dt.datetime.now(dt.UTC)
    register(workdir, args.redis_url, args.instances)
    port = base.free_port()
    env = base.modelport_env(workdir, port)
    env["MODELPORT_REDIS_URL"] = args.redis_url
    server = procs.start(
        "modelport",
        [sys.executable, "-m", "modelport", "serve"],
        port,
        env,
        workdir,
        workdir / "modelport.log",
    )
    base.wait_ready(server, "/v2/health/ready", 120)
    fill_store(server, args.entities)
    joined, direct = bodies(args.entities, args.bodies)
    joined_file, direct_file = workdir / "joined.txt", workdir / "direct.txt"
    joined_file.write_bytes(b"\n".join(joined) + b"\n")
    direct_file.write_bytes(b"\n".join(direct) + b"\n")
    base.check_answer(server, "/v2/models/ranker_features/infer", joined[0], "score")
    base.check_answer(server, "/v2/models/ranker/infer", direct[0], "score")
    points = {
        "direct": ("/v2/models/ranker/infer", direct_file, "ranker"),
        "joined": ("/v2/models/ranker_features/infer", joined_file, "ranker_features"),
    }
    for path, body_file, _ in points.values():
        base.run_wrk(server.url(path), body_file, 64, args.warmup, 1)
    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        for name, (path, body_file, model) in points.items():
            base.wait_for_quiet(args.quiet_wait)
            point = base.load(server, path, body_file, 64, args.duration, 1, model)
            point.update(run=run, kind=name)
            point.pop("metrics", None)
            runs.append(point)
            print(
                f"run {run}: {name:<7} {point['req_s']:>8.0f} req/s p50 {point['p50_ms']:.2f} "
                f"p99 {point['p99_ms']:.2f} ms batch {point.get('mean_batch', 0):.1f} "
                f"non-2xx {point['non_2xx']}"
            )
    summary: dict[str, Any] = {}
    for name in points:
        mine = [r for r in runs if r["kind"] == name]
        summary[name] = {
            k: round(statistics.median(r[k] for r in mine), 3)
            for k in ("req_s", "p50_ms", "p99_ms", "mean_batch")
        }
        summary[name]["non_2xx_total"] = sum(r["non_2xx"] for r in mine)
    ratios = [
        j["req_s"] / d["req_s"]
        for j, d in zip(
            [r for r in runs if r["kind"] == "joined"],
            [r for r in runs if r["kind"] == "direct"],
            strict=True,
        )
    ]
    summary["ratio_median"] = round(statistics.median(ratios), 3)
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": base.command_line(),
        "machine": machine,
        "settings": {
            "duration_s": args.duration,
            "runs": args.runs,
            "entities": args.entities,
            "features_per_row": 2 * PER_VIEW,
            "instances": args.instances,
        },
        "summary": summary,
        "raw": runs,
    }


def render(result: dict[str, Any]) -> str:
    s = result["summary"]
    cpus = result["machine"].get("usable_cpus", "?")
    lines = [
        "# Inference with features joined",
        "",
        f"Produced by `{result['command']}` on {result['started']} ({cpus} usable CPUs). "
        f"Medians of {result['settings']['runs']} interleaved runs; raw runs in "
        "`features_join.json`.",
        "",
        f"`wrk -t1 -c64 -d{result['settings']['duration_s']:g}s`, one row per request. "
        f"`direct`: the ranker fed its 64 values by the caller. `joined`: the same model fed "
        f"{result['settings']['features_per_row']} features from two Redis-backed views "
        f"(`user_stats`, `item_stats`; {result['settings']['entities']} users and items), "
        f"read once per dynamic batch. Both versions: demo ranker config with "
        f"`runtime.instances = {result['settings']['instances']}`.",
        "",
        "| | req/s | p50 ms | p99 ms | mean batch | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("direct", "joined"):
        p = s[name]
        lines.append(
            f"| {name} | {p['req_s']:.0f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | "
            f"{p['mean_batch']:.1f} | {p['non_2xx_total']} |"
        )
    lines += [
        "",
        f"Joined throughput is **{s['ratio_median'] * 100:.1f} %** of direct (median of the "
        "per-run ratios; target ≥ 70 %).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--entities", type=int, default=10_000)
    p.add_argument(
        "--instances", type=int, default=2, help="runtime instances of both versions (2)"
    )
    p.add_argument("--bodies", type=int, default=2_000)
    p.add_argument("--quiet-wait", type=float, default=30)
    p.add_argument(
        "--redis-url",
        default=os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return base.run_scenario(parse_args(argv), bench, render, "features_join")


if __name__ == "__main__":
    raise SystemExit(main())
