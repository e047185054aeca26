"""Prometheus metrics of the runtime (exposed at GET /metrics)."""

from __future__ import annotations


class Metrics:
    """Counters and histograms; filled in by the handlers."""

    def prediction(self, model: str, status: str) -> None:
        return None
