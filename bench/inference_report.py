"""The report of ``bench/infer_throughput.py``: ``docs/benchmarks/inference.md`` and the
summary it prints, and the headline figures a later run sets beside its own (``--previous``).
"""

from __future__ import annotations

from typing import Any

from harness import MINILM, RANKER, SENTENCES, demo_config, fmt


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of a run's verdict, named and dated: one row of the table of measurements."""
    cfg, s, m = result["config"], result["summary"], result["machine"]
    top, low = cfg["connections"][-1], cfg["connections"][0]
    floor, shipped = s[f"floor_c{top}"], s[f"modelport_c{top}"]
    batching = s.get(f"batching_c{top}")
    return {
        "label": result.get("label") or f"git {m['git_commit']}",
        "date": result["date"],
        "git_commit": m["git_commit"] + (" (modified)" if m.get("src_modified") else ""),
        "runs": cfg["runs"],
        "duration": cfg["duration"],
        "top": top,
        "low": low,
        "ratio": round(shipped["req_s"] / floor["req_s"], 6),
        "modelport_req_s": shipped["req_s"],
        "floor_req_s": floor["req_s"],
        "batching_ratio": round(batching["req_s"] / floor["req_s"], 6) if batching else None,
        "low_req_s": s[f"modelport_c{low}"]["req_s"],
        "low_p99_ms": s[f"modelport_c{low}"]["p99_ms"],
    }


def _history_lines(result: dict[str, Any]) -> list[str]:
    """This run's headline figures beside earlier runs' (only when ``--previous`` named one)."""
    history = result.get("history") or []
    if not history:
        return []
    now = headline(result)
    lines = [
        "",
        "## This run beside earlier measurements",
        "",
        "Each row is one run of this script (medians over its runs); the ratio to the floor "
        "measured in the same run is the figure to compare, since absolute req/s move with the "
        "machine and its other load.",
        "",
        "| measurement | date | git | runs x s | modelport / floor (conns) | modelport req/s | "
        "floor req/s | batching / floor | p99 ms (conns) | req/s (conns) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in [*history, now]:
        label = f"**{row['label']}**" if row is now else row["label"]
        batching = "n/a" if row["batching_ratio"] is None else f"{row['batching_ratio']:.1%}"
        lines.append(
            f"| {label} | {row['date']} | {row['git_commit']} | {row['runs']} x "
            f"{row['duration']:g} | {row['ratio']:.1%} (-c{row['top']}) | "
            f"{fmt(row['modelport_req_s'], 0)} | {fmt(row['floor_req_s'], 0)} | {batching} | "
            f"{fmt(row['low_p99_ms'])} (-c{row['low']}) | {fmt(row['low_req_s'], 0)} "
            f"(-c{row['low']}) |"
        )
    return lines


def _config_text(config: Any) -> str:
    b, r = config.batching, config.runtime
    return (
        f"max_batch_size {b.max_batch_size}, max_queue_delay_ms {b.max_queue_delay_ms:g}, "
        f"flush_when_idle {'on' if b.flush_when_idle else 'off'}, "
        f"intra_op_threads {r.intra_op_threads}"
        + (f", max_sequence_length {r.max_sequence_length}" if r.kind == "text-embedding" else "")
    )


def _ranker_config_text() -> str:
    return _config_text(demo_config(RANKER))


def _minilm_config_text() -> str:
    return _config_text(demo_config(MINILM))


def _verdict(target: dict[str, Any]) -> str:
    if target["pass"] is None:
        return "reference"
    return "**PASS**" if target["pass"] else "**FAIL**"


def render_markdown(result: dict[str, Any]) -> str:
    m, s, t, cfg = result["machine"], result["summary"], result["targets"], result["config"]
    lines = [
        "# Inference throughput: modelport against the HTTP floor",
        "",
        f"Measured {result['date']} by `bench/infer_throughput.py`; rerun it to refresh this "
        "page (it also writes `inference.json` with the same numbers).",
        "",
        "## Verdict",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    for target in t.values():
        lines.append(f"| {target['target']} | {target['measured']} | {_verdict(target)} |")
    lines += _history_lines(result)
    lines += [
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_model']}, nproc {m['nproc']} (usable {m['usable_cpus']}); "
        f"kernel {m['kernel']}",
        f"- Python {m['python']}, onnxruntime {m['onnxruntime']}, uvicorn {m['uvicorn']}, "
        f"uvloop {m['uvloop']}, httptools {m['httptools']}, orjson {m['orjson']}",
        f"- modelport {m['modelport']} at git {m['git_commit']}"
        + (" (with uncommitted changes in src/)" if m["src_modified"] else "")
        + f"; request path compiled: {m['compiled_modules'][0]} of "
        f"{m['compiled_modules'][1]} modules (`make setup`)",
        f"- load generator: {m['wrk']}, on the same machine (wrk's one thread and the server "
        "share the cores)",
        "",
        "## Command",
        "",
        "```",
        result["command"],
        "```",
        "",
        f"wrk: `-t{cfg['wrk_threads']} -c{{{','.join(map(str, cfg['connections']))}}} "
        f"-d{cfg['duration']:g}s`, {cfg['runs']} run(s) per point after a {cfg['warmup']:g} s "
        "warmup per server; floor, batching floor and modelport (and plain) runs interleaved "
        "(floor cN, batching cN, modelport cN, plain cN, ...). "
        "Each request: `POST /v2/models/ranker/infer`, one row of 64 FP32 values as OIP v2 JSON "
        f"({cfg['ranker_body_bytes']} bytes). Medians over runs are quoted.",
        "",
        "The floor (`bench/floor_app.py`) is a bare ASGI app on the same stack (uvicorn, uvloop, "
        "httptools, one worker, access log off) that reads the body, parses it with orjson and "
        "answers a constant OIP response. The batching floor (`bench/batching_floor_app.py`, "
        "rows `batching`) adds the least a batching server must do on that stack: the first "
        "input's data into a numpy array, one future per request, a 1 ms / 128-row batcher "
        "with one onnxruntime call per batch in a worker thread (`run_in_executor`), the output "
        "sliced back and encoded; no authentication, quotas, signature checks, routing, request "
        "ids, metrics or logs. modelport runs as shipped (`python -m modelport serve`, "
        f"metrics on, default logging), with the demo ranker config ({_ranker_config_text()}). "
        "Rows `plain` (when present) run the same modelport without its compiled modules "
        "(`src/modelport/compiled_modules.py`), as `make pure` or a machine without a C compiler "
        "would.",
        "",
        "## Where the time goes",
        "",
        "The server is CPU-bound on its event-loop thread (server CPU column): the model "
        "itself needs well under 1 % of a core at these rates (compute-limit table), and the "
        "compute thread that runs onnxruntime uses a few % of a core. The batcher forms a "
        "batch as soon as requests stop arriving (`flush_when_idle`), so the loop does not "
        "sit out the queue delay with every client already queued. Per request, the floor's "
        "loop runs uvicorn's own httptools protocol (plain Python: an `asyncio.Event` and a "
        "keep-alive timer per request, two regular expressions per response header, the head "
        "and the body in two `write`s) and the socket calls. modelport serves through its own "
        "HTTP/1.1 protocol (`cli/http_protocol.py`), compiled with the request path: one "
        "`write` per answer, no event or timer per request, headers checked in one pass. On "
        "top of that it does its own work: parsing, the request plan's checks, authentication, "
        "quotas, routing, the batch hand-off (one future per request, a second task step, "
        "stacking "
        "and slicing), metrics and the response. That own work is compiled with mypyc "
        "(`make setup`; rows `plain` show the same code as Python) and no longer has a single "
        "hot spot. The batching floor shows what batching alone costs on this stack: even "
        "with nothing else, a server that batches pays a future, a second task step and its "
        "share of a batch per request, and stays well below the floor. The batching floor runs "
        "on uvicorn's protocol; modelport's own protocol costs less per request than uvicorn's, "
        "which is how modelport, with its tenancy, quotas, validation, routing, request ids "
        "and metrics, can match or pass the batching floor. Compare modelport with the "
        "batching floor as well as with the floor when reading a new run.",
        "",
        "## ranker over HTTP (medians)",
        "",
        "| server | conns | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | server CPU | "
        "wrk CPU | other CPU | mean batch | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, e in s.items():
        server, c = key.rsplit("_c", 1)
        lines.append(
            f"| {server} | {c} | {fmt(e['req_s'], 0)} | {fmt(e['p50_ms'])} | {fmt(e['p90_ms'])} "
            f"| {fmt(e['p99_ms'])} | {fmt(e['p999_ms'])} | {e['server_cpu']:.0%} | "
            f"{e['wrk_cpu']:.0%} | {e['other_cpu']:.0%} | "
            f"{fmt(e.get('mean_batch'))} | {e['non_2xx']} | {e['socket_errors']} |"
        )
    other = max(r["other_cpu"] for r in result["runs"])
    lines += [
        "",
        "CPU columns are CPU time over the run's wall time (100 % = one core): the server "
        "process (all threads), wrk, and everything else on the machine during the run.",
    ]
    if other > 0.1:
        lines += [
            "",
            f"**Caveat:** other processes used up to {other:.0%} of a core during some runs "
            "(the machine was shared while this ran); those runs are slower and noisier than "
            "an idle machine would give. See the per-run table.",
        ]
    lines += [
        "",
        "## Per-run raw numbers",
        "",
        "| run | server | conns | requests | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | "
        "max ms | server CPU | wrk CPU | other CPU | batches | mean batch | non-2xx | "
        "socket errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        met = r.get("metrics") or {}
        lines.append(
            f"| {r['run']} | {r['server']} | {r['connections']} | {fmt(r['requests'])} | "
            f"{fmt(r['req_s'], 0)} | {fmt(r['p50_ms'])} | {fmt(r['p90_ms'])} | "
            f"{fmt(r['p99_ms'])} | {fmt(r['p999_ms'])} | {fmt(r['max_ms'])} | "
            f"{r['server_cpu']:.0%} | {r['wrk_cpu']:.0%} | {r['other_cpu']:.0%} | "
            f"{fmt(met.get('batches'))} | "
            f"{fmt(r.get('mean_batch'))} | {r['non_2xx']} | {r['socket_errors']} |"
        )
    outcomes = result["modelport_outcomes"]
    lines += [
        "",
        "modelport's own request counter over the measured runs, by outcome: "
        + (", ".join(f"{k} {v:,}" for k, v in outcomes.items()) or "none"),
        "",
        "## Compute limit (raw onnxruntime, in-process)",
        "",
        "The ranker ONNX file run by onnxruntime in this process with the server's session "
        "options (intra_op_num_threads 1, inter_op_num_threads 1, ORT_ENABLE_ALL), one call "
        f"per batch, median of {cfg['compute_repeats']} x {cfg['compute_seconds']:g} s. "
        f"Other processes used {result['compute_other_cpu']:.0%} of a core meanwhile.",
        "",
        "| batch | rows/s | µs per call | note |",
        "|---|---|---|---|",
    ]
    for row in result["compute_limit"]:
        lines.append(
            f"| {row['batch']} | {fmt(row['rows_s'])} | {fmt(row['us_per_call'], 1)} | "
            f"{row.get('note', '')} |"
        )
    mp = s.get(f"modelport_c{cfg['connections'][-1]}")
    cl = result.get("compute_at_observed_batch")
    if mp and cl:
        share = mp["req_s"] / cl["rows_s"]
        lines += [
            "",
            f"At -c{cfg['connections'][-1]} modelport served {fmt(mp['req_s'], 0)} rows/s with a "
            f"mean batch of {fmt(mp['mean_batch'])}; onnxruntime alone does "
            f"{fmt(cl['rows_s'])} rows/s at batch {cl['batch']}, so the model computation "
            f"needs about {share:.1%} of one core at that rate: the rest is HTTP, JSON and "
            "batching overhead.",
        ]
    mini = result.get("minilm")
    if mini:
        lines += [
            "",
            "## minilm (sentence embeddings)",
            "",
            "A second server with `minilm` also registered (demo config: "
            f"{_minilm_config_text()}). One ~20-word "
            f"English sentence per request (BYTES, {len(SENTENCES)} sentences cycled), "
            f"wrk -t1, {mini['duration']:g} s per point after a warmup.",
            "",
            "| mode | sentences/s | p50 ms | p99 ms | mean batch | server CPU | other CPU | "
            "non-2xx |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, r in (
            ("sequential, -c1", mini["sequential"]),
            (f"concurrent, -c{mini['concurrency']}", mini["concurrent"]),
        ):
            lines.append(
                f"| {label} | {fmt(r['req_s'], 1)} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                f"{fmt(r.get('mean_batch'))} | {r['server_cpu']:.0%} | {r['other_cpu']:.0%} | "
                f"{r['non_2xx']} |"
            )
        if mini.get("inprocess"):
            lines += [
                "",
                "In-process (modelport's text-embedding runtime: tokenise, encoder, mean pooling, "
                "L2 norm; same session options, intra_op_threads 2; other processes used "
                f"{mini.get('inprocess_other_cpu', float('nan')):.0%} of a core meanwhile):",
                "",
                "| batch | sentences/s | ms per call |",
                "|---|---|---|",
            ]
            for r in mini["inprocess"]:
                lines.append(
                    f"| {r['batch']} | {fmt(r['sentences_s'], 1)} | {fmt(r['ms_per_call'])} |"
                )
    lines.append("")
    return "\n".join(lines)


def print_summary(result: dict[str, Any]) -> None:
    print("\n=== ranker over HTTP (medians) ===")
    print(
        f"{'server':<10}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'p99.9':>9}{'cpu':>6}{'batch':>8}{'non2xx':>8}"
    )
    for key, e in result["summary"].items():
        server, c = key.rsplit("_c", 1)
        print(
            f"{server:<10}{c:>6}{e['req_s']:>10,.0f}{e['p50_ms']:>9.2f}{e['p90_ms']:>9.2f}"
            f"{e['p99_ms']:>9.2f}{e['p999_ms']:>9.2f}{e['server_cpu']:>6.0%}"
            f"{fmt(e.get('mean_batch')):>8}{e['non_2xx']:>8}"
        )
    print("\n=== compute limit (raw onnxruntime, rows/s) ===")
    for row in result["compute_limit"]:
        print(
            f"  batch {row['batch']:>4}: {row['rows_s']:>12,} rows/s  "
            f"{row['us_per_call']:>8.1f} us/call  {row.get('note', '')}"
        )
    mini = result.get("minilm")
    if mini:
        print("\n=== minilm (sentences/s) ===")
        print(
            f"  sequential -c1: {mini['sequential']['req_s']:.1f}  "
            f"(p50 {mini['sequential']['p50_ms']:.1f} ms)"
        )
        print(
            f"  concurrent -c{mini['concurrency']}: {mini['concurrent']['req_s']:.1f}  "
            f"(p50 {mini['concurrent']['p50_ms']:.1f} ms, "
            f"mean batch {fmt(mini['concurrent'].get('mean_batch'))})"
        )
        for r in mini.get("inprocess", []):
            print(f"  in-process batch {r['batch']}: {r['sentences_s']:.1f}")
    print("\n=== targets ===")
    for target in result["targets"].values():
        mark = "INFO" if target["pass"] is None else ("PASS" if target["pass"] else "FAIL")
        print(f"  [{mark}] {target['target']}: {target['measured']}")
