"""Search throughput: cold and Zipf-mixed queries through ``POST /v1/search`` against the
embedding model's own batched limit, measured in-process in the same run.

    .venv/bin/python bench/search_throughput.py            # docs/benchmarks/search_throughput.md
    .venv/bin/python bench/search_throughput.py --quick    # smoke run

What it does:

1. registers the demo ``minilm`` model in the benchmark tenant, starts ``python -m modelport
   serve`` as shipped (query cache on, its defaults) and imports ``--products`` demo products
   (``POST /v1/catalog/import``), waiting until the last of them is found by both retrievers
   (the indexer applies the stream in order) and checking a sample of the others;
2. writes query texts made from the demo catalog's words (colours, qualities, nouns, brands,
   uses), all distinct, as hybrid ``k=10`` search bodies: every wrk run of the cold point gets
   a slice of its own, so no query text is ever asked twice (the query cache cannot help); the
   Zipf point draws from a vocabulary of ``--zipf-vocab`` other texts with P(rank r) ~ 1/r^s;
3. loads the server with wrk (one thread cycling through the bodies, ``oip_post.lua``) at
   ``-c--connections``: cold and Zipf runs interleaved, ``--runs`` each; reads ``minilm``'s
   batches from ``/metrics`` per run (rows embedded = cache misses that reached the model);
4. measures the text-embedding runtime in-process (tokenise, encoder, pooling, the server's
   thread settings) on the same query texts at the batch size the server formed at the cold
   point, and at 1, 16 and 32 (``max_batch_size``): the model's batched limit;
5. runs a short ladder of lower connection counts for both mixes and reports p50/p99 at the one
   closest to 70 % of the point's maximum rate (wrk cannot pace requests; wrk2 is not here);
6. prints PASS/FAIL for: cold QPS >= 80 % of the in-process limit, Zipf QPS >= 10x cold QPS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import harness
import httpx
import numpy as np
import orjson
from harness import Processes, Server
from harness.cli import parse, parser
from harness.registry import BENCH_TENANT, MINILM, demo_config, demo_model

PATH = "/v1/search"
COLD_TARGET = 0.8  # cold QPS / in-process embeddings/s
ZIPF_TARGET = 10.0  # Zipf QPS / cold QPS
LATENCY_AT = 0.7  # p50/p99 at this share of the maximum rate

_USES = (
    "for a small flat",
    "for camping",
    "for the office",
    "for a gift",
    "for everyday use",
    "for kids",
    "under 50 euros",
    "on sale",
    "that lasts",
    "for beginners",
    "for travel",
    "easy to clean",
)


def query_texts(count: int, seed: int = 11) -> list[str]:
    """``count`` distinct shopper queries from the demo catalog's words, in random order."""
    from modelport.demo import catalog

    nouns = sorted({noun for nouns, _, _ in catalog._CATEGORIES.values() for noun in nouns})
    rng = random.Random(seed)
    templates = (
        "{color} {noun}",
        "{quality} {noun} {use}",
        "{color} {quality} {noun}",
        "{brand} {noun} in {color}",
        "{noun} {use}",
        "{quality} {color} {noun} by {brand}",
        "cheap {color} {noun} {use}",
        "best {noun} from {brand} {use}",
    )
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        text = rng.choice(templates).format(
            color=rng.choice(catalog._COLORS),
            quality=rng.choice(catalog._QUALITIES).lower(),
            noun=rng.choice(nouns).lower(),
            brand=rng.choice(catalog._BRANDS),
            use=rng.choice(_USES),
        )
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def search_body(text: str) -> bytes:
    return orjson.dumps({"query": text, "mode": "hybrid", "k": 10})


def zipf_draws(vocab: list[str], n: int, s: float, seed: int) -> list[str]:
    ranks = np.arange(1, len(vocab) + 1, dtype=np.float64)
    p = ranks**-s
    p /= p.sum()
    picks = np.random.default_rng(seed).choice(len(vocab), size=n, p=p)
    return [vocab[i] for i in picks]


# --------------------------------------------------------------------------- setup


def _index(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    """Import the demo products and wait until the index holds them."""
    from modelport.demo.catalog import products

    headers = {"Authorization": f"Bearer {server.tenant_key}", "Content-Type": "application/json"}
    catalog = list(products(args.products))
    with httpx.Client(base_url=server.url(""), headers=headers, timeout=120) as http:
        body = b"\n".join(orjson.dumps(p) for p in catalog)
        started = time.monotonic()
        answer = http.post("/v1/catalog/import", content=body)
        if answer.status_code != 200 or answer.json()["failed"]:
            raise RuntimeError(f"import answered {answer.status_code}: {answer.text[:300]}")
        last = catalog[-1]
        while not _found_by_both(http, last):
            if time.monotonic() - started > args.index_timeout:
                raise RuntimeError(f"{last['id']} not searchable after {args.index_timeout} s")
            time.sleep(0.5)
        indexed_s = time.monotonic() - started
        sample = random.Random(3).sample(catalog, min(50, len(catalog)))
        found = sum(_found_by_both(http, p) for p in sample)
    print(f"indexed {len(catalog)} products in {indexed_s:.1f} s; sample {found}/{len(sample)}")
    return {
        "products": len(catalog),
        "index_s": round(indexed_s, 1),
        "docs_s": round(len(catalog) / indexed_s, 1),
        "sample_found": found,
        "sample": len(sample),
    }


def _found_by_both(http: httpx.Client, product: dict[str, Any]) -> bool:
    query = {
        "query": product["title"],
        "filters": {"brands": [product["brand"]], "category": product["category"]},
        "k": 100,
        "include_products": False,
    }
    answer = http.post(PATH, content=orjson.dumps(query))
    if answer.status_code == 503:
        return False
    if answer.status_code != 200:
        raise RuntimeError(f"search answered {answer.status_code}: {answer.text[:300]}")
    hits = [h for h in answer.json()["hits"] if h["id"] == product["id"]]
    return bool(hits) and hits[0]["semantic"] is not None and hits[0]["lexical"] is not None


# --------------------------------------------------------------------------- in-process


def embedding_limit(
    folder: Path, texts: list[str], batch_sizes: list[int], seconds: float
) -> list[dict[str, Any]]:
    """Embeddings/s of the text-embedding runtime in-process on ``texts``, per batch size."""
    from modelport.serving.runtimes.text_embedding import TextEmbeddingRuntime

    config = demo_config(MINILM)
    runtime = TextEmbeddingRuntime(folder, config.runtime)
    rows = []
    try:
        for batch in batch_sizes:
            feeds = [
                {"text": np.array([t.encode() for t in texts[i : i + batch]], dtype=object)}
                for i in range(0, len(texts) - batch, batch)
            ]
            for feed in feeds[:3]:
                runtime.predict(feed)
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds or calls < 5:
                runtime.predict(feeds[calls % len(feeds)])
                calls += 1
            rows.append(
                {
                    "batch": batch,
                    "embeddings_s": round(calls * batch / elapsed, 1),
                    "ms_per_call": round(elapsed / calls * 1000, 2),
                    "intra_op_threads": config.runtime.intra_op_threads,
                }
            )
            print(f"  in-process batch {batch:>3}: {rows[-1]['embeddings_s']:.1f} embeddings/s")
    finally:
        runtime.close()
    return rows


# --------------------------------------------------------------------------- load


def _run(
    server: Server, body_file: Path, connections: int, duration: float, bodies: int
) -> dict[str, Any]:
    r = harness.load(server, PATH, body_file, connections, duration, 1, MINILM)
    r["bodies"] = bodies
    r["wrapped"] = r["requests"] > bodies  # the file was cycled: texts repeated
    r["embedded_per_request"] = (
        round(r["metrics"]["rows"] / r["requests"], 4) if r["requests"] else None
    )
    return r


def _line(label: str, r: dict[str, Any]) -> str:
    return (
        f"  {label:<5} -c{r['connections']:<3} {r['req_s']:>8.1f} req/s  p50 {r['p50_ms']:.1f} ms"
        f"  p99 {r['p99_ms']:.1f} ms  embedded/req {harness.fmt(r['embedded_per_request'], 3)}"
        f"  batch {harness.fmt(r['mean_batch'])}  server cpu {r['server_cpu']:.2f}"
        f"  non-2xx {r['non_2xx']}  errors {r['socket_errors']}"
    )


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = harness.machine_info()
    started = dt.datetime.now(dt.UTC)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    folder, config = demo_model(MINILM, workdir / "build")

    async def setup(services: Any) -> str:
        await services.registry.push(BENCH_TENANT, MINILM, folder, config, required=True)
        return await harness.issue_key(services, ["write", "read"])

    key = harness.in_registry(workdir, setup)
    server = harness.start_modelport(procs, workdir, tenant_key=key, ready_timeout=300)
    index = _index(args, server)

    ladder = sorted(c for c in args.ladder if c < args.connections)
    cold_slices = 1 + args.runs + len(ladder)
    texts = query_texts(args.zipf_vocab + cold_slices * args.cold_slice)
    vocab, cold = texts[: args.zipf_vocab], texts[args.zipf_vocab :]
    slices = [cold[i * args.cold_slice : (i + 1) * args.cold_slice] for i in range(cold_slices)]
    files = [
        harness.write_bodies(workdir / f"cold-{i}.jsonl", (search_body(t) for t in s))
        for i, s in enumerate(slices)
    ]
    # One draw sequence per wrk run (the same distribution), so that no run replays another's.
    zipf_files, distinct = [], []
    for i in range(cold_slices):
        draws = zipf_draws(vocab, args.zipf_draws, args.zipf_s, seed=5 + i)
        distinct.append(len(set(draws)) / len(draws))
        zipf_files.append(
            harness.write_bodies(workdir / f"zipf-{i}.jsonl", (search_body(t) for t in draws))
        )
    status, answer = harness.request(server, PATH, search_body(vocab[0]))
    if status != 200 or not orjson.loads(answer)["hits"]:
        raise RuntimeError(f"search answered {status}: {answer[:300]!r}")

    # Warm-up: a short run of each mix (its own bodies) to load the code paths and threads
    # and to start filling the query cache the Zipf mix runs with.
    harness.load(server, PATH, files[0], args.connections, args.warmup, 1, MINILM)
    harness.load(server, PATH, zipf_files[0], args.connections, args.warmup, 1, MINILM)
    cold_runs: list[dict[str, Any]] = []
    zipf_runs: list[dict[str, Any]] = []
    for run, point, busy in harness.interleaved(("cold", "zipf"), args.runs, args.quiet_wait):
        if point == "cold":
            r = _run(server, files[run], args.connections, args.duration, args.cold_slice)
            cold_runs.append({"run": run, "busy_before": busy, **r})
        else:
            r = _run(server, zipf_files[run], args.connections, args.duration, args.zipf_draws)
            zipf_runs.append({"run": run, "busy_before": busy, **r})
        print(_line(point, r), flush=True)

    ladder_runs: dict[str, list[dict[str, Any]]] = {"cold": [], "zipf": []}
    for i, c in enumerate(ladder):
        harness.wait_for_quiet(args.quiet_wait)
        r = _run(server, files[1 + args.runs + i], c, args.ladder_duration, args.cold_slice)
        ladder_runs["cold"].append(r)
        print(_line("cold", r), flush=True)
        harness.wait_for_quiet(args.quiet_wait)
        r = _run(server, zipf_files[1 + args.runs + i], c, args.ladder_duration, args.zipf_draws)
        ladder_runs["zipf"].append(r)
        print(_line("zipf", r), flush=True)
    profile = None
    if args.profile > 0:
        harness.wait_for_quiet(args.quiet_wait)
        profile = profile_cold(server, workdir, files[-1], args)
    procs.stop_all()

    cold_qps = harness.median(r["req_s"] for r in cold_runs)
    zipf_qps = harness.median(r["req_s"] for r in zipf_runs)
    rows = sum(r["metrics"]["rows"] for r in cold_runs)
    batches = sum(r["metrics"]["batches"] for r in cold_runs)
    observed = max(1, round(rows / batches)) if batches else 1

    print("measuring the embedding model in-process (server stopped) ...")
    harness.wait_for_quiet(args.quiet_wait)
    sizes = sorted({1, observed, 16, 32})
    with harness.OtherLoad() as other:
        limit = embedding_limit(folder, cold, sizes, args.inprocess_seconds)
    at_observed = next(r for r in limit if r["batch"] == observed)
    best = max(limit, key=lambda r: r["embeddings_s"])

    def at_70(point: str, median_top: float) -> dict[str, Any] | None:
        """The ladder point closest to 70 % of the highest rate this mix reached."""
        if not ladder_runs[point]:
            return None
        top = max(median_top, *(r["req_s"] for r in ladder_runs[point]))
        pick = min(ladder_runs[point], key=lambda r: abs(r["req_s"] - LATENCY_AT * top))
        return {
            "connections": pick["connections"],
            "req_s": pick["req_s"],
            "max_req_s": top,
            "share_of_max": round(pick["req_s"] / top, 3),
            "p50_ms": pick["p50_ms"],
            "p99_ms": pick["p99_ms"],
        }

    cold_ratio = cold_qps / at_observed["embeddings_s"]
    zipf_ratio = zipf_qps / cold_qps
    targets = {
        "cold_vs_model": {
            "target": f"cold QPS >= {COLD_TARGET:.0%} of in-process minilm embeddings/s at the "
            f"server's batch ({observed})",
            "value": round(cold_ratio, 3),
            "pass": cold_ratio >= COLD_TARGET,
            "against_best_batch": round(cold_qps / best["embeddings_s"], 3),
        },
        "zipf_vs_cold": {
            "target": f"Zipf-mix QPS >= {ZIPF_TARGET:g}x cold QPS",
            "value": round(zipf_ratio, 2),
            "pass": zipf_ratio >= ZIPF_TARGET,
        },
    }
    for name, t in targets.items():
        print(f"{name}: {t['value']} -> {'PASS' if t['pass'] else 'FAIL'}")
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": harness.command_line(),
        "machine": {**machine, "load_average_at_start": load_at_start},
        "settings": {
            k: getattr(args, k)
            for k in (
                "products",
                "connections",
                "duration",
                "runs",
                "warmup",
                "ladder",
                "ladder_duration",
                "cold_slice",
                "zipf_vocab",
                "zipf_draws",
                "zipf_s",
                "inprocess_seconds",
            )
        },
        "index": index,
        "cold": {"req_s": cold_qps, "runs": cold_runs},
        "zipf": {"req_s": zipf_qps, "runs": zipf_runs},
        "ladder": ladder_runs,
        "latency_at_70": {
            "cold": at_70("cold", cold_qps),
            "zipf": at_70("zipf", zipf_qps),
        },
        "inprocess": {
            "rows": limit,
            "observed_batch": observed,
            "other_cpu": other.cores,
            "zipf_distinct_share": round(statistics.fmean(distinct), 4),
        },
        "targets": targets,
        "profile": profile,
    }


def profile_cold(server: Server, workdir: Path, body_file: Path, args: argparse.Namespace) -> Any:
    """One more cold run at the measured point with py-spy sampling the server (and its
    subprocesses): where the time goes, by leaf frame (self) and by modelport frame (inclusive).
    Not part of the measured runs (py-spy slows the process it samples)."""
    import shutil
    import subprocess
    import sys

    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = workdir / "profile.txt"
    argv = [spy, "record", "-p", str(server.proc.pid), "-d", f"{args.profile:g}", "-r", "100"]
    argv += ["--subprocesses", "--nonblocking", "-f", "raw", "-o", str(out)]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as spy_proc:
        time.sleep(1.0)
        r = harness.run_wrk(
            server.url(PATH), body_file, args.connections, args.profile - 2, key=server.tenant_key
        )
        _, err = spy_proc.communicate(timeout=args.profile + 30)
    if not out.exists():
        print(f"  py-spy wrote nothing: {err.decode()[-300:]}")
        return {"error": err.decode()[-300:]}
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        self_time[leaf] = self_time.get(leaf, 0) + count
        for frame in set(frames):
            if "modelport" in frame or frame.startswith("process "):
                inclusive[frame] = inclusive.get(frame, 0) + count

    def top(table: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[: args.profile_top]
        return [(name, round(n / total, 4)) for name, n in ranked]

    print(f"  profiled cold run: {r['req_s']:.1f} req/s under py-spy, {total} samples")
    return {
        "req_s_under_py_spy": r["req_s"],
        "samples": total,
        "self": top(self_time),
        "inclusive_modelport": top(inclusive),
    }


# --------------------------------------------------------------------------- report


def render(result: dict[str, Any]) -> str:
    s, m, idx = result["settings"], result["machine"], result["index"]
    inproc, targets = result["inprocess"], result["targets"]
    lines = [
        "# Search throughput: cold and Zipf-mixed queries against the embedding model's limit",
        "",
        f"`{result['command']}`, started {result['started']} on {m['usable_cpus']} CPUs "
        f"({m['cpu_model']}), load average {m['load_average_at_start']} at the start; modelport "
        f"(commit {m['git_commit']}), wrk and the in-process measurement share the machine.",
        "",
        f"Catalog: {idx['products']:,} demo products (`modelport.demo.catalog`), imported through "
        f"`POST /v1/catalog/import` and indexed in {idx['index_s']} s ({idx['docs_s']} docs/s: "
        "each embedded through the served `minilm`); the catalog is kept this small because "
        f"indexing is that slow on this machine. A sample of {idx['sample']} products was "
        f"checked found by both retrievers: {idx['sample_found']}/{idx['sample']}.",
        "",
        "Queries: hybrid, `k=10`, the other fields at their defaults (`include_products` true: "
        "one SQL read per page; no rerank model declared), from shopper-like texts made of the "
        "catalog's words. **Cold**: every request a text never asked before in the run (each wrk "
        f"run reads its own {s['cold_slice']:,} bodies, cycled once at most). **Zipf**: "
        f"{s['zipf_draws']:,} draws from {s['zipf_vocab']:,} other texts, P(rank r) ~ "
        f"1/r^{s['zipf_s']:g} (the query cache holds 10,000 entries: a larger vocabulary keeps "
        "missing in its tail; each run draws its own sequence, "
        f"{inproc['zipf_distinct_share']:.1%} of a sequence's draws distinct), the query cache "
        "on as shipped; the cache carries over from run to run. wrk -t1 "
        f"-c{s['connections']}, {s['duration']:g} s per run, cold and Zipf interleaved, "
        f"{s['runs']} runs each (median), after a {s['warmup']:g} s warm-up.",
        "",
        "## Targets",
        "",
        "| target | value | result |",
        "|---|---:|---|",
    ]
    for t in targets.values():
        lines.append(f"| {t['target']} | {t['value']} | {'PASS' if t['pass'] else '**FAIL**'} |")
    cold, zipf = result["cold"], result["zipf"]
    model = next(r for r in inproc["rows"] if r["batch"] == inproc["observed_batch"])
    lines += [
        "",
        f"Cold: **{cold['req_s']:,.1f} req/s**; Zipf: **{zipf['req_s']:,.1f} req/s**; the model "
        f"in-process at the batch the server formed ({inproc['observed_batch']}): "
        f"**{model['embeddings_s']:,.1f}** embeddings/s (cold QPS is "
        f"{targets['cold_vs_model']['against_best_batch']:.1%} of the best batch size measured).",
        "",
        "## Runs",
        "",
        "| mix | run | -c | req/s | p50 ms | p99 ms | embedded / request | mean batch | server "
        "cores | wrk cores | other cores | non-2xx | socket errors | bodies cycled |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def row(mix: str, run: Any, r: dict[str, Any]) -> str:
        return (
            f"| {mix} | {run} | {r['connections']} | {r['req_s']:,.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {harness.fmt(r['embedded_per_request'], 3)} | "
            f"{harness.fmt(r['mean_batch'])} | {r['server_cpu']:.2f} | {r['wrk_cpu']:.2f} | "
            f"{r['other_cpu']:.2f} | {r['non_2xx']} | {r['socket_errors']} | "
            f"{'**yes**' if r['wrapped'] else 'no'} |"
        )

    for r in cold["runs"]:
        lines.append(row("cold", r["run"], r))
    for r in zipf["runs"]:
        lines.append(row("zipf", r["run"], r))
    for mix in ("cold", "zipf"):
        for r in result["ladder"][mix]:
            lines.append(row(mix, "ladder", r))
    lines += [
        "",
        "## Latency at ~70 % of the maximum rate",
        "",
        "wrk cannot pace requests at a fixed rate (wrk2 is not installed), so the latency is "
        f"taken at the lower connection count of the ladder ({', '.join(map(str, s['ladder']))}; "
        f"{s['ladder_duration']:g} s each, one run) whose rate came closest to 70 % of the "
        f"highest rate of that mix (the -c{s['connections']} median or a ladder point). "
        "It is a closed-loop figure: each connection waits for its "
        "answer, so it understates what an open-loop client at that rate would see.",
        "",
        "| mix | -c | req/s | max req/s | share of max | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mix, p in result["latency_at_70"].items():
        if p:
            lines.append(
                f"| {mix} | {p['connections']} | {p['req_s']:,.1f} | {p['max_req_s']:,.1f} | "
                f"{p['share_of_max']:.0%} | "
                f"{p['p50_ms']:.1f} | {p['p99_ms']:.1f} |"
            )
    lines += [
        "",
        "## The embedding model in-process",
        "",
        "`TextEmbeddingRuntime.predict` (tokenise, encoder, mean pooling) with the demo config's "
        "runtime settings, on the cold query texts, batches of the sizes below, after the server "
        f"stopped ({inproc['other_cpu']:.2f} cores of other load meanwhile).",
        "",
        "| batch | embeddings/s | ms per call | intra-op threads |",
        "|---:|---:|---:|---:|",
    ]
    for r in inproc["rows"]:
        note = " (the server's mean batch, cold)" if r["batch"] == inproc["observed_batch"] else ""
        lines.append(
            f"| {r['batch']}{note} | {r['embeddings_s']:,.1f} | {r['ms_per_call']} | "
            f"{r['intra_op_threads']} |"
        )
    profile = result.get("profile")
    if profile and "self" in profile:
        lines += [
            "",
            "## Where the time goes (cold, one py-spy look)",
            "",
            "py-spy sampling the server and its subprocesses at 100 Hz (threads on CPU only) "
            f"during one more cold run at -c{s['connections']} "
            f"({profile['req_s_under_py_spy']:,.1f} req/s under the profiler, "
            f"{profile['samples']:,} samples). Shares are of all on-CPU samples of all threads.",
            "",
            "| leaf frame (self) | share |",
            "|---|---:|",
            *(f"| `{name}` | {share:.1%} |" for name, share in profile["self"]),
            "",
            "| modelport frame or process (inclusive) | share |",
            "|---|---:|",
            *(f"| `{name}` | {share:.1%} |" for name, share in profile["inclusive_modelport"]),
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__, runs=2, quiet_wait=3)
    p.add_argument("--products", type=int, default=1500, help="demo products indexed (1500)")
    p.add_argument("--index-timeout", type=float, default=300.0)
    p.add_argument("--connections", type=int, default=16, help="the measured point (16)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument(
        "--ladder",
        type=int,
        nargs="*",
        default=[1, 2, 4, 8],
        help="lower connection counts for the latency at ~70 %% of the maximum (1 2 4 8)",
    )
    p.add_argument("--ladder-duration", type=float, default=6.0)
    p.add_argument("--cold-slice", type=int, default=4000, help="distinct bodies per cold run")
    p.add_argument("--zipf-vocab", type=int, default=50_000, help="distinct Zipf texts (50000)")
    p.add_argument("--zipf-draws", type=int, default=50_000, help="bodies per Zipf run")
    p.add_argument("--zipf-s", type=float, default=1.0, help="the Zipf exponent (1.0)")
    p.add_argument(
        "--profile", type=float, default=10.0, help="seconds of py-spy on a cold run; 0: none"
    )
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--inprocess-seconds", type=float, default=3.0, help="per batch size (3)")
    return parse(
        p,
        argv,
        {
            "products": 100,
            "duration": 3.0,
            "runs": 1,
            "warmup": 1.0,
            "ladder": [4],
            "ladder_duration": 2.0,
            "cold_slice": 2000,
            "zipf_vocab": 5000,
            "zipf_draws": 10_000,
            "inprocess_seconds": 1.0,
            "profile": 4.0,
        },
    )


def main(argv: list[str] | None = None) -> int:
    return harness.run_scenario(parse_args(argv), bench, render, "search_throughput")


if __name__ == "__main__":
    raise SystemExit(main())
