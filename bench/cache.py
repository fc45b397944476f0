"""The response cache on the demo models: throughput with mostly repeated requests, and the
server-side cost of a hit.

    .venv/bin/python bench/cache.py                          # full run
    .venv/bin/python bench/cache.py --duration 3 --runs 1    # quick smoke run
    .venv/bin/python bench/cache.py --redis-url redis://127.0.0.1:6379/0   # also the Redis tier

What it does:

1. registers each demo model twice in a fresh registry, from the same artifact and config:
   ``ranker`` and ``minilm`` as shipped (no cache), ``ranker_cached`` and ``minilm_cached`` with
   ``cache.enabled``; starts the real server (``python -m modelport serve``, as shipped:
   authentication, metrics, no Redis);
2. loads each model in turn with ``wrk -t1 -cC`` and ``bench/oip_mixed.lua``: 90 % of the
   requests cycle through a hot set of 16 bodies, every 10th request is a body no request has
   sent before; uncached and cached runs interleave, ``--runs`` times, and medians are quoted;
3. runs ``ranker_cached`` with hot-set requests only (all hits) and reads the server-side
   latency of those requests from the ``modelport_inference_request_seconds`` histogram;
4. measures the hit path in-process: ``InferenceService.infer`` (and with the OIP JSON decoding
   and encoding around it, which is what the server does per request besides HTTP), many calls;
5. with ``--redis-url``, starts a second server whose cache also uses that Redis and runs the
   mixed load against its cached models too (a miss then also pays a Redis GET; the write goes
   behind the answer);
6. prints a summary and writes ``docs/benchmarks/cache.md`` and ``cache.json``.

Needs ``wrk`` (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import infer_throughput as base

# Every wrk run here uses the mixing script; ``base.run_wrk`` reads the script from this global.
base.LUA_SCRIPT = base.BENCH / "oip_mixed.lua"

HOT_SET = 16
UNIQUE_EVERY = 10
TARGET_RATIO = 3.0
TARGET_HIT_P50_MS = 0.3
DEFAULT_OUT = base.REPO / "docs" / "benchmarks"


@dataclass(frozen=True)
class Scenario:
    model: str
    connections: tuple[int, ...]
    hot: tuple[bytes, ...]
    """The repeated bodies."""
    unique: str
    """A body with the markers RUN_VALUE and UNIQUE_VALUE (see oip_mixed.lua)."""
    output: str

    @property
    def cached(self) -> str:
        return f"{self.model}_cached"


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    template = json.loads(base.ranker_body(1000))
    template["inputs"][0]["data"][:2] = ["RUN_VALUE", "UNIQUE_VALUE"]
    ranker_unique = json.dumps(template, separators=(",", ":"))
    for marker in ("RUN_VALUE", "UNIQUE_VALUE"):  # numbers in the body, not strings
        ranker_unique = ranker_unique.replace(f'"{marker}"', marker)
    out = [
        Scenario(
            base.RANKER,
            tuple(args.connections),
            tuple(base.ranker_body(seed) for seed in range(HOT_SET)),
            ranker_unique,
            "score",
        )
    ]
    if not args.skip_minilm:
        sentence = (
            "Order RUN_VALUE-UNIQUE_VALUE left the warehouse this morning and should reach the "
            "customer within two working days."
        )
        doc = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [sentence]}]}
        out.append(
            Scenario(
                base.MINILM,
                (args.minilm_connections,),
                tuple(base.minilm_bodies()[:HOT_SET]),
                json.dumps(doc, separators=(",", ":")),
                "embedding",
            )
        )
    return out


def register(workdir: Path, models: list[str]) -> str:
    """Each model as shipped and, from the same artifact, with the cache on; returns an API key
    of the benchmark tenant in this registry."""
    from modelport.container import build_services
    from modelport.demo.models import build_minilm, build_ranker, minilm_config, ranker_config
    from modelport.serving.config import CacheConfig
    from modelport.settings import Settings

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'modelport.db'}",
        artifacts_uri=str(workdir / "artifacts"),
        cache_dir=workdir / "cache",
    )
    builds = {
        base.RANKER: lambda: (build_ranker(workdir / "build" / "ranker.onnx"), ranker_config()),
        base.MINILM: lambda: (build_minilm(workdir / "build" / "minilm"), minilm_config()),
    }

    async def push() -> str:
        services = await build_services(settings)
        try:
            await services.tenancy.ensure_tenant(base.BENCH_TENANT)
            for model in models:
                path, config = builds[model]()
                cached = config.model_copy(update={"cache": CacheConfig(enabled=True)})
                for name, cfg in ((model, config), (f"{model}_cached", cached)):
                    await services.registry.push(
                        base.BENCH_TENANT, name, path, cfg, required=True, created_by="bench"
                    )
            issued = await services.tenancy.create_key(base.BENCH_TENANT, ["infer", "read"])
            return issued.secret
        finally:
            await services.close()

    return asyncio.run(push())


def start_server(
    procs: base.Processes, workdir: Path, name: str, redis_url: str | None
) -> base.Server:
    port = base.free_port()
    env = base.modelport_env(workdir, port)
    if redis_url:
        env["MODELPORT_REDIS_URL"] = redis_url
    server = procs.start(
        name,
        [sys.executable, "-m", "modelport", "serve"],
        port,
        env,
        workdir,
        workdir / f"{name}-{port}.log",
    )
    base.wait_ready(server, "/v2/health/ready", 120)
    return server


def write_bodies(workdir: Path, scenario: Scenario) -> tuple[Path, Path]:
    hot = workdir / f"{scenario.model}-hot.jsonl"
    hot.write_bytes(b"\n".join(scenario.hot) + b"\n")
    unique = workdir / f"{scenario.model}-unique.json"
    unique.write_text(scenario.unique + "\n")
    return hot, unique


def scrape_cache(server: base.Server) -> dict[str, Any]:
    """Per model: cache results and the request-latency histogram (cumulative buckets)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = base.http(server.url("/metrics"))
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            entry = out.setdefault(model, {"cache": {}, "buckets": {}, "count": 0.0})
            if sample.name == "modelport_cache_requests_total":
                entry["cache"][sample.labels["result"]] = sample.value
            elif sample.name == "modelport_inference_request_seconds_bucket":
                le = float(sample.labels["le"])
                entry["buckets"][le] = entry["buckets"].get(le, 0.0) + sample.value
            elif sample.name == "modelport_inference_request_seconds_count":
                entry["count"] += sample.value
    return out


def cache_delta(before: dict[str, Any], after: dict[str, Any], model: str) -> dict[str, int]:
    a, b = after.get(model, {}).get("cache", {}), before.get(model, {}).get("cache", {})
    return {k: int(v - b.get(k, 0.0)) for k, v in a.items() if v - b.get(k, 0.0)}


def histogram_delta(before: dict[str, Any], after: dict[str, Any], model: str) -> dict[str, Any]:
    """p50 of the server-side latency over a run, from the bucket counts: the bucket it falls in
    and a linear interpolation inside it."""
    a, b = after[model]["buckets"], before.get(model, {}).get("buckets", {})
    bounds = sorted(a)
    cumulative = [(le, a[le] - b.get(le, 0.0)) for le in bounds]
    total = cumulative[-1][1]
    share = {f"le_{le * 1000:g}ms": round(c / total, 4) for le, c in cumulative if le <= 0.002}
    lower, below = 0.0, 0.0
    for le, count in cumulative:
        if count >= total / 2:
            inside = count - below
            p50 = lower + (le - lower) * ((total / 2 - below) / inside if inside else 0.0)
            return {
                "requests": int(total),
                "p50_bucket_ms": [lower * 1000, le * 1000],
                "p50_ms_interpolated": round(p50 * 1000, 4),
                "share_at_or_below": share,
            }
        lower, below = le, count
    raise RuntimeError("empty histogram")


def inprocess_hits(
    workdir: Path, model: str, bodies: tuple[bytes, ...], calls: int
) -> dict[str, Any]:
    """The hit path of ``InferenceService.infer`` in this process, on the registry the servers
    use: decode the OIP JSON body, infer (a memory-tier hit), encode the answer."""
    from modelport.container import build_services
    from modelport.serving.codec import decode_request, encode_response
    from modelport.settings import Settings

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'modelport.db'}",
        artifacts_uri=str(workdir / "artifacts"),
        cache_dir=workdir / "cache",
    )

    async def main() -> dict[str, Any]:
        services = await build_services(settings)
        try:
            await services.repository.load(base.BENCH_TENANT, model)
            inference = services.inference
            for body in bodies:  # fill the cache
                await inference.infer(base.BENCH_TENANT, model, None, decode_request(body))
            gc.collect()
            gc.freeze()  # as the server does once it has started
            infer_only: list[float] = []
            full: list[float] = []
            statuses: set[str | None] = set()
            clock = time.perf_counter_ns
            for i in range(calls):
                body = bodies[i % len(bodies)]
                t0 = clock()
                request = decode_request(body)
                t1 = clock()
                result = await inference.infer(base.BENCH_TENANT, model, None, request)
                t2 = clock()
                encode_response(result.model, result.version, result.outputs, result.id)
                t3 = clock()
                infer_only.append((t2 - t1) / 1e6)
                full.append((t3 - t0) / 1e6)
                statuses.add(result.cache)
            if statuses != {"hit"}:
                raise RuntimeError(f"the in-process calls were not all hits: {statuses}")
            return {
                "calls": calls,
                "infer_p50_ms": round(_quantile(infer_only, 0.5), 4),
                "infer_p99_ms": round(_quantile(infer_only, 0.99), 4),
                "decode_infer_encode_p50_ms": round(_quantile(full, 0.5), 4),
                "decode_infer_encode_p99_ms": round(_quantile(full, 0.99), 4),
            }
        finally:
            gc.unfreeze()
            await services.close()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main())


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mixed_load(
    server: base.Server,
    model: str,
    bodies: tuple[Path, Path],
    connections: int,
    duration: float,
    run_id: int,
    unique_every: int,
) -> dict[str, Any]:
    # base.run_wrk hands its own environment to wrk: the mixing script's settings go there.
    hot, unique = bodies
    os.environ["WRK_UNIQUE_FILE"] = str(unique)
    os.environ["WRK_RUN"] = str(run_id)
    os.environ["WRK_UNIQUE_EVERY"] = str(unique_every)
    before = scrape_cache(server)
    result = base.load(server, f"/v2/models/{model}/infer", hot, connections, duration, 1, model)
    after = scrape_cache(server)
    result["model"] = model
    result["cache"] = cache_delta(before, after, model)
    result["latency"] = histogram_delta(before, after, model)
    return result


def bench(args: argparse.Namespace, procs: base.Processes, workdir: Path) -> dict[str, Any]:
    machine = base.machine_info()
    started = dt.datetime.now(dt.UTC)
    print(f"workdir {workdir}")
    plan = scenarios(args)
    names = [s.model for s in plan]
    print(f"registering {', '.join(names)} (as shipped and cached) ...")
    keys = {"memory": register(workdir, names)}
    files = {s.model: write_bodies(workdir, s) for s in plan}
    servers = {"memory": start_server(procs, workdir, "modelport", None)}
    if args.redis_url:
        redis_dir = workdir / "redis-replica"
        redis_dir.mkdir()
        keys["redis"] = register(redis_dir, names)
        servers["redis"] = start_server(procs, redis_dir, "modelport-redis", args.redis_url)
    for tier, server in servers.items():
        base.KEYS["tenant"] = keys[tier]  # what base.http and wrk authenticate with
        for s in plan:
            for model in (s.model, s.cached):
                base.check_answer(server, f"/v2/models/{model}/infer", s.hot[0], s.output)
    # Distinct per invocation, so that "unique" bodies never meet a Redis entry of a past run.
    run_base = int(time.time()) % 100_000 * 100
    points: list[tuple[Scenario, str, str, int]] = []
    for s in plan:
        for c in s.connections:
            points += [(s, "memory", s.model, c), (s, "memory", s.cached, c)]
            if "redis" in servers:
                points.append((s, "redis", s.cached, c))
    print(f"warming up ({args.warmup:g} s per point) ...")
    for i, (s, tier, model, c) in enumerate(points):
        base.KEYS["tenant"] = keys[tier]
        mixed_load(
            servers[tier], model, files[s.model], c, args.warmup, run_base + 90 + i, UNIQUE_EVERY
        )
    runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        for i, (s, tier, model, c) in enumerate(points):
            base.wait_for_quiet(args.quiet_wait)
            base.KEYS["tenant"] = keys[tier]
            result = mixed_load(
                servers[tier],
                model,
                files[s.model],
                c,
                args.duration,
                run_base + run * 10 + i,
                UNIQUE_EVERY,
            )
            result.update(run=run + 1, scenario=s.model, tier=tier if model == s.cached else "none")
            runs.append(result)
            print(
                f"  run {run + 1} {model:14s} tier {result['tier']:6s} -c{c}: "
                f"{result['req_s']:>9,.1f} req/s  p50 {result['p50_ms']:.2f} ms  "
                f"p99 {result['p99_ms']:.2f} ms  cache {result['cache']}"
            )
    ranker = plan[0]
    print("all-hits runs on ranker_cached ...")
    hits: list[dict[str, Any]] = []
    base.KEYS["tenant"] = keys["memory"]
    for run in range(args.runs):
        base.wait_for_quiet(args.quiet_wait)
        result = mixed_load(
            servers["memory"],
            ranker.cached,
            files[ranker.model],
            args.hit_connections,
            args.duration,
            0,
            0,
        )
        result["run"] = run + 1
        hits.append(result)
        print(
            f"  run {run + 1}: {result['req_s']:,.0f} req/s, server-side p50 "
            f"~{result['latency']['p50_ms_interpolated']:.3f} ms (bucket "
            f"{result['latency']['p50_bucket_ms']} ms), cache {result['cache']}"
        )
    print("in-process hit path ...")
    for server in list(servers.values()):
        procs.stop(server)  # the machine to itself
    inprocess = []
    for _ in range(args.runs):
        base.wait_for_quiet(args.quiet_wait)
        inprocess.append(inprocess_hits(workdir, ranker.cached, ranker.hot, args.inprocess_calls))
    return report(args, machine, started, plan, runs, hits, inprocess)


def _median(values: list[float]) -> float:
    return round(float(statistics.median(values)), 4)


def report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    started: dt.datetime,
    plan: list[Scenario],
    runs: list[dict[str, Any]],
    hits: list[dict[str, Any]],
    inprocess: list[dict[str, Any]],
) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(f"{r['model']}_{r['tier']}_c{r['connections']}", []).append(r)
    summary = {}
    for name, sel in groups.items():
        cached = sel[0]["tier"] != "none"
        summary[name] = {
            "scenario": sel[0]["scenario"],
            "model": sel[0]["model"],
            "tier": sel[0]["tier"],
            "connections": sel[0]["connections"],
            "req_s": _median([r["req_s"] for r in sel]),
            "p50_ms": _median([r["p50_ms"] for r in sel]),
            "p99_ms": _median([r["p99_ms"] for r in sel]),
            "server_cpu": _median([r["server_cpu"] for r in sel]),
            "other_cpu": _median([r["other_cpu"] for r in sel]),
            "mean_batch": _median([r["mean_batch"] or 0.0 for r in sel]),
            "hit_share": _median([_hit_share(r["cache"]) for r in sel]) if cached else None,
            "non_2xx": sum(r["non_2xx"] for r in sel),
            "socket_errors": sum(r["socket_errors"] for r in sel),
        }
    ratios: dict[str, float] = {}
    for s in plan:
        for c in s.connections:
            uncached = summary[f"{s.model}_none_c{c}"]["req_s"]
            for tier in ("memory", "redis"):
                point = summary.get(f"{s.cached}_{tier}_c{c}")
                if point:
                    ratios[f"{s.model} {tier} -c{c}"] = round(point["req_s"] / uncached, 3)
    hit_p50 = _median([h["latency"]["p50_ms_interpolated"] for h in hits])
    hit_share = _median([h["latency"]["share_at_or_below"].get("le_0.25ms", 0) for h in hits])
    inproc_p50 = _median([i["decode_infer_encode_p50_ms"] for i in inprocess])
    errors = sum(r["non_2xx"] + r["socket_errors"] for r in [*runs, *hits])
    targets: dict[str, Any] = {}
    for s in plan:
        mine = {k: v for k, v in ratios.items() if k.startswith(f"{s.model} memory")}
        targets[f"throughput_ratio_{s.model}"] = {
            "target": f"{s.model}, 90 % repeated requests: cached req/s >= {TARGET_RATIO:g}x "
            "uncached (memory tier)",
            "measured": ", ".join(f"{k.split(' ', 1)[1]}: {v:.2f}x" for k, v in mine.items()),
            "pass": min(mine.values()) >= TARGET_RATIO,
        }
    targets["hit_p50"] = {
        "target": f"server-side p50 of a cache hit <= {TARGET_HIT_P50_MS} ms (ranker)",
        "measured": f"in-process decode+infer+encode p50 {inproc_p50:.3f} ms; under load "
        f"(histogram, all hits, -c{args.hit_connections}) p50 ~{hit_p50:.3f} ms, "
        f"{hit_share:.0%} of hits <= 0.25 ms",
        "pass": inproc_p50 <= TARGET_HIT_P50_MS and hit_share >= 0.5,
    }
    targets["errors"] = {
        "target": "0 non-2xx responses and socket errors",
        "measured": str(errors),
        "pass": errors == 0,
    }
    return {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": base.command_line(),
        "machine": machine,
        "config": {
            "duration": args.duration,
            "runs": args.runs,
            "scenarios": {s.model: list(s.connections) for s in plan},
            "hit_connections": args.hit_connections,
            "hot_set": HOT_SET,
            "unique_share": 1 / UNIQUE_EVERY,
            "redis": bool(args.redis_url),
            "inprocess_calls": args.inprocess_calls,
        },
        "targets": targets,
        "ratios": ratios,
        "summary": summary,
        "hits": hits,
        "inprocess": inprocess,
        "runs": runs,
    }


def _hit_share(cache: dict[str, int]) -> float:
    return (cache.get("hit_memory", 0) + cache.get("hit_redis", 0)) / max(1, sum(cache.values()))


def render(result: dict[str, Any]) -> str:
    m, cfg = result["machine"], result["config"]
    lines = [
        "# Response cache: throughput with repeated requests, and the cost of a hit",
        "",
        f"Measured {result['date']} by `bench/cache.py`; rerun it to refresh this page (it also "
        "writes `cache.json` with the same numbers).",
        "",
        "## Verdict",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    for t in result["targets"].values():
        verdict = "**PASS**" if t["pass"] else "**FAIL**"
        lines.append(f"| {t['target']} | {t['measured']} | {verdict} |")
    lines += [
        "",
        "## Command and setup",
        "",
        "```",
        result["command"],
        "```",
        "",
        f"- CPU: {m['cpu_model']}, nproc {m['nproc']}; Python {m['python']}, onnxruntime "
        f"{m['onnxruntime']}; modelport at git {m['git_commit']}"
        + (" (with uncommitted changes in src/)" if m["src_modified"] else "")
        + f"; {m['wrk']}, on the same machine.",
        "- One `modelport serve` as shipped (authentication on, metrics on). `ranker` and "
        "`minilm` are the demo models with their demo configs; `ranker_cached` and "
        "`minilm_cached` are the same artifacts and configs with `cache: {enabled: true}` "
        "(TTL 300 s, memory tier 256 MiB"
        + (
            "; the `redis` rows come from a second server with `MODELPORT_REDIS_URL` set"
            if cfg["redis"]
            else ""
        )
        + ").",
        f"- Load: `wrk -t1 -cC -d{cfg['duration']:g}s -s bench/oip_mixed.lua`: "
        f"{1 - cfg['unique_share']:.0%} of the requests cycle through a hot set of "
        f"{cfg['hot_set']} bodies (ranker: one row of 64 FP32 values; minilm: one ~20-word "
        f"sentence), every {round(1 / cfg['unique_share'])}th request carries values no "
        f"request sent before. Points interleave; {cfg['runs']} run(s) per point, medians "
        "quoted. The other CPU column is load from other processes on the machine during the "
        "run (in cores).",
        "",
        "## Mixed load (medians)",
        "",
        "| model | cache tier | conns | req/s | p50 ms | p99 ms | server CPU | other CPU | "
        "mean batch | hit share | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["summary"].values():
        hit = "n/a" if s["hit_share"] is None else f"{s['hit_share']:.1%}"
        lines.append(
            f"| {s['model']} | {s['tier']} | {s['connections']} | {s['req_s']:,.1f} | "
            f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['server_cpu']:.0%} | "
            f"{s['other_cpu']:.2f} | {s['mean_batch']:.1f} | {hit} | {s['non_2xx']} | "
            f"{s['socket_errors']} |"
        )
    lines += [
        "",
        "Throughput ratio cached / uncached: "
        + ", ".join(f"{k} **{v:.2f}x**" for k, v in result["ratios"].items())
        + ".",
        "",
        "## Cost of a hit",
        "",
        f"All-hits load on `ranker_cached` (`-c{cfg['hit_connections']}`, hot set only), "
        "server-side latency from the `modelport_inference_request_seconds` histogram "
        "(from routing to the answer, inside `InferenceService.infer`; the buckets are coarse, "
        "so the p50 is interpolated within its bucket):",
        "",
        "| run | req/s | requests | p50 bucket ms | p50 ms (interpolated) | share <= 0.1 ms | "
        "share <= 0.25 ms | share <= 0.5 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in result["hits"]:
        lat = h["latency"]
        share = lat["share_at_or_below"]
        lines.append(
            f"| {h['run']} | {h['req_s']:,.0f} | {lat['requests']:,} | "
            f"{lat['p50_bucket_ms'][0]:g}-{lat['p50_bucket_ms'][1]:g} | "
            f"{lat['p50_ms_interpolated']:.3f} | {share.get('le_0.1ms', 0):.1%} | "
            f"{share.get('le_0.25ms', 0):.1%} | {share.get('le_0.5ms', 0):.1%} |"
        )
    lines += [
        "",
        f"In-process, {cfg['inprocess_calls']:,} sequential calls per run on the same "
        "registry (uvloop, no HTTP, servers stopped): `decode_request` + "
        "`InferenceService.infer` (a memory-tier hit: routing, validation, key, lookup, "
        "metrics) + `encode_response`:",
        "",
        "| run | infer p50 ms | infer p99 ms | decode+infer+encode p50 ms | "
        "decode+infer+encode p99 ms |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["inprocess"], 1):
        lines.append(
            f"| {i} | {r['infer_p50_ms']:.4f} | {r['infer_p99_ms']:.4f} | "
            f"{r['decode_infer_encode_p50_ms']:.4f} | {r['decode_infer_encode_p99_ms']:.4f} |"
        )
    lines += ["", "## Reading the numbers", "", *READING, ""]
    return "\n".join(lines)


#: Why the two models gain so differently (written from the measurements on this page).
READING = [
    "A hit skips the batch queue, the worker thread and the model. It does not skip HTTP, "
    "authentication, quotas, the OIP JSON decoding, the signature validation or the response "
    "encoding: the event loop still does those for every request. What the cache can save is "
    "what the model path costs beyond that fixed part, so the gain depends on the model.",
    "",
    "- **minilm** (a transformer encoder, milliseconds per sentence): the model is the cost. "
    "Answering 90 % of the requests from memory multiplies throughput; the 10 % of unique "
    "sentences still run the model and bound the gain (10x at most, with free hits).",
    "- **ranker** (a 64-32-1 MLP, microseconds per batch): no cache can make it 3x faster on "
    "this stack. A request costs ~0.1 ms of server CPU over HTTP (server CPU / req/s of the "
    "uncached -c64 row) and a hit ~0.02 ms of it in-process, but at -c64 the uncached batcher "
    "runs ~33 requests per model call, so the model path adds only a few microseconds per "
    "request: the bound, total / (total - model path), is close to 1. At -c16 the uncached "
    "server is not CPU-bound but waits for batches to fill (max_queue_delay_ms) and for the "
    "worker thread; hits skip those waits, hence the gain there. At -c64 the cached ranker is "
    "slower, by more CPU per request. Not from garbage collection or system calls: a profile "
    "of both servers under this load showed fewer collections and fewer system calls per "
    "request with the cache. Its 10 % of misses run in batches of ~15 instead of ~33 (mean "
    "batch column), so the batcher's per-batch work is shared by fewer requests, and each "
    "miss waits several event-loop turns that are full of hits (the p99 column); with the "
    "Redis tier each miss also pays a GET and a SET through redis-py on the event loop. "
    "Enable the cache for models whose compute dominates a request, not for models that cost "
    "less than the HTTP request around them.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=20, help="seconds per wrk run (20)")
    p.add_argument("--runs", type=int, default=3, help="interleaved runs per point (3)")
    p.add_argument("--connections", default="16,64", help="wrk -c levels, ranker (16,64)")
    p.add_argument("--minilm-connections", type=int, default=32, help="wrk -c, minilm (32)")
    p.add_argument("--skip-minilm", action="store_true", help="ranker only")
    p.add_argument("--hit-connections", type=int, default=16, help="wrk -c, all hits (16)")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per point (3)")
    p.add_argument("--inprocess-calls", type=int, default=20_000, help="calls per run (20000)")
    p.add_argument("--redis-url", default=None, help="also measure with this Redis as a tier")
    p.add_argument("--quiet-wait", type=float, default=30, help="wait for other load (30 s)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    args.connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    return args


def main(argv: list[str] | None = None) -> int:
    return base.run_scenario(parse_args(argv), bench, render, "cache")


if __name__ == "__main__":
    raise SystemExit(main())
