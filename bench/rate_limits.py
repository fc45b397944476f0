"""What a tenant rate limit costs in production mode (PostgreSQL + Redis), on the ranker.

    .venv/bin/python bench/rate_limits.py                  # full run (about 4 minutes)
    .venv/bin/python bench/rate_limits.py --quick          # smoke run, report in /tmp

What it does:

1. creates a database of its own on PostgreSQL (``--postgres-url``; dropped afterwards) and
   registers the demo ``ranker`` for two tenants: one without a rate limit, one with a limit
   high enough never to refuse (``--rate``, default 100,000 requests/s), so that what is
   measured is the cost of checking it;
2. starts one modelport as a production replica runs (``MODELPORT_DATABASE_URL`` on that
   database, ``MODELPORT_REDIS_URL`` set, everything else as shipped);
3. with ``--before-src`` (another checkout's ``src``, e.g. the last release), starts that
   modelport too (its own registry database, the same Redis), for a "rate limit, before" row;
4. loads it with ``wrk -t1 -cC`` (C = 16 and 64), one row of 64 floats per request, with each
   tenant's key in turn, interleaved, and quotes medians over ``--runs``;
5. writes ``docs/benchmarks/rate_limits.md`` and ``rate_limits.json``.

Target: with the limit, at least 90 % of the throughput without it at -c64, p99 within 1 ms.
Needs ``wrk``, PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import harness
from harness import RANKER, Processes, Server
from harness.cli import parse, parser
from sqlalchemy.engine import make_url

INFER = f"/v2/models/{RANKER}/infer"
TARGET_RATIO = 0.9
TARGET_P99_DELTA_MS = 1.0
BEFORE = "rate limit, before"
LABELS = ("no limit", "rate limit", BEFORE)
KEYS = ("req_s", "p50_ms", "p90_ms", "p99_ms", "server_cpu", "wrk_cpu", "other_cpu")


async def _execute(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def register(workdir: Path, database_url: str, redis_url: str, rate: float) -> dict[str, str]:
    """The ranker for a tenant without and one with a rate limit; their keys by label."""
    limited = f"bench-rl-{secrets.token_hex(3)}"  # its own bucket in the shared Redis
    path, config = harness.demo_model(RANKER, workdir / "build")

    async def setup(services: Any) -> dict[str, str]:
        await services.tenancy.ensure_tenant(limited)
        await services.tenancy.set_quotas(limited, {"rate_limit_rps": rate})
        keys = {}
        for label, tenant in (("no limit", harness.BENCH_TENANT), ("rate limit", limited)):
            await services.registry.push(
                tenant, RANKER, path, config, required=True, created_by="bench"
            )
            issued = await services.tenancy.create_key(tenant, ["infer", "read"])
            keys[label] = str(issued.secret)
        return keys

    return harness.in_registry(workdir, setup, database_url=database_url, redis_url=redis_url)


def compiled_in(server: Server) -> int | None:
    """How many request-path modules ``server`` runs compiled (its ``server_started`` line)."""
    for line in server.log_path.read_text(errors="replace").splitlines():
        if '"server_started"' in line:
            return int(json.loads(line)["compiled_modules"])
    return None


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = harness.machine_info()
    started = dt.datetime.now(dt.UTC)
    admin = make_url(args.postgres_url).set(drivername="postgresql")
    admin_url = admin.render_as_string(hide_password=False)
    names: list[str] = []

    def database() -> str:
        names.append(f"modelport_bench_rl_{secrets.token_hex(4)}")
        asyncio.run(_execute(admin_url, f'CREATE DATABASE "{names[-1]}"'))
        url = admin.set(drivername="postgresql+asyncpg", database=names[-1])
        return url.render_as_string(hide_password=False)

    try:
        database_url = database()
        print(f"workdir {workdir}; database {names[-1]}")
        keys = register(workdir, database_url, args.redis_url, args.rate)
        server = harness.start_modelport(
            procs,
            workdir,
            tenant_key=keys["no limit"],
            database_url=database_url,
            redis_url=args.redis_url,
        )
        targets = {label: (server, key) for label, key in keys.items()}
        if args.before_src is not None:
            # A registry of its own, so that the two servers are not two replicas of one
            # deployment (which would share background duties such as the outbox relay).
            before_dir = workdir / "before"
            before_dir.mkdir()
            before_db = database()
            before_key = register(before_dir, before_db, args.redis_url, args.rate)["rate limit"]
            before = harness.start_modelport(
                procs,
                before_dir,
                tenant_key=before_key,
                name="before",
                source=args.before_src.resolve(),
                database_url=before_db,
                redis_url=args.redis_url,
            )
            targets[BEFORE] = (before, before_key)
        compiled = {label: compiled_in(target) for label, (target, _) in targets.items()}
        body = harness.ranker_body()
        body_file = harness.write_bodies(workdir / "ranker_body.json", [body])
        for target, key in targets.values():
            target.tenant_key = key
            harness.check_answer(target, INFER, body, "score")
            if args.warmup > 0:
                top = args.connections[-1]
                harness.load(target, INFER, body_file, top, args.warmup, model=RANKER)
        points = [(c, label) for c in args.connections for label in targets]
        runs: list[dict[str, Any]] = []
        for run, (c, label), idle in harness.interleaved(points, args.runs, args.quiet_wait):
            target, key = targets[label]
            target.tenant_key = key
            r = harness.load(target, INFER, body_file, c, args.duration, model=RANKER)
            r.update(run=run, tenant=label, busy_before=idle)
            runs.append(r)
            print(
                f"  run {run} {label:<10} -c{c:<3} {r['req_s']:>9,.0f} req/s  "
                f"p50 {r['p50_ms']:.2f}  p99 {r['p99_ms']:.2f} ms  cpu {r['server_cpu']:.0%}  "
                f"non-2xx {r['non_2xx']}  other-cpu {r['other_cpu']:.2f}"
            )
    finally:
        procs.stop_all()
        for name in names:
            asyncio.run(_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": harness.command_line(),
        "machine": machine,
        "config": {
            "duration_s": args.duration,
            "runs": args.runs,
            "connections": args.connections,
            "rate_limit_rps": args.rate,
            "database": "PostgreSQL (a database of its own)",
            "redis": args.redis_url,
            "before_src": None if args.before_src is None else str(args.before_src),
        },
        "compiled_modules": compiled,
        "summary": summarise(runs, args.connections),
        "runs": runs,
    }


def summarise(runs: list[dict[str, Any]], connections: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in connections:
        row: dict[str, Any] = {}
        for label in LABELS:
            sel = [r for r in runs if r["tenant"] == label and r["connections"] == c]
            if not sel:
                continue
            row[label] = {
                **harness.medians(sel, KEYS),
                "non_2xx": sum(r["non_2xx"] for r in sel),
                "runs": len(sel),
            }
        base, limited = row["no limit"], row["rate limit"]
        row["ratio"] = round(limited["req_s"] / base["req_s"], 3)
        row["p99_delta_ms"] = round(limited["p99_ms"] - base["p99_ms"], 3)
        row["run_ratios"] = [
            round(lim["req_s"] / no["req_s"], 3)
            for no, lim in zip(
                (r for r in runs if r["tenant"] == "no limit" and r["connections"] == c),
                (r for r in runs if r["tenant"] == "rate limit" and r["connections"] == c),
                strict=True,
            )
        ]
        row["pass"] = (
            row["ratio"] >= TARGET_RATIO
            and row["p99_delta_ms"] <= TARGET_P99_DELTA_MS
            and limited["non_2xx"] == 0
        )
        out[f"c{c}"] = row
    return out


def render(result: dict[str, Any]) -> str:
    cfg, machine = result["config"], result["machine"]
    compiled = ", ".join(
        f"{n} of {machine['compiled_modules'][1]} ({label})"
        for label, n in result.get("compiled_modules", {}).items()
    )
    lines = [
        "# Tenant rate limits in production mode",
        "",
        f"Measured {result['started']} with `{result['command']}` "
        f"(run under `flock /tmp/modelport-quiet.lock`).",
        "",
        "One modelport on PostgreSQL with `MODELPORT_REDIS_URL` set, serving the demo ranker "
        "(one row of 64 floats per request) to two tenants: one without a rate limit, one with "
        f"`rate_limit_rps` {cfg['rate_limit_rps']:,.0f} (never refuses here: the rows measure "
        "the cost of checking it). `wrk -t1`, "
        f"{cfg['duration_s']:g} s per run, medians of {cfg['runs']} interleaved runs. "
        f"Machine: {machine['usable_cpus']} usable CPUs ({machine['cpu_model']}), wrk on the "
        f"same cores; request-path modules compiled: {compiled}.",
        "",
        "| -c | tenant | req/s | p50 ms | p99 ms | server CPU | non-2xx |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in cfg["connections"]:
        row = result["summary"][f"c{c}"]
        for label in LABELS:
            if label not in row:
                continue
            e = row[label]
            lines.append(
                f"| {c} | {label} | {e['req_s']:,.0f} | {e['p50_ms']:.2f} | {e['p99_ms']:.2f} "
                f"| {e['server_cpu']:.2f} | {e['non_2xx']} |"
            )
    lines += [
        "",
        f"Target (issue 21): with the limit, ≥ {TARGET_RATIO:.0%} of the throughput without it "
        f"at -c64 and p99 within {TARGET_P99_DELTA_MS:g} ms.",
        "",
        "| -c | with / without (median) | each run | p99 difference | verdict |",
        "|---:|---:|---|---:|---|",
    ]
    for c in cfg["connections"]:
        row = result["summary"][f"c{c}"]
        verdict = "PASS" if row["pass"] else "FAIL"
        if c != 64:
            verdict += " (reference)"
        each = ", ".join(f"{x:.0%}" for x in row["run_ratios"])
        lines.append(
            f"| {c} | {row['ratio']:.1%} | {each} | {row['p99_delta_ms']:+.2f} ms | {verdict} |"
        )
    lines += [
        "",
        "Before this change every rate-limited request waited for its own Redis script call "
        "(the `rate limit, before` rows, when measured: the same tenant on the checkout given "
        "by `--before-src`, same Redis, same run). Now each "
        "replica leases tokens in batches and a request that finds one waits for nothing; "
        '`docs/operations.md` ("Rate limits with several replicas") has the design and its '
        "accuracy bound.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__, runs=3, quiet_wait=10)
    p.add_argument("--duration", type=float, default=15, help="seconds per wrk run (15)")
    p.add_argument("--connections", default="16,64", help="wrk -c levels, comma-separated")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per tenant (3)")
    p.add_argument("--rate", type=float, default=100_000.0, help="the limited tenant's rps")
    p.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL server to create the registry database on (%(default)s)",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="(%(default)s)")
    p.add_argument(
        "--before-src",
        type=Path,
        default=None,
        help="the src folder of another modelport checkout: also measure the limited tenant "
        "on it (a 'rate limit, before' row)",
    )
    args = parse(p, argv, {"duration": 2, "runs": 1, "warmup": 1})
    args.connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "rate_limits")


if __name__ == "__main__":
    sys.exit(main())
