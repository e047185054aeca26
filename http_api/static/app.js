// The flightcast page: datasets, models, and a chart of a model's history and forecast with its bands.
// It reads only the JSON API under /v1/. Everything that comes from data is inserted as text, never HTML.

import { ApiError, KEY_STORAGE, api, modelPath } from "./api.js";
import { chartLibrary, chartSize, clearChart, page, render, setChartMessage } from "./chart.js";
import { $, el, num, pct, show, when } from "./dom.js";
import { renderContributions } from "./explain.js";

const REFRESH_MS = 30000;
const POINT_CHOICES = ["auto", "100", "300", "1000", "3000", "10000"];
const SEARCH_LIMIT = 50;
const SEARCH_DELAY_MS = 120;
const LEVELS = ["80", "95"];

const state = {
  models: [], datasets: [], model: null, series: null, points: "auto",
  loading: false, needKey: false, drawSeq: 0, searchSeq: 0, searchTimer: 0, early: null,
};
// What the page drew last, for people poking at it in the console and for the browser tests.
page.state = state;
window.flightcast = page;

// --- the API key ---------------------------------------------------------------------------------

function askForKey(refused) {
  state.needKey = true;
  $("key-message").textContent = refused
    ? "The runtime refused this key (401 Unauthorized). Check it and enter it again."
    : "This runtime needs an API key to show its models and data.";
  $("key-panel").classList.toggle("refused", refused);
  show($("key-panel"), true);
  show($("forget-key"), false);
  $("key-input").value = "";
  $("key-input").focus();
}

function keyAccepted() {
  state.needKey = false;
  show($("key-panel"), false);
  show($("forget-key"), Boolean(sessionStorage.getItem(KEY_STORAGE)));
}

// --- errors --------------------------------------------------------------------------------------

function showError(message) {
  $("error").textContent = message;
  show($("error"), Boolean(message));
}

function handleError(err) {
  if (err instanceof ApiError && err.status === 401) {
    const hadKey = Boolean(sessionStorage.getItem(KEY_STORAGE));
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey(hadKey);
    return true;
  }
  return false;
}

// --- tables --------------------------------------------------------------------------------------

function datasetOf(model) {
  return state.datasets.find((d) => d.name === (model.datasets || [])[0]);
}

function isPanel(model) {
  const dataset = datasetOf(model);
  if (dataset && "series_column" in dataset) return Boolean(dataset.series_column);
  return (model.series_count || 0) > 1;
}

// Each method's share of the series (a series served by a combination counts for each of its methods).
function methodShares(model) {
  const methods = model.methods || {};
  const total = model.series_count || 1;
  const used = Object.entries(methods).filter(([, m]) => m.series > 0).sort((a, b) => b[1].series - a[1].series);
  if (!used.length) return "–";
  return used.map(([name, m]) => name + " " + Math.round((100 * m.series) / total) + "%").join(", ");
}

function renderModels() {
  const body = $("models").tBodies[0];
  const rows = [];
  for (const m of state.models) {
    const selected = m.name === state.model;
    const metrics = m.metrics || {};
    const live = m.live_metrics || {};
    const button = el("button", {
      type: "button", class: "link", "aria-pressed": selected ? "true" : "false",
      onclick: () => choose(m.name, null),
    }, m.name);
    rows.push(el("tr", { class: selected ? "selected" : null },
      el("th", { scope: "row" }, button),
      el("td", null, el("span", { class: "badge " + m.status }, m.status),
        m.health === "drifting"
          ? el("span", { class: "badge drifting", title: "live MASE over the drift window well above the backtest's" },
            "drifting")
          : null),
      el("td", null, m.model_version === null ? "–" : m.model_version),
      el("td", null, m.strategy || "–"),
      el("td", { class: "methods" }, methodShares(m)),
      el("td", null, m.frequency || "–"),
      el("td", { class: "num" }, num(m.series_count, 0)),
      el("td", { class: "num" }, num(metrics.mase)),
      el("td", { class: "num" }, num(metrics.smape)),
      el("td", { class: "num" }, num(live.mase)),
      el("td", { class: "num" }, num(live.smape)),
      el("td", { class: "num" }, pct(live.coverage_80)),
      el("td", { class: "num" }, num(live.points, 0)),
    ));
    if (m.error_message) {
      const label = m.status === "failed" ? "Training failed: " : "Last error: ";
      rows.push(el("tr", { class: "error-row" },
        el("td", { colspan: 13 }, el("div", null, el("strong", null, label), m.error_message))));
    }
  }
  if (!rows.length) rows.push(el("tr", null, el("td", { colspan: 13, class: "muted" }, "No models.")));
  body.replaceChildren(...rows);
}

function renderDatasets() {
  const body = $("datasets").tBodies[0];
  const rows = state.datasets.map((d) => el("tr", null,
    el("th", { scope: "row" }, d.name),
    el("td", null, d.mode),
    el("td", { class: "num" }, num(d.rows, 0)),
    el("td", null, when(d.first_timestamp)),
    el("td", null, when(d.last_timestamp)),
  ));
  if (!rows.length) rows.push(el("tr", null, el("td", { colspan: 5, class: "muted" }, "No datasets.")));
  body.replaceChildren(...rows);
}

// --- choosing a model and a series ---------------------------------------------------------------

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const points = params.get("points");
  return { model: params.get("model"), series: params.get("series"), points: POINT_CHOICES.includes(points) ? points : "auto" };
}

function writeHash() {
  const params = new URLSearchParams();
  if (state.model) params.set("model", state.model);
  if (state.series !== null) params.set("series", state.series);
  if (state.points !== "auto") params.set("points", state.points);
  history.replaceState(null, "", "#" + params.toString());
}

function choose(model, series) {
  const changedModel = model !== state.model;
  state.model = model;
  state.series = series;
  writeHash();
  renderModels();
  if (changedModel) $("series-search").value = "";
  showSelection(changedModel).catch(chartFailed);
}

function currentModel() {
  return state.models.find((m) => m.name === state.model) || null;
}

async function showSelection(newModel) {
  const model = currentModel();
  const token = ++state.drawSeq;
  if (!model) {
    setChartMessage(state.model ? "There is no model named “" + state.model + "” in this runtime." : "Choose a model below.");
    $("chart-title").textContent = "Forecast";
    $("chart-subtitle").textContent = "";
    show($("series-picker"), false);
    clearChart("empty");
    renderContributions(null);
    return;
  }
  $("chart-title").textContent = model.name;
  $("chart-subtitle").textContent = [
    model.datasets && model.datasets.length ? "on " + model.datasets[0] : null,
    model.frequency ? "every " + model.frequency : null,
    "horizon " + model.horizon, "lookback " + model.lookback,
    model.model_version !== null ? "version " + model.model_version : null,
  ].filter(Boolean).join(" · ");
  const panel = isPanel(model);
  show($("series-picker"), panel);
  if (model.status === "failed") {
    setChartMessage("This model failed to train: " + (model.error_message || "no reason given"), true);
    clearChart("failed");
    renderContributions(null);
    return;
  }
  if (model.status === "training" && model.model_version === null) {
    setChartMessage("This model is training; its chart appears here when it is ready.");
    clearChart("training");
    renderContributions(null);
    return;
  }
  if (panel) {
    if (newModel || !$("series-results").childElementCount) await searchSeries(true);
    if (token !== state.drawSeq) return;
    if (state.series === null) {
      setChartMessage("Choose a series: type part of its id in the search box.");
      clearChart("empty");
      renderContributions(null);
      return;
    }
  }
  await draw(model, panel ? state.series : null, token);
}

// --- series search (the API filters; thousands of ids never reach the page at once) ---------------

async function searchSeries(pickFirst) {
  const model = state.model;
  const q = $("series-search").value;
  const token = ++state.searchSeq;
  const { body, headers } = await api(modelPath(model, "series", { q, limit: SEARCH_LIMIT }));
  if (token !== state.searchSeq || model !== state.model) return;
  const total = Number(headers.get("X-Total-Count") || body.length);
  $("series-count").textContent = total > body.length
    ? "first " + num(body.length, 0) + " of " + num(total, 0) + " matching series"
    : num(total, 0) + (total === 1 ? " matching series" : " matching series");
  const items = body.map((s) => {
    const selected = s.series === state.series;
    return el("li", null, el("button", {
      type: "button", class: "series-item" + (selected ? " selected" : ""),
      "aria-pressed": selected ? "true" : "false", "data-status": s.status,
      onclick: () => choose(model, s.series), onkeydown: moveInList,
    }, el("span", { class: "id" }, s.series),
    el("span", { class: "muted small" }, s.status === "ready" ? num(s.rows, 0) + " rows" : "too short")));
  });
  if (!items.length) items.push(el("li", { class: "muted" }, "No series id contains that text."));
  $("series-results").replaceChildren(...items);
  if (pickFirst && state.series === null) {
    const first = body.find((s) => s.status === "ready");
    if (first) {
      state.series = first.series;
      writeHash();
      markSelectedSeries();
    }
  }
}

function markSelectedSeries() {
  for (const button of $("series-results").querySelectorAll("button")) {
    const selected = button.querySelector(".id").textContent === state.series;
    button.classList.toggle("selected", selected);
    button.setAttribute("aria-pressed", selected ? "true" : "false");
  }
}

function moveInList(event) {
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  event.preventDefault();
  const li = event.currentTarget.parentElement;
  const next = event.key === "ArrowDown" ? li.nextElementSibling : li.previousElementSibling;
  if (next && next.querySelector("button")) next.querySelector("button").focus();
  else if (!next && event.key === "ArrowUp") $("series-search").focus();
}

// --- drawing the chosen model or series ---------------------------------------------------------------

function chartFailed(err) {
  if (handleError(err)) return;
  setChartMessage(err.message, true);
  clearChart("error");
  renderContributions(null);
}

// "auto": enough history to judge the forecast by, without squeezing it into a sliver.
function historyPoints(model) {
  if (state.points !== "auto") return Number(state.points);
  return Math.min(500, Math.max(60, 8 * (model.horizon || 1), 2 * (model.lookback || 1)));
}

async function draw(model, series, token) {
  $("chart").dataset.state = "loading";
  const params = series === null ? [] : [["series", series]];
  const [history, forecast, anomalies] = await Promise.all([
    api(modelPath(model.name, "history", params.concat([["limit", historyPoints(model)]]))),
    // A LightGBM model (it reports feature_importance) also says what drives each step.
    api(modelPath(model.name, "predict", params.concat(LEVELS.map((l) => ["level", l]),
      model.feature_importance ? [["explain", "true"]] : []))),
    // marks on the chart, never a reason not to draw it
    api(modelPath(model.name, "anomalies", params)).then((r) => r.body, () => []),
  ]);
  await chartLibrary;
  if (token !== state.drawSeq) return;
  setChartMessage("");
  render({ model: model.name, series, history: history.body, forecast: forecast.body, anomalies }, model);
  renderContributions(forecast.body);
}

// --- refresh -------------------------------------------------------------------------------------

async function refresh() {
  if (state.loading) return;
  state.loading = true;
  $("refresh").disabled = true;
  document.body.classList.add("busy");
  try {
    const pending = state.early || Promise.all([api("/v1/models"), api("/v1/datasets")]);
    state.early = null;
    const [models, datasets] = await pending;
    keyAccepted();
    showError("");
    state.models = models.body;
    state.datasets = datasets.body;
    if (state.model === null) {
      const first = state.models.find((m) => m.status === "ready") || state.models[0];
      if (first) state.model = first.name;
    }
    renderModels();
    renderDatasets();
    await showSelection(!$("series-results").childElementCount).catch(chartFailed);
    $("updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
  } catch (err) {
    if (!handleError(err)) showError(err.message);
  } finally {
    state.loading = false;
    $("refresh").disabled = false;
    document.body.classList.remove("busy");
  }
}

// --- start ---------------------------------------------------------------------------------------

// The first data is asked for at once, while the document is still being parsed; the page's elements
// are wired up when it is.
state.early = Promise.all([api("/v1/models"), api("/v1/datasets")]);
state.early.catch(() => {}); // refresh() reports its failure

function wire() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key-input").value = "";
    refresh();
  });

  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    location.reload();
  });

  $("series-search").addEventListener("input", () => {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(() => searchSeries(false).catch(chartFailed), SEARCH_DELAY_MS);
  });
  $("series-search").addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown") {
      const first = $("series-results").querySelector("button");
      if (first) {
        event.preventDefault();
        first.focus();
      }
    }
  });

  new ResizeObserver(() => {
    if (page.chart) page.chart.setSize(chartSize());
  }).observe($("chart"));

  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    const model = currentModel();
    if (page.chart && model) showSelection(false).catch(chartFailed);
  });

  $("refresh").addEventListener("click", () => refresh());
  setInterval(() => {
    if ($("auto-refresh").checked && !document.hidden && !state.needKey) refresh();
  }, REFRESH_MS);

  $("points").addEventListener("change", () => {
    state.points = $("points").value;
    writeHash();
    showSelection(false).catch(chartFailed);
  });

  const fromHash = readHash();
  state.model = fromHash.model;
  state.series = fromHash.series;
  state.points = fromHash.points;
  $("points").value = state.points;
  refresh();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire, { once: true });
else wire();
