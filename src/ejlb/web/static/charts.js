// Small SVG line charts for the dashboard: no library, nothing loaded from elsewhere.
// lineChart(title, {series: [{name, color, dash, points: [[tMs, value], ...], dots}], yLabel,
//                   yMin, yMax, fmt, vlines: [{t, label}]}) -> element
// Every drawn series is one <path class="series" data-points="N"> (the browser tests count them).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const W = 560, H = 210, PAD = {l: 56, r: 12, t: 10, b: 26};

function svg(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  return el;
}

function niceStep(span, n) {
  const raw = span / Math.max(1, n), mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function fmtNumber(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
  if (a === 0 || a >= 10) return v.toFixed(0);
  return v.toPrecision(2);
}

function fmtClock(ms) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, 8);
}

function lineChart(title, opts) {
  const box = document.createElement("figure");
  box.className = "chart";
  const cap = document.createElement("figcaption");
  cap.textContent = title;
  box.appendChild(cap);
  const series = (opts.series || []).filter(s => s.points.length > 0);
  const all = series.flatMap(s => s.points);
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title});
  box.appendChild(root);
  if (all.length === 0) {
    const t = svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty"});
    t.textContent = "no data yet";
    root.appendChild(t);
    return box;
  }
  let t0 = Math.min(...all.map(p => p[0])), t1 = Math.max(...all.map(p => p[0]));
  if (t1 === t0) { t0 -= 1000; t1 += 1000; }
  let y0 = opts.yMin ?? Math.min(...all.map(p => p[1])), y1 = opts.yMax ?? Math.max(...all.map(p => p[1]));
  if (opts.yMin === undefined && y0 > 0 && y0 < 0.3 * y1) y0 = 0;
  if (y1 === y0) { y1 = y0 + (Math.abs(y0) || 1); }
  const step = niceStep(y1 - y0, 4);
  if (opts.yMax === undefined) y1 = Math.ceil(y1 / step) * step;
  if (opts.yMin === undefined) y0 = Math.floor(y0 / step) * step;
  const x = t => PAD.l + (t - t0) / (t1 - t0) * (W - PAD.l - PAD.r);
  const y = v => H - PAD.b - (v - y0) / (y1 - y0) * (H - PAD.t - PAD.b);
  const fmt = opts.fmt || fmtNumber;
  for (let v = y0; v <= y1 + step / 1e6; v += step) {
    root.appendChild(svg("line", {x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid"}));
    const lbl = svg("text", {x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end", class: "tick"});
    lbl.textContent = fmt(v);
    root.appendChild(lbl);
  }
  const tStep = niceStep((t1 - t0) / 1000, 4) * 1000;
  for (let t = Math.ceil(t0 / tStep) * tStep; t <= t1; t += tStep) {
    const edge = x(t) > W - PAD.r - 24;  // the last label would be cut off centred
    const lbl = svg("text", {x: edge ? W - PAD.r : x(t), y: H - 8, "text-anchor": edge ? "end" : "middle", class: "tick"});
    lbl.textContent = fmtClock(t);
    root.appendChild(lbl);
  }
  root.appendChild(svg("line", {x1: PAD.l, x2: PAD.l, y1: PAD.t, y2: H - PAD.b, class: "axis"}));
  root.appendChild(svg("line", {x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b, class: "axis"}));
  if (opts.yLabel) {
    const yl = svg("text", {x: 12, y: PAD.t + (H - PAD.t - PAD.b) / 2, class: "ylabel", "text-anchor": "middle",
                            transform: `rotate(-90 12 ${PAD.t + (H - PAD.t - PAD.b) / 2})`});
    yl.textContent = opts.yLabel;
    root.appendChild(yl);
  }
  let lastLabel = -Infinity;
  for (const m of opts.vlines || []) {
    if (m.t < t0 || m.t > t1) continue;
    root.appendChild(svg("line", {x1: x(m.t), x2: x(m.t), y1: PAD.t, y2: H - PAD.b, class: "vline"}));
    if (x(m.t) - lastLabel < 44 || x(m.t) > W - PAD.r - 40) continue;  // close lines: the first keeps its label
    lastLabel = x(m.t);
    const l = svg("text", {x: x(m.t) + 3, y: PAD.t + 10, class: "vlabel"});
    l.textContent = m.label;
    root.appendChild(l);
  }
  for (const s of series) {
    const pts = s.points.slice().sort((a, b) => a[0] - b[0]);
    const path = svg("path", {
      d: pts.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(""),
      stroke: s.color, fill: "none", "stroke-width": s.width || 1.8, class: "series",
      "data-points": pts.length, "data-name": s.name,
    });
    if (s.dash) path.setAttribute("stroke-dasharray", "5 4");
    if (s.dots) path.setAttribute("stroke-opacity", "0");
    root.appendChild(path);
    if (s.dots) for (const p of pts) root.appendChild(svg("circle", {cx: x(p[0]), cy: y(p[1]), r: 3.5, fill: s.color}));
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of opts.series || []) {
    const item = document.createElement("span");
    const sw = document.createElement("i");
    sw.className = s.dash ? "swatch dash" : (s.dots ? "swatch dot" : "swatch");
    sw.style.borderColor = s.color;
    sw.style.backgroundColor = s.dots ? s.color : "transparent";
    item.append(sw, s.name);
    legend.appendChild(item);
  }
  box.appendChild(legend);
  return box;
}

// Rates per second from cumulative counters: [[tMs, n], ...] -> [[tMs, n/s], ...]; a counter
// that went down (a restart) starts a new run instead of a negative rate.
function rates(points) {
  const out = [];
  for (let i = 1; i < points.length; i++) {
    const dt = (points[i][0] - points[i - 1][0]) / 1000, dv = points[i][1] - points[i - 1][1];
    if (dt > 0 && dv >= 0) out.push([points[i][0], dv / dt]);
  }
  return out;
}

window.charts = {lineChart, rates, fmtNumber};
