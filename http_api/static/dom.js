// Small DOM and formatting helpers of the page. Everything that comes from data is inserted as text, never HTML.

export const $ = (id) => document.getElementById(id);

export function el(tag, props, ...children) {
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

export function num(value, digits) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 3 : digits });
}

export function sig(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", { maximumSignificantDigits: 6 });
}

export function pct(value) {
  return value === null || value === undefined ? "–" : num(value * 100, 1) + "%";
}

export function when(iso) {
  if (!iso) return "–";
  const text = iso.replace("T", " ").replace(/(\.\d+)?Z$/, "");
  return text.endsWith(" 00:00:00") ? text.slice(0, 10) : text.replace(/:00$/, "");
}

export function seconds(iso) {
  return Date.parse(iso) / 1000;
}

export function show(node, visible) {
  node.hidden = !visible;
}
