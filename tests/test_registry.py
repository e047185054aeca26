"""The model registry on its own: run numbers, lookup by spec and data, pruning, crash leftovers."""

from __future__ import annotations

from pathlib import Path

from pipelines.registry import KEEP_RUNS, ModelRegistry


def meta(fingerprint: str) -> dict:
    return {
        "model_name": "m", "model_version": None, "spec_hash": "spec", "data_fingerprint": fingerprint,
        "metrics": {"mase": 0.5, "smape": 10.0}, "trained_at": "2026-01-01T00:00:00Z", "training_rows": 10,
        "frequency": "1d", "value_column": "value", "training_seconds": 0.1,
    }


def write_model(folder: Path) -> None:
    (folder / "model.txt").write_text("booster")


def test_runs_are_numbered_found_by_spec_and_data_and_pruned(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    leftover = tmp_path / "m" / "runs" / ".staging-crashed"
    leftover.mkdir(parents=True)
    for n in range(1, KEEP_RUNS + 3):
        stored, path = registry.store(meta(f"data{n}"), write_model)
        assert stored.run == n and stored.model_version == str(n)
        assert (path / "model.txt").read_text() == "booster"
    runs = sorted(int(p.name) for p in (tmp_path / "m" / "runs").iterdir())
    assert runs == list(range(3, KEEP_RUNS + 3))  # the oldest two are gone, and so is the crash leftover
    assert registry.find("m", "spec", "data1") is None
    found = registry.find("m", "spec", f"data{KEEP_RUNS + 2}")
    assert found is not None and found[0].run == KEEP_RUNS + 2
    assert registry.find("m", "other-spec", f"data{KEEP_RUNS + 2}") is None
    assert registry.next_run("m") == KEEP_RUNS + 3


def test_a_tag_names_the_version_and_runs_still_count(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first, _ = registry.store({**meta("a"), "model_version": "1.0"}, write_model)
    second, _ = registry.store({**meta("b"), "model_version": "1.0"}, write_model)
    assert (first.model_version, first.run) == ("1.0", 1)
    assert (second.model_version, second.run) == ("1.0", 2)
