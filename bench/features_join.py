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
import datetime as dt
import json
import os
import statistics
from pathlib import Path
from typing import Any

import harness
import numpy as np
from harness import BENCH_TENANT, RANKER, Processes, Server
from harness.cli import parse, parser

VIEWS = {"user_stats": "user", "item_stats": "item"}
PER_VIEW = 32


def register(workdir: Path, redis_url: str, instances: int) -> tuple[str, str]:
    """The views, ``ranker`` and ``ranker_features``; (an infer key, a key that may write)."""
    from modelport.serving.config import FeatureInput, FeaturesConfig
    from modelport.stores.online import FeatureSpec

    path, config = harness.demo_model(RANKER, workdir / "build")
    refs = [f"{view}:f{i}" for view in VIEWS for i in range(PER_VIEW)]

    async def push(services: Any) -> tuple[str, str]:
        for view, entity in VIEWS.items():
            await services.features.apply_view(
                BENCH_TENANT,
                view,
                entity,
                [FeatureSpec(f"f{i}", "float", 0.0) for i in range(PER_VIEW)],
                ttl_s=86_400,
                actor="bench",
            )
        # Both versions get two compute instances: while one batch waits for its features
        # (a network round trip) another can run. Same config for both, so the comparison
        # stays like for like.
        config.runtime.instances = instances
        await services.registry.push(BENCH_TENANT, RANKER, path, config, created_by="bench")
        joined = config.model_copy(
            update={
                "features": FeaturesConfig(
                    entities={"user": "user_id", "item": "item_id"},
                    inputs={"input": FeatureInput(features=refs)},
                )
            }
        )
        await services.registry.push(
            BENCH_TENANT, "ranker_features", path, joined, created_by="bench"
        )
        infer = await harness.issue_key(services, ["infer", "read"])
        return infer, await harness.issue_key(services, ["read", "write"])

    return harness.in_registry(workdir, push, redis_url=redis_url)


def fill_store(server: Server, writer: str, entities: int) -> None:
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
            harness.call_json(
                server, "POST", f"/v1/features/{view}/push", {"rows": rows}, key=writer
            )


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


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = harness.machine_info()
    started = dt.datetime.now(dt.UTC)
    key, writer = register(workdir, args.redis_url, args.instances)
    server = harness.start_modelport(procs, workdir, tenant_key=key, redis_url=args.redis_url)
    fill_store(server, writer, args.entities)
    joined, direct = bodies(args.entities, args.bodies)
    joined_file = harness.write_bodies(workdir / "joined.txt", joined)
    direct_file = harness.write_bodies(workdir / "direct.txt", direct)
    harness.check_answer(server, "/v2/models/ranker_features/infer", joined[0], "score")
    harness.check_answer(server, "/v2/models/ranker/infer", direct[0], "score")
    points = {
        "direct": ("/v2/models/ranker/infer", direct_file, "ranker"),
        "joined": ("/v2/models/ranker_features/infer", joined_file, "ranker_features"),
    }
    for path, body_file, _ in points.values():
        harness.run_wrk(server.url(path), body_file, 64, args.warmup, key=key)
    runs: list[dict[str, Any]] = []
    for run, name, _ in harness.interleaved(list(points), args.runs, args.quiet_wait, first=0):
        path, body_file, model = points[name]
        point = harness.load(server, path, body_file, 64, args.duration, 1, model)
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
        summary[name] = harness.medians(mine, ("req_s", "p50_ms", "p99_ms", "mean_batch"))
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
        "command": harness.command_line(),
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
    p = parser(__doc__)
    p.add_argument("--duration", type=float, default=20, help="seconds per wrk run (20)")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per point (3)")
    p.add_argument("--entities", type=int, default=10_000, help="users and items (10000)")
    p.add_argument(
        "--instances", type=int, default=2, help="runtime instances of both versions (2)"
    )
    p.add_argument("--bodies", type=int, default=2_000, help="distinct request bodies (2000)")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    quick = {"duration": 2, "warmup": 1, "runs": 1, "entities": 1_000, "bodies": 200}
    return parse(p, argv, quick)


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "features_join")


if __name__ == "__main__":
    raise SystemExit(main())
