"""Releases under load: alias flips during sustained traffic, and what shadowing costs.

Two scenarios on the demo ``ranker`` (two versions with different weights), OIP v2 JSON,
authentication on as shipped, one modelport server on the embedded default:

1. **Hot swap.** ``wrk -c64`` on unpinned infers for ``--duration`` seconds while the
   ``production`` alias flips ``--flips`` times between the two versions through the admin API
   (each flip loads and warms the target, moves traffic, drains and unloads the old one). The
   same run also measures the same load without flips. Reported: req/s, p50/p99, non-2xx and
   socket errors, how long each flip took to be served.
2. **Shadow cost.** ``wrk -c16`` with no shadow, with 10 % and with 100 % of requests mirrored to
   the other version: the primary's p50/p99 and req/s, and the mirror counts from
   ``GET /v1/models/ranker/shadow``.

Runs are interleaved ``--runs`` times; the report quotes medians. Needs ``wrk``
(``apt-get install -y wrk``). Writes ``docs/benchmarks/releases.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import infer_throughput as base

RANKER = base.RANKER
DEFAULT_OUT = base.REPO / "docs" / "benchmarks"
WRITE_KEY: dict[str, str] = {}


def register_versions(workdir: Path) -> None:
    """Two ranker versions (seeds 7 and 8), production on version 1, and a key that may write."""
    from modelport.container import build_services
    from modelport.demo.models import build_ranker, ranker_config
    from modelport.settings import Settings

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'modelport.db'}",
        artifacts_uri=str(workdir / "artifacts"),
        cache_dir=workdir / "cache",
    )

    async def push() -> None:
        services = await build_services(settings)
        try:
            await services.tenancy.ensure_tenant(base.BENCH_TENANT)
            for seed in (7, 8):
                path = build_ranker(workdir / "build" / f"ranker-{seed}.onnx", seed=seed)
                await services.registry.push(
                    base.BENCH_TENANT, RANKER, path, ranker_config(), created_by="bench"
                )
            await services.releases.set_alias(
                base.BENCH_TENANT, RANKER, "production", "1", "bench", "benchmark start"
            )
            issued = await services.tenancy.create_key(base.BENCH_TENANT, ["infer", "read"])
            base.KEYS["tenant"] = issued.secret
            writer = await services.tenancy.create_key(base.BENCH_TENANT, ["read", "write"])
            WRITE_KEY["key"] = writer.secret
        finally:
            await services.close()

    asyncio.run(push())


def admin(server: base.Server, method: str, path: str, body: dict[str, Any] | None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback only
        server.url(path),
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {WRITE_KEY['key']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def flipper(
    server: base.Server, flips: int, start_after: float, every: float, out: list[float]
) -> threading.Thread:
    def run() -> None:
        time.sleep(start_after)
        target = "2"
        for _ in range(flips):
            began = time.perf_counter()
            admin(
                server,
                "PUT",
                f"/v1/models/{RANKER}/aliases/production",
                {"version": target, "reason": "bench flip"},
            )
            out.append(time.perf_counter() - began)
            target = "1" if target == "2" else "2"
            time.sleep(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def set_shadow(server: base.Server, percent: float | None) -> None:
    if percent is None:
        admin(server, "DELETE", f"/v1/models/{RANKER}/routing", None)
        return
    admin(
        server,
        "PUT",
        f"/v1/models/{RANKER}/routing",
        {"shadow": {"target": "2", "percent": percent}, "reason": "bench shadow"},
    )


def bench(args: argparse.Namespace, procs: base.Processes, workdir: Path) -> dict[str, Any]:
    machine = base.machine_info()
    started = dt.datetime.now(dt.UTC)
    register_versions(workdir)
    body_file = workdir / "ranker_body.json"
    body_file.write_bytes(base.ranker_body() + b"\n")
    server = base.start_modelport(procs, workdir, 120)
    path = f"/v2/models/{RANKER}/infer"
    base.check_answer(server, path, base.ranker_body(), "score")
    base.run_wrk(server.url(path), body_file, 64, args.warmup, 1)

    swap_runs: list[dict[str, Any]] = []
    shadow_runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        base.wait_for_quiet(args.quiet_wait)
        admin(server, "PUT", f"/v1/models/{RANKER}/aliases/production", {"version": "1"})
        steady = base.load(server, path, body_file, 64, args.duration, 1, None)
        steady.update(run=run, flips=0)
        swap_runs.append(steady)
        print(f"run {run}: steady   {steady['req_s']:>8.0f} req/s p99 {steady['p99_ms']:.2f} ms")

        flip_times: list[float] = []
        every = max(0.2, (args.duration - 4) / max(args.flips, 1) - 0.2)
        thread = flipper(server, args.flips, 2.0, every, flip_times)
        flipping = base.load(server, path, body_file, 64, args.duration, 1, None)
        thread.join(timeout=120)
        flipping.update(
            run=run,
            flips=len(flip_times),
            flip_ms=[round(t * 1000, 1) for t in flip_times],
        )
        swap_runs.append(flipping)
        print(
            f"run {run}: flipping {flipping['req_s']:>8.0f} req/s p99 {flipping['p99_ms']:.2f} ms "
            f"non-2xx {flipping['non_2xx']} flips {len(flip_times)}"
        )

        for percent in (None, 10.0, 100.0):
            set_shadow(server, percent)
            before = admin(server, "GET", f"/v1/models/{RANKER}/shadow", None)["shadow"] or {}
            point = base.load(server, path, body_file, 16, args.shadow_duration, 1, None)
            summary = admin(server, "GET", f"/v1/models/{RANKER}/shadow", None)["shadow"] or {}
            for key in ("mirrored", "dropped"):
                summary[key] = summary.get(key, 0) - before.get(key, 0)
            point.update(run=run, shadow_percent=percent or 0.0, shadow=summary)
            shadow_runs.append(point)
            print(
                f"run {run}: shadow {percent or 0:>5.0f} % {point['req_s']:>8.0f} req/s "
                f"p50 {point['p50_ms']:.2f} p99 {point['p99_ms']:.2f} ms"
            )
        set_shadow(server, None)

    return {
        "started": started.isoformat(timespec="seconds"),
        "command": base.command_line(),
        "machine": machine,
        "settings": {
            "duration_s": args.duration,
            "shadow_duration_s": args.shadow_duration,
            "runs": args.runs,
            "flips": args.flips,
        },
        "hot_swap": _swap_summary(swap_runs),
        "shadow": _shadow_summary(shadow_runs),
        "raw": {"hot_swap": swap_runs, "shadow": shadow_runs},
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def _swap_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steady = [r for r in runs if r["flips"] == 0]
    flipping = [r for r in runs if r["flips"] > 0]
    flips = [t for r in flipping for t in r["flip_ms"]]
    return {
        "steady": {k: _median(steady, k) for k in ("req_s", "p50_ms", "p99_ms")},
        "flipping": {k: _median(flipping, k) for k in ("req_s", "p50_ms", "p99_ms")},
        "non_2xx_total": sum(r["non_2xx"] for r in flipping),
        "socket_errors_total": sum(r["socket_errors"] for r in flipping),
        "flips_total": sum(r["flips"] for r in flipping),
        "flip_ms_median": round(statistics.median(flips), 1) if flips else None,
        "flip_ms_max": max(flips) if flips else None,
    }


def _shadow_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for percent in sorted({r["shadow_percent"] for r in runs}):
        points = [r for r in runs if r["shadow_percent"] == percent]
        shadows = [r["shadow"] for r in points if r["shadow"]]
        out[f"{percent:g}"] = {
            **{k: _median(points, k) for k in ("req_s", "p50_ms", "p99_ms")},
            "non_2xx_total": sum(r["non_2xx"] for r in points),
            "mirrored": round(statistics.median(s["mirrored"] for s in shadows)) if shadows else 0,
            "dropped": round(statistics.median(s["dropped"] for s in shadows)) if shadows else 0,
        }
    return out


def render(result: dict[str, Any]) -> str:
    swap, shadow = result["hot_swap"], result["shadow"]
    off = shadow.get("0", {})
    cpus = result["machine"].get("usable_cpus", "?")
    lines = [
        "# Releases under load",
        "",
        f"Produced by `{result['command']}` on {result['started']} ({cpus} usable CPUs). "
        f"Medians of {result['settings']['runs']} interleaved runs; raw runs in `releases.json`.",
        "",
        "## Hot swap: the production alias flips during sustained load",
        "",
        f"`wrk -t1 -c64 -d{result['settings']['duration_s']:g}s`, unpinned ranker infers; in the "
        f"flipping runs the alias moves {result['settings']['flips']} times per run through "
        "`PUT /v1/models/ranker/aliases/production` (each move loads and warms the target, "
        "shifts traffic once it is READY, drains and unloads the old version).",
        "",
        "| | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| steady | {swap['steady']['req_s']:.0f} | {swap['steady']['p50_ms']:.2f} | "
        f"{swap['steady']['p99_ms']:.2f} |",
        f"| flipping | {swap['flipping']['req_s']:.0f} | {swap['flipping']['p50_ms']:.2f} | "
        f"{swap['flipping']['p99_ms']:.2f} |",
        "",
        f"- flips: {swap['flips_total']}; non-2xx responses during them: "
        f"**{swap['non_2xx_total']}**; socket errors: {swap['socket_errors_total']}",
        f"- a flip (API call until this replica serves the new version): median "
        f"{swap['flip_ms_median']} ms, max {swap['flip_ms_max']} ms",
        "",
        "## Shadow traffic: what mirroring costs the primary",
        "",
        f"`wrk -t1 -c16 -d{result['settings']['shadow_duration_s']:g}s`; the shadow is the "
        "other ranker version on the same 2 cores.",
        "",
        "| share mirrored | req/s | p50 ms | p99 ms | non-2xx | mirrors per run | dropped |",
        "|---|---|---|---|---|---|---|",
    ]
    for percent, point in shadow.items():
        lines.append(
            f"| {percent} % | {point['req_s']:.0f} | {point['p50_ms']:.2f} | "
            f"{point['p99_ms']:.2f} | {point['non_2xx_total']} | {point['mirrored']} | "
            f"{point['dropped']} |"
        )
    if off and "100" in shadow:
        full = shadow["100"]
        lines += [
            "",
            f"At 100 % mirroring the primary's p99 rises by "
            f"{full['p99_ms'] - off['p99_ms']:+.2f} ms and its throughput changes by "
            f"{(full['req_s'] / off['req_s'] - 1) * 100:+.1f} % — the shadow competes for the "
            "same CPU; at most `MODELPORT_SHADOW_MAX_INFLIGHT` mirrors run at once, the rest are "
            "dropped and counted rather than queued.",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=20, help="seconds per hot-swap run (20)")
    p.add_argument("--shadow-duration", type=float, default=10, help="seconds per shadow point")
    p.add_argument("--runs", type=int, default=3, help="interleaved runs (3)")
    p.add_argument("--flips", type=int, default=10, help="alias flips per run (10)")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds first (3)")
    p.add_argument("--quiet-wait", type=float, default=30, help="wait for other load (30 s)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-write", action="store_true", help="print only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return base.run_scenario(parse_args(argv), bench, render, "releases")


if __name__ == "__main__":
    raise SystemExit(main())
