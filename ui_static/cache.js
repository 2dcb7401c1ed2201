// Cache: hit rate over time (exact vs semantic), savings, hit rate by model, top savings, per-run
// evolution across iterations, and purging a token's cache. Token holders see their own stats.
import { api } from "./api.js";
import { h, clear } from "./dom.js";
import { t } from "./i18n.js";
import { fmtInt, fmtCost, fmtPct, fmtTime, fmtBytes } from "./format.js";
import { lineChart, meter } from "./chart.js";
import {
  pageHeader, panel, field, select, errorBox, emptyRow, confirmDialog, toast, stat,
} from "./widgets.js";

const RANGES = ["7days", "30days", "90days", "all"];

function readState() {
  const q = new URLSearchParams(location.search);
  const range = q.get("range");
  return { range: RANGES.includes(range) ? range : "30days", run_id: q.get("run_id") || "", query_id: q.get("query_id") || "" };
}

function writeState(state) {
  const q = new URLSearchParams();
  if (state.range !== "30days") q.set("range", state.range);
  if (state.run_id) q.set("run_id", state.run_id);
  if (state.query_id) q.set("query_id", state.query_id);
  const s = q.toString();
  history.replaceState(null, "", `${location.pathname}${s ? `?${s}` : ""}`);
}

function hitMark(status) {
  if (status === "exact") return h("span", { class: "mark mark-exact", "data-mark": "exact" }, t("cache.exact_short"));
  if (status === "semantic") return h("span", { class: "mark mark-semantic", "data-mark": "semantic" }, t("cache.semantic_short"));
  return h("span", { class: "muted" }, status || "—");
}

/** Hits of one kind over the cacheable calls (hits + misses) of a day or an iteration. */
function share(r, key) {
  const cacheable = (r.cache_hits || 0) + (r.cache_misses || 0);
  return cacheable ? (r[key] || 0) / cacheable : 0;
}

function table(cols, numeric, testid) {
  const tbody = h("tbody");
  const el = h("table", { class: "grid", "data-testid": testid },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col", class: numeric.includes(c) ? "num" : "" },
      c === "actions" ? h("span", { class: "sr-only" }, t("col.actions")) : t(`col.${c}`))))),
    tbody);
  return { el, tbody, wrap: h("div", { class: "table-wrap" }, el) };
}

function summaryStats(s) {
  return h("div", { class: "stat-row", "data-testid": "cache-summary" },
    stat(t("cache.hit_rate"), fmtPct(s.cache_hit_rate, 1), t("cache.hits_of", { hits: fmtInt(s.cache_hits), total: fmtInt((s.cache_hits || 0) + (s.cache_misses || 0)) })),
    stat(t("cache.exact_hits"), fmtInt(s.exact_hits)),
    stat(t("cache.semantic_hits"), fmtInt(s.semantic_hits), s.avg_similarity != null ? t("cache.avg_similarity", { v: fmtPct(s.avg_similarity, 1) }) : null),
    stat(t("cache.tokens_saved"), fmtInt(s.saved_tokens)),
    stat(t("cache.cost_saved"), fmtCost(s.saved_cost)),
    // the provider's prompt cache saves on calls that still happen: shown apart from the proxy's own cache
    s.provider_prompt_cache ? stat(t("cache.provider_saved"), fmtCost(s.provider_prompt_cache.net_savings),
      t("cache.provider_saved_note", { tokens: fmtInt(s.provider_prompt_cache.cache_read_tokens) })) : null);
}

function byModelTable(rows) {
  const numeric = ["requests", "exact_hits", "semantic_hits", "hit_rate", "tokens_saved", "cost_saved"];
  const tb = table(["model", ...numeric], numeric, "cache-by-model");
  if (!rows.length) tb.tbody.append(emptyRow(7));
  for (const r of rows) {
    tb.tbody.append(h("tr", {},
      h("td", { class: "col-model" }, r.model || "—"),
      h("td", { class: "num" }, fmtInt(r.requests)),
      h("td", { class: "num" }, fmtInt(r.exact_hits)),
      h("td", { class: "num" }, fmtInt(r.semantic_hits)),
      h("td", { class: "num" }, h("span", { class: "rate" }, meter(r.cache_hit_rate, t("cache.hit_rate")), " ", fmtPct(r.cache_hit_rate, 1))),
      h("td", { class: "num" }, fmtInt(r.saved_tokens)),
      h("td", { class: "num" }, fmtCost(r.saved_cost))));
  }
  return tb.wrap;
}

export function mount(container, { session }) {
  const isAdmin = session.kind === "admin";
  let state = readState();
  const rangeSel = select(RANGES.map((r) => [r, t(`range.${r}`)]), state.range, { id: "cache-range", "data-testid": "cache-range" });
  rangeSel.addEventListener("change", () => { state.range = rangeSel.value; writeState(state); loadStats(); });
  const refresh = h("button", { type: "button", class: "btn", "data-testid": "refresh", onclick: () => loadAll() }, "↻ ", t("refresh.now"));

  const summaryBox = h("div");
  const chartBox = h("div", { class: "chart-slot", "data-testid": "hit-rate-chart" });
  const modelBox = h("div");
  const savingsBox = h("div");
  const evoBox = h("div", { "data-testid": "evolution" });
  const storeBox = h("div");

  container.append(pageHeader(t("page.cache"),
    isAdmin ? t("cache.subtitle_admin") : t("cache.subtitle_token", { name: session.name }),
    h("div", { class: "refresh" }, h("label", { for: "cache-range" }, t("filter.range")), rangeSel, refresh)));
  container.append(summaryBox);
  if (isAdmin) container.append(panel(t("cache.over_time"), chartBox));
  container.append(panel(t("cache.by_model"), modelBox));
  if (isAdmin) {
    const runIn = h("input", { type: "text", name: "run_id", value: state.run_id, autocomplete: "off", "data-testid": "run-id" });
    const queryIn = h("input", { type: "text", name: "query_id", value: state.query_id, autocomplete: "off" });
    const evoForm = h("form", { class: "filters filters-inline" },
      field(t("cache.run_id"), runIn), field(t("cache.query_id"), queryIn),
      h("div", { class: "filter-buttons" }, h("button", { type: "submit", class: "btn btn-primary" }, t("cache.show_evolution"))));
    evoForm.addEventListener("submit", (e) => {
      e.preventDefault();
      state.run_id = runIn.value.trim();
      state.query_id = queryIn.value.trim();
      writeState(state);
      loadEvolution();
    });
    container.append(
      panel(t("cache.top_savings"), savingsBox),
      panel(t("cache.evolution"), h("p", { class: "hint" }, t("cache.evolution_help")), evoForm, evoBox),
      panel(t("cache.storage"), storeBox));
  }

  async function loadStats() {
    const query = { range: state.range };
    try {
      const stats = await api(isAdmin ? "/admin/analytics/cache" : "/api/tokens/cache-stats", { query });
      clear(summaryBox).append(summaryStats(stats));
      clear(modelBox).append(byModelTable(stats.by_model || []));
    } catch (err) {
      clear(summaryBox).append(errorBox(err));
    }
    if (!isAdmin) return;
    try {
      const daily = await api("/admin/analytics/daily", { query: { range: state.range === "all" ? "90days" : state.range } });
      // start at the first day with traffic (but show at least a week) so a young proxy's chart is not flat
      let rows = daily.data || [];
      const first = rows.findIndex((r) => (r.requests || 0) > 0);
      if (first > 0) rows = rows.slice(Math.max(0, Math.min(first, rows.length - 7)));
      clear(chartBox).append(lineChart({
        labels: rows.map((r) => String(r.date).slice(5, 10)),
        series: [
          { name: t("cache.exact"), values: rows.map((r) => share(r, "exact_hits")), cls: "line-exact" },
          { name: t("cache.semantic"), values: rows.map((r) => share(r, "semantic_hits")), cls: "line-semantic" },
        ],
        format: (v) => fmtPct(v), max: 1, title: t("cache.over_time"),
      }));
    } catch (err) {
      clear(chartBox).append(errorBox(err));
    }
    try {
      const top = await api("/admin/analytics/cache/top-savings", { query: { range: state.range, limit: 10 } });
      const numeric = ["similarity", "tokens_saved", "cost_saved"];
      const tb = table(["time", "token", "model", "cache", ...numeric], numeric, "top-savings");
      const rows = top.data || [];
      if (!rows.length) tb.tbody.append(emptyRow(7, t("cache.no_savings")));
      for (const r of rows) {
        tb.tbody.append(h("tr", {},
          h("td", {}, fmtTime(r.created_at)),
          h("td", {}, r.token_name || r.token_id || "—"),
          h("td", { class: "col-model" }, r.model || "—"),
          h("td", {}, hitMark(r.cache_status)),
          h("td", { class: "num" }, r.similarity != null ? fmtPct(r.similarity, 1) : "—"),
          h("td", { class: "num" }, fmtInt((r.saved_prompt_tokens || 0) + (r.saved_completion_tokens || 0))),
          h("td", { class: "num" }, fmtCost(r.saved_cost))));
      }
      clear(savingsBox).append(tb.wrap);
    } catch (err) {
      clear(savingsBox).append(errorBox(err));
    }
  }

  async function loadEvolution() {
    if (!state.run_id && !state.query_id) {
      clear(evoBox).append(h("p", { class: "muted" }, t("cache.evolution_empty")));
      return;
    }
    try {
      const evo = await api("/admin/analytics/cache/evolution", { query: { run_id: state.run_id, query_id: state.query_id } });
      const rows = evo.data || [];
      const numeric = ["requests", "exact_hits", "semantic_hits", "hit_rate", "cost", "cost_saved"];
      const tb = table(["iteration", ...numeric], numeric, "evolution-table");
      if (!rows.length) tb.tbody.append(emptyRow(7, t("cache.evolution_none")));
      for (const r of rows) {
        tb.tbody.append(h("tr", {},
          h("td", {}, r.iteration ?? "—"),
          h("td", { class: "num" }, fmtInt(r.requests)),
          h("td", { class: "num" }, fmtInt(r.exact_hits)),
          h("td", { class: "num" }, fmtInt(r.semantic_hits)),
          h("td", { class: "num" }, fmtPct(r.cache_hit_rate, 1)),
          h("td", { class: "num" }, fmtCost(r.cost)),
          h("td", { class: "num" }, fmtCost(r.saved_cost))));
      }
      clear(evoBox);
      if (rows.length > 1) {
        evoBox.append(lineChart({
          labels: rows.map((r) => `#${r.iteration ?? "—"}`),
          series: [
            { name: t("cache.hit_rate"), values: rows.map((r) => r.cache_hit_rate || 0), cls: "line-total" },
            { name: t("cache.exact"), values: rows.map((r) => share(r, "exact_hits")), cls: "line-exact" },
            { name: t("cache.semantic"), values: rows.map((r) => share(r, "semantic_hits")), cls: "line-semantic" },
          ],
          format: (v) => fmtPct(v), max: 1, title: t("cache.evolution"),
        }));
      }
      evoBox.append(tb.wrap);
    } catch (err) {
      clear(evoBox).append(errorBox(err));
    }
  }

  async function purge(scope, label) {
    const ok = await confirmDialog({
      title: t("cache.purge_title"),
      message: t("cache.purge_confirm", { name: label }),
      confirmLabel: t("cache.purge"),
    });
    if (!ok) return;
    try {
      const path = scope.startsWith("token:")
        ? `/admin/cache/tokens/${encodeURIComponent(scope.slice(6))}`
        : `/admin/cache/scopes/${encodeURIComponent(scope)}`;
      const res = await api(path, { method: "DELETE" });
      toast(t("cache.purged", { n: fmtInt(res.deleted), name: label }), "ok");
      loadStorage();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  async function loadStorage() {
    try {
      const [stats, tokens] = await Promise.all([api("/admin/cache/stats"), api("/admin/tokens").catch(() => ({ items: [] }))]);
      const names = new Map(((tokens && tokens.items) || []).map((tok) => [tok.id, tok.name]));
      const numeric = ["entries", "size"];
      const tb = table(["scope", "token", ...numeric, "actions"], numeric, "cache-scopes");
      const scopes = stats.scopes || [];
      // tokens that cache but have nothing stored yet can still be purged (a no-op, but it reassures)
      for (const tok of (tokens.items || [])) {
        if (!tok.revoked && tok.cache_mode !== "off" && !tok.cache_shared_scope && !scopes.some((s) => s.token_id === tok.id)) {
          scopes.push({ scope: `token:${tok.id}`, token_id: tok.id, entries: 0, bytes: 0 });
        }
      }
      if (!scopes.length) tb.tbody.append(emptyRow(5, t("cache.no_entries")));
      for (const s of scopes) {
        const label = s.token_id ? (names.get(s.token_id) || s.token_id) : s.scope;
        tb.tbody.append(h("tr", { "data-scope": s.scope },
          h("td", {}, h("code", {}, s.scope)),
          h("td", {}, s.token_id ? label : "—"),
          h("td", { class: "num" }, fmtInt(s.entries)),
          h("td", { class: "num" }, fmtBytes(s.bytes)),
          h("td", { class: "col-actions" }, h("button", { type: "button", class: "btn btn-small btn-danger",
            "data-testid": "purge", onclick: () => purge(s.scope, label) }, t("cache.purge")))));
      }
      const c = stats.counters || {};
      clear(storeBox).append(
        h("p", { class: "hint" }, t("cache.counters", {
          exact: fmtInt(c.hits_exact || 0), semantic: fmtInt(c.hits_semantic || 0), misses: fmtInt(c.misses || 0),
          stores: fmtInt(c.stores || 0),
        }), " · ", stats.semantic_ready ? t("cache.semantic_ready") : t("cache.semantic_not_ready")),
        tb.wrap);
    } catch (err) {
      clear(storeBox).append(errorBox(err));
    }
  }

  function loadAll() {
    loadStats();
    if (isAdmin) {
      loadEvolution();
      loadStorage();
    }
  }

  loadAll();
  return { unmount() {} };
}
