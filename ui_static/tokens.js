// Tokens: list, create (with cache mode and semantic threshold), edit cache settings, revoke.
import { api } from "./api.js";
import { h, clear, nextId } from "./dom.js";
import { t } from "./i18n.js";
import { fmtTime, fmtPct } from "./format.js";
import { pageHeader, panel, field, select, errorBox, emptyRow, modal, confirmDialog, toast } from "./widgets.js";

const MODES = ["off", "exact", "semantic"];
const DEFAULT_THRESHOLD = 50;

/** Cache mode radios plus the threshold control, shown only for semantic caching. */
function cacheControls(mode = "off", thresholdPct = DEFAULT_THRESHOLD) {
  const group = nextId("mode");
  const range = h("input", { type: "range", min: "0", max: "100", step: "1", value: String(thresholdPct),
    "aria-label": t("tokens.threshold"), "data-testid": "threshold-range" });
  const number = h("input", { type: "number", min: "0", max: "100", step: "1", value: String(thresholdPct),
    class: "threshold-number", "data-testid": "threshold", id: nextId("threshold") });
  const example = h("p", { class: "hint threshold-live", "aria-live": "polite" });
  const sync = (v) => {
    const n = Math.max(0, Math.min(100, Math.round(Number(v) || 0)));
    example.textContent = t("tokens.threshold_live", { pct: `${n}%`, frac: (n / 100).toFixed(2) });
    return n;
  };
  range.addEventListener("input", () => { number.value = String(sync(range.value)); });
  number.addEventListener("input", () => { range.value = String(sync(number.value)); });
  sync(thresholdPct);
  const thresholdBox = h("div", { class: "threshold-box", hidden: mode !== "semantic", "data-testid": "threshold-box" },
    h("label", { for: number.id }, t("tokens.threshold")),
    h("div", { class: "threshold-row" }, range, number, h("span", { class: "unit" }, "%")),
    example);
  const help = h("p", { class: "mode-help", "data-testid": "mode-help" });
  const setHelp = (m) => {
    help.textContent = t(`tokens.help_${m}`);
    thresholdBox.hidden = m !== "semantic";
  };
  const radios = MODES.map((m) => {
    const input = h("input", { type: "radio", name: group, value: m, checked: m === mode, "data-testid": `mode-${m}` });
    input.addEventListener("change", () => setHelp(m));
    return h("label", { class: `radio radio-${m}` }, input, h("span", {}, t(`cache.mode_${m}`)));
  });
  setHelp(mode);
  const el = h("fieldset", { class: "cache-controls" },
    h("legend", {}, t("tokens.caching")),
    h("div", { class: "radio-row" }, radios),
    help, thresholdBox,
    h("p", { class: "hint" }, t("tokens.help_example")));
  return {
    el,
    value() {
      const picked = el.querySelector(`input[name="${group}"]:checked`);
      const m = picked ? picked.value : "off";
      const out = { cache_mode: m };
      if (m === "semantic") out.similarity_threshold = Math.max(0, Math.min(100, Number(number.value) || 0)) / 100;
      return out;
    },
  };
}

const PLANS = ["free", "premium", "enterprise", "unlimited"];
const LIMITS = [["rpm", "1"], ["tpm", "1"], ["requests_per_month", "1"], ["tokens_per_month", "1"], ["cost_per_month", "0.01"]];

/** Quotas, plan, fallback models and automatic prompt-cache breakpoints; value() holds only what changed. */
function limitControls(tok) {
  const numberIn = (name, step) => h("input", { type: "number", min: "0", step, name, inputmode: "decimal",
    value: tok[name] == null ? "" : String(tok[name]), "data-testid": `limit-${name}` });
  const inputs = Object.fromEntries(LIMITS.map(([name, step]) => [name, numberIn(name, step)]));
  const plan = select([["", t("tokens.plan_none")], ...PLANS.map((p) => [p, p])], tok.plan || "",
    { name: "plan", "data-testid": "limit-plan" });
  const fallback = h("input", { type: "text", name: "fallback_models", autocomplete: "off", spellcheck: "false",
    value: (tok.fallback_models || []).join(", "), placeholder: "openai/gpt-4o-mini, anthropic/claude-sonnet-4",
    "data-testid": "fallback-models" });
  const auto = h("input", { type: "checkbox", name: "auto_cache_breakpoints", checked: !!tok.auto_cache_breakpoints,
    "data-testid": "auto-cache" });
  const minChars = numberIn("auto_cache_min_chars", "1");
  const el = h("fieldset", { class: "cache-controls limit-controls", "data-testid": "limit-controls" },
    h("legend", {}, t("tokens.limits")),
    h("p", { class: "hint" }, t("tokens.limits_hint")),
    h("div", { class: "limit-grid" }, field(t("tokens.plan"), plan),
      LIMITS.map(([name]) => field(t(`tokens.${name}`), inputs[name]))),
    field(t("tokens.fallback_models"), fallback, t("tokens.fallback_hint")),
    h("label", { class: "check" }, auto, " ", t("tokens.auto_cache")),
    field(t("tokens.auto_cache_min_chars"), minChars));
  const num = (input) => (input.value.trim() === "" ? null : Number(input.value));
  return {
    el,
    value() {
      const now = { plan: plan.value || null, auto_cache_breakpoints: auto.checked,
        fallback_models: fallback.value.split(",").map((m) => m.trim()).filter(Boolean),
        auto_cache_min_chars: num(minChars) };
      for (const [name] of LIMITS) now[name] = num(inputs[name]);
      const out = {};
      for (const [name, v] of Object.entries(now)) {
        const was = name === "fallback_models" ? (tok.fallback_models || []) : (tok[name] ?? (name === "auto_cache_breakpoints" ? false : null));
        if (JSON.stringify(v) !== JSON.stringify(was)) out[name] = name === "fallback_models" && !v.length ? null : v;
      }
      return out;
    },
  };
}

export function mount(container) {
  const tbody = h("tbody");
  const errBox = h("div");
  const secretBox = h("div", { class: "secret-slot" });
  const showRevoked = h("input", { type: "checkbox", id: "show-revoked", checked: true });
  showRevoked.addEventListener("change", load);

  // create form
  const nameIn = h("input", { type: "text", name: "name", required: true, maxlength: "200", autocomplete: "off",
    placeholder: t("tokens.name_placeholder"), "data-testid": "token-name" });
  let controls = cacheControls();
  const formErr = h("div", { role: "alert", class: "form-error" });
  const createBtn = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "create-token" }, t("tokens.create"));
  const form = h("form", { class: "token-form", "aria-label": t("tokens.create_title") },
    field(t("tokens.name"), nameIn), controls.el, h("div", { class: "form-actions" }, formErr, createBtn));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    formErr.textContent = "";
    const name = nameIn.value.trim();
    if (!name) {
      formErr.textContent = t("tokens.name_required");
      nameIn.focus();
      return;
    }
    createBtn.disabled = true;
    try {
      const created = await api("/admin/tokens", { method: "POST", body: { name, ...controls.value() } });
      nameIn.value = "";
      const fresh = cacheControls();
      controls.el.replaceWith(fresh.el);
      controls = fresh;
      showSecret(created);
      load();
    } catch (err) {
      formErr.textContent = err.message;
    } finally {
      createBtn.disabled = false;
    }
  });

  const cols = ["name", "id", "cache_mode", "threshold", "created", "status", "actions"];
  const table = h("table", { class: "grid grid-tokens", "data-testid": "tokens-table" },
    h("caption", { class: "sr-only" }, t("page.tokens")),
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, t(`col.${c}`))))),
    tbody);

  container.append(
    pageHeader(t("page.tokens"), t("tokens.subtitle")),
    secretBox,
    panel(t("tokens.create_title"), form),
    panel(t("tokens.list_title"),
      h("div", { class: "list-tools" },
        h("label", { class: "check" }, showRevoked, " ", t("tokens.show_revoked"))),
      errBox,
      h("div", { class: "table-wrap" }, table)));

  function showSecret(created) {
    const secretIn = h("input", { type: "text", readonly: true, value: created.token, class: "secret-value",
      "aria-label": t("tokens.secret_label"), "data-testid": "new-secret", spellcheck: "false" });
    const copied = h("span", { class: "copied", "aria-live": "polite" });
    const copyBtn = h("button", { type: "button", class: "btn btn-primary", "data-testid": "copy-secret" }, t("tokens.copy"));
    copyBtn.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(created.token);
      } catch {
        secretIn.select();
        document.execCommand("copy");
      }
      copied.textContent = t("tokens.copied");
    });
    const done = h("button", { type: "button", class: "btn", onclick: () => clear(secretBox) }, t("tokens.secret_done"));
    clear(secretBox).append(h("section", { class: "panel secret-panel", role: "region", "aria-label": t("tokens.secret_title"),
      "data-testid": "secret-panel" },
    h("h2", { class: "panel-title" }, t("tokens.secret_title"), " — ", created.name),
    h("p", { class: "warning", role: "alert" }, "⚠ ", t("tokens.secret_warning")),
    h("div", { class: "secret-row" }, secretIn, copyBtn, copied),
    done));
    secretIn.focus();
    secretIn.select();
  }

  function editDialog(tok) {
    const ctl = cacheControls(tok.cache_mode, Math.round((tok.similarity_threshold ?? 0.5) * 100));
    const limits = limitControls(tok);
    const err = h("div", { role: "alert", class: "form-error" });
    const save = h("button", { type: "button", class: "btn btn-primary", "data-testid": "save-token" }, t("common.save"));
    const cancel = h("button", { type: "button", class: "btn", onclick: () => dlg.close("cancel") }, t("common.cancel"));
    const dlg = modal({
      title: t("tokens.edit_title", { name: tok.name }),
      body: h("div", {}, h("p", { class: "muted" }, tok.id), ctl.el, limits.el, err),
      actions: [cancel, save],
    });
    save.addEventListener("click", async () => {
      save.disabled = true;
      try {
        await api(`/admin/tokens/${encodeURIComponent(tok.id)}`, { method: "PATCH", body: { ...ctl.value(), ...limits.value() } });
        dlg.close("ok");
        toast(t("tokens.saved", { name: tok.name }), "ok");
        load();
      } catch (e) {
        err.textContent = e.message;
        save.disabled = false;
      }
    });
  }

  async function revoke(tok) {
    const ok = await confirmDialog({
      title: t("tokens.revoke_title"),
      message: t("tokens.revoke_confirm", { name: tok.name, id: tok.id }),
      confirmLabel: t("tokens.revoke"),
    });
    if (!ok) return;
    try {
      await api(`/admin/tokens/${encodeURIComponent(tok.id)}`, { method: "DELETE" });
      toast(t("tokens.revoked_toast", { name: tok.name }), "ok");
      load();
    } catch (e) {
      toast(e.message, "error");
    }
  }

  async function load() {
    try {
      const data = await api("/admin/tokens", { query: { include_revoked: showRevoked.checked ? "true" : "false" } });
      clear(errBox);
      clear(tbody);
      const items = (data && data.items) || [];
      if (!items.length) tbody.append(emptyRow(cols.length, t("tokens.empty")));
      for (const tok of items) {
        const active = !tok.revoked;
        tbody.append(h("tr", { "data-token-id": tok.id, class: active ? "" : "revoked" },
          h("td", { class: "col-name" }, tok.name),
          h("td", {}, h("code", {}, tok.id)),
          h("td", {}, h("span", { class: `mode mode-${tok.cache_mode}` }, t(`cache.mode_${tok.cache_mode}`, null, tok.cache_mode))),
          h("td", { class: "num", "data-testid": "threshold-cell" },
            tok.cache_mode === "semantic" ? fmtPct(tok.similarity_threshold) : h("span", { class: "muted", title: t("tokens.threshold_na") }, "—")),
          h("td", { class: "col-time" }, fmtTime(tok.created_at)),
          h("td", {}, h("span", { class: active ? "pill pill-ok" : "pill pill-bad", "data-testid": "token-status" },
            t(active ? "tokens.active" : "tokens.revoked"))),
          h("td", { class: "col-actions" }, active ? [
            h("button", { type: "button", class: "btn btn-small", "data-testid": "edit-token",
              onclick: () => editDialog(tok) }, t("tokens.edit")),
            " ",
            h("button", { type: "button", class: "btn btn-small btn-danger", "data-testid": "revoke-token",
              onclick: () => revoke(tok) }, t("tokens.revoke")),
          ] : h("span", { class: "muted" }, tok.revoked_at ? fmtTime(tok.revoked_at) : ""))));
      }
    } catch (err) {
      clear(errBox).append(errorBox(err));
    }
  }

  load();
  return { unmount() {} };
}
