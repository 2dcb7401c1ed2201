// fetch wrapper: same-origin cookie session, JSON in and out, OpenAI-style errors as ApiError.

export class ApiError extends Error {
  constructor(status, message, code, param) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code || "";
    this.param = param || "";
  }
}

export function queryString(params) {
  const qs = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    qs.set(key, String(value));
  }
  const s = qs.toString();
  return s ? `?${s}` : "";
}

export async function api(path, { method = "GET", query, body, signal } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" }, signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path + queryString(query), init);
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, `Network error: ${err && err.message ? err.message : err}`, "network_error");
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    const e = (data && data.error) || {};
    const error = new ApiError(resp.status, e.message || `HTTP ${resp.status}`, e.code, e.param);
    // an expired or revoked session: the shell goes back to the sign-in screen
    if (resp.status === 401 && !path.startsWith("/auth/")) {
      window.dispatchEvent(new CustomEvent("orcache:unauthorized", { detail: error }));
    }
    throw error;
  }
  return data;
}
