"""`flightcast run` as a user starts it: --help-spicepod, bad addresses and grace periods, and a start-up that
cannot bind."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from conftest import copy_data, nile_spicepod, run_cli, write_spicepod

from spicepod import describe_keys


def test_help_spicepod_prints_every_key_and_exits_0(tmp_path: Path) -> None:
    result = run_cli(["run", "--help-spicepod"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == describe_keys()
    for key in ("lookback (default 30)", "horizon (default 1)", "time_format (default timestamp)", "value_column"):
        assert key in result.stdout
    assert "--help-spicepod" in run_cli(["run", "--help"], cwd=tmp_path).stdout


def test_a_bad_address_is_refused_by_the_parser(tmp_path: Path) -> None:
    result = run_cli(["run", "--http", "127.0.0.1:70000"], cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --http: expected HOST:PORT with a port from 0 to 65535, got '127.0.0.1:70000'" in result.stderr


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_a_shutdown_grace_that_is_not_seconds_is_refused_by_the_parser(tmp_path: Path, value: str) -> None:
    result = run_cli(["run", "--shutdown-grace", value], cwd=tmp_path)
    assert result.returncode == 2
    assert f"argument --shutdown-grace: expected a number of seconds, 0 or more, got '{value}'" in result.stderr


def test_a_port_in_use_stops_start_up_with_one_message_and_everything_stopped(tmp_path: Path) -> None:
    copy_data("nile.csv", tmp_path)
    pod = write_spicepod(tmp_path, nile_spicepod("cli"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_cli(["run", "--spicepod", str(pod), "--http", f"127.0.0.1:{port}", "--flight", "127.0.0.1:0",
                          "--data-dir", str(tmp_path / "store")], cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.rstrip().endswith(f"flightcast: cannot serve HTTP on 127.0.0.1:{port}: Address already in use")
    assert "flightcast: flight listening on" in result.stderr  # started, then stopped on the way out
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30

