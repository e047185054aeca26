// The flightcast page: datasets, models, and a chart of a model's history and forecast with its bands.
// It reads only the JSON API under /v1/. Everything that comes from data is inserted as text, never HTML.
"use strict";

(function () {
  const KEY_STORAGE = "flightcast.apiKey";
  const REFRESH_MS = 30000;
  const POINT_CHOICES = ["auto", "100", "300", "1000", "3000", "10000"];
  const SEARCH_LIMIT = 50;
  const SEARCH_DELAY_MS = 120;
  const LEVELS = ["80", "95"];

  const $ = (id) => document.getElementById(id);
  // app.js runs before the document is parsed and uPlot (deferred) is evaluated, so the first API calls
  // start at once; drawing waits for the chart library.
  const chartLibrary = new Promise((resolve) => {
    if (window.uPlot) resolve();
    else document.addEventListener("DOMContentLoaded", () => resolve(), { once: true });
  });

  const state = {
    models: [], datasets: [], model: null, series: null, points: "auto",
    loading: false, needKey: false, drawSeq: 0, searchSeq: 0, searchTimer: 0, early: null,
  };
  // What the page drew last, for people poking at it in the console and for the browser tests.
  const page = (window.flightcast = { state, chart: null, drawn: null, draws: 0, drawnAt: null });

  // --- small helpers -------------------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child)); // strings become text nodes
    }
    return node;
  }

  function num(value, digits) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    return value.toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 3 : digits });
  }

  function sig(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    return value.toLocaleString("en-US", { maximumSignificantDigits: 6 });
  }

  function pct(value) {
    return value === null || value === undefined ? "–" : num(value * 100, 1) + "%";
  }

  function when(iso) {
    if (!iso) return "–";
    const text = iso.replace("T", " ").replace(/(\.\d+)?Z$/, "");
    return text.endsWith(" 00:00:00") ? text.slice(0, 10) : text.replace(/:00$/, "");
  }

  function seconds(iso) {
    return Date.parse(iso) / 1000;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  // --- the API ------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers["X-API-Key"] = key; // a header, never a URL: URLs end up in logs and histories
    let response;
    try {
      response = await fetch(path, { headers, cache: "no-store" });
    } catch (err) {
      throw new ApiError(0, "the runtime did not answer: " + err.message);
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const message = body && typeof body.error_message === "string" ? body.error_message : "HTTP " + response.status;
      throw new ApiError(response.status, message);
    }
    return { body, headers: response.headers };
  }

  function modelPath(name, tail, params) {
    const query = new URLSearchParams(params || []).toString();
    return "/v1/models/" + encodeURIComponent(name) + "/" + tail + (query ? "?" + query : "");
  }

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
        el("td", null, el("span", { class: "badge " + m.status }, m.status)),
        el("td", null, m.model_version === null ? "–" : m.model_version),
        el("td", null, m.strategy || "–"),
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
          el("td", { colspan: 12 }, el("div", null, el("strong", null, label), m.error_message))));
      }
    }
    if (!rows.length) rows.push(el("tr", null, el("td", { colspan: 12, class: "muted" }, "No models.")));
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
      return;
    }
    if (model.status === "training" && model.model_version === null) {
      setChartMessage("This model is training; its chart appears here when it is ready.");
      clearChart("training");
      return;
    }
    if (panel) {
      if (newModel || !$("series-results").childElementCount) await searchSeries(true);
      if (token !== state.drawSeq) return;
      if (state.series === null) {
        setChartMessage("Choose a series: type part of its id in the search box.");
        clearChart("empty");
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

  // --- the chart -----------------------------------------------------------------------------------

  function setChartMessage(text, isError) {
    $("chart-message").textContent = text || "";
    $("chart-message").classList.toggle("error", Boolean(isError));
    show($("chart-message"), Boolean(text));
  }

  function clearChart(reason) {
    show($("chart-options"), false);
    if (page.chart) page.chart.destroy();
    page.chart = null;
    page.drawn = null;
    $("chart").replaceChildren();
    $("chart").dataset.state = reason;
    $("chart-facts").textContent = "";
  }

  function chartFailed(err) {
    if (handleError(err)) return;
    setChartMessage(err.message, true);
    clearChart("error");
  }

  // "auto": enough history to judge the forecast by, without squeezing it into a sliver.
  function historyPoints(model) {
    if (state.points !== "auto") return Number(state.points);
    return Math.min(500, Math.max(60, 8 * (model.horizon || 1), 2 * (model.lookback || 1)));
  }

  async function draw(model, series, token) {
    $("chart").dataset.state = "loading";
    const params = series === null ? [] : [["series", series]];
    const [history, forecast] = await Promise.all([
      api(modelPath(model.name, "history", params.concat([["limit", historyPoints(model)]]))),
      api(modelPath(model.name, "predict", params.concat(LEVELS.map((l) => ["level", l])))),
    ]);
    await chartLibrary;
    if (token !== state.drawSeq) return;
    setChartMessage("");
    render({ model: model.name, series, history: history.body, forecast: forecast.body }, model);
  }

  function colors() {
    const css = getComputedStyle(document.documentElement);
    const get = (name) => css.getPropertyValue(name).trim();
    return {
      fg: get("--fg"), muted: get("--muted"), grid: get("--grid"), history: get("--history"),
      forecast: get("--forecast"), band80: get("--band80"), band95: get("--band95"), bound: get("--bound"),
    };
  }

  // Columns for uPlot: x, history, forecast, lower/upper 95, lower/upper 80. The forecast and its
  // bands start at the last observed point, so the lines join.
  function columns(history, forecast) {
    const hx = history.timestamps.map(seconds);
    const fx = forecast.timestamps.map(seconds);
    const n = hx.length;
    const gap = () => new Array(n).fill(null);
    const lastValue = n ? history.values[n - 1] : null;
    const joined = (values) => {
      const column = gap().concat(values);
      if (n) column[n - 1] = lastValue;
      return column;
    };
    const intervals = forecast.intervals || {};
    const band = (level, side) => joined(intervals[level] ? intervals[level][side] : new Array(fx.length).fill(null));
    return [
      hx.concat(fx),
      history.values.concat(new Array(fx.length).fill(null)),
      joined(forecast.prediction),
      band("95", "lower"), band("95", "upper"), band("80", "lower"), band("80", "upper"),
    ];
  }

  function timeLabel(ts, daily) {
    if (ts === null || ts === undefined) return "–";
    const iso = new Date(ts * 1000).toISOString();
    return daily ? iso.slice(0, 10) : iso.slice(0, 16).replace("T", " ");
  }

  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  // Axis ticks in UTC, 24-hour, ISO-like; the date (or year) is added where it changes.
  function timeTicks(u, splits, axisIdx, space, incr) {
    const DAY = 86400;
    let previous = null;
    return splits.map((ts) => {
      if (ts === null || ts === undefined) return null;
      const iso = new Date(ts * 1000).toISOString();
      const year = iso.slice(0, 4);
      const day = iso.slice(0, 10);
      let label;
      if (incr >= 365 * DAY - 1) label = year;
      else if (incr >= 28 * DAY) {
        const month = MONTHS[Number(iso.slice(5, 7)) - 1];
        if (month === "Jan") label = year;
        else label = previous === null || previous.slice(0, 4) !== year ? month + "\n" + year : month;
      }
      else if (incr >= DAY) label = previous === null || previous.slice(0, 4) !== year ? iso.slice(5, 10) + "\n" + year : iso.slice(5, 10);
      else label = previous === null || previous.slice(0, 10) !== day ? iso.slice(11, 16) + "\n" + iso.slice(5, 10) : iso.slice(11, 16);
      previous = iso;
      return label;
    });
  }

  function forecastStartMarker(marker, c) {
    return {
      hooks: {
        draw: (u) => {
          const origin = marker.origin;
          if (origin === null) return;
          const x = Math.round(u.valToPos(origin, "x", true));
          const { top, height } = u.bbox;
          const ctx = u.ctx;
          const ratio = window.devicePixelRatio || 1;
          ctx.save();
          ctx.strokeStyle = c.muted;
          ctx.lineWidth = ratio;
          ctx.setLineDash([4 * ratio, 4 * ratio]);
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          ctx.setLineDash([]);
          ctx.fillStyle = c.muted;
          ctx.font = `${12 * ratio}px system-ui, sans-serif`;
          ctx.textBaseline = "top";
          ctx.fillText("forecast →", x + 6 * ratio, top + 6 * ratio);
          ctx.restore();
        },
      },
    };
  }

  function chartSize() {
    const width = Math.max(260, $("chart").clientWidth);
    return { width, height: Math.round(Math.min(380, Math.max(220, width * 0.45))) };
  }

  function render(drawn, model) {
    const { history, forecast } = drawn;
    const data = columns(history, forecast);
    const n = history.timestamps.length;
    const origin = n ? data[0][n - 1] : (data[0].length ? data[0][0] : null);
    const daily = data[0].every((ts) => ts % 86400 === 0);
    const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
    const key = JSON.stringify([drawn.model, drawn.series, daily, dark]);
    if (page.chart && page.chartKey === key) {
      // the same chart with newer data (a refresh): keep it, and the reader's hover, in place
      page.marker.origin = origin;
      page.chart.setData(data);
    } else {
      page.marker = { origin };
      page.chartKey = key;
      build(data, daily);
    }
    describe(drawn, model, data);
  }

  function build(data, daily) {
    const c = colors();
    const value = (u, v) => sig(v);
    const bound = (label, stroke) => ({
      label, stroke, width: 1, points: { show: false }, value,
    });
    const options = {
      ...chartSize(),
      class: "forecast-chart",
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { focus: { prox: 24 } },
      focus: { alpha: 0.6 },
      legend: { live: true },
      scales: { x: { time: true } },
      series: [
        { label: "time (UTC)", value: (u, ts) => timeLabel(ts, daily) },
        { label: "history", stroke: c.history, width: 2, points: { show: false }, value },
        { label: "forecast", stroke: c.forecast, width: 2, dash: [6, 3], points: { show: false }, value },
        bound("95% lower", c.bound), bound("95% upper", c.bound),
        bound("80% lower", c.bound), bound("80% upper", c.bound),
      ],
      bands: [
        { series: [4, 3], fill: c.band95 },
        { series: [6, 5], fill: c.band80 },
      ],
      axes: [
        { stroke: c.muted, grid: { stroke: c.grid }, ticks: { stroke: c.grid }, values: timeTicks },
        { stroke: c.muted, grid: { stroke: c.grid }, ticks: { stroke: c.grid }, size: 64,
          values: (u, splits) => splits.map((v) => sig(v)) },
      ],
      plugins: [forecastStartMarker(page.marker, c)],
    };
    if (page.chart) page.chart.destroy();
    $("chart").replaceChildren();
    page.chart = new uPlot(options, data, $("chart"));
  }

  function describe(drawn, model, data) {
    const { history, forecast } = drawn;
    const n = history.timestamps.length;
    page.drawn = {
      model: drawn.model, series: drawn.series, x: data[0], history: data[1], forecast: data[2],
      lower95: data[3], upper95: data[4], lower80: data[5], upper80: data[6],
      lastHistory: n ? { timestamp: history.timestamps[n - 1], value: history.values[n - 1] } : null,
      forecastStart: forecast.timestamps[0] || null,
    };
    page.draws += 1;
    page.drawnAt = performance.now(); // ms since the navigation started
    show($("chart-options"), true);
    $("chart").dataset.state = "drawn";
    const facts = [];
    if (n) facts.push("last observed " + when(history.timestamps[n - 1]) + ": " + sig(history.values[n - 1]));
    if (forecast.timestamps.length) {
      facts.push("forecast " + forecast.timestamps.length + " steps, " + when(forecast.timestamps[0]) + " to "
        + when(forecast.timestamps[forecast.timestamps.length - 1]));
    }
    const errors = model.intervals && model.intervals.calibration_errors;
    facts.push(forecast.intervals
      ? "shaded: 80% and 95% conformal intervals" + (errors ? " (" + num(errors, 0) + " calibration errors)" : "")
      : "no intervals for this model");
    $("chart-facts").textContent = facts.join(" · ");
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
})();
