"""The forecast page (SPEC 11) in a real headless Chromium, driven by selenium through chromium-driver.

One runtime (the default spicepod's datasets and models, plus a small panel with a hostile series id,
behind an API key) and one browser serve the whole module. Without a browser the tests skip and say how
to install one; under CI (CI=true) they fail instead, so a missing browser can never pass as green.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml
from conftest import REPO, Runtime, RuntimeFactory, bearer_options, do_put, parse_instant, require_browser, write_table

from harness.browser import headless_chromium

pytestmark = pytest.mark.slow

KEY = "page-test-key-4f9c"
HOSTILE = "<img src=x onerror=alert(1)>"
PANEL_IDS = [HOSTILE] + [f"shop_{i:02d}" for i in range(12)]
WAIT_S = 30.0


def _spicepod(folder: Path) -> str:
    """The default spicepod's datasets and models (paths made absolute), plus a small panel."""
    pod = yaml.safe_load((REPO / "spicepod.yaml").read_text(encoding="utf-8"))
    pod.pop("runtime", None)
    for model in pod["models"]:  # the page is tested, not the forecasts' accuracy: few trees train fast
        if model["name"] != "ridership_2w":  # (but drivers need the default trees to win its backtest)
            model.setdefault("params", {}).setdefault("lightgbm", {"num_boost_round": 20})
        if model["name"] == "tourism_2y":  # 427 series: LightGBM alone (the other models show the methods)
            model["params"]["method"] = "lightgbm"
    for dataset in pod["datasets"]:
        if str(dataset["from"]).startswith("file:"):
            dataset["from"] = "file:" + str(REPO / dataset["from"][len("file:"):])
    rng = np.random.default_rng(3)
    hours = 96
    start = np.datetime64("2024-03-01T00:00", "us")
    tables = []
    for k, sid in enumerate(PANEL_IDS):
        values = 20 + 5 * k + 4 * np.sin(np.arange(hours) * 2 * np.pi / 24) + rng.normal(0, 0.3, hours)
        times = start + np.arange(hours) * np.timedelta64(1, "h")
        tables.append(pa.table({"shop": pa.array([sid] * hours), "ts": times, "value": values}))
    write_table(folder / "shops.parquet", pa.concat_tables(tables))
    pod["datasets"].append({"from": f"file:{folder / 'shops.parquet'}", "name": "shops", "series_column": "shop",
                            "mode": "read_write"})
    pod["models"].append({"from": "lightgbm", "name": "shops_12h", "datasets": ["shops"],
                          "params": {"lookback": 24, "horizon": 12, "lightgbm": {"num_boost_round": 20}}})
    return yaml.safe_dump(pod, sort_keys=False)


@pytest.fixture(scope="module")
def rt(module_runtime_factory: RuntimeFactory) -> Runtime:
    require_browser()  # no runtime to start when there is no browser to point at it
    folder = module_runtime_factory.new_dir()
    (folder / "spicepod.yaml").write_text(_spicepod(folder), encoding="utf-8")
    return module_runtime_factory(spicepod=folder / "spicepod.yaml", api_key=KEY, timeout=120)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    driver = headless_chromium(
        capabilities={"goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"}},
        experimental=[("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})])
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


# --- helpers -----------------------------------------------------------------------------------------

def wait_for(driver: Any, script: str, timeout: float = WAIT_S) -> Any:
    """Poll a JavaScript expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script("return " + script)
        if value:
            return value
        if time.monotonic() > deadline:
            state = driver.execute_script(
                "return [document.getElementById('chart').dataset.state, "
                "document.getElementById('chart-message').textContent, document.getElementById('error').textContent]")
            raise AssertionError(f"timed out waiting for {script!r}; chart state, message, error: {state}; "
                                 f"console: {driver.get_log('browser')}")
        time.sleep(0.05)


def drain_logs(driver: Any) -> None:
    driver.get_log("browser")
    driver.get_log("performance")


def open_page(driver: Any, rt: Runtime, fragment: str = "", key: str | None = KEY) -> None:
    """Load the page in a tab whose sessionStorage holds `key` (as after typing it once)."""
    driver.get(rt.http_url + "/health")
    driver.execute_script("sessionStorage.clear(); if (arguments[0]) sessionStorage.setItem('flightcast.apiKey', "
                          "arguments[0]);", key)
    driver.get_log("browser")  # what /health's plain text page logged (its favicon) is not the page's
    driver.get(rt.http_url + "/" + fragment)


def drawn(driver: Any, model: str, series: str | None = None) -> dict:
    return wait_for(driver, "window.flightcast && window.flightcast.drawn && "
                            f"window.flightcast.drawn.model === {json.dumps(model)} && "
                            f"window.flightcast.drawn.series === {json.dumps(series)} && "
                            "document.getElementById('chart').dataset.state === 'drawn' && window.flightcast.drawn")


def click_model(driver: Any, name: str) -> None:
    from selenium.webdriver.common.by import By

    buttons = [b for b in driver.find_elements(By.CSS_SELECTOR, "#models tbody button") if b.text == name]
    assert buttons, f"no button for model {name}"
    buttons[0].click()


def console_errors(driver: Any) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def requests_sent(driver: Any) -> list[dict]:
    """Network.requestWillBeSent params from the performance log: every request the page made."""
    out = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            out.append(message["params"]["request"])
    return out


def seconds(iso: str) -> float:
    return parse_instant(iso).timestamp()


# --- tests -------------------------------------------------------------------------------------------

def test_page_loads_without_console_errors_and_lists_models_and_datasets(rt: Runtime, browser: Any) -> None:
    drain_logs(browser)
    open_page(browser, rt)
    models = [m["name"] for m in rt.get_json("/v1/models")]
    assert models[:3] == ["sunspots_12m", "austres_2y", "gdp_2y"]  # the default spicepod's models
    shown = wait_for(browser, "(() => { const names = [...document.querySelectorAll('#models tbody th')]"
                              ".map((th) => th.textContent); return names.length ? names : null; })()")
    assert shown == models
    statuses = browser.execute_script("return [...document.querySelectorAll('#models .badge')].map(b => b.textContent)")
    assert statuses == ["ready"] * len(models)
    datasets = browser.execute_script("return [...document.querySelectorAll('#datasets tbody tr')]"
                                      ".map(tr => [...tr.children].map(td => td.textContent))")
    api = rt.get_json("/v1/datasets")
    assert [row[0] for row in datasets] == [d["name"] for d in api]
    assert datasets[0][2] == f"{api[0]['rows']:,}" and datasets[0][3] == api[0]["first_timestamp"][:10]
    drawn(browser, "sunspots_12m")  # the first ready model is drawn without a click
    assert console_errors(browser) == []


def test_choosing_a_model_draws_its_history_forecast_and_bands(rt: Runtime, browser: Any) -> None:
    open_page(browser, rt)
    drawn(browser, "sunspots_12m")
    click_model(browser, "austres_2y")
    chart = drawn(browser, "austres_2y")
    model = next(m for m in rt.get_json("/v1/models") if m["name"] == "austres_2y")
    shown_history = [v for v in chart["history"] if v is not None]
    history = rt.get_json(f"/v1/models/austres_2y/history?limit={len(shown_history)}")
    predict = rt.get_json("/v1/models/austres_2y/predict?level=80&level=95")
    n, h = len(history["values"]), model["horizon"]
    assert n >= 2 * model["lookback"] and shown_history == history["values"]
    assert chart["x"] == [seconds(t) for t in history["timestamps"] + predict["timestamps"]]
    assert chart["forecast"][n:] == predict["prediction"] and len(chart["forecast"][n:]) == h
    assert chart["forecast"][n - 1] == history["values"][-1]  # the forecast line starts at the last point
    for level in ("80", "95"):
        assert chart[f"lower{level}"][n:] == predict["intervals"][level]["lower"]
        assert chart[f"upper{level}"][n:] == predict["intervals"][level]["upper"]
    for i in range(n, n + h):
        assert chart["lower95"][i] <= chart["lower80"][i] <= chart["forecast"][i] <= chart["upper80"][i] \
            <= chart["upper95"][i]
    assert chart["forecastStart"] == predict["timestamps"][0]
    # uPlot holds the same columns and drew them on a canvas, with a legend for reading values on hover
    assert browser.execute_script("return window.flightcast.chart.data[0].length") == n + h
    assert browser.execute_script("return document.querySelectorAll('#chart canvas').length") == 1
    legend = browser.execute_script("return [...document.querySelectorAll('#chart .u-legend th')]"
                                    ".map(t => t.textContent)")
    assert [label for label in legend if label] == ["time (UTC)", "history", "forecast", "95% lower", "95% upper",
                                                    "80% lower", "80% upper", "anomaly"]
    assert "model=austres_2y" in browser.current_url
    # the method the series is forecast by beside the chart, and each method's share in the model table
    facts = browser.execute_script("return document.getElementById('chart-facts').textContent")
    assert facts.startswith("method: " + predict["method"] + " · ")
    cells = browser.execute_script("return [...document.querySelectorAll('#models td.methods')]"
                                   ".map(c => c.textContent)")
    served = [name for name, m in model["methods"].items() if m["series"]]
    assert any(all(name in cell for name in served) and "100%" in cell for cell in cells)


def test_a_model_with_drivers_shows_what_drives_its_forecast(rt: Runtime, browser: Any) -> None:
    open_page(browser, rt, "#model=ridership_2w")
    drawn(browser, "ridership_2w")
    rows = wait_for(browser, "document.querySelectorAll('#contributions-table tbody tr').length && "
                             "[...document.querySelectorAll('#contributions-table tbody tr')].map("
                             "r => [...r.children].map(c => c.textContent))")
    explained = rt.get_json("/v1/models/ridership_2w/predict?explain=true")
    groups = explained["contributions"]
    shown = {row[0]: row[1:] for row in rows}
    assert set(shown) == set(groups) | {"forecast"}
    # Each cell is the contribution to two decimals; the total row is the forecast itself.
    for group, values in groups.items():
        assert shown[group] == [f"{v + 0:,.2f}".rstrip("0").rstrip(".") for v in values], group
    assert shown["forecast"] == [f"{v:,.2f}".rstrip("0").rstrip(".") for v in explained["prediction"]]
    # The groups that move the forecast most come first; with its drivers LightGBM serves this series.
    weight = {g: np.mean(np.abs(v[:14])) for g, v in groups.items()}
    assert [row[0] for row in rows[:-1]] == sorted(groups, key=lambda g: -weight[g])
    assert explained["method"] == "lightgbm" and "calendar" in groups
    assert not console_errors(browser)


def test_a_doput_then_refresh_shows_the_new_last_point(rt: Runtime, browser: Any) -> None:
    open_page(browser, rt, "#model=gdp_2y")
    before = drawn(browser, "gdp_2y")["lastHistory"]
    last = parse_instant(before["timestamp"]).replace(tzinfo=None)
    new_ts = (last + timedelta(days=95)).replace(day=1)  # the next quarter
    new_value = round(before["value"] * 1.013, 3)
    client = rt.flight_client(api_key=KEY)
    do_put(client, "us_realgdp", pa.table({"ts": pa.array([new_ts], pa.timestamp("us")),
                                           "value": pa.array([new_value], pa.float64())}),
           options=bearer_options(KEY))
    rows_cell = "return document.querySelector('#datasets tbody tr:nth-child(3) td:nth-child(3)').textContent"
    rows_before = browser.execute_script(rows_cell)
    browser.find_element("id", "refresh").click()
    after = wait_for(browser, "window.flightcast.drawn && window.flightcast.drawn.lastHistory.timestamp === "
                              f"{json.dumps(new_ts.isoformat() + 'Z')} && window.flightcast.drawn.lastHistory")
    assert after["value"] == new_value
    assert new_value in browser.execute_script("return window.flightcast.chart.data[1]")  # uPlot has it too
    rows_after = browser.execute_script(rows_cell)
    assert int(rows_after.replace(",", "")) == int(rows_before.replace(",", "")) + 1
    forecast_start = browser.execute_script("return window.flightcast.drawn.forecastStart")
    assert parse_instant(forecast_start) > parse_instant(after["timestamp"])


def test_panel_series_search_and_a_hostile_id_shown_as_text(rt: Runtime, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, rt, "#model=shops_12h")
    # the first ready series is drawn at once: here the hostile id, which sorts first
    chart = drawn(browser, "shops_12h", HOSTILE)
    assert chart["series"] == HOSTILE
    search = browser.find_element(By.ID, "series-search")
    search.send_keys("SHOP_0")
    wait_for(browser, "document.getElementById('series-count').textContent.startsWith('10 ')")
    ids = browser.execute_script("return [...document.querySelectorAll('#series-results .id')].map(e => e.textContent)")
    assert ids == [f"shop_{i:02d}" for i in range(10)]
    search.clear()
    search.send_keys("onerror")
    wait_for(browser, "document.getElementById('series-count').textContent.startsWith('1 ')")
    buttons = browser.find_elements(By.CSS_SELECTOR, "#series-results button")
    assert [b.find_element(By.CSS_SELECTOR, ".id").text for b in buttons] == [HOSTILE]
    browser.find_element(By.CSS_SELECTOR, "#series-results button").send_keys("\n")
    drawn(browser, "shops_12h", HOSTILE)
    # shown as text: no element was made from it, no handler ran, no dialog opened
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    assert HOSTILE in browser.find_element(By.ID, "series-results").text
    assert browser.execute_script("return document.querySelector('#series-results .id').innerHTML") == \
        "&lt;img src=x onerror=alert(1)&gt;"
    assert browser.title == "flightcast"  # an open alert() would have made this call raise
    # keyboard: arrow keys move through the results and Enter chooses one
    search.clear()
    search.send_keys("shop_1")
    wait_for(browser, "document.getElementById('series-count').textContent.startsWith('2 ')")
    search.send_keys("\ue015")  # ArrowDown to the first result
    browser.switch_to.active_element.send_keys("\ue015")  # and to the second
    browser.switch_to.active_element.send_keys("\n")
    drawn(browser, "shops_12h", "shop_11")
    assert console_errors(browser) == []


def test_api_key_prompt_wrong_key_and_key_never_in_a_url(rt: Runtime, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    drain_logs(browser)
    open_page(browser, rt, key=None)
    wait_for(browser, "!document.getElementById('key-panel').hidden")
    assert "needs an API key" in browser.find_element(By.ID, "key-message").text
    assert browser.execute_script("return document.querySelectorAll('#models tbody tr').length") == 0

    field = browser.find_element(By.ID, "key-input")
    field.send_keys("not-the-key\n")
    wait_for(browser, "document.getElementById('key-message').textContent.includes('refused')")
    assert browser.find_element(By.ID, "key-panel").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('flightcast.apiKey')") is None

    field = browser.find_element(By.ID, "key-input")
    field.send_keys(KEY + "\n")
    drawn(browser, "sunspots_12m")
    assert not browser.find_element(By.ID, "key-panel").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('flightcast.apiKey')") == KEY

    sent = requests_sent(browser)
    api_calls = [r for r in sent if "/v1/" in r["url"]]
    assert api_calls and all(KEY not in r["url"] and "not-the-key" not in r["url"] for r in sent)
    with_key = [r for r in api_calls if r["headers"].get("X-API-Key") == KEY]
    assert len(with_key) >= 3  # models, datasets, history, predict after the key was given
    assert KEY not in browser.current_url
    assert KEY not in rt.log_text()


def test_an_anomaly_is_marked_on_the_chart(rt: Runtime, browser: Any) -> None:
    last = rt.get_json("/v1/models/shops_12h/history?series=shop_05&limit=1")["timestamps"][0]
    spike_ts = parse_instant(last).replace(tzinfo=None) + timedelta(hours=1)
    do_put(rt.flight_client(api_key=KEY), "shops", pa.table({
        "shop": ["shop_05"], "ts": pa.array([spike_ts], pa.timestamp("us")), "value": [1e6]}),
        options=bearer_options(KEY))
    spike = spike_ts.isoformat() + "Z"
    deadline = time.monotonic() + WAIT_S
    while [a["ts"] for a in rt.get_json("/v1/models/shops_12h/anomalies?series=shop_05")] != [spike]:
        assert time.monotonic() < deadline, "the spike was not listed as an anomaly"
        time.sleep(0.05)
    open_page(browser, rt, "#model=shops_12h&series=shop_05")
    chart = drawn(browser, "shops_12h", "shop_05")
    marks = [(x, v) for x, v in zip(chart["x"], chart["anomalies"], strict=True) if v is not None]
    assert marks == [(parse_instant(spike).timestamp(), 1e6)]
    assert browser.execute_script("return window.flightcast.chart.data[7]").count(None) == len(chart["x"]) - 1
    assert "1 anomaly marked" in browser.execute_script("return document.getElementById('chart-facts').textContent")
    assert console_errors(browser) == []
