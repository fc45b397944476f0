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
import datetime as dt
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import harness
from harness import RANKER, Processes, Server
from harness.cli import parse, parser

ALIAS = f"/v1/models/{RANKER}/aliases/production"


def register_versions(workdir: Path) -> tuple[str, str]:
    """Two ranker versions (seeds 7 and 8), production on version 1; (an infer key, a key that
    may write)."""

    async def push(services: Any) -> tuple[str, str]:
        for seed in (7, 8):
            path, config = harness.demo_model(RANKER, workdir / "build", seed=seed)
            await services.registry.push(
                harness.BENCH_TENANT, RANKER, path, config, created_by="bench"
            )
        await services.releases.set_alias(
            harness.BENCH_TENANT, RANKER, "production", "1", "bench", "benchmark start"
        )
        infer = await harness.issue_key(services, ["infer", "read"])
        return infer, await harness.issue_key(services, ["read", "write"])

    return harness.in_registry(workdir, push)


def flipper(
    server: Server, writer: str, flips: int, start_after: float, every: float, out: list[float]
) -> threading.Thread:
    def run() -> None:
        time.sleep(start_after)
        target = "2"
        for _ in range(flips):
            began = time.perf_counter()
            body = {"version": target, "reason": "bench flip"}
            harness.call_json(server, "PUT", ALIAS, body, key=writer)
            out.append(time.perf_counter() - began)
            target = "1" if target == "2" else "2"
            time.sleep(every)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def set_shadow(server: Server, writer: str, percent: float | None) -> None:
    path = f"/v1/models/{RANKER}/routing"
    if percent is None:
        harness.call_json(server, "DELETE", path, key=writer)
        return
    body = {"shadow": {"target": "2", "percent": percent}, "reason": "bench shadow"}
    harness.call_json(server, "PUT", path, body, key=writer)


def shadow_counts(server: Server, writer: str) -> dict[str, Any]:
    answer = harness.call_json(server, "GET", f"/v1/models/{RANKER}/shadow", key=writer)
    return answer["shadow"] or {}


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = harness.machine_info()
    started = dt.datetime.now(dt.UTC)
    key, writer = register_versions(workdir)
    body_file = harness.write_bodies(workdir / "ranker_body.json", [harness.ranker_body()])
    server = harness.start_modelport(procs, workdir, tenant_key=key)
    path = f"/v2/models/{RANKER}/infer"
    harness.check_answer(server, path, harness.ranker_body(), "score")
    harness.run_wrk(server.url(path), body_file, 64, args.warmup, key=key)

    swap_runs: list[dict[str, Any]] = []
    shadow_runs: list[dict[str, Any]] = []
    for run, _, _ in harness.interleaved([None], args.runs, args.quiet_wait, first=0):
        harness.call_json(server, "PUT", ALIAS, {"version": "1"}, key=writer)
        steady = harness.load(server, path, body_file, 64, args.duration)
        steady.update(run=run, flips=0)
        swap_runs.append(steady)
        print(f"run {run}: steady   {steady['req_s']:>8.0f} req/s p99 {steady['p99_ms']:.2f} ms")

        flip_times: list[float] = []
        every = max(0.2, (args.duration - 4) / max(args.flips, 1) - 0.2)
        thread = flipper(server, writer, args.flips, 2.0, every, flip_times)
        flipping = harness.load(server, path, body_file, 64, args.duration)
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
            set_shadow(server, writer, percent)
            before = shadow_counts(server, writer)
            point = harness.load(server, path, body_file, 16, args.shadow_duration)
            summary = shadow_counts(server, writer)
            for counter in ("mirrored", "dropped"):
                summary[counter] = summary.get(counter, 0) - before.get(counter, 0)
            point.update(run=run, shadow_percent=percent or 0.0, shadow=summary)
            shadow_runs.append(point)
            print(
                f"run {run}: shadow {percent or 0:>5.0f} % {point['req_s']:>8.0f} req/s "
                f"p50 {point['p50_ms']:.2f} p99 {point['p99_ms']:.2f} ms"
            )
        set_shadow(server, writer, None)

    return {
        "started": started.isoformat(timespec="seconds"),
        "command": harness.command_line(),
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


def _swap_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    steady = [r for r in runs if r["flips"] == 0]
    flipping = [r for r in runs if r["flips"] > 0]
    flips = [t for r in flipping for t in r["flip_ms"]]
    return {
        "steady": harness.medians(steady, ("req_s", "p50_ms", "p99_ms")),
        "flipping": harness.medians(flipping, ("req_s", "p50_ms", "p99_ms")),
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
            **harness.medians(points, ("req_s", "p50_ms", "p99_ms")),
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
    p = parser(__doc__)
    p.add_argument("--duration", type=float, default=20, help="seconds per hot-swap run (20)")
    p.add_argument("--shadow-duration", type=float, default=10, help="seconds per shadow point")
    p.add_argument("--flips", type=int, default=10, help="alias flips per run (10)")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds first (3)")
    quick = {"duration": 6, "shadow_duration": 2, "runs": 1, "flips": 2, "warmup": 1}
    return parse(p, argv, quick)


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "releases")


if __name__ == "__main__":
    raise SystemExit(main())
