"""Inference throughput of modelport against the HTTP floor, on this machine, in one run.

    .venv/bin/python bench/infer_throughput.py                         # full run (make bench)
    .venv/bin/python bench/infer_throughput.py --duration 3 --runs 1   # quick smoke run
    .venv/bin/python bench/infer_throughput.py --quick                 # smoke run, report in /tmp
    .venv/bin/python bench/infer_throughput.py --runs 5 --label "after the edge change" \\
        --previous docs/benchmarks/inference.json   # this run's row beside the committed one

What it does:

1. registers the demo ``ranker`` (FP32 [N,64] -> [N,1]) with its shipped demo config in a fresh
   registry in a temporary folder and starts the real server (``python -m modelport serve``,
   default settings: metrics on, logging as shipped) on a free 127.0.0.1 port;
2. starts the HTTP floor (``bench/floor_app.py``: bare ASGI, same uvicorn/uvloop/httptools
   stack, reads the body, parses it with orjson, answers a constant OIP response) on another;
3. loads one server at a time with ``wrk -t1 -cC`` (C = 16 and 64), one row of 64 floats per
   request, interleaving floor and modelport runs, and quotes medians over ``--runs``;
4. reads the mean batch size from modelport's ``/metrics`` (per run, as a difference);
5. measures raw onnxruntime throughput of the ranker in-process with the server's session
   options (the compute limit);
6. measures ``minilm`` sentences/s over HTTP, sequential (``-c1``) and concurrent, and in-process;
7. prints a summary and writes ``docs/benchmarks/inference.md`` and ``inference.json``; with
   ``--previous`` (an earlier ``inference.json``), the report also sets this run's headline
   figures beside that run's (and the runs that one was set beside).

Servers bind 127.0.0.1 only and are stopped on exit, Ctrl-C or error. Needs ``wrk``
(``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import numpy as np
from harness import RANKER, Processes, Server
from harness.cli import parse, parser
from inference_report import headline, print_summary, render_markdown

TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0
MINILM = harness.MINILM
INFER = f"/v2/models/{RANKER}/infer"
SERVERS = ("floor", "batching", "modelport", "plain")


def register(workdir: Path, name: str) -> tuple[Path, str]:
    """Build a demo model and push it with its demo config; (its artifact, a tenant key)."""
    path, config = harness.demo_model(name, workdir / "build")

    async def push(services: Any) -> str:
        await services.registry.push(
            harness.BENCH_TENANT, name, path, config, required=True, created_by="bench"
        )
        return await harness.issue_key(services, ["infer", "read"])

    return path, harness.in_registry(workdir, push)


# --------------------------------------------------------------------------- in-process


def _timed(fn: Callable[[], Any], seconds: float, chunk: int = 10) -> tuple[int, float]:
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(chunk):
            fn()
        calls += chunk
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls, elapsed


def compute_limit(
    onnx_path: Path, batch_sizes: list[int], seconds: float, repeats: int
) -> list[dict[str, Any]]:
    """Raw onnxruntime rows/s of the ranker with the server's session options."""
    import onnxruntime as ort

    from modelport.serving.runtimes.onnx import session_options

    runtime = harness.demo_config(RANKER).runtime
    session = ort.InferenceSession(
        str(onnx_path), sess_options=session_options(runtime), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(1)
    rows = []
    for batch in batch_sizes:
        feed = {"input": rng.standard_normal((batch, 64)).astype(np.float32)}
        for _ in range(50):
            session.run(["score"], feed)
        rates, per_call = [], []
        for _ in range(repeats):
            calls, elapsed = _timed(lambda f=feed: session.run(["score"], f), seconds)
            rates.append(calls * batch / elapsed)
            per_call.append(elapsed / calls * 1e6)
        rows.append(
            {
                "batch": batch,
                "rows_s": round(statistics.median(rates)),
                "us_per_call": round(statistics.median(per_call), 1),
            }
        )
    return rows


def minilm_inprocess(folder: Path, batch_sizes: list[int], seconds: float) -> list[dict[str, Any]]:
    """Sentences/s of the text-embedding runtime (tokenise, encoder, pooling) in-process."""
    from modelport.serving.runtimes.text_embedding import TextEmbeddingRuntime

    config = harness.demo_config(MINILM)
    runtime = TextEmbeddingRuntime(folder, config.runtime)
    rows = []
    for batch in batch_sizes:
        texts = [harness.SENTENCES[i % len(harness.SENTENCES)].encode() for i in range(batch)]
        feed = {"text": np.array(texts, dtype=object)}
        for _ in range(3):
            runtime.predict(feed)
        calls, elapsed = _timed(lambda f=feed: runtime.predict(f), seconds, chunk=1)
        rows.append(
            {
                "batch": batch,
                "sentences_s": round(calls * batch / elapsed, 1),
                "ms_per_call": round(elapsed / calls * 1000, 2),
                "intra_op_threads": config.runtime.intra_op_threads,
            }
        )
    runtime.close()
    return rows


# --------------------------------------------------------------------------- HTTP


def summarise(runs: list[dict[str, Any]], connections: list[int]) -> dict[str, Any]:
    """Per server and concurrency: medians over runs, error totals, the mean batch."""
    out: dict[str, Any] = {}
    keys = ("req_s", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "server_cpu", "wrk_cpu", "other_cpu")
    for server in SERVERS:
        for c in connections:
            sel = [r for r in runs if r["server"] == server and r["connections"] == c]
            if not sel:
                continue
            entry: dict[str, Any] = harness.medians(sel, keys)
            entry["non_2xx"] = sum(r["non_2xx"] for r in sel)
            entry["socket_errors"] = sum(r["socket_errors"] for r in sel)
            entry["runs"] = len(sel)
            if server in ("modelport", "plain"):
                rows = sum(r["metrics"]["rows"] for r in sel)
                batches = sum(r["metrics"]["batches"] for r in sel)
                entry["mean_batch"] = round(rows / batches, 2) if batches else None
            out[f"{server}_c{c}"] = entry
    return out


def ranker_over_http(
    args: argparse.Namespace, procs: Processes, workdir: Path, machine: dict[str, Any]
) -> dict[str, Any]:
    """The floor, the batching floor, modelport (and plain) under wrk, interleaved."""
    print("registering ranker ...")
    ranker_path, key = register(workdir, RANKER)
    body = harness.ranker_body()
    ranker_file = harness.write_bodies(workdir / "ranker_body.json", [body])

    print("starting modelport, the floor and the batching floor ...")
    modelport = harness.start_modelport(procs, workdir, tenant_key=key)
    floor = harness.start_floor(procs, workdir, tenant_key=key)
    batching = harness.start_batching_floor(procs, workdir, ranker_path, tenant_key=key)
    servers: list[tuple[Server, str | None]] = [
        (floor, None),
        (batching, None),
        (modelport, RANKER),
    ]
    if args.plain and machine["compiled_modules"][0]:
        plain = harness.start_modelport(procs, workdir, tenant_key=key, name="plain", plain=True)
        servers.append((plain, RANKER))
    for server, _ in servers:
        harness.check_answer(server, INFER, body, "score")
        print(f"  {server.name} on {harness.HOST}:{server.port}")

    top = args.connections[-1]
    if args.warmup > 0:
        print(f"warmup {args.warmup:g} s each at -c{top} ...")
        for server, model in servers:
            harness.load(server, INFER, ranker_file, top, args.warmup, args.threads, model)

    first = harness.scrape(modelport)
    points = [(c, server, model) for c in args.connections for server, model in servers]
    runs: list[dict[str, Any]] = []
    for run, (c, server, model), idle in harness.interleaved(points, args.runs, args.quiet_wait):
        r = harness.load(server, INFER, ranker_file, c, args.duration, args.threads, model)
        r["run"] = run
        r["busy_before"] = idle
        runs.append(r)
        print(
            f"  run {run} {server.name:<9} -c{c:<3} {r['req_s']:>9,.0f} req/s  "
            f"p50 {r['p50_ms']:.2f}  p99 {r['p99_ms']:.2f} ms  "
            f"cpu {r['server_cpu']:.0%}  batch {harness.fmt(r.get('mean_batch'))}  "
            f"non-2xx {r['non_2xx']}  other-cpu {r['other_cpu']:.2f}"
        )
    outcomes = harness.batch_delta(first, harness.scrape(modelport), RANKER)["outcomes"]
    procs.stop_all()
    return {
        "ranker_path": ranker_path,
        "body_bytes": len(body),
        "runs": runs,
        "outcomes": outcomes,
        "summary": summarise(runs, args.connections),
    }


def minilm_over_http(
    args: argparse.Namespace, procs: Processes, workdir: Path
) -> tuple[dict[str, Any], Path]:
    """minilm sentences/s, sequential and concurrent, on a modelport that also serves it."""
    print("registering minilm and restarting modelport ...")
    folder, key = register(workdir, MINILM)
    modelport = harness.start_modelport(procs, workdir, tenant_key=key, ready_timeout=300)
    bodies = harness.minilm_bodies()
    minilm_file = harness.write_bodies(workdir / "minilm_bodies.jsonl", bodies)
    path = f"/v2/models/{MINILM}/infer"
    harness.check_answer(modelport, path, bodies[0], "embedding")
    conc = args.minilm_concurrency
    harness.load(modelport, path, minilm_file, conc, min(args.warmup, 3) or 1, 1, MINILM)
    harness.wait_for_quiet(args.quiet_wait)
    seq = harness.load(modelport, path, minilm_file, 1, args.minilm_duration, 1, MINILM)
    print(f"  minilm -c1   {seq['req_s']:.1f} sentences/s  p50 {seq['p50_ms']:.1f} ms")
    harness.wait_for_quiet(args.quiet_wait)
    par = harness.load(modelport, path, minilm_file, conc, args.minilm_duration, 1, MINILM)
    print(
        f"  minilm -c{conc:<3} {par['req_s']:.1f} sentences/s  p50 {par['p50_ms']:.1f} ms  "
        f"batch {harness.fmt(par.get('mean_batch'))}"
    )
    procs.stop_all()
    minilm = {
        "duration": args.minilm_duration,
        "concurrency": conc,
        "sequential": seq,
        "concurrent": par,
    }
    return minilm, folder


# --------------------------------------------------------------------------- scenario


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = harness.machine_info()
    started = dt.datetime.now(dt.UTC)
    print(f"workdir {workdir}")
    http = ranker_over_http(args, procs, workdir, machine)
    summary, runs = http["summary"], http["runs"]
    minilm, minilm_folder = (
        (None, None) if args.skip_minilm else minilm_over_http(args, procs, workdir)
    )

    print("measuring the compute limit in-process ...")
    observed = {
        max(1, round(e["mean_batch"])): f"observed mean batch at -c{k.rsplit('_c', 1)[1]}"
        for k, e in summary.items()
        if k.startswith("modelport") and e.get("mean_batch")
    }
    sizes = sorted({1, 16, 32, 64, 128, *observed})
    harness.wait_for_quiet(args.quiet_wait)
    with harness.OtherLoad() as other:
        limit = compute_limit(
            http["ranker_path"], sizes, args.compute_seconds, args.compute_repeats
        )
    compute_other = other.cores
    for row in limit:
        if row["batch"] in observed:
            row["note"] = observed[row["batch"]]
    top, low = args.connections[-1], args.connections[0]
    top_batch = summary.get(f"modelport_c{top}", {}).get("mean_batch")
    at_observed = next(
        (r for r in limit if top_batch and r["batch"] == max(1, round(top_batch))), None
    )
    if minilm is not None and minilm_folder is not None:
        batch = minilm["concurrent"].get("mean_batch")
        sizes = sorted({1, 32, *([max(1, round(batch))] if batch else [])})
        try:
            harness.wait_for_quiet(args.quiet_wait)
            with harness.OtherLoad() as other:
                minilm["inprocess"] = minilm_inprocess(
                    minilm_folder, sizes, max(args.compute_seconds, 2)
                )
            minilm["inprocess_other_cpu"] = other.cores
        except Exception as exc:  # noqa: BLE001 - optional extra; report it and carry on
            print(f"  minilm in-process measurement failed: {exc!r}")
            minilm["inprocess_error"] = repr(exc)

    result = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": harness.command_line(),
        "label": args.label,
        "machine": machine,
        "config": {
            "duration": args.duration,
            "runs": args.runs,
            "connections": args.connections,
            "wrk_threads": args.threads,
            "warmup": args.warmup,
            "compute_seconds": args.compute_seconds,
            "compute_repeats": args.compute_repeats,
            "ranker_body_bytes": http["body_bytes"],
        },
        "targets": targets(summary, runs, top, low),
        "summary": summary,
        "runs": runs,
        "modelport_outcomes": http["outcomes"],
        "compute_limit": limit,
        "compute_at_observed_batch": at_observed,
        "compute_other_cpu": compute_other,
        "minilm": minilm,
    }
    result["history"] = args.history
    return result


def targets(
    summary: dict[str, Any], runs: list[dict[str, Any]], top: int, low: int
) -> dict[str, Any]:
    """The verdict: throughput against the floor at -c``top``, p99 at -c``low``, no errors."""
    floor_top, mp_top = summary[f"floor_c{top}"], summary[f"modelport_c{top}"]
    mp_low = summary[f"modelport_c{low}"]
    worst_p99 = max(
        r["p99_ms"] for r in runs if r["server"] == "modelport" and r["connections"] == low
    )
    ratio = mp_top["req_s"] / floor_top["req_s"]
    batching_top = summary[f"batching_c{top}"]
    non_2xx = sum(r["non_2xx"] for r in runs if r["server"] == "modelport")
    sock = sum(r["socket_errors"] for r in runs if r["server"] == "modelport")
    return {
        "throughput_ratio": {
            "target": f"modelport req/s >= {TARGET_RATIO:.0%} of the floor at -c{top}",
            "value": round(ratio, 4),
            "measured": f"{ratio:.1%} ({mp_top['req_s']:,.0f} / {floor_top['req_s']:,.0f} req/s)",
            "pass": ratio >= TARGET_RATIO,
        },
        "batching_floor": {
            "target": f"(reference) the batching floor's req/s against the floor at -c{top}",
            "value": round(batching_top["req_s"] / floor_top["req_s"], 4),
            "measured": (
                f"{batching_top['req_s'] / floor_top['req_s']:.1%} "
                f"({batching_top['req_s']:,.0f} / {floor_top['req_s']:,.0f} req/s); modelport "
                f"reaches {mp_top['req_s'] / batching_top['req_s']:.1%} of the batching floor"
            ),
            "pass": None,
        },
        "p99": {
            "target": f"modelport p99 <= {TARGET_P99_MS:g} ms at -c{low}",
            "value": mp_low["p99_ms"],
            "measured": f"{mp_low['p99_ms']:.2f} ms (median of runs; worst run {worst_p99:.2f} ms)",
            "pass": mp_low["p99_ms"] <= TARGET_P99_MS,
        },
        **_plain_target(summary, top),
        "non_2xx": {
            "target": "0 non-2xx responses from modelport",
            "value": non_2xx,
            "measured": f"{non_2xx} non-2xx, {sock} socket errors/timeouts over all measured runs",
            "pass": non_2xx == 0 and sock == 0,
        },
    }


def _plain_target(summary: dict[str, Any], top: int) -> dict[str, Any]:
    """The reference row for modelport as plain Python, when the run measured it."""
    plain, floor = summary.get(f"plain_c{top}"), summary[f"floor_c{top}"]
    if plain is None:
        return {}
    shipped = summary[f"modelport_c{top}"]
    return {
        "plain": {
            "target": f"(reference) modelport as plain Python (`make pure`) at -c{top}",
            "value": round(plain["req_s"] / floor["req_s"], 4),
            "measured": (
                f"{plain['req_s'] / floor['req_s']:.1%} of the floor ({plain['req_s']:,.0f} "
                f"req/s); compiled, modelport serves "
                f"{shipped['req_s'] / plain['req_s'] - 1:+.1%} more"
            ),
            "pass": None,
        }
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--duration", type=float, default=20, help="seconds per wrk run (20)")
    p.add_argument("--connections", default="16,64", help="wrk -c levels, comma-separated")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (1)")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per server (3)")
    p.add_argument(
        "--minilm-duration", type=float, default=10, help="seconds per minilm point (10)"
    )
    p.add_argument("--minilm-concurrency", type=int, default=32, help="wrk -c for minilm (32)")
    p.add_argument("--skip-minilm", action="store_true", help="skip the minilm part")
    p.add_argument(
        "--no-plain",
        dest="plain",
        action="store_false",
        help="do not also measure modelport as plain Python (without its compiled modules)",
    )
    p.add_argument(
        "--compute-seconds",
        type=float,
        default=0.5,
        help="seconds per compute-limit measurement (0.5)",
    )
    p.add_argument("--compute-repeats", type=int, default=3, help="repeats per batch size (3)")
    p.add_argument(
        "--label",
        default=None,
        help="names this run in the report's table of measurements (default: its git commit)",
    )
    p.add_argument(
        "--previous",
        type=Path,
        default=None,
        help="an earlier inference.json (e.g. docs/benchmarks/inference.json, read before it "
        "is overwritten): its headline figures are set beside this run's",
    )
    p.add_argument(
        "--previous-label", default=None, help="names the --previous run (default: its own label)"
    )
    quick = {
        "duration": 2,
        "runs": 1,
        "warmup": 1,
        "minilm_duration": 2,
        "compute_seconds": 0.1,
        "compute_repeats": 1,
    }
    args = parse(p, argv, quick)
    args.connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    if args.runs < 1 or args.duration <= 0 or not args.connections:
        p.error("--runs must be >= 1, --duration > 0 and --connections non-empty")
    args.history = []
    if args.previous is not None:
        previous = json.loads(args.previous.read_text())
        entry = headline(previous)
        if args.previous_label:
            entry["label"] = args.previous_label
        args.history = [*previous.get("history", []), entry]
    return args


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(
        parse_args(argv), bench, render_markdown, "inference", summary=print_summary
    )


if __name__ == "__main__":
    sys.exit(main())
