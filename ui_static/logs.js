// Request Logs: newest calls first, filters and page kept in the URL, auto refresh, details side panel.
// Next and Prev follow the server's keyset cursors (as fast at page 5,000 as at page 1); First, Last and
// a page number in the URL without a cursor use page=N.
import { api } from "./api.js";
import { h, clear } from "./dom.js";
import { t } from "./i18n.js";
import { fmtInt, fmtTime, fmtDuration, fmtCost, fmtValue, fmtPct, localInputToIso } from "./format.js";
import {
  pageHeader, field, select, errorBox, emptyRow, statusBadge, pager, attachTooltip, hideTooltip,
  storedChoice, storeChoice, panel,
} from "./widgets.js";

const REFRESH_KEY = "orcache.logs.autoRefresh";
const REFRESH_CHOICES = ["0", "10", "30", "60"];
const FILTERS = ["range", "start", "end", "token", "model", "provider", "status_code", "cache"];

// token label keys in the order the tooltip lists them
export const TOKEN_PARTS = [
  ["prompt_tokens", "tok.input"],
  ["completion_tokens", "tok.output"],
  ["cached_tokens", "tok.cached"],
  ["cache_creation_tokens", "tok.cache_write"],
  ["cache_read_tokens", "tok.cache_read"],
  ["reasoning_tokens", "tok.reasoning"],
];

// Every field of a row, grouped for the details panel; fields not listed land in "Other".
const DETAIL_GROUPS = [
  ["details.request", ["request_id", "created_at", "method", "path", "status_code", "success", "error",
    "duration_ms", "ttfb_ms", "streamed", "token_id", "token_name", "upstream_id"]],
  ["details.model", ["model_requested", "model", "model_permaslug", "provider", "endpoint_id", "generation_id"]],
  ["details.tokens", ["prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
    "cache_creation_tokens", "cache_read_tokens", "reasoning_tokens"]],
  ["details.cost_cache", ["cost", "byok_cost", "cache_status", "similarity", "saved_cost",
    "saved_prompt_tokens", "saved_completion_tokens", "system_prompt_hash", "user_prompt_hash"]],
  ["details.tags", ["project_id", "task_id", "agent_type", "agent_id", "run_id", "query_id", "iteration",
    "metadata"]],
  ["details.content", ["response_preview", "request_body", "response_body", "routing"]],
];

function readState() {
  const q = new URLSearchParams(location.search);
  const state = { page: Math.max(1, Number(q.get("page")) || 1), page_size: Number(q.get("page_size")) || 20 };
  for (const k of FILTERS) state[k] = q.get(k) || "";
  state.cursor = state.page > 1 ? q.get("cursor") || "" : "";
  if (!state.range && !state.start && !state.end) state.range = "all";
  return state;
}

function writeState(state) {
  const q = new URLSearchParams();
  if (state.page > 1) q.set("page", String(state.page));
  if (state.page > 1 && state.cursor) q.set("cursor", state.cursor);
  if (state.page_size !== 20) q.set("page_size", String(state.page_size));
  for (const k of FILTERS) if (state[k] && !(k === "range" && state[k] === "all")) q.set(k, state[k]);
  const s = q.toString();
  history.replaceState(null, "", `${location.pathname}${s ? `?${s}` : ""}`);
}

function apiQuery(state) {
  const query = { page: state.page, page_size: state.page_size };
  if (state.cursor) query.cursor = state.cursor;
  if (state.range === "custom") {
    query.start_time = localInputToIso(state.start);
    query.end_time = localInputToIso(state.end);
  } else if (state.range && state.range !== "all") {
    query.range = state.range;
  }
  if (state.token) query.api_key_id = state.token;
  if (state.model) query.model = state.model;
  if (state.provider) query.provider = state.provider;
  if (state.status_code) query.status_code = state.status_code;
  if (state.cache) query.cache = state.cache;
  return query;
}

export function fieldLabel(key) {
  const label = t(`field.${key}`, null, null);
  return label === null ? key : label;
}

function tokenTooltip(row) {
  const parts = TOKEN_PARTS.filter(([key]) => Number(row[key]) > 0);
  const box = h("div", { class: "tt-tokens" });
  if (!parts.length) box.append(h("div", { class: "tt-empty" }, t("tok.none")));
  for (const [key, label] of parts) {
    box.append(h("div", { class: "tt-row", "data-part": key },
      h("span", { class: "tt-label" }, t(label)), h("span", { class: "tt-value" }, fmtInt(row[key]))));
  }
  if (row.cache_status === "exact" || row.cache_status === "semantic") {
    box.append(h("div", { class: "tt-note" }, t(`cache.hit_${row.cache_status}`),
      row.cache_status === "semantic" && row.similarity != null ? ` · ${fmtPct(row.similarity, 1)}` : ""));
    const saved = Number(row.saved_prompt_tokens || 0) + Number(row.saved_completion_tokens || 0);
    if (saved > 0 || Number(row.saved_cost) > 0) {
      box.append(h("div", { class: "tt-saved" }, t("cache.saved_note", { tokens: fmtInt(saved), cost: fmtCost(row.saved_cost) })));
    }
  }
  return box;
}

function tokensCell(row) {
  const total = Number(row.total_tokens) || Number(row.prompt_tokens || 0) + Number(row.completion_tokens || 0);
  const marks = [];
  if (Number(row.cached_tokens) > 0) {
    marks.push(h("span", { class: "mark mark-cached", title: t("tok.cached"), "data-mark": "cached",
      "aria-label": `${t("tok.cached")}: ${fmtInt(row.cached_tokens)}` }, "◆"));
  }
  if (row.cache_status === "exact") {
    marks.push(h("span", { class: "mark mark-exact", "data-mark": "exact", "aria-label": t("cache.hit_exact") },
      t("cache.exact_short")));
  } else if (row.cache_status === "semantic") {
    marks.push(h("span", { class: "mark mark-semantic", "data-mark": "semantic",
      "aria-label": t("cache.hit_semantic") }, t("cache.semantic_short")));
  }
  const trigger = h("span", { class: "tok", tabindex: "0", "data-testid": "tokens" },
    h("span", { class: "tok-total" }, fmtInt(total)),
    h("span", { class: "tok-split" },
      `${t("tok.in_short")} ${fmtInt(row.prompt_tokens || 0)} / ${t("tok.out_short")} ${fmtInt(row.completion_tokens || 0)}`),
    marks);
  attachTooltip(trigger, () => tokenTooltip(row));
  return h("td", { class: "cell-tokens" }, trigger);
}

export function mount(container) {
  let state = readState();
  let timer = null;
  let inflight = null;
  let drawer = null;
  let openRow = null;
  let tokens = [];

  const tbody = h("tbody");
  const pagerBox = h("div", { class: "pager-box" });
  const errBox = h("div");
  const updated = h("span", { class: "updated", "aria-live": "off", "data-testid": "updated" });

  const refreshSel = select(REFRESH_CHOICES.map((v) => [v, v === "0" ? t("refresh.off") : `${v}s`]),
    storedChoice(REFRESH_KEY, REFRESH_CHOICES, "0"), { id: "auto-refresh", "data-testid": "auto-refresh" });
  refreshSel.addEventListener("change", () => {
    storeChoice(REFRESH_KEY, refreshSel.value);
    schedule();
  });
  const refreshBtn = h("button", { type: "button", class: "btn", "data-testid": "refresh",
    onclick: () => load() }, "↻ ", t("refresh.now"));

  // filters
  const rangeSel = select([["1day", t("range.1day")], ["7days", t("range.7days")], ["30days", t("range.30days")],
    ["all", t("range.all")], ["custom", t("range.custom")]], state.range, { name: "range" });
  const startIn = h("input", { type: "datetime-local", name: "start", value: state.start, step: "1" });
  const endIn = h("input", { type: "datetime-local", name: "end", value: state.end, step: "1" });
  const tokenSel = select([["", t("filter.any")]], state.token, { name: "token" });
  const modelIn = h("input", { type: "text", name: "model", value: state.model, list: "models-list",
    placeholder: t("filter.any"), autocomplete: "off" });
  const providerIn = h("input", { type: "text", name: "provider", value: state.provider,
    placeholder: t("filter.any"), autocomplete: "off" });
  const statusIn = h("input", { type: "number", name: "status_code", value: state.status_code, min: "100",
    max: "599", placeholder: t("filter.any"), inputmode: "numeric" });
  const cacheSel = select([["", t("filter.any")], ["miss", t("cache.miss")], ["exact", t("cache.exact")],
    ["semantic", t("cache.semantic")], ["bypass", t("cache.bypass")], ["off", t("cache.off")]], state.cache,
  { name: "cache" });
  const customBox = h("div", { class: "filter-custom", hidden: state.range !== "custom" },
    field(t("filter.from"), startIn), field(t("filter.to"), endIn));
  rangeSel.addEventListener("change", () => { customBox.hidden = rangeSel.value !== "custom"; });
  const modelsList = h("datalist", { id: "models-list" });

  const form = h("form", { class: "filters", "aria-label": t("filter.label"), "data-testid": "filters" },
    field(t("filter.range"), rangeSel), customBox,
    field(t("filter.token"), tokenSel), field(t("filter.model"), modelIn), modelsList,
    field(t("filter.provider"), providerIn), field(t("filter.status_code"), statusIn),
    field(t("filter.cache"), cacheSel),
    h("div", { class: "filter-buttons" },
      h("button", { type: "submit", class: "btn btn-primary" }, t("filter.apply")),
      h("button", { type: "button", class: "btn", onclick: () => {
        form.reset();
        state = { page: 1, cursor: "", page_size: state.page_size, range: "all", start: "", end: "", token: "",
          model: "", provider: "", status_code: "", cache: "" };
        rangeSel.value = "all"; customBox.hidden = true; tokenSel.value = "";
        for (const el of [startIn, endIn, modelIn, providerIn, statusIn]) el.value = "";
        cacheSel.value = "";
        writeState(state);
        load();
      } }, t("filter.reset"))));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    state = { ...state, page: 1, cursor: "", range: rangeSel.value, start: startIn.value, end: endIn.value,
      token: tokenSel.value, model: modelIn.value.trim(), provider: providerIn.value.trim(),
      status_code: statusIn.value.trim(), cache: cacheSel.value };
    writeState(state);
    load();
  });

  const cols = ["time", "method", "path", "model", "tokens", "status", "duration"];
  const table = h("table", { class: "grid grid-logs", "data-testid": "logs-table" },
    h("caption", { class: "sr-only" }, t("page.logs")),
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col", class: `col-${c}` }, t(`col.${c}`))))),
    tbody);

  container.append(
    pageHeader(t("page.logs"), t("logs.subtitle"),
      h("div", { class: "refresh" },
        h("label", { for: "auto-refresh" }, t("refresh.auto")), refreshSel, refreshBtn, updated)),
    panel(null, form),
    errBox,
    h("div", { class: "table-wrap" }, table),
    pagerBox);

  function renderRows(data) {
    clear(tbody);
    const items = (data && data.items) || [];
    if (!items.length) tbody.append(emptyRow(cols.length, t("logs.empty")));
    for (const row of items) {
      const tr = h("tr", { tabindex: "0", class: "row-link", "data-request-id": row.request_id,
        "aria-label": t("logs.open_row", { id: row.request_id }) },
      h("td", { class: "col-time" }, fmtTime(row.created_at)),
      h("td", { class: "col-method" }, row.method || ""),
      h("td", { class: "col-path" }, row.path || ""),
      h("td", { class: "col-model" }, row.model || row.model_requested || "—"),
      tokensCell(row),
      h("td", { class: "col-status" }, statusBadge(row.status_code)),
      h("td", { class: "col-duration num" }, fmtDuration(row.duration_ms)));
      if (openRow === row.request_id) tr.classList.add("selected");
      tr.addEventListener("click", (e) => {
        if (e.target.closest("a,button")) return;
        openDetails(row.request_id, tr);
      });
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          openDetails(row.request_id, tr);
        }
      });
      tbody.append(tr);
    }
    clear(pagerBox).append(pager({
      page: data ? data.page || state.page : state.page, totalPages: data ? data.total_pages : 1,
      total: data ? data.total : 0, pageSize: state.page_size,
      onPage: (p) => {
        // the page next to this one by its cursor; any other by number
        const cursor = !data ? null : p === state.page + 1 ? data.next_cursor
          : p === state.page - 1 && p > 1 ? data.prev_cursor : null;
        state.page = p;
        state.cursor = cursor || "";
        writeState(state);
        load();
      },
      onPageSize: (n) => { state.page_size = n; state.page = 1; state.cursor = ""; writeState(state); load(); },
    }));
  }

  async function load() {
    if (inflight) inflight.abort();
    const ctl = new AbortController();
    inflight = ctl;
    container.setAttribute("aria-busy", "true");
    try {
      const data = await api("/admin/logs", { query: apiQuery(state), signal: ctl.signal });
      if (data && data.page && data.page !== state.page) {
        // Prev reached the newest rows: the server answered with page 1
        state.page = data.page;
        if (state.page === 1) state.cursor = "";
        writeState(state);
      }
      clear(errBox);
      hideTooltip();
      renderRows(data);
      updated.textContent = t("refresh.updated", { time: fmtTime(new Date().toISOString()).slice(11) });
    } catch (err) {
      if (err.name === "AbortError") return;
      clear(errBox).append(errorBox(err));
    } finally {
      if (inflight === ctl) {
        inflight = null;
        container.removeAttribute("aria-busy");
      }
    }
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = null;
    const seconds = Number(refreshSel.value);
    if (seconds > 0) timer = setInterval(() => { if (!document.hidden) load(); }, seconds * 1000);
  }

  function closeDetails() {
    if (!drawer) return;
    const back = drawer.returnFocus;
    drawer.el.remove();
    drawer = null;
    openRow = null;
    for (const tr of tbody.querySelectorAll("tr.selected")) tr.classList.remove("selected");
    if (back && back.isConnected) back.focus();
  }

  async function openDetails(requestId, tr) {
    closeDetails();
    openRow = requestId;
    if (tr) tr.classList.add("selected");
    const body = h("div", { class: "drawer-body" }, h("p", { class: "muted" }, t("common.loading")));
    const closeBtn = h("button", { type: "button", class: "btn btn-icon", "aria-label": t("common.close"),
      "data-testid": "details-close", onclick: closeDetails }, "✕");
    const el = h("aside", { class: "drawer", role: "dialog", "aria-labelledby": "drawer-title",
      "data-testid": "details" },
    h("div", { class: "drawer-head" },
      h("div", {}, h("h2", { id: "drawer-title" }, t("details.title")),
        h("code", { class: "drawer-id" }, requestId)),
      closeBtn),
    body);
    el.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDetails(); });
    document.body.append(el);
    drawer = { el, returnFocus: tr };
    closeBtn.focus();
    try {
      const row = await api(`/admin/logs/${encodeURIComponent(requestId)}`);
      if (!drawer || drawer.el !== el) return;
      clear(body).append(detailsView(row));
    } catch (err) {
      if (drawer && drawer.el === el) clear(body).append(errorBox(err));
    }
  }

  async function loadFilterOptions() {
    try {
      const data = await api("/admin/tokens");
      tokens = (data && data.items) || [];
      for (const tok of tokens) {
        tokenSel.append(h("option", { value: tok.id, selected: tok.id === state.token },
          `${tok.name} (${tok.id.slice(0, 8)})`));
      }
    } catch {
      // the filter still works by typing nothing; the table shows the real error if there is one
    }
    try {
      const models = await api("/admin/analytics/models", { query: { range: "30days" } });
      const items = (models && (models.items || models.models)) || [];
      for (const m of items) if (m.model) modelsList.append(h("option", { value: m.model }));
    } catch {
      // suggestions only
    }
  }

  loadFilterOptions();
  load();
  schedule();
  return {
    unmount() {
      if (timer) clearInterval(timer);
      if (inflight) inflight.abort();
      closeDetails();
    },
  };
}

/** Fallback attempts as a numbered list (model → status, error, time) above the full routing JSON. */
function routingView(routing, json) {
  const attempts = Array.isArray(routing) ? routing : routing.attempts;
  if (!Array.isArray(attempts) || !attempts.length) return json;
  const list = h("ol", { class: "routing-attempts", "data-testid": "routing-attempts" },
    attempts.map((a) => h("li", {}, `${a.model ?? "—"} → `, statusBadge(a.status),
      a.error ? ` ${a.error}` : "", a.ms != null ? ` · ${fmtDuration(a.ms)}` : "")));
  return h("div", {}, list, json);
}

function detailsView(row) {
  const seen = new Set();
  const wrap = h("div", { class: "details" });
  const sections = DETAIL_GROUPS.map(([title, keys]) => [title, keys.filter((k) => k in row)]);
  const other = Object.keys(row).filter((k) => !DETAIL_GROUPS.some(([, keys]) => keys.includes(k)));
  sections.push(["details.other", other]);
  for (const [title, keys] of sections) {
    if (!keys.length) continue;
    const dl = h("dl", { class: "kv" });
    for (const key of keys) {
      seen.add(key);
      const v = row[key];
      let text = fmtValue(v);
      if (key === "cost" || key === "byok_cost" || key === "saved_cost") text = v == null ? "—" : `${fmtCost(v)} (${v})`;
      if (key === "created_at") text = `${fmtTime(v)} (${v})`;
      if (key === "duration_ms" || key === "ttfb_ms") text = v == null ? "—" : fmtDuration(v);
      let value = typeof v === "object" && v !== null ? h("pre", {}, text)
        : key === "status_code" ? statusBadge(v) : text;
      if (key === "routing" && v) value = routingView(v, value);
      dl.append(h("dt", { title: key }, fieldLabel(key)), h("dd", { "data-field": key }, value));
    }
    wrap.append(h("section", { class: "details-section" }, h("h3", {}, t(title)), dl));
  }
  return wrap;
}
