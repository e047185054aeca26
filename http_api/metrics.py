"""Prometheus metrics of the runtime (exposed at GET /metrics), in a registry per app.

A registry per app (not prometheus_client's global one) lets several apps live in one process, as
tests do. Label values are bounded: routes are URL patterns, never raw paths, and a model name that
is not declared in the spicepod is counted as `(unknown)`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

UNKNOWN = "(unknown)"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TRAINING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class LabelledCounter:
    """A counter by label values, kept as plain numbers: what every request counts (prometheus_client's
    labelled Counter takes more than a microsecond per count, with its checks and locks). It is exposed
    with the samples that Counter has: `<name>_total` and `<name>_created` by label values."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry):
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], list[float]] = {}  # label values -> [count, created]
        registry.register(self)

    def inc(self, labels: tuple[str, ...]) -> None:
        with self._lock:
            value = self._values.get(labels)
            if value is None:
                self._values[labels] = [1.0, time.time()]
            else:
                value[0] += 1.0

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            for labels, (count, created) in self._values.items():
                family.add_metric(labels, count, created=created)
        yield family


class LatencyHistogram:
    """A histogram of seconds by label values, kept as plain numbers like LabelledCounter. It is exposed
    with the samples that prometheus_client's Histogram has: cumulative `_bucket`s, `_count`, `_sum` and
    `_created` by label values."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float],
                 registry: CollectorRegistry):
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._bounds = (*buckets, math.inf)
        self._le = [floatToGoString(bound) for bound in self._bounds]
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], list[float]] = {}  # label values -> [created, sum, count per bucket]
        registry.register(self)

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        with self._lock:
            value = self._values.get(labels)
            if value is None:
                value = self._values[labels] = [time.time(), 0.0] + [0.0] * len(self._bounds)
            value[1] += seconds
            value[2 + bisect.bisect_left(self._bounds, seconds)] += 1.0  # the first bucket with seconds <= le

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            values = [(labels, list(value)) for labels, value in self._values.items()]
        for labels, (created, total, *counts) in values:
            family.add_metric(labels, list(zip(self._le, itertools.accumulate(counts), strict=True)), total)
            named = dict(zip(self.labelnames, labels, strict=True))
            family.samples.append(Sample(f"{self.name}_created", named, created))
        yield family


class Metrics:
    """Counters and histograms of one app; thread-safe (handlers, worker threads and the trainer feed it)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = LabelledCounter(
            "flightcast_http_requests", "HTTP requests answered, by route pattern, method and status code",
            ["route", "method", "code"], r,
        )
        self.http_latency = LatencyHistogram(
            "flightcast_http_request_duration_seconds", "Time to answer an HTTP request, by route, method and code",
            ["route", "method", "code"], LATENCY_BUCKETS, r,
        )
        self.predictions = LabelledCounter(
            "flightcast_predictions", "Model predictions served (GET predict and batch items), by model and status",
            ["model", "status"], r,
        )
        self.prediction_latency = LatencyHistogram(
            "flightcast_prediction_duration_seconds", "Time to serve one model prediction, by model",
            ["model"], LATENCY_BUCKETS, r,
        )
        self.training_runs = Counter(
            "flightcast_training_runs", "Training runs finished, by model and status (success or failed)",
            ["model", "status"], registry=r,
        )
        self.training_duration = Histogram(
            "flightcast_training_duration_seconds", "Duration of training runs, by model",
            ["model"], buckets=TRAINING_BUCKETS, registry=r,
        )
        self.rows_ingested = Counter(
            "flightcast_rows_ingested", "Rows added to datasets (Flight DoPut) since the runtime started",
            ["dataset"], registry=r,
        )
        self.dataset_rows = Gauge(
            "flightcast_dataset_rows", "Rows in each dataset, as of the last scrape", ["dataset"], registry=r,
        )
        self.live_mase = Gauge(
            "flightcast_live_mase", "MASE of served forecasts scored against the actuals that arrived, by model",
            ["model"], registry=r,
        )
        self.live_points = Gauge(
            "flightcast_live_points_total", "Served forecast points scored against actuals, by model",
            ["model"], registry=r,
        )
        self.anomalies = Gauge(
            "flightcast_anomalies_total", "Arriving values found outside their one-step-ahead interval, by model",
            ["model"], registry=r,
        )
        self.drift = Gauge(
            "flightcast_drift", "Live MASE over the drift window divided by the backtest MASE, by model",
            ["model"], registry=r,
        )
        self.upkeep_backlog = Gauge(
            "flightcast_upkeep_backlog",
            "Datasets whose new data background upkeep (anomaly checks, live scoring) has not finished; 0 when idle",
            registry=r,
        )
        self._known_models: frozenset[str] | None = None
        self._baseline_rows: dict[str, int] = {}
        self._rows_lock = threading.Lock()

    def known_models(self, names: Iterable[str]) -> None:
        """Declared model names: any other name is labelled `(unknown)`, so clients cannot grow the label set."""
        self._known_models = frozenset(names)

    def _model_label(self, model: str) -> str:
        if self._known_models is not None and model not in self._known_models:
            return UNKNOWN
        return model

    def request(self, route: str, method: str, code: int, seconds: float) -> None:
        labels = (route, method, str(code))
        self.http_requests.inc(labels)
        self.http_latency.observe(labels, seconds)

    def prediction(self, model: str, status: str, seconds: float | None = None) -> None:
        label = self._model_label(model)
        self.predictions.inc((label, status))
        if seconds is not None:
            self.prediction_latency.observe((label,), seconds)

    def training(self, model: str, status: str, seconds: float) -> None:
        """One finished training run; `status` is `success` or `failed`. Meant as the trainer's callback."""
        label = self._model_label(model)
        self.training_runs.labels(label, status).inc()
        self.training_duration.labels(label).observe(seconds)

    def observe_datasets(self, datasets: Iterable[Mapping[str, Any]]) -> None:
        """Update row gauges from a datasets listing; growth since the first listing counts as ingested."""
        with self._rows_lock:
            for dataset in datasets:
                name, rows = dataset["name"], int(dataset.get("rows") or 0)
                self.dataset_rows.labels(name).set(rows)
                baseline = self._baseline_rows.setdefault(name, rows)
                if rows > baseline:
                    self.rows_ingested.labels(name).inc(rows - baseline)
                    self._baseline_rows[name] = rows
                else:
                    self.rows_ingested.labels(name).inc(0)  # the series exists from the start

    def observe_models(self, models: Iterable[Mapping[str, Any]]) -> None:
        """Live accuracy gauges from a models listing (models with no scored point yet show 0 points)."""
        for model in models:
            live = model.get("live_metrics") or {}
            name = self._model_label(model["name"])
            self.live_points.labels(name).set(live.get("points") or 0)
            if live.get("mase") is not None:
                self.live_mase.labels(name).set(live["mase"])
            if live.get("drift") is not None:
                self.drift.labels(name).set(live["drift"])

    def observe_anomalies(self, totals: Mapping[str, int]) -> None:
        """Anomaly counts per model (stored with the anomalies, so they survive a restart)."""
        for model, total in totals.items():
            self.anomalies.labels(self._model_label(model)).set(total)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
