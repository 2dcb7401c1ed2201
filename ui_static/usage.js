// Usage Logs: daily upstream usage in OpenRouter's activity shape, a daily chart, a details modal per row.
import { api } from "./api.js";
import { h, clear } from "./dom.js";
import { t } from "./i18n.js";
import { fmtInt, fmtCost, fmtValue } from "./format.js";
import { barLineChart } from "./chart.js";
import { pageHeader, panel, field, select, errorBox, emptyRow, pager, modal, stat } from "./widgets.js";

const FILTERS = ["start", "end", "model", "provider", "token"];
const CHART_ROWS = 1000; // the API's largest page: one request covers a month of daily rows
const ROW_FIELDS = ["date", "model", "model_permaslug", "provider_name", "endpoint_id", "requests",
  "prompt_tokens", "completion_tokens", "reasoning_tokens", "usage", "byok_usage_inference"];

function isoDay(d) {
  return d.toISOString().slice(0, 10);
}

function readState() {
  const q = new URLSearchParams(location.search);
  const state = { page: Math.max(1, Number(q.get("page")) || 1), page_size: Number(q.get("page_size")) || 20 };
  for (const k of FILTERS) state[k] = q.get(k) || "";
  return state;
}

function writeState(state) {
  const q = new URLSearchParams();
  if (state.page > 1) q.set("page", String(state.page));
  if (state.page_size !== 20) q.set("page_size", String(state.page_size));
  for (const k of FILTERS) if (state[k]) q.set(k, state[k]);
  const s = q.toString();
  history.replaceState(null, "", `${location.pathname}${s ? `?${s}` : ""}`);
}

function filterQuery(state) {
  const query = { model: state.model, provider: state.provider, token_id: state.token };
  if (state.start || state.end) {
    query.start_date = state.start;
    query.end_date = state.end;
  } else {
    query.range = "30days";
  }
  return query;
}

/** One bar per day from the first to the last day shown (days without usage are zero). */
function dailySeries(rows, state) {
  const byDay = new Map();
  for (const r of rows) {
    const d = String(r.date).slice(0, 10);
    const cur = byDay.get(d) || { cost: 0, requests: 0 };
    cur.cost += Number(r.usage) || 0;
    cur.requests += Number(r.requests) || 0;
    byDay.set(d, cur);
  }
  const today = new Date();
  const end = state.end ? new Date(`${state.end}T00:00:00Z`) : new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()));
  let start = state.start ? new Date(`${state.start}T00:00:00Z`) : new Date(end.getTime() - 29 * 86400000);
  if (!state.start && byDay.size) {
    // no start chosen: begin at the first day with data (at most 30 days back), at least a week
    const first = [...byDay.keys()].sort()[0];
    const firstDate = new Date(`${first}T00:00:00Z`);
    if (firstDate > start) start = new Date(Math.min(firstDate.getTime(), end.getTime() - 6 * 86400000));
  }
  const labels = [];
  const cost = [];
  const requests = [];
  for (let d = start; d <= end && labels.length < 400; d = new Date(d.getTime() + 86400000)) {
    const key = isoDay(d);
    const v = byDay.get(key) || { cost: 0, requests: 0 };
    labels.push(key.slice(5));
    cost.push(v.cost);
    requests.push(v.requests);
  }
  return { labels, cost, requests };
}

export function mount(container, { session }) {
  let state = readState();
  const isAdmin = session.kind === "admin";
  const tbody = h("tbody");
  const pagerBox = h("div", { class: "pager-box" });
  const errBox = h("div");
  const chartBox = h("div", { class: "chart-slot", "data-testid": "usage-chart" });
  const totalsBox = h("div", { class: "stat-row" });

  const startIn = h("input", { type: "date", name: "start", value: state.start });
  const endIn = h("input", { type: "date", name: "end", value: state.end });
  const modelIn = h("input", { type: "text", name: "model", value: state.model, placeholder: t("filter.any"),
    autocomplete: "off" });
  const providerIn = h("input", { type: "text", name: "provider", value: state.provider,
    placeholder: t("filter.any"), autocomplete: "off" });
  const tokenSel = isAdmin ? select([["", t("filter.any")]], state.token, { name: "token" }) : null;

  const form = h("form", { class: "filters", "aria-label": t("filter.label"), "data-testid": "filters" },
    field(t("filter.from"), startIn), field(t("filter.to"), endIn),
    field(t("filter.model"), modelIn), field(t("filter.provider"), providerIn),
    tokenSel ? field(t("filter.token"), tokenSel) : null,
    h("div", { class: "filter-buttons" },
      h("button", { type: "submit", class: "btn btn-primary" }, t("filter.apply")),
      h("button", { type: "button", class: "btn", onclick: () => {
        for (const el of [startIn, endIn, modelIn, providerIn]) el.value = "";
        if (tokenSel) tokenSel.value = "";
        state = { page: 1, page_size: state.page_size, start: "", end: "", model: "", provider: "", token: "" };
        writeState(state);
        loadAll();
      } }, t("filter.reset"))));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    state = { ...state, page: 1, start: startIn.value, end: endIn.value, model: modelIn.value.trim(),
      provider: providerIn.value.trim(), token: tokenSel ? tokenSel.value : "" };
    writeState(state);
    loadAll();
  });

  const cols = ["date", "model", "provider", "requests", "prompt_tokens", "completion_tokens",
    "reasoning_tokens", "usage", "actions"];
  const table = h("table", { class: "grid grid-usage", "data-testid": "usage-table" },
    h("caption", { class: "sr-only" }, t("page.usage")),
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", {
      scope: "col", class: ["requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "usage"].includes(c) ? "num" : "",
    }, c === "actions" ? h("span", { class: "sr-only" }, t("col.actions")) : t(`col.${c}`))))),
    tbody);

  container.append(
    pageHeader(t("page.usage"), isAdmin ? t("usage.subtitle_admin") : t("usage.subtitle_token", { name: session.name }),
      h("button", { type: "button", class: "btn", "data-testid": "refresh", onclick: () => loadAll() }, "↻ ", t("refresh.now"))),
    panel(null, form),
    errBox,
    panel(t("usage.chart_title"), totalsBox, chartBox),
    h("div", { class: "table-wrap" }, table),
    pagerBox);

  function showDetails(row) {
    const keys = [...ROW_FIELDS, ...Object.keys(row).filter((k) => !ROW_FIELDS.includes(k))];
    const dl = h("dl", { class: "kv" });
    for (const k of keys) {
      if (!(k in row)) continue;
      let text = fmtValue(row[k]);
      if (k === "usage" || k === "byok_usage_inference") text = row[k] == null ? "—" : `${fmtCost(row[k])} (${row[k]})`;
      else if (typeof row[k] === "number") text = fmtInt(row[k]);
      const label = t(`col.${k}`, null, null) ?? t(`field.${k}`, null, k);
      dl.append(h("dt", {}, label, h("code", { class: "field-key" }, k)), h("dd", { "data-field": k }, text));
    }
    modal({ title: t("usage.details_title"), body: dl, wide: false });
  }

  async function loadTable() {
    try {
      const data = await api("/api/tokens/usage-logs", { query: { ...filterQuery(state), page: state.page,
        page_size: state.page_size } });
      clear(errBox);
      clear(tbody);
      const rows = (data && data.data) || [];
      if (!rows.length) tbody.append(emptyRow(cols.length, t("usage.empty")));
      for (const r of rows) {
        tbody.append(h("tr", {},
          h("td", { class: "col-time" }, String(r.date).slice(0, 10)),
          h("td", { class: "col-model" }, r.model || "—"),
          h("td", {}, r.provider_name || "—"),
          h("td", { class: "num" }, fmtInt(r.requests)),
          h("td", { class: "num" }, fmtInt(r.prompt_tokens)),
          h("td", { class: "num" }, fmtInt(r.completion_tokens)),
          h("td", { class: "num" }, fmtInt(r.reasoning_tokens)),
          h("td", { class: "num" }, fmtCost(r.usage)),
          h("td", { class: "col-actions" }, h("button", { type: "button", class: "btn btn-small",
            "data-testid": "usage-details", onclick: () => showDetails(r) }, t("usage.details")))));
      }
      clear(pagerBox).append(pager({
        page: data.page, totalPages: data.total_pages, total: data.total, pageSize: state.page_size,
        onPage: (p) => { state.page = p; writeState(state); loadTable(); },
        onPageSize: (n) => { state.page_size = n; state.page = 1; writeState(state); loadTable(); },
      }));
    } catch (err) {
      clear(errBox).append(errorBox(err));
    }
  }

  async function loadChart() {
    try {
      const data = await api("/api/tokens/usage-logs", { query: { ...filterQuery(state), page: 1,
        page_size: CHART_ROWS } });
      const rows = (data && data.data) || [];
      const s = dailySeries(rows, state);
      const totalCost = s.cost.reduce((a, b) => a + b, 0);
      const totalReq = s.requests.reduce((a, b) => a + b, 0);
      clear(totalsBox).append(
        stat(t("usage.total_cost"), fmtCost(totalCost)),
        stat(t("usage.total_requests"), fmtInt(totalReq)),
        stat(t("usage.days"), fmtInt(s.labels.length)));
      clear(chartBox).append(barLineChart({
        labels: s.labels, title: t("usage.chart_title"),
        bars: { values: s.cost, name: t("usage.cost"), format: (v) => fmtCost(v) },
        line: { values: s.requests, name: t("col.requests"), format: (v) => fmtInt(v) },
      }));
      if (data.total > rows.length) chartBox.append(h("p", { class: "hint" }, t("usage.chart_truncated")));
    } catch (err) {
      clear(chartBox).append(errorBox(err));
    }
  }

  function loadAll() {
    loadTable();
    loadChart();
  }

  if (tokenSel) {
    api("/admin/tokens").then((data) => {
      for (const tok of (data && data.items) || []) {
        tokenSel.append(h("option", { value: tok.id, selected: tok.id === state.token }, `${tok.name} (${tok.id.slice(0, 8)})`));
      }
    }).catch(() => {});
  }
  loadAll();
  return { unmount() {} };
}
