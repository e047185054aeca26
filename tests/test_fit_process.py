"""Fits in a child process (the local engine's): the same model as a fit in this process, errors and log
records back here, and a fit under way killed when the runtime stops."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import REPO, wait_until
from test_portfolio import tourism

from pipelines.fit_process import ChildTraceback, FitProcesses
from pipelines.frequency import Frequency
from pipelines.series import SeriesSet
from pipelines.training import train_model
from spicepod import FlightcastError, InvalidInput

QUARTERLY = Frequency.parse("1q")
FIT = {"freq": QUARTERLY, "lookback": 8, "horizon": 4, "lightgbm_params": {"num_boost_round": 30},
       "dataset": "tourism"}


@pytest.fixture(scope="module")
def panel() -> SeriesSet:
    return tourism(12)


@pytest.fixture
def fits():
    fits = FitProcesses()
    yield fits
    fits.close()


@pytest.mark.parametrize(("method", "count"), [("lightgbm", 12), ("auto", 3)])
def test_a_fit_in_a_child_process_forecasts_exactly_as_one_in_this_process(fits, panel, method, count):
    panel = panel.subset(list(range(count)))
    child = fits.train(panel, method=method, **FIT)
    here = train_model(panel, method=method, **FIT)
    assert type(child) is type(here) and child.window_length == here.window_length
    windows = np.stack([values[-here.window_length:] for values in panel.values])
    last_times = np.array([times[-1] for times in panel.times])
    for got, want in zip(child.forecast_windows(windows, last_times, 4, panel.ids),
                         here.forecast_windows(windows, last_times, 4, panel.ids), strict=True):
        np.testing.assert_array_equal(got, want)
    assert child.metrics["mase"] == here.metrics["mase"]
    assert fits.running == 0


def test_an_error_in_the_fit_is_raised_here_with_its_kind_message_and_the_childs_traceback(fits, panel):
    with pytest.raises(InvalidInput, match="LightGBM rejected the training parameters") as caught:
        fits.train(panel, method="lightgbm", **{**FIT, "lightgbm_params": {"objective": "no_such_objective"}})
    assert isinstance(caught.value.__cause__, ChildTraceback)
    assert "train_lightgbm" in str(caught.value.__cause__)
    assert fits.running == 0


def test_the_fits_log_records_arrive_here_from_the_child(fits, panel, caplog):
    with caplog.at_level(logging.INFO, logger="flightcast.training"):
        fits.train(panel, method="seasonal_naive", **FIT)
    records = [r for r in caplog.records if r.name == "flightcast.training" and "tourism: methods" in r.message]
    assert len(records) == 1
    assert records[0].process != os.getpid()


def test_close_kills_a_fit_under_way_and_its_caller_gets_a_clear_error(panel):
    fits = FitProcesses()
    outcome: list[BaseException] = []

    def train() -> None:
        try:
            fits.train(panel, method="lightgbm", **{**FIT, "lightgbm_params": {"num_boost_round": 100_000}})
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=train)
    worker.start()
    wait_until(lambda: fits.running == 1, "the fit to start")
    if sys.platform.startswith("linux"):  # the fit takes only CPU time no one else wants, off the first core
        pid = fits.pids[0]
        wait_until(lambda: os.sched_getscheduler(pid) == os.SCHED_IDLE, "the fit to take the idle class")
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > 1:
            wait_until(lambda: sorted(os.sched_getaffinity(pid)) == cores[1:], "the fit to leave a core")
    fits.close()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert len(outcome) == 1 and type(outcome[0]) is FlightcastError
    assert "the training process ended without a result" in str(outcome[0])
    with pytest.raises(FlightcastError, match="the runtime is stopping: no training starts"):
        fits.train(panel, method="lightgbm", **FIT)


def test_a_model_whose_single_row_paths_were_made_pickles_and_forecasts_the_same(panel):
    """Dask workers get models pickled; the single-row paths point into this process and are made again there."""
    model = train_model(panel.subset([0]), method="lightgbm", **FIT)
    window = panel.values[0][None, -model.window_length:]
    last = np.array([panel.times[0][-1]])
    before = model.forecast_windows(window, last, 4, [panel.ids[0]])  # one window: through the single-row path
    copy = pickle.loads(pickle.dumps(model))
    for got, want in zip(copy.forecast_windows(window, last, 4, [panel.ids[0]]), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_lightgbm_core_imports_lightgbm_without_scikit_learn_and_pandas_and_hides_them_no_longer():
    """What `flightcast run` and the fit server import: LightGBM fits and predicts from numpy without the two
    integrations (most of its import time), which import as usual afterwards."""
    script = (
        "import sys, numpy as np\n"
        "import pipelines.lightgbm_core, lightgbm as lgb\n"
        "loaded = [m for m in ('sklearn', 'pandas') if m in sys.modules]\n"
        "booster = lgb.train({'verbosity': -1, 'num_threads': 1, 'seed': 0},\n"
        "                    lgb.Dataset(np.arange(40.0).reshape(20, 2), np.arange(20.0)), 3)\n"
        "assert booster.predict(np.zeros((2, 2))).shape == (2,)\n"
        "import importlib, importlib.util\n"
        "for name in ('sklearn', 'pandas'):\n"
        "    if importlib.util.find_spec(name):\n"
        "        importlib.import_module(name)\n"
        "print(loaded, lgb.compat.SKLEARN_INSTALLED)\n"
    )
    assert in_a_fresh_interpreter(script) == "[] False"


def test_statsforecast_core_imports_statsforecast_without_dask_and_its_models_fit():
    """What the fit server preloads for the statistical methods: statsforecast's models without Dask (which its
    helpers import whenever it is installed), fitting and forecasting as usual; Dask imports as usual after."""
    pytest.importorskip("statsforecast")
    script = (
        "import sys, numpy as np\n"
        "import pipelines.statsforecast_core\n"
        "from pipelines import methods\n"
        "loaded = 'dask' in sys.modules\n"
        "y = 100 + np.sin(np.arange(60) * 2 * np.pi / 7) + 0.01 * np.arange(60)\n"
        "forecast = methods.local_forecast('ets', y, 7, 7)\n"
        "assert forecast is not None and forecast.shape == (7,), forecast\n"
        "import importlib.util\n"
        "if importlib.util.find_spec('dask'):\n"
        "    import dask.dataframe\n"
        "print(loaded, 'statsforecast.models' in sys.modules)\n"
    )
    assert in_a_fresh_interpreter(script) == "False True"


def in_a_fresh_interpreter(script: str) -> str:
    """What `script` prints, run by a new interpreter (imports not made yet); it must exit 0."""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_log_record_of_the_fit_keeps_its_traceback_on_the_way_back():
    """A fit's `log.exception` reaches the runtime's log with the traceback, as text (the exception itself may
    not pickle)."""
    from multiprocessing import Pipe

    from pipelines.fit_process import _SendRecords

    receive, send = Pipe(duplex=False)
    logger = logging.getLogger("flightcast.test_fit_traceback")
    logger.propagate = False
    logger.addHandler(_SendRecords(send))
    try:
        raise ValueError("a method failed")
    except ValueError:
        logger.exception("series %s: fit failed", "s1")
    finally:
        logger.handlers.clear()
    kind, record = receive.recv()
    assert kind == "log" and record.exc_info is None
    text = logging.Formatter("%(message)s").format(record)
    assert text.startswith("series s1: fit failed\nTraceback (most recent call last):")
    assert text.endswith("ValueError: a method failed")
