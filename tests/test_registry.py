"""The model registry on its own: run numbers, lookup by spec and data, pruning, crash leftovers."""

from __future__ import annotations

from pathlib import Path

from pipelines.registry import KEEP_RUNS, ModelRegistry
from pipelines.versions import Candidate, Serving


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


def test_pruning_keeps_the_serving_run_the_candidate_and_those_served_before(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    for n in range(1, 4):
        registry.store(meta(f"data{n}"), write_model)
    # Run 1 served, then run 2; run 3 lost its comparison and is a candidate.
    candidate = Candidate(run=3, version="3", mase=0.9, serving_mase=0.5, trained_at="2026-01-01T00:00:00Z")
    choice = Serving(1, "spec").moved_to(2, "spec", "rollback", candidate)
    registry.set_serving("m", choice)
    assert registry.serving("m") == choice and choice.previous == (1,)
    for n in range(4, KEEP_RUNS + 8):
        registry.store(meta(f"data{n}"), write_model)
    runs = sorted(int(p.name) for p in (tmp_path / "m" / "runs").iterdir())
    assert runs == [1, 2, 3, *range(8, KEEP_RUNS + 8)]
    assert [p.name for p in (tmp_path / "m").iterdir() if p.name.startswith(".")] == []


def test_a_version_is_found_by_run_number_or_by_a_version_no_other_run_has(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.store({**meta("a"), "model_version": "1.0"}, write_model)
    registry.store({**meta("b"), "model_version": "1.0"}, write_model)
    registry.store({**meta("c"), "model_version": "2.0"}, write_model)
    assert registry.version("m", "2")[0].run == 2
    assert registry.version("m", "2.0")[0].run == 3
    assert registry.version("m", "1.0") is None  # two runs carry it: name the run
    assert registry.version("m", "9") is None
    (tmp_path / "m" / "serving.json").write_text("{not json")
    assert registry.serving("m") is None  # an unreadable choice: the newest version serves
