// Number, money, time and duration formatting shared by the pages.
import { getLang } from "./i18n.js";

const DASH = "—";

function locale() {
  return getLang() === "zh" ? "zh-CN" : "en-US";
}

export function fmtInt(n) {
  if (n === null || n === undefined || n === "") return DASH;
  const v = Number(n);
  return Number.isFinite(v) ? new Intl.NumberFormat(locale(), { maximumFractionDigits: 0 }).format(v) : String(n);
}

export function fmtNum(n, digits = 2) {
  if (n === null || n === undefined || n === "") return DASH;
  const v = Number(n);
  return Number.isFinite(v) ? new Intl.NumberFormat(locale(), { maximumFractionDigits: digits }).format(v) : String(n);
}

/** USD with enough digits for sub-cent LLM calls. */
export function fmtCost(x) {
  if (x === null || x === undefined || x === "") return DASH;
  const v = Number(x);
  if (!Number.isFinite(v)) return String(x);
  if (v === 0) return "$0";
  const abs = Math.abs(v);
  const digits = abs >= 100 ? 2 : abs >= 1 ? 4 : 6;
  return "$" + v.toFixed(digits).replace(/(\.\d*?[1-9])0+$/, "$1").replace(/\.0+$/, "");
}

/** 0..1 -> "50%" */
export function fmtPct(x, digits = 0) {
  if (x === null || x === undefined || x === "") return DASH;
  const v = Number(x);
  return Number.isFinite(v) ? `${(v * 100).toFixed(digits)}%` : String(x);
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** ISO timestamp -> local "YYYY-MM-DD HH:MM:SS" (the same in every language). */
export function fmtTime(iso) {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms === "") return DASH;
  const v = Number(ms);
  if (!Number.isFinite(v)) return String(ms);
  if (v < 1) return `${v.toFixed(2)} ms`;
  if (v < 1000) return `${Math.round(v)} ms`;
  return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
}

export function fmtBytes(n) {
  const v = Number(n);
  if (!Number.isFinite(v)) return DASH;
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  let x = v;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  return `${i === 0 ? x : x.toFixed(1)} ${units[i]}`;
}

/** Any JSON value as display text (objects pretty-printed). */
export function fmtValue(v) {
  if (v === null || v === undefined || v === "") return DASH;
  if (typeof v === "object") return JSON.stringify(v, null, 2);
  return String(v);
}

/** Local datetime-local input value -> ISO 8601 UTC, or "" */
export function localInputToIso(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

export { DASH };
