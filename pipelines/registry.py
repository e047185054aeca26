"""ModelRegistry: trained versions under the data dir, found again by spec hash and data fingerprint.

Layout: `<data_dir>/models/<model>/runs/<run>/` holds the model files and `meta.json`. A run is
written to a temporary folder and renamed into place, so a crash never leaves a half-written version.
`<data_dir>/models/<model>/serving.json` says which run serves (pipelines/versions.py), replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.series import SeriesSet
from pipelines.versions import Serving
from spicepod import DatasetSpec, ModelSpec

# Bump when the feature design changes, so stored versions are retrained rather than misread.
FEATURES_VERSION = 5
KEEP_RUNS = 10  # stored runs kept per model; older ones are removed when a new one is written (not a pinned one)
SERVING_FILE = "serving.json"

log = logging.getLogger("flightcast.pipelines")


@dataclass(frozen=True)
class VersionMeta:
    """What is stored with each trained version."""

    model_name: str
    model_version: str  # the tag, or the run number
    run: int
    spec_hash: str
    data_fingerprint: str
    metrics: dict[str, float | None]
    trained_at: str
    training_rows: int
    frequency: str
    value_column: str
    training_seconds: float
    strategy: str = "recursive"  # the strategy trained (auto resolves to one)
    series_count: int = 1
    backtest_windows: int = 0
    calibration_errors: int = 0
    strategy_mase: dict[str, float | None] | None = None  # strategy auto: each candidate's backtest MASE
    # each candidate method's backtest MASE and the number of series it serves (a portfolio's)
    methods: dict[str, dict[str, Any]] | None = None
    # the newest period of the data it was trained on (microseconds, UTC): anomaly detection checks the periods
    # after it of a series it has not checked yet
    newest_period: int | None = None


def spec_hash(spec: ModelSpec, dataset: DatasetSpec | None) -> str:
    """A hash of everything in a model's spec (and its dataset's) that changes what training produces."""
    doc = {
        "series_column": dataset.series_column if dataset else None,
        "fill": spec.fill,
        "aggregate": spec.aggregate,
        "backtest_windows": spec.backtest_windows,
        "features": FEATURES_VERSION,
        "source": spec.source,
        "datasets": list(spec.datasets),
        "value_column": spec.value_column,
        "lookback": spec.lookback,
        "horizon": spec.horizon,
        "frequency": spec.frequency,
        "strategy": spec.strategy,
        "lightgbm": dict(sorted(spec.lightgbm.items())),
        "method": spec.method,
        "bounds": spec.bounds,
        "week_start": spec.week_start,
        "covariates": [dict(c) for c in spec.covariates],
        "static": list(spec.static),
        "calendar": list(spec.calendar),
        "holidays": spec.holidays,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def series_digests(series: SeriesSet) -> bytes:
    """A 16-byte digest of each series (id, grid timestamps, values), concatenated in the set's order."""
    digests = []
    drivers = series.drivers
    for i, (sid, times, values) in enumerate(zip(series.ids, series.times, series.values, strict=True)):
        digest = hashlib.blake2b(digest_size=16)
        digest.update(b"\x00" if sid is None else sid.encode("utf-8") + b"\x01")
        digest.update(np.ascontiguousarray(times.astype("datetime64[us]")).tobytes())
        digest.update(np.ascontiguousarray(values.astype(np.float64)).tobytes())
        if drivers is not None:  # the drivers' values over the observed periods (future ones change often)
            for name in sorted(drivers.covariates):
                digest.update(name.encode() + repr(drivers.covariates[name][i][:values.size].tolist()).encode())
            for name in sorted(drivers.static):
                digest.update(name.encode() + repr(drivers.static[name][i]).encode())
        digests.append(digest.digest())
    return b"".join(digests)


def fingerprint_of(digests: bytes) -> str:
    """The data fingerprint from per-series digests in id order: the same however the series were chunked."""
    return hashlib.sha256(digests).hexdigest()


def data_fingerprint(series: SeriesSet) -> str:
    """A hash of the series a model trains on: ids, grid timestamps and values."""
    return fingerprint_of(series_digests(series))


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelRegistry:
    """Finds, writes and lists stored versions of models."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _runs(self, model: str) -> Path:
        return self.root / model / "runs"

    def versions(self, model: str) -> list[tuple[VersionMeta, Path]]:
        """Stored versions of a model, oldest run first; unreadable ones are skipped."""
        runs = self._runs(model)
        found = []
        if runs.is_dir():
            for entry in runs.iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    meta = VersionMeta(**json.loads((entry / "meta.json").read_text()))
                except (OSError, ValueError, TypeError):
                    continue
                found.append((meta, entry))
        return sorted(found, key=lambda item: item[0].run)

    def version(self, model: str, version: str) -> tuple[VersionMeta, Path] | None:
        """The stored version named by its run number, or by its version when no other run has that one."""
        stored = self.versions(model)
        by_run = [item for item in stored if str(item[0].run) == version]
        by_version = [item for item in stored if item[0].model_version == version]
        if by_run:
            return by_run[0]
        return by_version[-1] if len(by_version) == 1 else None

    def serving(self, model: str) -> Serving | None:
        """Which run serves, as last chosen; None before any choice (or when the file cannot be read)."""
        path = self.root / model / SERVING_FILE
        try:
            return Serving.from_doc(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("model %s: cannot read %s (%s); serving the newest version", model, path, exc)
            return None

    def set_serving(self, model: str, serving: Serving) -> None:
        """Write the serving choice atomically: a crash leaves the old file or the new one, never half of one.

        Callers hold the model's serve lock, so any other temporary file is one a crash left behind.
        """
        folder = self.root / model
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob(".serving-*"):
            leftover.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".serving-", dir=folder)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(serving.to_doc(), handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, folder / SERVING_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync(folder)

    def find(self, model: str, spec_digest: str, fingerprint: str) -> tuple[VersionMeta, Path] | None:
        """The newest stored version trained from this spec on this data, if any."""
        for meta, path in reversed(self.versions(model)):
            if meta.spec_hash == spec_digest and meta.data_fingerprint == fingerprint:
                return meta, path
        return None

    def next_run(self, model: str) -> int:
        """One more than any run folder, readable or not: a run number is never reused."""
        runs = self._runs(model)
        taken = [int(p.name) for p in runs.iterdir() if p.name.isdigit()] if runs.is_dir() else []
        return max(taken, default=0) + 1

    def store(self, meta_fields: dict[str, Any], save: Any) -> tuple[VersionMeta, Path]:
        """Write a new run: `save(folder)` writes the model files, then the folder is moved into place."""
        model = meta_fields["model_name"]
        runs = self._runs(model)
        runs.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=runs))
        try:
            save(staging)
            run = self.next_run(model)
            meta = VersionMeta(run=run, **{**meta_fields, "model_version": meta_fields["model_version"] or str(run)})
            (staging / "meta.json").write_text(json.dumps(asdict(meta), indent=2))
            for item in staging.iterdir():
                _fsync(item)
            final = runs / str(run)
            os.rename(staging, final)
            _fsync(runs)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        serving = self.serving(model)
        self._prune(runs, keep_from=run - KEEP_RUNS + 1, staging=staging,
                    pinned=serving.pinned() if serving else frozenset())
        return meta, final

    @staticmethod
    def _prune(runs: Path, keep_from: int, staging: Path, pinned: frozenset[int]) -> None:
        """Drop runs older than the newest KEEP_RUNS (never a pinned one: serving, candidate, served before),
        and staging folders a crash left behind.

        Trainings of one model never overlap, so any other staging folder is a leftover.
        """
        for entry in runs.iterdir():
            stale_run = entry.name.isdigit() and int(entry.name) < keep_from and int(entry.name) not in pinned
            if stale_run or (entry.name.startswith(".staging-") and entry != staging):
                shutil.rmtree(entry, ignore_errors=True)


def _fsync(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
