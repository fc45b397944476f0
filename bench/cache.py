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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from cache_report import render, report
from harness import BENCH_TENANT, MINILM, RANKER, Processes, Server
from harness.cli import parse, parser

HOT_SET = 16
UNIQUE_EVERY = 10


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
    template = json.loads(harness.ranker_body(1000))
    template["inputs"][0]["data"][:2] = ["RUN_VALUE", "UNIQUE_VALUE"]
    ranker_unique = json.dumps(template, separators=(",", ":"))
    for marker in ("RUN_VALUE", "UNIQUE_VALUE"):  # numbers in the body, not strings
        ranker_unique = ranker_unique.replace(f'"{marker}"', marker)
    out = [
        Scenario(
            RANKER,
            tuple(args.connections),
            tuple(harness.ranker_body(seed) for seed in range(HOT_SET)),
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
                MINILM,
                (args.minilm_connections,),
                tuple(harness.minilm_bodies()[:HOT_SET]),
                json.dumps(doc, separators=(",", ":")),
                "embedding",
            )
        )
    return out


def register(workdir: Path, models: list[str]) -> str:
    """Each model as shipped and, from the same artifact, with the cache on; returns an API key
    of the benchmark tenant in this registry."""
    from modelport.serving.config import CacheConfig

    async def push(services: Any) -> str:
        for model in models:
            path, config = harness.demo_model(model, workdir / "build")
            cached = config.model_copy(update={"cache": CacheConfig(enabled=True)})
            for name, cfg in ((model, config), (f"{model}_cached", cached)):
                await services.registry.push(
                    BENCH_TENANT, name, path, cfg, required=True, created_by="bench"
                )
        return await harness.issue_key(services, ["infer", "read"])

    return harness.in_registry(workdir, push)


def write_bodies(workdir: Path, scenario: Scenario) -> tuple[Path, Path]:
    hot = harness.write_bodies(workdir / f"{scenario.model}-hot.jsonl", scenario.hot)
    unique = workdir / f"{scenario.model}-unique.json"
    unique.write_text(scenario.unique + "\n")
    return hot, unique


def inprocess_hits(
    workdir: Path, model: str, bodies: tuple[bytes, ...], calls: int
) -> dict[str, Any]:
    """The hit path of ``InferenceService.infer`` in this process, on the registry the servers
    use: decode the OIP JSON body, infer (a memory-tier hit), encode the answer."""
    from modelport.serving.codec import decode_request, encode_response

    async def main() -> dict[str, Any]:
        async with harness.open_services(workdir) as services:
            await services.repository.load(BENCH_TENANT, model)
            inference = services.inference
            for body in bodies:  # fill the cache
                await inference.infer(BENCH_TENANT, model, None, decode_request(body))
            gc.collect()
            gc.freeze()  # as the server does once it has started
            try:
                return await timed_hits(
                    inference, model, bodies, calls, decode_request, encode_response
                )
            finally:
                gc.unfreeze()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main())


async def timed_hits(
    inference: Any, model: str, bodies: tuple[bytes, ...], calls: int, decode: Any, encode: Any
) -> dict[str, Any]:
    """``calls`` sequential hits, timed without and with decoding and encoding around them."""
    infer_only: list[float] = []
    full: list[float] = []
    statuses: set[str | None] = set()
    clock = time.perf_counter_ns
    for i in range(calls):
        body = bodies[i % len(bodies)]
        t0 = clock()
        request = decode(body)
        t1 = clock()
        result = await inference.infer(BENCH_TENANT, model, None, request)
        t2 = clock()
        encode(result.model, result.version, result.outputs, result.id)
        t3 = clock()
        infer_only.append((t2 - t1) / 1e6)
        full.append((t3 - t0) / 1e6)
        statuses.add(result.cache)
    if statuses != {"hit"}:
        raise RuntimeError(f"the in-process calls were not all hits: {statuses}")
    return {
        "calls": calls,
        "infer_p50_ms": round(harness.quantile(infer_only, 0.5), 4),
        "infer_p99_ms": round(harness.quantile(infer_only, 0.99), 4),
        "decode_infer_encode_p50_ms": round(harness.quantile(full, 0.5), 4),
        "decode_infer_encode_p99_ms": round(harness.quantile(full, 0.99), 4),
    }


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def mixed_load(
    server: Server,
    model: str,
    bodies: tuple[Path, Path],
    connections: int,
    duration: float,
    run_id: int,
    unique_every: int,
) -> dict[str, Any]:
    hot, unique = bodies
    env = {
        "WRK_UNIQUE_FILE": str(unique),
        "WRK_RUN": str(run_id),
        "WRK_UNIQUE_EVERY": str(unique_every),
    }
    before = harness.scrape_cache(server)
    path = f"/v2/models/{model}/infer"
    result = harness.load(
        server, path, hot, connections, duration, 1, model, script=harness.MIXED_SCRIPT, env=env
    )
    after = harness.scrape_cache(server)
    result["model"] = model
    result["cache"] = harness.cache_delta(before, after, model)
    result["latency"] = harness.histogram_delta(before, after, model)
    return result


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = harness.machine_info()
    started = dt.datetime.now(dt.UTC)
    print(f"workdir {workdir}")
    plan = scenarios(args)
    names = [s.model for s in plan]
    print(f"registering {', '.join(names)} (as shipped and cached) ...")
    files = {s.model: write_bodies(workdir, s) for s in plan}
    key = register(workdir, names)
    servers = {"memory": harness.start_modelport(procs, workdir, tenant_key=key)}
    if args.redis_url:
        redis_dir = workdir / "redis-replica"
        redis_dir.mkdir()
        key = register(redis_dir, names)
        servers["redis"] = harness.start_modelport(
            procs, redis_dir, tenant_key=key, name="modelport-redis", redis_url=args.redis_url
        )
    for server in servers.values():
        for s in plan:
            for model in (s.model, s.cached):
                harness.check_answer(server, f"/v2/models/{model}/infer", s.hot[0], s.output)
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
        mixed_load(
            servers[tier], model, files[s.model], c, args.warmup, run_base + 90 + i, UNIQUE_EVERY
        )
    runs: list[dict[str, Any]] = []
    numbered = list(enumerate(points))
    for run, (i, (s, tier, model, c)), _ in harness.interleaved(
        numbered, args.runs, args.quiet_wait
    ):
        result = mixed_load(
            servers[tier],
            model,
            files[s.model],
            c,
            args.duration,
            run_base + (run - 1) * 10 + i,
            UNIQUE_EVERY,
        )
        result.update(run=run, scenario=s.model, tier=tier if model == s.cached else "none")
        runs.append(result)
        print(
            f"  run {run} {model:14s} tier {result['tier']:6s} -c{c}: "
            f"{result['req_s']:>9,.1f} req/s  p50 {result['p50_ms']:.2f} ms  "
            f"p99 {result['p99_ms']:.2f} ms  cache {result['cache']}"
        )
    ranker = plan[0]
    print("all-hits runs on ranker_cached ...")
    hits: list[dict[str, Any]] = []
    for run, _, _ in harness.interleaved([None], args.runs, args.quiet_wait):
        result = mixed_load(
            servers["memory"],
            ranker.cached,
            files[ranker.model],
            args.hit_connections,
            args.duration,
            0,
            0,
        )
        result["run"] = run
        hits.append(result)
        print(
            f"  run {run}: {result['req_s']:,.0f} req/s, server-side p50 "
            f"~{result['latency']['p50_ms_interpolated']:.3f} ms (bucket "
            f"{result['latency']['p50_bucket_ms']} ms), cache {result['cache']}"
        )
    print("in-process hit path ...")
    for server in list(servers.values()):
        procs.stop(server)  # the machine to itself
    inprocess = [
        inprocess_hits(workdir, ranker.cached, ranker.hot, args.inprocess_calls)
        for _ in harness.interleaved([None], args.runs, args.quiet_wait)
    ]
    config = {"hot_set": HOT_SET, "unique_every": UNIQUE_EVERY}
    return report(args, machine, started, plan, runs, hits, inprocess, config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--duration", type=float, default=20, help="seconds per wrk run (20)")
    p.add_argument("--connections", default="16,64", help="wrk -c levels, ranker (16,64)")
    p.add_argument("--minilm-connections", type=int, default=32, help="wrk -c, minilm (32)")
    p.add_argument("--skip-minilm", action="store_true", help="ranker only")
    p.add_argument("--hit-connections", type=int, default=16, help="wrk -c, all hits (16)")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per point (3)")
    p.add_argument("--inprocess-calls", type=int, default=20_000, help="calls per run (20000)")
    p.add_argument("--redis-url", default=None, help="also measure with this Redis as a tier")
    quick = {"duration": 2, "runs": 1, "warmup": 1, "inprocess_calls": 2_000}
    args = parse(p, argv, quick)
    args.connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "cache")


if __name__ == "__main__":
    raise SystemExit(main())
