"""What modelport's ``/metrics`` says about a run: read before and after, and differenced.

Per model: batch sizes and request outcomes (``scrape``/``batch_delta``), cache results and
the server-side request-latency histogram (``scrape_cache``/``cache_delta``/
``histogram_delta``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from harness.client import request
from harness.processes import Server


def _samples(server: Server) -> Iterator[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = request(server, "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    for family in text_string_to_metric_families(body.decode()):
        yield from family.samples


def scrape(server: Server) -> dict[str, dict[str, float]]:
    """Per model: batch_sum, batch_count and one entry per request outcome."""
    out: dict[str, dict[str, float]] = {}
    for sample in _samples(server):
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


def batch_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], model: str
) -> dict[str, Any]:
    """Batches, rows, mean batch and outcomes of ``model`` between two scrapes."""
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


def scrape_cache(server: Server) -> dict[str, Any]:
    """Per model: cache results and the request-latency histogram (cumulative buckets)."""
    out: dict[str, Any] = {}
    for sample in _samples(server):
        model = sample.labels.get("model")
        if model is None:
            continue
        entry = out.setdefault(model, {"cache": {}, "buckets": {}, "count": 0.0})
        if sample.name == "modelport_cache_requests_total":
            entry["cache"][sample.labels["result"]] = sample.value
        elif sample.name == "modelport_inference_request_seconds_bucket":
            le = float(sample.labels["le"])
            entry["buckets"][le] = entry["buckets"].get(le, 0.0) + sample.value
        elif sample.name == "modelport_inference_request_seconds_count":
            entry["count"] += sample.value
    return out


def cache_delta(before: dict[str, Any], after: dict[str, Any], model: str) -> dict[str, int]:
    """Cache results of ``model`` between two ``scrape_cache`` reads (non-zero ones)."""
    a, b = after.get(model, {}).get("cache", {}), before.get(model, {}).get("cache", {})
    return {k: int(v - b.get(k, 0.0)) for k, v in a.items() if v - b.get(k, 0.0)}


def histogram_delta(before: dict[str, Any], after: dict[str, Any], model: str) -> dict[str, Any]:
    """p50 of the server-side latency over a run, from the bucket counts: the bucket it falls in
    and a linear interpolation inside it."""
    a, b = after[model]["buckets"], before.get(model, {}).get("buckets", {})
    bounds = sorted(a)
    cumulative = [(le, a[le] - b.get(le, 0.0)) for le in bounds]
    total = cumulative[-1][1]
    share = {f"le_{le * 1000:g}ms": round(c / total, 4) for le, c in cumulative if le <= 0.002}
    lower, below = 0.0, 0.0
    for le, count in cumulative:
        if count >= total / 2:
            inside = count - below
            p50 = lower + (le - lower) * ((total / 2 - below) / inside if inside else 0.0)
            return {
                "requests": int(total),
                "p50_bucket_ms": [lower * 1000, le * 1000],
                "p50_ms_interpolated": round(p50 * 1000, 4),
                "share_at_or_below": share,
            }
        lower, below = le, count
    raise RuntimeError("empty histogram")
