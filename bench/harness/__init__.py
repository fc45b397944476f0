"""What modelport's benchmarks share: servers, load, measurements and reports.

A scenario script (``bench/infer_throughput.py``, ``releases.py``, ``cache.py``,
``features.py``, ``features_join.py``) sets up a fresh registry in a temporary folder
(``registry``), starts modelport through its CLI and the floors it is compared with
(``servers``, ``processes``), loads them with wrk (``wrk``, ``measure``) while accounting
for the machine's CPU (``cpu``) and reading modelport's ``/metrics`` (``metrics``), and writes
a Markdown report with its JSON under ``docs/benchmarks`` (``report``); ``cli`` holds the
options every script takes, ``--quick`` among them. The scripts run from the repository root
as ``.venv/bin/python bench/<script>.py``, which puts ``bench/`` on the import path.
"""

from harness.bodies import SENTENCES, minilm_bodies, ranker_body, write_bodies
from harness.client import call_json, check_answer, request
from harness.cpu import OtherLoad, wait_for_quiet
from harness.measure import interleaved, latency_summary, load, median, medians, quantile
from harness.metrics import batch_delta, cache_delta, histogram_delta, scrape, scrape_cache
from harness.processes import HOST, Processes, Server
from harness.registry import (
    BENCH_TENANT,
    MINILM,
    RANKER,
    demo_config,
    demo_model,
    in_registry,
    issue_key,
    open_services,
    registry_settings,
)
from harness.report import (
    REPO,
    command_line,
    cpu_model,
    fmt,
    machine_info,
    package_version,
    run_scenario,
    write_report,
)
from harness.servers import start_batching_floor, start_floor, start_modelport
from harness.wrk import MIXED_SCRIPT, POST_SCRIPT, run_wrk

__all__ = [
    "BENCH_TENANT",
    "HOST",
    "MINILM",
    "MIXED_SCRIPT",
    "POST_SCRIPT",
    "RANKER",
    "REPO",
    "SENTENCES",
    "OtherLoad",
    "Processes",
    "Server",
    "batch_delta",
    "cache_delta",
    "call_json",
    "check_answer",
    "command_line",
    "cpu_model",
    "demo_config",
    "demo_model",
    "fmt",
    "histogram_delta",
    "in_registry",
    "interleaved",
    "issue_key",
    "latency_summary",
    "load",
    "machine_info",
    "median",
    "medians",
    "minilm_bodies",
    "open_services",
    "package_version",
    "quantile",
    "ranker_body",
    "registry_settings",
    "request",
    "run_scenario",
    "run_wrk",
    "scrape",
    "scrape_cache",
    "start_batching_floor",
    "start_floor",
    "start_modelport",
    "wait_for_quiet",
    "write_bodies",
    "write_report",
]
