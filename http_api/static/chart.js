// The chart: uPlot (vendored, loaded deferred) drawing a model's history, its forecast and the forecast's
// intervals, and marks on the values that arrived as anomalies. What it drew last is kept on `page` for people
// poking at it in the console and for the browser tests.

import { $, num, seconds, show, sig, when } from "./dom.js";

export const page = { state: null, chart: null, drawn: null, draws: 0, drawnAt: null };

// The page's first API calls start before uPlot (deferred) is evaluated; drawing waits for it.
export const chartLibrary = new Promise((resolve) => {
  if (window.uPlot) resolve();
  else document.addEventListener("DOMContentLoaded", () => resolve(), { once: true });
});

export function setChartMessage(text, isError) {
  $("chart-message").textContent = text || "";
  $("chart-message").classList.toggle("error", Boolean(isError));
  show($("chart-message"), Boolean(text));
}

export function clearChart(reason) {
  show($("chart-options"), false);
  if (page.chart) page.chart.destroy();
  page.chart = null;
  page.drawn = null;
  $("chart").replaceChildren();
  $("chart").dataset.state = reason;
  $("chart-facts").textContent = "";
}

function colors() {
  const css = getComputedStyle(document.documentElement);
  const get = (name) => css.getPropertyValue(name).trim();
  return {
    fg: get("--fg"), muted: get("--muted"), grid: get("--grid"), history: get("--history"),
    forecast: get("--forecast"), band80: get("--band80"), band95: get("--band95"), bound: get("--bound"),
    anomaly: get("--anomaly"),
  };
}

// Columns for uPlot: x, history, forecast, lower/upper 95, lower/upper 80, anomalies. The forecast and its
// bands start at the last observed point, so the lines join; an anomaly is a mark on its history point.
function columns(history, forecast, anomalies) {
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
    anomalyMarks(hx, history.values, anomalies).concat(new Array(fx.length).fill(null)),
  ];
}

// The history's value at each period that arrived as an anomaly, null elsewhere.
function anomalyMarks(hx, values, anomalies) {
  const flagged = new Set((anomalies || []).map((a) => seconds(a.ts)));
  return hx.map((x, i) => (flagged.has(x) ? values[i] : null));
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

export function chartSize() {
  const width = Math.max(260, $("chart").clientWidth);
  return { width, height: Math.round(Math.min(380, Math.max(220, width * 0.45))) };
}

export function render(drawn, model) {
  const { history, forecast } = drawn;
  const data = columns(history, forecast, drawn.anomalies);
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
    tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
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
      { label: "anomaly", stroke: c.anomaly, width: 0, paths: () => null, value,
        points: { show: true, size: 9, width: 2, stroke: c.anomaly, fill: c.anomaly } },
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
  page.chart = new window.uPlot(options, data, $("chart"));
}

function describe(drawn, model, data) {
  const { history, forecast } = drawn;
  const n = history.timestamps.length;
  page.drawn = {
    model: drawn.model, series: drawn.series, x: data[0], history: data[1], forecast: data[2],
    lower95: data[3], upper95: data[4], lower80: data[5], upper80: data[6], anomalies: data[7],
    lastHistory: n ? { timestamp: history.timestamps[n - 1], value: history.values[n - 1] } : null,
    forecastStart: forecast.timestamps[0] || null,
  };
  page.draws += 1;
  page.drawnAt = performance.now(); // ms since the navigation started
  show($("chart-options"), true);
  $("chart").dataset.state = "drawn";
  const facts = [];
  if (forecast.method) facts.push("method: " + forecast.method);
  if (n) facts.push("last observed " + when(history.timestamps[n - 1]) + ": " + sig(history.values[n - 1]));
  if (forecast.timestamps.length) {
    facts.push("forecast " + forecast.timestamps.length + " steps, " + when(forecast.timestamps[0]) + " to "
      + when(forecast.timestamps[forecast.timestamps.length - 1]));
  }
  const marked = data[7].filter((v) => v !== null).length;
  if (marked) facts.push(marked + (marked === 1 ? " anomaly" : " anomalies") + " marked");
  const errors = model.intervals && model.intervals.calibration_errors;
  facts.push(forecast.intervals
    ? "shaded: 80% and 95% conformal intervals" + (errors ? " (" + num(errors, 0) + " calibration errors)" : "")
    : "no intervals for this model");
  $("chart-facts").textContent = facts.join(" · ");
}
