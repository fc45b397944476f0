"""wrk as the load generator: one run with a Lua script, its ``BENCH_RESULT`` line parsed.

Both scripts (``bench/oip_post.lua``, ``bench/oip_mixed.lua``) POST the bodies of a file,
one per line, with the tenant's key, and print one JSON line of wrk's counts and latency
percentiles when the run ends. Settings reach the scripts as ``WRK_*`` environment variables.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.processes import HOST, PREEXEC

BENCH = Path(__file__).resolve().parents[1]
#: POST the bodies of ``WRK_BODY_FILE``, cycled.
POST_SCRIPT = BENCH / "oip_post.lua"
#: A hot set of repeated bodies mixed with never-seen ones (the response cache benchmark).
MIXED_SCRIPT = BENCH / "oip_mixed.lua"


def require_wrk() -> bool:
    """Whether wrk is installed; says how to install it when it is not."""
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with: apt-get install -y wrk", file=sys.stderr)
        return False
    return True


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    text = done.stdout or done.stderr
    return text.splitlines()[0].strip() if text else "unknown"


def run_wrk(
    url: str,
    body_file: Path,
    connections: int,
    duration: float,
    threads: int = 1,
    *,
    key: str = "",
    script: Path = POST_SCRIPT,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One ``wrk -tT -cC -dD --latency`` run; requests, req/s, latency percentiles (ms),
    non-2xx answers and socket errors."""
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
        str(script),
        url,
    ]
    full_env = {**os.environ, **(env or {}), "WRK_BODY_FILE": str(body_file), "WRK_AUTH": key}
    done = subprocess.run(
        argv,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
        preexec_fn=PREEXEC,
    )
    return parse_result(done.returncode, done.stdout, done.stderr)


def parse_result(returncode: int, stdout: str, stderr: str = "") -> dict[str, Any]:
    """The figures of a wrk run from the scripts' ``BENCH_RESULT {json}`` line."""
    match = re.search(r"^BENCH_RESULT (\{.*\})$", stdout, re.MULTILINE)
    if returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({returncode}):\n{stdout}\n{stderr}")
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
