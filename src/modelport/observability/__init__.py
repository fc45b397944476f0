"""Metrics (Prometheus) and structured logs (structlog JSON lines)."""
