"""Inference throughput of modelport against the HTTP floor, on this machine, in one run.

    .venv/bin/python bench/infer_throughput.py                         # full run (make bench)
    .venv/bin/python bench/infer_throughput.py --duration 3 --runs 1   # quick smoke run

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
7. prints a summary and writes ``docs/benchmarks/inference.md`` and ``inference.json``.

Servers bind 127.0.0.1 only and are stopped on exit, Ctrl-C or error. Needs ``wrk``
(``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
LUA_SCRIPT = BENCH / "oip_post.lua"
FLOOR_APP = BENCH / "floor_app.py"
BATCHING_FLOOR_APP = BENCH / "batching_floor_app.py"
DEFAULT_OUT = REPO / "docs" / "benchmarks"
HOST = "127.0.0.1"

TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0
RANKER = "ranker"
MINILM = "minilm"

# ~20-word English sentences for minilm (each request carries one).
SENTENCES = [
    "The small bakery on the corner opens at six every morning and sells out of bread by noon.",
    "Our team shipped the new search feature last week after three months of careful testing "
    "with users.",
    "Heavy rain is expected across the northern coast tonight, so drivers should allow extra "
    "time tomorrow.",
    "She learned to play the violin as a child and still practises for an hour every evening.",
    "The museum will reopen its modern art wing in spring after a long and expensive "
    "renovation project.",
    "Customers who ordered before Friday will receive their packages by Tuesday at the latest, "
    "the company said.",
    "A quiet train ride through the mountains is one of the best ways to see the country in "
    "autumn.",
    "The new policy lets employees work from home two days a week if their managers agree to it.",
    "Scientists found that the river's water quality improved sharply once the old factory "
    "finally closed down.",
    "He forgot his umbrella at the office again and walked home through the cold evening rain.",
    "The recipe calls for two cups of flour, one egg, a pinch of salt and warm milk.",
    "Local farmers expect a smaller harvest this year because the summer was unusually hot "
    "and dry.",
    "Please restart the application after installing the update so that the changes can take "
    "effect properly.",
    "The children built a large sandcastle near the water and watched the tide slowly wash "
    "it away.",
    "Ticket prices for the final match rose sharply after both teams won their semi-final "
    "games easily.",
    "The library extended its opening hours during exam season so students have more quiet "
    "space to study.",
]


# --------------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Processes:
    """Every server this run starts; ``stop_all`` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    def start(
        self, name: str, argv: list[str], port: int, env: dict[str, str], cwd: Path, log_path: Path
    ) -> Server:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        server = Server(name, proc, port, log_path)
        self.servers.append(server)
        return server

    def stop(self, server: Server) -> None:
        proc = server.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        for server in list(self.servers):
            with contextlib.suppress(Exception):
                self.stop(server)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


#: modelport runs with authentication on, as shipped: a platform admin key for /metrics and a
#: key of the benchmark tenant for inference.
BENCH_TENANT = "bench"
ADMIN_KEY = "mpadmin_" + secrets.token_urlsafe(32)
KEYS: dict[str, str] = {}


def auth_header(url: str) -> dict[str, str]:
    if url.endswith("/metrics"):
        return {"Authorization": f"Bearer {ADMIN_KEY}"}
    if "tenant" in KEYS:
        return {"Authorization": f"Bearer {KEYS['tenant']}"}
    return {}


def http(url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    assert url.startswith(f"http://{HOST}:"), url  # loopback only
    headers = {"Content-Type": "application/json"} if body is not None else {}
    headers.update(auth_header(url))
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def wait_ready(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with code {server.proc.returncode} while starting:\n"
                f"{server.log_tail()}"
            )
        with contextlib.suppress(OSError):
            status, _ = http(server.url(path), timeout=2.0)
            if status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s:\n{server.log_tail()}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


class OtherLoad:
    """CPU used by everything but this process (and its children) while the block runs."""

    def __enter__(self) -> OtherLoad:
        self._busy, self._own, self._t = machine_cpu()[0], self._own_cpu(), time.monotonic()
        self.cores = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._t
        other = (machine_cpu()[0] - self._busy) - (self._own_cpu() - self._own)
        self.cores = round(max(0.0, other) / wall, 3) if wall > 0 else float("nan")

    @staticmethod
    def _own_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime + children_cpu()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (up to ``max_wait`` s) until the machine is idle apart from us; return the last
    one-second sample of busy cores. Other work on the machine skews every number here."""
    if max_wait <= 0:
        return float("nan")
    start = time.monotonic()
    while True:
        busy0, t0 = machine_cpu()[0], time.monotonic()
        time.sleep(1.0)
        busy = (machine_cpu()[0] - busy0) / (time.monotonic() - t0)
        waited = time.monotonic() - start
        if busy < threshold or waited >= max_wait:
            if waited > 1.5 or busy >= threshold:
                print(f"  (waited {waited:.0f} s for other load to settle: {busy:.2f} cores busy)")
            return round(busy, 3)


# --------------------------------------------------------------------------- modelport


def modelport_env(workdir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    env.update(
        MODELPORT_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'modelport.db'}",
        MODELPORT_ARTIFACTS_URI=str(workdir / "artifacts"),
        MODELPORT_CACHE_DIR=str(workdir / "cache"),
        MODELPORT_HOST=HOST,
        MODELPORT_PORT=str(port),
        MODELPORT_ADMIN_KEY=ADMIN_KEY,
    )
    return env


def register(workdir: Path, name: str) -> Path:
    """Build a demo model and push it with its demo config through modelport's registry."""
    from modelport.container import build_services
    from modelport.demo.models import build_minilm, build_ranker, minilm_config, ranker_config
    from modelport.settings import Settings

    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{workdir / 'modelport.db'}",
        artifacts_uri=str(workdir / "artifacts"),
        cache_dir=workdir / "cache",
    )
    if name == RANKER:
        path, config = build_ranker(workdir / "build" / "ranker.onnx"), ranker_config()
    else:
        path, config = build_minilm(workdir / "build" / "minilm"), minilm_config()

    async def push() -> None:
        services = await build_services(settings)
        try:
            await services.tenancy.ensure_tenant(BENCH_TENANT)
            await services.registry.push(
                BENCH_TENANT, name, path, config, required=True, created_by="bench"
            )
            if "tenant" not in KEYS:
                issued = await services.tenancy.create_key(BENCH_TENANT, ["infer", "read"])
                KEYS["tenant"] = issued.secret
        finally:
            await services.close()

    asyncio.run(push())
    return path


def start_modelport(
    procs: Processes, workdir: Path, ready_timeout: float, *, plain: bool = False
) -> Server:
    """modelport as shipped; with ``plain``, the same sources without their compiled modules
    (what ``make pure`` or a machine without a C compiler runs), as server ``plain``."""
    port = free_port()
    env = modelport_env(workdir, port)
    name = "modelport"
    if plain:
        name = "plain"
        copy = workdir / "plain-src"
        if not copy.exists():
            shutil.copytree(
                REPO / "src" / "modelport",
                copy / "modelport",
                ignore=shutil.ignore_patterns("*.so", "__pycache__"),
            )
        env["PYTHONPATH"] = str(copy)  # ahead of the editable install's src/
    server = procs.start(
        name,
        [sys.executable, "-m", "modelport", "serve"],
        port,
        env,
        workdir,
        workdir / f"{name}-{port}.log",
    )
    wait_ready(server, "/v2/health/ready", ready_timeout)
    return server


def compiled_modules() -> tuple[int, int]:
    """How many of the request path's modules the server here runs compiled, of how many."""
    from modelport import compiled

    return len(compiled.running()), len(compiled.MODULES)


def start_floor(procs: Processes, workdir: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    server = procs.start(
        "floor",
        [sys.executable, str(FLOOR_APP), "--port", str(port)],
        port,
        env,
        workdir,
        workdir / f"floor-{port}.log",
    )
    wait_ready(server, "/", 30)
    return server


def start_batching_floor(procs: Processes, workdir: Path, model: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    server = procs.start(
        "batching",
        [sys.executable, str(BATCHING_FLOOR_APP), "--port", str(port), "--model", str(model)],
        port,
        env,
        workdir,
        workdir / f"batching-floor-{port}.log",
    )
    wait_ready(server, "/", 30)
    return server


def scrape(server: Server) -> dict[str, dict[str, float]]:
    """Per model: batch_sum, batch_count and one entry per request outcome."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http(server.url("/metrics"))
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            entry = out.setdefault(model, {})
            if sample.name == "modelport_batch_size_sum":
                entry["batch_sum"] = entry.get("batch_sum", 0.0) + sample.value
            elif sample.name == "modelport_batch_size_count":
                entry["batch_count"] = entry.get("batch_count", 0.0) + sample.value
            elif sample.name == "modelport_inference_requests_total":
                key = f"outcome:{sample.labels.get('outcome', '?')}"
                entry[key] = entry.get(key, 0.0) + sample.value
    return out


def metrics_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], model: str
) -> dict[str, Any]:
    a, b = after.get(model, {}), before.get(model, {})
    diff = {k: a.get(k, 0.0) - b.get(k, 0.0) for k in a}
    count = diff.get("batch_count", 0.0)
    return {
        "batches": int(count),
        "rows": int(diff.get("batch_sum", 0.0)),
        "mean_batch": diff.get("batch_sum", 0.0) / count if count else None,
        "outcomes": {
            k.split(":", 1)[1]: int(v) for k, v in diff.items() if k.startswith("outcome:") and v
        },
    }


# --------------------------------------------------------------------------- load


def ranker_body(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    row = [round(float(x), 6) for x in rng.standard_normal(64)]
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}
    return json.dumps(body, separators=(",", ":")).encode()


def minilm_bodies() -> list[bytes]:
    return [
        json.dumps(
            {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [s]}]},
            separators=(",", ":"),
        ).encode()
        for s in SENTENCES
    ]


def run_wrk(
    url: str, body_file: Path, connections: int, duration: float, threads: int
) -> dict[str, Any]:
    assert url.startswith(f"http://{HOST}:"), url
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    env = {**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_AUTH": KEYS.get("tenant", "")}
    done = subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    match = re.search(r"^BENCH_RESULT (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "req_s": round(raw["requests"] / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
        "mean_ms": round(raw["latency_mean_us"] / 1000, 3),
        "max_ms": raw["latency_max_us"] / 1000,
        "non_2xx": raw["non_2xx"],
        "socket_errors": raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
    }


def load(
    server: Server,
    path: str,
    body_file: Path,
    connections: int,
    duration: float,
    threads: int,
    model: str | None,
) -> dict[str, Any]:
    before = scrape(server) if model else {}
    (busy0, steal0), wrk0 = machine_cpu(), children_cpu()
    cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
    result = run_wrk(server.url(path), body_file, connections, duration, threads)
    cpu1, t1 = cpu_seconds(server.proc.pid), time.monotonic()
    (busy1, steal1), wrk1 = machine_cpu(), children_cpu()
    wall = t1 - t0
    result["server_cpu"] = round((cpu1 - cpu0) / wall, 3)
    result["wrk_cpu"] = round((wrk1 - wrk0) / wall, 3)
    # Whatever else ran on the machine meanwhile (other processes), in cores.
    other = (busy1 - busy0) - (cpu1 - cpu0) - (wrk1 - wrk0)
    result["other_cpu"] = round(max(0.0, other) / wall, 3)
    result["steal_cpu"] = round((steal1 - steal0) / wall, 3)
    if model:
        result["metrics"] = metrics_delta(before, scrape(server), model)
        result["mean_batch"] = result["metrics"]["mean_batch"]
    return {"server": server.name, "connections": connections, **result}


def check_answer(server: Server, path: str, body: bytes, output: str) -> None:
    status, answer = http(server.url(path), body)
    if status != 200:
        raise RuntimeError(f"{server.name} answered {status} to the benchmark body: {answer!r}")
    outputs = {o["name"]: o for o in json.loads(answer)["outputs"]}
    if output not in outputs:
        raise RuntimeError(f"{server.name} answered without output {output!r}: {answer!r}")


# --------------------------------------------------------------------------- in-process


def _timed(fn: Any, seconds: float, chunk: int = 10) -> tuple[int, float]:
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

    from modelport.demo.models import ranker_config
    from modelport.serving.runtimes.onnx import session_options

    runtime = ranker_config().runtime
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
    from modelport.demo.models import minilm_config
    from modelport.serving.runtimes.text_embedding import TextEmbeddingRuntime

    config = minilm_config()
    runtime = TextEmbeddingRuntime(folder, config.runtime)
    rows = []
    for batch in batch_sizes:
        texts = [SENTENCES[i % len(SENTENCES)].encode() for i in range(batch)]
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


# --------------------------------------------------------------------------- report


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "src"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "uvicorn": _version("uvicorn"),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "orjson": _version("orjson"),
        "modelport": _version("modelport"),
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0].strip()
        if (wrk.stdout or wrk.stderr)
        else "unknown",
        "git_commit": git.stdout.strip() or "unknown",
        "compiled_modules": compiled_modules(),
        "src_modified": bool(dirty.stdout.strip()),
    }


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarise(runs: list[dict[str, Any]], connections: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for server in ("floor", "batching", "modelport", "plain"):
        for c in connections:
            sel = [r for r in runs if r["server"] == server and r["connections"] == c]
            if not sel:
                continue
            entry: dict[str, Any] = {
                key: round(median([r[key] for r in sel]), 3)
                for key in (
                    "req_s",
                    "p50_ms",
                    "p90_ms",
                    "p99_ms",
                    "p999_ms",
                    "server_cpu",
                    "wrk_cpu",
                    "other_cpu",
                )
            }
            entry["non_2xx"] = sum(r["non_2xx"] for r in sel)
            entry["socket_errors"] = sum(r["socket_errors"] for r in sel)
            entry["runs"] = len(sel)
            if server in ("modelport", "plain"):
                rows = sum(r["metrics"]["rows"] for r in sel)
                batches = sum(r["metrics"]["batches"] for r in sel)
                entry["mean_batch"] = round(rows / batches, 2) if batches else None
            out[f"{server}_c{c}"] = entry
    return out


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _config_text(config: Any) -> str:
    b, r = config.batching, config.runtime
    return (
        f"max_batch_size {b.max_batch_size}, max_queue_delay_ms {b.max_queue_delay_ms:g}, "
        f"flush_when_idle {'on' if b.flush_when_idle else 'off'}, "
        f"intra_op_threads {r.intra_op_threads}"
        + (f", max_sequence_length {r.max_sequence_length}" if r.kind == "text-embedding" else "")
    )


def _ranker_config_text() -> str:
    from modelport.demo.models import ranker_config

    return _config_text(ranker_config())


def _minilm_config_text() -> str:
    from modelport.demo.models import minilm_config

    return _config_text(minilm_config())


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
        "(`src/modelport/compiled.py`), as `make pure` or a machine without a C compiler "
        "would.",
        "",
        "## Where the time goes",
        "",
        "The server is CPU-bound on its event-loop thread (server CPU column): the model "
        "itself needs well under 1 % of a core at these rates (compute-limit table), and the "
        "compute thread that runs onnxruntime uses a few % of a core. The batcher forms a "
        "batch as soon as requests stop arriving (`flush_when_idle`), so the loop does not "
        "sit out the queue delay with every client already queued. Per request, the loop "
        "thread spends about what the floor spends in total on uvicorn's protocol handling "
        "and the socket (`perf`: ~30 µs, two `write`s and one `read`), plus uvicorn's checks "
        "of the response headers the floor does not send (request id, version, nosniff), plus "
        "modelport's own work: parsing, the request plan's checks, authentication, quotas, "
        "routing, the batch hand-off (one future per request, a second task step, stacking "
        "and slicing), metrics and the response. That own work is compiled with mypyc "
        "(`make setup`; rows `plain` show the same code as Python) and no longer has a single "
        "hot spot. The batching floor shows what batching alone costs on this stack: even "
        "with nothing else, a server that batches pays a future, a second task step and its "
        "share of a batch per request, and stays well below the floor. The 50 % target "
        "therefore leaves modelport's own features (tenancy, quotas, validation, routing, "
        "request ids, metrics) only the gap between the batching floor and 50 %; compare "
        "modelport with the batching floor as well as with the floor when reading a new run.",
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


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=20, help="seconds per wrk run (20)")
    p.add_argument("--runs", type=int, default=3, help="runs per server and concurrency (3)")
    p.add_argument("--connections", default="16,64", help="wrk -c levels, comma-separated")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (1)")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds per server (3)")
    p.add_argument(
        "--minilm-duration", type=float, default=10, help="seconds per minilm point (10)"
    )
    p.add_argument("--minilm-concurrency", type=int, default=32, help="wrk -c for minilm (32)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30,
        help="before each run, wait up to this many seconds for other load to stop (30)",
    )
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
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT,
        help="where inference.md and inference.json go (docs/benchmarks)",
    )
    p.add_argument("--no-write", action="store_true", help="print only; write no report")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temp folder and logs")
    args = p.parse_args(argv)
    args.connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    if args.runs < 1 or args.duration <= 0 or not args.connections:
        p.error("--runs must be >= 1, --duration > 0 and --connections non-empty")
    return args


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def command_line() -> str:
    """The command that produced the report, relative to the repository root."""
    exe = Path(sys.executable)
    return shlex.join(
        [
            _relative(exe.parent.resolve() / exe.name),
            _relative(Path(sys.argv[0]).resolve()),
            *sys.argv[1:],
        ]
    )


def run_scenario(
    args: argparse.Namespace,
    bench_fn: Callable[[argparse.Namespace, Processes, Path], dict[str, Any]],
    render_fn: Callable[[dict[str, Any]], str],
    stem: str,
) -> int:
    """Run a wrk scenario of another bench script in a temp folder (its servers stopped
    afterwards), print its report and write ``<stem>.md`` / ``<stem>.json`` to
    ``args.out_dir`` unless ``args.no_write``."""
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with: apt-get install -y wrk", file=sys.stderr)
        return 2
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="modelport-bench-") as tmp, sigterm_as_exit():
        try:
            result = bench_fn(args, procs, Path(tmp))
        finally:
            procs.stop_all()
    report = render_fn(result)
    print()
    print(report)
    if not args.no_write:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / f"{stem}.md").write_text(report)
        (args.out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out_dir / f'{stem}.md'} and {args.out_dir / f'{stem}.json'}")
    return 0


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def bench(args: argparse.Namespace, procs: Processes, workdir: Path) -> dict[str, Any]:
    machine = machine_info()
    started = dt.datetime.now(dt.UTC)
    print(f"workdir {workdir}")
    print("registering ranker ...")
    ranker_path = register(workdir, RANKER)
    body = ranker_body()
    ranker_file = workdir / "ranker_body.json"
    ranker_file.write_bytes(body + b"\n")
    infer = f"/v2/models/{RANKER}/infer"

    print("starting modelport, the floor and the batching floor ...")
    modelport = start_modelport(procs, workdir, 120)
    floor = start_floor(procs, workdir)
    batching = start_batching_floor(procs, workdir, ranker_path)
    servers: list[tuple[Server, str | None]] = [
        (floor, None),
        (batching, None),
        (modelport, RANKER),
    ]
    if args.plain and machine["compiled_modules"][0]:
        servers.append((start_modelport(procs, workdir, 120, plain=True), RANKER))
    for server, _ in servers:
        check_answer(server, infer, body, "score")
        print(f"  {server.name} on {HOST}:{server.port}")

    top = args.connections[-1]
    if args.warmup > 0:
        print(f"warmup {args.warmup:g} s each at -c{top} ...")
        for server, model in servers:
            load(server, infer, ranker_file, top, args.warmup, args.threads, model)

    first = scrape(modelport)
    runs: list[dict[str, Any]] = []
    for run in range(1, args.runs + 1):
        for c in args.connections:
            for server, model in servers:
                idle = wait_for_quiet(args.quiet_wait)
                r = load(server, infer, ranker_file, c, args.duration, args.threads, model)
                r["run"] = run
                r["busy_before"] = idle
                runs.append(r)
                print(
                    f"  run {run} {server.name:<9} -c{c:<3} {r['req_s']:>9,.0f} req/s  "
                    f"p50 {r['p50_ms']:.2f}  p99 {r['p99_ms']:.2f} ms  "
                    f"cpu {r['server_cpu']:.0%}  batch {fmt(r.get('mean_batch'))}  "
                    f"non-2xx {r['non_2xx']}  other-cpu {r['other_cpu']:.2f}"
                )
    outcomes = metrics_delta(first, scrape(modelport), RANKER)["outcomes"]
    summary = summarise(runs, args.connections)
    for server, _ in servers:
        if server is not modelport:
            procs.stop(server)

    minilm: dict[str, Any] | None = None
    minilm_folder: Path | None = None
    if not args.skip_minilm:
        procs.stop(modelport)
        print("registering minilm and restarting modelport ...")
        minilm_folder = register(workdir, MINILM)
        modelport = start_modelport(procs, workdir, 300)
        bodies = minilm_bodies()
        minilm_file = workdir / "minilm_bodies.jsonl"
        minilm_file.write_bytes(b"\n".join(bodies) + b"\n")
        path = f"/v2/models/{MINILM}/infer"
        check_answer(modelport, path, bodies[0], "embedding")
        conc = args.minilm_concurrency
        load(modelport, path, minilm_file, conc, min(args.warmup, 3) or 1, 1, MINILM)
        wait_for_quiet(args.quiet_wait)
        seq = load(modelport, path, minilm_file, 1, args.minilm_duration, 1, MINILM)
        print(f"  minilm -c1   {seq['req_s']:.1f} sentences/s  p50 {seq['p50_ms']:.1f} ms")
        wait_for_quiet(args.quiet_wait)
        par = load(modelport, path, minilm_file, conc, args.minilm_duration, 1, MINILM)
        print(
            f"  minilm -c{conc:<3} {par['req_s']:.1f} sentences/s  p50 {par['p50_ms']:.1f} ms  "
            f"batch {fmt(par.get('mean_batch'))}"
        )
        minilm = {
            "duration": args.minilm_duration,
            "concurrency": conc,
            "sequential": seq,
            "concurrent": par,
        }
    procs.stop_all()

    print("measuring the compute limit in-process ...")
    observed = sorted(
        {
            max(1, round(e["mean_batch"]))
            for k, e in summary.items()
            if k.startswith("modelport") and e.get("mean_batch")
        }
    )
    sizes = sorted({1, 16, 32, 64, 128, *observed})
    wait_for_quiet(args.quiet_wait)
    with OtherLoad() as other:
        limit = compute_limit(ranker_path, sizes, args.compute_seconds, args.compute_repeats)
    compute_other = other.cores
    notes = {
        max(1, round(e["mean_batch"])): f"observed mean batch at -c{k.rsplit('_c', 1)[1]}"
        for k, e in summary.items()
        if k.startswith("modelport") and e.get("mean_batch")
    }
    for row in limit:
        if row["batch"] in notes:
            row["note"] = notes[row["batch"]]
    top_batch = summary.get(f"modelport_c{top}", {}).get("mean_batch")
    at_observed = next(
        (r for r in limit if top_batch and r["batch"] == max(1, round(top_batch))), None
    )
    if minilm is not None and minilm_folder is not None:
        batch = minilm["concurrent"].get("mean_batch")
        sizes = sorted({1, 32, *([max(1, round(batch))] if batch else [])})
        try:
            wait_for_quiet(args.quiet_wait)
            with OtherLoad() as other:
                minilm["inprocess"] = minilm_inprocess(
                    minilm_folder, sizes, max(args.compute_seconds, 2)
                )
            minilm["inprocess_other_cpu"] = other.cores
        except Exception as exc:  # noqa: BLE001 - optional extra; report it and carry on
            print(f"  minilm in-process measurement failed: {exc!r}")
            minilm["inprocess_error"] = repr(exc)

    floor_top, mp_top = summary[f"floor_c{top}"], summary[f"modelport_c{top}"]
    low = args.connections[0]
    mp_low = summary[f"modelport_c{low}"]
    worst_p99 = max(
        r["p99_ms"] for r in runs if r["server"] == "modelport" and r["connections"] == low
    )
    ratio = mp_top["req_s"] / floor_top["req_s"]
    batching_top = summary[f"batching_c{top}"]
    non_2xx = sum(r["non_2xx"] for r in runs if r["server"] == "modelport")
    sock = sum(r["socket_errors"] for r in runs if r["server"] == "modelport")
    targets = {
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
    return {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "machine": machine,
        "config": {
            "duration": args.duration,
            "runs": args.runs,
            "connections": args.connections,
            "wrk_threads": args.threads,
            "warmup": args.warmup,
            "compute_seconds": args.compute_seconds,
            "compute_repeats": args.compute_repeats,
            "ranker_body_bytes": len(body),
        },
        "targets": targets,
        "summary": summary,
        "runs": runs,
        "modelport_outcomes": outcomes,
        "compute_limit": limit,
        "compute_at_observed_batch": at_observed,
        "compute_other_cpu": compute_other,
        "minilm": minilm,
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with: apt-get install -y wrk", file=sys.stderr)
        return 2
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    try:
        with sigterm_as_exit():
            result = bench(args, procs, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if args.keep_workdir:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_summary(result)
    if not args.no_write:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "inference.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out_dir / "inference.md").write_text(render_markdown(result))
        print(f"\nwrote {args.out_dir / 'inference.md'} and {args.out_dir / 'inference.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
