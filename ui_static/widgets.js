// Shared pieces of the pages: header, pager, dialogs, toasts, the tooltip, badges.
import { h, clear } from "./dom.js";
import { t } from "./i18n.js";
import { fmtInt } from "./format.js";

export function pageHeader(title, subtitle, ...actions) {
  return h("header", { class: "page-header" },
    h("div", { class: "page-heading" },
      h("h1", { id: "page-title" }, title),
      subtitle ? h("p", { class: "page-subtitle" }, subtitle) : null),
    h("div", { class: "page-actions" }, actions));
}

export function panel(title, ...children) {
  return h("section", { class: "panel", "aria-label": title },
    title ? h("h2", { class: "panel-title" }, title) : null,
    children);
}

export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control,
    hint ? h("span", { class: "hint" }, hint) : null);
}

export function select(options, value, props = {}) {
  const el = h("select", props);
  for (const [v, label] of options) el.append(h("option", { value: v, selected: String(v) === String(value ?? "") }, label));
  return el;
}

export function errorBox(err) {
  const message = err && err.message ? err.message : String(err);
  return h("div", { class: "error-box", role: "alert" }, h("strong", {}, t("common.error")), " ", message);
}

export function emptyRow(colspan, text) {
  return h("tr", { class: "empty" }, h("td", { colspan }, text || t("common.no_data")));
}

export function statusBadge(code) {
  const n = Number(code);
  const cls = n >= 200 && n < 300 ? "ok" : n >= 400 ? "bad" : "meh";
  return h("span", { class: `status status-${cls}`, "data-status": String(code ?? "") }, code ?? "—");
}

/** Page X of Y with first/prev/next/last and a page size picker. */
export function pager({ page, totalPages, total, pageSize, onPage, onPageSize }) {
  const last = Math.max(1, totalPages || 1);
  const btn = (label, aria, target, disabled) => h("button", {
    type: "button", class: "btn btn-small", "aria-label": aria, disabled,
    onclick: () => onPage(target),
  }, label);
  return h("nav", { class: "pager", "aria-label": t("pager.label") },
    h("span", { class: "pager-info", "data-testid": "pager-info" },
      t("pager.info", { page: fmtInt(page), pages: fmtInt(last), total: fmtInt(total ?? 0) })),
    h("div", { class: "pager-buttons" },
      btn("«", t("pager.first"), 1, page <= 1),
      btn("‹ " + t("pager.prev"), t("pager.prev"), page - 1, page <= 1),
      btn(t("pager.next") + " ›", t("pager.next"), page + 1, page >= last),
      btn("»", t("pager.last"), last, page >= last)),
    onPageSize ? h("label", { class: "pager-size" }, t("pager.page_size"), " ",
      select([[10, "10"], [20, "20"], [50, "50"], [100, "100"]], pageSize, {
        onchange: (e) => onPageSize(Number(e.target.value)),
      })) : null);
}

/** A modal <dialog>; resolves when it closes. */
export function modal({ title, body, actions = [], wide = false, onclose }) {
  const titleId = `dlg-${Math.random().toString(36).slice(2, 9)}`;
  const dlg = h("dialog", { class: wide ? "modal modal-wide" : "modal", "aria-labelledby": titleId },
    h("div", { class: "modal-head" },
      h("h2", { id: titleId }, title),
      h("button", { type: "button", class: "btn btn-icon", "aria-label": t("common.close"),
        onclick: () => dlg.close("cancel") }, "✕")),
    h("div", { class: "modal-body" }, body),
    actions.length ? h("div", { class: "modal-actions" }, actions) : null);
  dlg.addEventListener("close", () => {
    dlg.remove();
    if (onclose) onclose(dlg.returnValue);
  });
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

/** Ask before something irreversible; resolves true when confirmed. */
export function confirmDialog({ title, message, confirmLabel, danger = true }) {
  return new Promise((resolve) => {
    let answer = false;
    const ok = h("button", { type: "button", class: danger ? "btn btn-danger" : "btn btn-primary",
      "data-testid": "confirm-ok", onclick: () => { answer = true; dlg.close("ok"); } }, confirmLabel || t("common.confirm"));
    const cancel = h("button", { type: "button", class: "btn", "data-testid": "confirm-cancel",
      onclick: () => dlg.close("cancel") }, t("common.cancel"));
    const dlg = modal({ title, body: h("p", { class: "confirm-message" }, message), actions: [cancel, ok],
      onclose: () => resolve(answer) });
    cancel.focus();
  });
}

let toastRegion = null;
export function toast(message, kind = "info") {
  if (!toastRegion || !toastRegion.isConnected) {
    toastRegion = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(toastRegion);
  }
  const el = h("div", { class: `toast toast-${kind}` }, message);
  toastRegion.append(el);
  setTimeout(() => el.remove(), 5000);
}

// One tooltip element for the whole page, positioned next to its target: table wrappers scroll, so a
// tooltip living inside a cell would be clipped.
let tip = null;
function tooltipEl() {
  if (!tip || !tip.isConnected) {
    tip = h("div", { id: "tooltip", class: "tooltip", role: "tooltip", hidden: true });
    document.body.append(tip);
  }
  return tip;
}

export function attachTooltip(target, build) {
  const show = () => {
    const el = tooltipEl();
    clear(el).append(build());
    el.hidden = false;
    const r = target.getBoundingClientRect();
    const w = el.offsetWidth;
    const hgt = el.offsetHeight;
    let left = Math.min(r.left, window.innerWidth - w - 8);
    let top = r.bottom + 6;
    if (top + hgt > window.innerHeight - 8) top = r.top - hgt - 6;
    el.style.left = `${Math.max(8, left)}px`;
    el.style.top = `${Math.max(8, top)}px`;
    target.setAttribute("aria-describedby", "tooltip");
  };
  const hide = () => {
    const el = tooltipEl();
    el.hidden = true;
    target.removeAttribute("aria-describedby");
  };
  target.addEventListener("mouseenter", show);
  target.addEventListener("focus", show);
  target.addEventListener("mouseleave", () => { if (document.activeElement !== target) hide(); });
  target.addEventListener("blur", hide);
  target.addEventListener("keydown", (e) => { if (e.key === "Escape") hide(); });
}

export function hideTooltip() {
  if (tip) tip.hidden = true;
}

/** A key/value list; values are text (objects pretty-printed in <pre>). */
export function defList(entries) {
  const dl = h("dl", { class: "kv" });
  for (const [label, value, raw] of entries) {
    const isBlock = typeof raw === "object" && raw !== null;
    dl.append(h("dt", {}, label), h("dd", {}, isBlock ? h("pre", {}, value) : value));
  }
  return dl;
}

/** Auto-refresh picker state in localStorage. */
export function storedChoice(key, allowed, fallback) {
  try {
    const v = localStorage.getItem(key);
    return allowed.includes(v) ? v : fallback;
  } catch {
    return fallback;
  }
}

export function storeChoice(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // private mode: the choice just is not remembered
  }
}

/** A big number with its label. */
export function stat(label, value, extra) {
  return h("div", { class: "stat" }, h("span", { class: "stat-label" }, label),
    h("span", { class: "stat-value" }, value), extra ? h("span", { class: "stat-extra" }, extra) : null);
}
