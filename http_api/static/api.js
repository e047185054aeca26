// The JSON API under /v1/, with the API key the reader entered (kept for the browser session only).

export const KEY_STORAGE = "flightcast.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(path) {
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

export function modelPath(name, tail, params) {
  const query = new URLSearchParams(params || []).toString();
  return "/v1/models/" + encodeURIComponent(name) + "/" + tail + (query ? "?" + query : "");
}
