// What drives the drawn forecast: each input group's contribution to every step (explain=true), as a table.
import { $, el, num } from "./dom.js";

const MAX_STEPS = 14; // columns shown; a longer forecast shows its first steps

// Groups ordered by how much they move the forecast (mean absolute contribution over the steps shown).
function ordered(contributions, steps) {
  const weight = (values) => values.slice(0, steps).reduce((sum, v) => sum + Math.abs(v), 0) / steps;
  return Object.entries(contributions).sort((a, b) => weight(b[1]) - weight(a[1]));
}

// A step's date, and its time of day only when it has one.
function stepLabel(ts) {
  const time = ts.slice(11, 16);
  return time === "00:00" ? ts.slice(0, 10) : ts.slice(0, 10) + " " + time;
}

export function renderContributions(forecast) {
  const box = $("contributions");
  box.replaceChildren();
  const contributions = forecast && forecast.contributions;
  if (!contributions) {
    box.hidden = true;
    return;
  }
  const steps = Math.min(MAX_STEPS, forecast.prediction.length);
  const head = el("tr", {}, el("th", { scope: "col" }, "input"),
    ...forecast.timestamps.slice(0, steps).map((ts) => el("th", { scope: "col" }, stepLabel(ts))));
  const rows = ordered(contributions, steps).map(([group, values]) =>
    el("tr", { "data-group": group }, el("th", { scope: "row" }, group),
      ...values.slice(0, steps).map((v) => el("td", { class: "num" }, num(v + 0, 2))))); // + 0: no "-0"
  const total = el("tr", { class: "total" }, el("th", { scope: "row" }, "forecast"),
    ...forecast.prediction.slice(0, steps).map((v) => el("td", { class: "num" }, num(v, 2))));
  const more = forecast.prediction.length > steps ? ` (first ${steps} of ${forecast.prediction.length} steps)` : "";
  box.append(
    el("h3", {}, "What drives the forecast" + more),
    el("p", { class: "muted small" },
      "Each input's share of every step, in the forecast's units (LightGBM SHAP values); the rows sum to the forecast."),
    el("div", { class: "scroll" }, el("table", { id: "contributions-table" }, el("thead", {}, head),
      el("tbody", {}, ...rows, total))));
  box.hidden = false;
}
