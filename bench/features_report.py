"""The report of ``bench/features.py``: ``docs/benchmarks/features.md``, from the run's points."""

from __future__ import annotations

import statistics
from typing import Any

TARGET_P99_MS = 2.0


def median_of(points: list[dict[str, Any]], call: str) -> dict[str, float]:
    mine = [p for p in points if p["call"] == call]
    return {
        k: round(statistics.median(p[k] for p in mine), 3) for k in ("p50_ms", "p99_ms", "mean_ms")
    }


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    values = s["entities"] * s["views"] * s["features"]
    rows = [
        ("`read` (asyncio, in-process)", result["summary"]["read"]),
        (
            "`read`, then every value looked at (a `FeatureValue` each)",
            result["summary"]["read_every_value"],
        ),
        ("`read_blocking` (worker thread, in-process)", result["summary"]["read_blocking"]),
        (
            "feature join: the same values into an FP32 tensor (worker thread, as inference)",
            result["summary"]["join"],
        ),
        ("`POST /v1/features/get` (HTTP, one connection)", result["summary"]["http"]),
    ]
    lines = [
        "# Online feature reads (Redis)",
        "",
        f"Produced by `{result['command']}` on {result['started']} "
        f"({result['machine']['usable_cpus']} usable CPUs, {result['machine']['cpu_model']}; "
        f"Redis {result['machine']['redis_server']} on the same machine, redis-py "
        f"{result['machine']['redis_py']} with hiredis {result['machine']['hiredis']}). "
        f"Medians of {s['runs']} runs; raw runs in `features.json`.",
        "",
        f"One read = {s['entities']} entities x {s['views']} views x {s['features']} float "
        f"features = {values} values, in one round trip to Redis. In-process: "
        f"{s['reads']} sequential reads per call and run (on uvloop, as the server runs); "
        f"HTTP: {s['http_requests']} sequential "
        "requests per run on one keep-alive connection, authentication on, the server and the "
        "client sharing the machine's cores.",
        "",
        "| call | p50 ms | p99 ms | mean ms |",
        "|---|---|---|---|",
    ]
    for label, point in rows:
        lines.append(
            f"| {label} | {point['p50_ms']:.3f} | {point['p99_ms']:.3f} | {point['mean_ms']:.3f} |"
        )
    other = [p["other_cores"] for p in result["raw"] if "other_cores" in p]
    verdict = {
        call: "meets" if result["summary"][call]["p99_ms"] <= TARGET_P99_MS else "misses"
        for call in ("read", "read_every_value", "read_blocking", "join")
    }
    lines += [
        "",
        f"Target: in-process p99 <= {TARGET_P99_MS:g} ms. `read` {verdict['read']} it "
        f"({verdict['read_every_value']} it when every value is then looked at), "
        f"`read_blocking` {verdict['read_blocking']} it, the feature join (the path inference "
        f"takes: one MGET of the packed numbers straight into the tensor, no value object per "
        f"feature) "
        f"{verdict['join']} it. CPU used by other processes during "
        f"the in-process runs (Redis included): median {statistics.median(other):.2f} of "
        f"{result['machine']['usable_cpus']} cores; p99 on this shared machine moves with it.",
        "",
        "Where the time goes (in-process): the Redis round trip itself (one read-only Lua "
        "script doing `HMGET key ts v` per key), parsing its reply and decoding one JSON blob "
        "per key and view. A read returns one object per key (its status decided once); a "
        "`FeatureValue` is built only when a feature is looked up, which is what the second "
        "row adds. "
        "Over HTTP the server also parses the request, resolves the views (cached for 1 s) and "
        "serialises about 150 KB of JSON per response.",
    ]
    return "\n".join(lines) + "\n"
