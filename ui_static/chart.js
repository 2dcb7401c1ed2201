// Small SVG charts built with createElementNS: bars for one series, lines for up to a few.
import { svg, h } from "./dom.js";

const W = 720;
const H = 180;
const PAD = { l: 56, r: 56, t: 14, b: 26 };

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function xLabels(labels, x, every) {
  return labels.map((label, i) => (i % every === 0 || i === labels.length - 1)
    ? svg("text", { x: x(i), y: H - 8, class: "axis-label", "text-anchor": "middle" }, label) : null);
}

/**
 * Bars (left axis) with an optional line (right axis): e.g. daily cost as bars, requests as a line.
 * series: {labels, bars: {values, name, format}, line: {values, name, format}}
 */
export function barLineChart({ labels, bars, line, title }) {
  const n = Math.max(labels.length, 1);
  const plotW = W - PAD.l - PAD.r;
  const plotH = H - PAD.t - PAD.b;
  const step = plotW / n;
  const x = (i) => PAD.l + step * (i + 0.5);
  const maxB = niceMax(Math.max(0, ...bars.values.map(Number)));
  const maxL = line ? niceMax(Math.max(0, ...line.values.map(Number))) : 1;
  const yB = (v) => PAD.t + plotH - (Number(v) / maxB) * plotH;
  const yL = (v) => PAD.t + plotH - (Number(v) / maxL) * plotH;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  root.append(svg("title", {}, title));
  for (let k = 0; k <= 4; k += 1) {
    const y = PAD.t + (plotH * k) / 4;
    root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: "grid-line" }));
    root.append(svg("text", { x: PAD.l - 6, y: y + 4, class: "axis-label axis-left", "text-anchor": "end" },
      bars.format(maxB * (1 - k / 4))));
    if (line) {
      root.append(svg("text", { x: W - PAD.r + 6, y: y + 4, class: "axis-label axis-right", "text-anchor": "start" },
        line.format(maxL * (1 - k / 4))));
    }
  }
  const bw = Math.max(2, Math.min(28, step * 0.6));
  bars.values.forEach((v, i) => {
    const y = yB(v);
    root.append(svg("rect", { x: x(i) - bw / 2, y, width: bw, height: Math.max(0, PAD.t + plotH - y), class: "bar" },
      svg("title", {}, `${labels[i]} · ${bars.name}: ${bars.format(v)}`)));
  });
  if (line && line.values.length) {
    const pts = line.values.map((v, i) => `${x(i)},${yL(v)}`).join(" ");
    root.append(svg("polyline", { points: pts, class: "line line-a", fill: "none" }));
    line.values.forEach((v, i) => root.append(svg("circle", { cx: x(i), cy: yL(v), r: 3, class: "dot dot-a" },
      svg("title", {}, `${labels[i]} · ${line.name}: ${line.format(v)}`))));
  }
  root.append(...xLabels(labels, x, Math.ceil(n / 10)).filter(Boolean));
  return h("figure", { class: "chart-box" }, root,
    h("figcaption", { class: "legend" },
      h("span", { class: "key key-bar" }, bars.name),
      line ? h("span", { class: "key key-line-a" }, line.name) : null));
}

/**
 * Lines on one 0..max axis: series = [{name, values, cls}], e.g. exact vs semantic hit rate per day.
 */
export function lineChart({ labels, series, format, max, title }) {
  const n = Math.max(labels.length, 1);
  const plotW = W - PAD.l - PAD.r / 2;
  const plotH = H - PAD.t - PAD.b;
  const step = n > 1 ? plotW / (n - 1) : 0;
  const x = (i) => (n > 1 ? PAD.l + step * i : PAD.l + plotW / 2);
  const top = max ?? niceMax(Math.max(0, ...series.flatMap((s) => s.values.map((v) => Number(v) || 0))));
  const y = (v) => PAD.t + plotH - ((Number(v) || 0) / top) * plotH;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  root.append(svg("title", {}, title));
  for (let k = 0; k <= 4; k += 1) {
    const yy = PAD.t + (plotH * k) / 4;
    root.append(svg("line", { x1: PAD.l, x2: PAD.l + plotW, y1: yy, y2: yy, class: "grid-line" }));
    root.append(svg("text", { x: PAD.l - 6, y: yy + 4, class: "axis-label", "text-anchor": "end" },
      format(top * (1 - k / 4))));
  }
  for (const s of series) {
    if (!s.values.length) continue;
    root.append(svg("polyline", { points: s.values.map((v, i) => `${x(i)},${y(v)}`).join(" "),
      class: `line ${s.cls}`, fill: "none" }));
    s.values.forEach((v, i) => root.append(svg("circle", { cx: x(i), cy: y(v), r: 3, class: `dot ${s.cls}` },
      svg("title", {}, `${labels[i]} · ${s.name}: ${format(v)}`))));
  }
  root.append(...xLabels(labels, x, Math.ceil(n / 10)).filter(Boolean));
  return h("figure", { class: "chart-box" }, root,
    h("figcaption", { class: "legend" }, series.map((s) => h("span", { class: `key key-${s.cls}` }, s.name))));
}

/** Horizontal 0..1 bar, e.g. hit rate by model. */
export function meter(fraction, label) {
  const pct = Math.max(0, Math.min(1, Number(fraction) || 0));
  const bar = h("span", { class: "meter-fill" });
  bar.style.width = `${(pct * 100).toFixed(1)}%`;
  return h("span", { class: "meter", role: "meter", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-valuenow": (pct * 100).toFixed(0), "aria-label": label }, bar);
}
