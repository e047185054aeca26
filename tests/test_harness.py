"""The in-process launcher: a runtime that fails on its way up raises that error once, and stops cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import InProcessRuntime, write_csv_text, write_spicepod

from spicepod import SpicepodError

POD = """
version: v1
kind: Spicepod
name: broken
datasets:
  - from: file:data.csv
    name: d
"""


def test_a_start_up_failure_is_raised_once_and_nothing_is_left_running(tmp_path: Path) -> None:
    write_csv_text(tmp_path / "data.csv", "when,value\n2024-01-01,1.0\n")  # no `ts` column
    runtime = InProcessRuntime(write_spicepod(tmp_path, POD), tmp_path / "store")
    with pytest.raises(SpicepodError, match="ts"):
        runtime.start()
    assert not runtime.running
    runtime.stop()  # nothing left to stop and nothing raised again
    fixed = InProcessRuntime(write_spicepod(tmp_path, POD.replace("data.csv", "good.csv")), tmp_path / "store")
    write_csv_text(tmp_path / "good.csv", "ts,value\n2024-01-01,1.0\n")
    fixed.start()  # the store of the failed start was closed: the same data dir opens again
    try:
        assert fixed.get("/v1/datasets").json()[0]["rows"] == 1
    finally:
        fixed.stop()
