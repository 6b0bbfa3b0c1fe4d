// ejlb dashboard: a small single-page app over the REST API (docs/rest.md).
// Pages by hash (#/, #/lb/ID, #/tokens, #/system), so nothing about the session is ever in a URL.
// The DOM is built with textContent only (worker and token names come from clients).
// Action buttons appear only where the server says the call would be allowed (session "may",
// dashboard "mayUpdate"); the server checks every call again anyway.
"use strict";

const NODE_COLOURS = ["#6b7280", "#a16207", "#0f766e", "#9333ea"];  // LB nodes: apart from the workers' colours
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const REFRESH_MS = 2000;
const MAX_WORKER_LINES = 12;
const CHART_SERIES = ["predictedEventNumber", "session/*/fillPercent", "session/*/slotsAssigned", "session/*/capacityEstimate"];
const SLOTS = 512;
const FILL_WARN = 0.5, FILL_BAD = 0.8, STALE_S = 2;  // fill colours; a report older than 2 s: not ready
let session = null;   // GET /api/v1/session
let timer = null;

// -- DOM helpers ---------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}
const $ = sel => document.querySelector(sel);
function show(...nodes) { const m = $("#main"); m.replaceChildren(...nodes); }
function fmtTime(iso) {  // local time, one unambiguous form whatever the browser's locale
  if (!iso) return "never";
  const d = new Date(iso), p = n => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
function ageSeconds(iso) { return iso ? (Date.now() - new Date(iso).getTime()) / 1000 : Infinity; }
function pct(x) { return (100 * x).toFixed(1) + " %"; }
function level(x, warn, bad) { return x >= bad ? "bad" : x >= warn ? "warn" : "ok"; }

// -- API -----------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) { super(body.message || `HTTP ${status}`); this.status = status; this.code = body.code; }
}

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    if (session && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  }
  const resp = await fetch(path, {method, headers, credentials: "same-origin",
                                  body: method === "GET" ? undefined : JSON.stringify(body || {})});
  const data = await resp.json().catch(() => ({}));
  if (resp.status === 401 && session && path !== "/api/v1/login") { session = null; route(); }  // token revoked or session expired
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

function errorBox(e) { return h("p", {class: "error", role: "alert"}, e.message); }

// An action button that asks once more before doing something that cannot be undone.
function confirmButton(label, action, cls) {
  const b = h("button", {type: "button", class: cls || "danger", "data-action": label.toLowerCase()}, label);
  let armed = false;
  b.addEventListener("click", async () => {
    if (!armed) { armed = true; b.textContent = "Confirm " + label.toLowerCase(); setTimeout(() => { armed = false; b.textContent = label; }, 5000); return; }
    b.disabled = true;
    try { await action(); } catch (e) { b.after(errorBox(e)); } finally { b.disabled = false; armed = false; b.textContent = label; }
  });
  return b;
}

// -- routing -------------------------------------------------------------------------------------
async function route() {
  clearInterval(timer);
  timer = null;
  if (!session) {
    try { session = await api("GET", "/api/v1/session"); } catch (e) { session = null; }
  }
  $("#nav").hidden = $("#who").hidden = !session;
  if (!session) return loginPage();
  $("#who-name").textContent = `${session.name} (token ${session.tokenId})`;
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/lb\/(\d+)$/);
  for (const a of document.querySelectorAll("#nav a"))
    a.classList.toggle("active", a.dataset.nav === (m ? "lbs" : hash.slice(2) || "lbs"));
  if (m) return lbPage(m[1]);
  if (hash === "#/tokens") return tokensPage();
  if (hash === "#/system") return systemPage();
  return overviewPage();
}

function every(fn) { fn(); timer = setInterval(fn, REFRESH_MS); }

// -- login ---------------------------------------------------------------------------------------
function loginPage() {
  const input = h("input", {type: "password", id: "token", name: "token", autocomplete: "off", required: true,
                            placeholder: "bearer token", "aria-label": "token"});
  const msg = h("div");
  const form = h("form", {class: "card login", id: "login"},
    h("h1", {}, "Sign in"),
    h("p", {class: "muted"}, "Paste an ejlb token (the admin token, a reservation's token, or one made for you). " +
      "It is kept by the server, never in this page's address or in a log."),
    input, h("button", {type: "submit"}, "Sign in"), msg);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    try {
      session = await api("POST", "/api/v1/login", {token: input.value});
      input.value = "";
      route();
    } catch (e) { msg.replaceChildren(errorBox(e)); }
  });
  show(form);
  input.focus();
}

$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/api/v1/logout"); } finally { session = null; location.hash = "#/"; route(); }
});
window.addEventListener("hashchange", route);

// -- overview ------------------------------------------------------------------------------------
function healthBadges(issues) {
  return (issues || []).map(i => h("span", {class: `badge ${i.severity}`, title: i.message}, i.type));
}

function overviewPage() {
  const table = h("tbody");
  const reserve = session.may.reserve ? reserveForm() : null;
  show(h("section", {},
    h("div", {class: "title"}, h("h1", {}, "Load balancers")),
    h("table", {class: "grid", id: "lbs"},
      h("thead", {}, h("tr", {}, ["LB", "Name", "Instance", "Workers ready", "Slots", "Epoch", "Senders", "Expires", "Health"]
        .map(t => h("th", {}, t)))), table),
    reserve));
  every(async () => {
    try {
      const o = await api("GET", "/api/v1/lbs");
      const rows = (o.loadBalancers || []).map(lb => {
        const st = lb.status, ws = st.workers || [];
        const ready = ws.filter(w => !(w.healthIssues || []).some(i => i.type === "worker_not_ready")).length;
        const issues = (st.healthIssues || []).concat(ws.flatMap(w => w.healthIssues || []));
        return h("tr", {"data-lb": lb.reservation.lbId},
          h("td", {}, h("a", {href: `#/lb/${lb.reservation.lbId}`}, lb.reservation.lbId)),
          h("td", {}, lb.name), h("td", {}, lb.reservation.fpgaLbId),
          h("td", {}, `${ready} / ${ws.length}`),
          h("td", {}, ws.reduce((n, w) => n + w.slotsAssigned, 0)),
          h("td", {}, st.currentEpoch), h("td", {}, (st.senderAddresses || []).length),
          h("td", {}, st.expiresAt ? fmtTime(st.expiresAt) : "never"),
          h("td", {}, issues.length ? healthBadges(issues) : h("span", {class: "badge ok"}, "ok")));
      });
      table.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", {colspan: 9, class: "muted"}, "No load balancer reserved."))]));
    } catch (e) { table.replaceChildren(h("tr", {}, h("td", {colspan: 9}, errorBox(e)))); }
  });
}

function reserveForm() {
  const name = h("input", {name: "name", placeholder: "name", required: true});
  const senders = h("input", {name: "senders", placeholder: "sender IPs, comma separated"});
  const hours = h("input", {name: "hours", type: "number", min: "0", step: "0.5", value: "8", title: "hours (0: no expiry)"});
  const out = h("div");
  const form = h("form", {class: "card inline", id: "reserve"}, h("h2", {}, "Reserve"), name, senders,
    h("label", {}, hours, " hours"), h("button", {type: "submit"}, "Reserve"), out);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const body = {name: name.value, senderAddresses: splitList(senders.value)};
    if (Number(hours.value) > 0) body.until = new Date(Date.now() + Number(hours.value) * 3600e3).toISOString();
    try {
      const r = await api("POST", "/api/v1/lbs", body);
      out.replaceChildren(h("div", {class: "notice"}, `Reserved LB ${r.lbId}. Its URI (shown once):`, h("code", {class: "secret"}, r.ejfatUri)));
    } catch (e) { out.replaceChildren(errorBox(e)); }
  });
  return form;
}

function splitList(text) { return text.split(/[\s,]+/).filter(Boolean); }

// -- one load balancer ---------------------------------------------------------------------------
function lbPage(lbId) {
  const head = h("div", {class: "title"}, h("h1", {}, `Load balancer ${lbId}`));
  const summary = h("div", {class: "stats"});
  const issues = h("div", {class: "issues"});
  const workers = h("tbody");
  const actions = h("div", {class: "actions"});
  const charts = h("div", {class: "charts"});
  show(h("section", {}, head, summary, issues,
    h("h2", {}, "Workers"),
    h("table", {class: "grid", id: "workers"}, h("thead", {}, h("tr", {},
      ["Worker", "Session", "Address", "Fill", "Control", "Slots", "Share", "Capacity (ev/s)", "Last update", "Health"]
        .map(t => h("th", {}, t)))), workers),
    actions, h("h2", {}, "Charts"), charts));
  let actionsBuilt = false, lastSenders = "";
  every(async () => {
    try {
      const [st, dash, ts] = await Promise.all([
        api("GET", `/api/v1/lbs/${lbId}/status`), api("GET", `/api/v1/lbs/${lbId}/dashboard`),
        api("GET", "/api/v1/timeseries?" + CHART_SERIES.map(n => "selector=" + encodeURIComponent(`/lb/${lbId}/${n}`)).join("&"))]);
      head.replaceChildren(h("h1", {}, `${dash.name} `, h("span", {class: "muted"}, `LB ${lbId} · instance ${dash.instance}`)));
      const series = seriesByName(ts);
      summaryStats(summary, st, dash);
      issues.replaceChildren(...healthBadges(st.healthIssues).map(b => h("div", {}, b, " ", b.title)));
      workers.replaceChildren(...workerRows(st, series, lbId));
      const senders = (st.senderAddresses || []).join(",");
      if (dash.mayUpdate && (!actionsBuilt || senders !== lastSenders)) {
        actions.replaceChildren(...lbActions(lbId, st));
        actionsBuilt = true; lastSenders = senders;
      } else if (!dash.mayUpdate && !actionsBuilt) {
        actions.replaceChildren(h("h2", {}, "Senders"), h("p", {}, (st.senderAddresses || []).join(", ") || "none"));
        actionsBuilt = true;
      }
      charts.replaceChildren(...lbCharts(st, dash, series, lbId));
    } catch (e) {
      if (e.status === 404 || e.status === 403) clearInterval(timer);
      summary.replaceChildren(errorBox(e));
    }
  });
}

function seriesByName(ts) {
  const out = {};
  for (const s of ts.timeseries || []) {
    const data = (s.floatSamples || s.integerSamples || {}).data || [];
    out[s.name] = data.map(p => [Number(p.timestamp), Number(p.value)]);
  }
  return out;
}

function stat(label, value, cls) { return h("div", {class: "stat " + (cls || "")}, h("span", {}, label), h("b", {}, value)); }

function summaryStats(box, st, dash) {
  const ws = st.workers || [];
  box.replaceChildren(
    stat("Workers", String(ws.length)),
    stat("Slots assigned", `${ws.reduce((n, w) => n + w.slotsAssigned, 0)} / ${st.slotResolution || SLOTS}`),
    stat("Epoch", st.currentEpoch),
    stat("Predicted event", st.currentPredictedEventNumber),
    stat("Prediction error", dash.predictionError === null ? "no sync yet" : dash.predictionError + " ticks"),
    stat("Sync accepted / rejected", `${(dash.syncOutcomes.accepted || 0) + (dash.syncOutcomes.restarted || 0)} / ` +
      `${Object.entries(dash.syncOutcomes).filter(([k]) => k.startsWith("rejected")).reduce((n, [, v]) => n + v, 0)}`),
    stat("Expires", st.expiresAt ? fmtTime(st.expiresAt) : "never"));
}

function workerRows(st, series, lbId) {
  return (st.workers || []).map(w => {
    const fill = w.fillPercent || 0, age = ageSeconds(w.lastUpdated);
    const cap = (series[`/lb/${lbId}/session/${w.sessionId}/capacityEstimate`] || []).slice(-1)[0];
    const bar = h("span", {class: `bar ${level(fill, FILL_WARN, FILL_BAD)}`}, h("i"));
    bar.firstChild.style.width = Math.min(100, 100 * fill).toFixed(1) + "%";
    return h("tr", {"data-session": w.sessionId, class: (w.healthIssues || []).length ? "unhealthy" : ""},
      h("td", {}, w.name), h("td", {}, w.sessionId), h("td", {}, `${w.ipAddress}:${w.udpPort}`),
      h("td", {class: "fill"}, bar, h("span", {class: "num"}, pct(fill))),
      h("td", {class: "num"}, (w.controlSignal || 0).toFixed(3)),
      h("td", {class: "num slots"}, w.slotsAssigned),
      h("td", {class: "num"}, pct(w.slotsAssigned / (st.slotResolution || SLOTS))),
      h("td", {class: "num"}, cap ? charts.fmtNumber(cap[1]) : "–"),
      h("td", {class: age > STALE_S ? "stale" : ""}, age === Infinity ? "never" : `${age.toFixed(1)} s ago`),
      h("td", {}, (w.healthIssues || []).length ? healthBadges(w.healthIssues) : h("span", {class: "badge ok"}, "ok")));
  });
}

function lbActions(lbId, st) {
  const addr = h("input", {name: "sender", placeholder: "sender IP"});
  const msg = h("div");
  const run = async (fn, after) => { try { await fn(); msg.replaceChildren(); if (after) after(); } catch (e) { msg.replaceChildren(errorBox(e)); } };
  const senders = (st.senderAddresses || []).map(a => h("li", {}, h("code", {}, a), " ",
    h("button", {type: "button", class: "ghost small", "data-action": "remove-sender",
      onclick: () => run(() => api("POST", `/api/v1/lbs/${lbId}/senders/remove`, {senderAddresses: [a]}))}, "remove")));
  const addForm = h("form", {class: "inline", id: "add-sender"}, addr, h("button", {type: "submit"}, "Add sender"));
  addForm.addEventListener("submit", ev => { ev.preventDefault(); run(() => api("POST", `/api/v1/lbs/${lbId}/senders`, {senderAddresses: splitList(addr.value)})); });
  const hours = h("input", {type: "number", min: "0.5", step: "0.5", value: "8", name: "extend-hours"});
  const extend = h("form", {class: "inline", id: "extend"}, h("label", {}, "Expire in ", hours, " hours"),
    h("button", {type: "submit"}, "Extend"));
  extend.addEventListener("submit", ev => { ev.preventDefault();
    run(() => api("POST", `/api/v1/lbs/${lbId}/extend`, {until: new Date(Date.now() + Number(hours.value) * 3600e3).toISOString()})); });
  const boxes = ["sync", "epochs", "senders", "workers"].map(k => h("label", {}, h("input", {type: "checkbox", name: k}), " " + k));
  const reset = confirmButton("Reset", () => run(() => api("POST", `/api/v1/lbs/${lbId}/reset`,
    Object.fromEntries(boxes.map(b => [b.firstChild.name, b.firstChild.checked])))), "warn");
  const free = confirmButton("Free", () => run(() => api("DELETE", `/api/v1/lbs/${lbId}`), () => { location.hash = "#/"; }));
  return [h("div", {class: "cols"},
    h("div", {class: "card"}, h("h2", {}, "Senders"), h("ul", {class: "senders"}, senders.length ? senders : h("li", {class: "muted"}, "none")), addForm),
    h("div", {class: "card"}, h("h2", {}, "Reservation"), extend, h("div", {class: "inline"}, ...boxes, reset),
      h("div", {class: "inline"}, free, h("span", {class: "muted"}, "frees the LB and revokes its tokens"))),
  ), msg];
}

function lbCharts(st, dash, series, lbId) {
  // one line per worker stays readable up to a dozen: beyond, the busiest (most slots) are drawn
  const all = st.workers || [];
  const ws = all.length <= MAX_WORKER_LINES ? all
    : all.slice().sort((a, b) => b.slotsAssigned - a.slotsAssigned).slice(0, MAX_WORKER_LINES);
  const of = all.length > ws.length ? ` (the ${ws.length} of ${all.length} workers with most slots)` : "";
  const colour = i => PALETTE[i % PALETTE.length];
  const prefix = `/lb/${lbId}/session/`;
  // per worker: slot share against capacity share (capacity normalised over the workers at each tick)
  const caps = ws.map(w => series[`${prefix}${w.sessionId}/capacityEstimate`] || []);
  const capTotal = new Map();
  for (const c of caps) for (const [t, v] of c) capTotal.set(t, (capTotal.get(t) || 0) + v);
  const shares = [];
  ws.forEach((w, i) => {
    shares.push({name: `${w.name} slots`, color: colour(i), points: (series[`${prefix}${w.sessionId}/slotsAssigned`] || []).map(([t, v]) => [t, v / SLOTS])});
    shares.push({name: `${w.name} capacity`, color: colour(i), dash: true,
                 points: caps[i].filter(([t]) => capTotal.get(t) > 0).map(([t, v]) => [t, v / capTotal.get(t)])});
  });
  const fills = ws.map((w, i) => ({name: w.name, color: colour(i), points: series[`${prefix}${w.sessionId}/fillPercent`] || []}));
  const hist = dash.history || [];
  const cum = f => hist.map(p => [p.t, f(p)]);
  const events = [
    {name: "reassembled", color: PALETTE[0], points: charts.rates(cum(p => p.workers.total_events_reassembled))},
    {name: "dequeued", color: PALETTE[2], dash: true, points: charts.rates(cum(p => p.workers.total_events_dequeued))}];
  const dropNames = hist.length ? Object.keys(hist[hist.length - 1].lb).filter(k => k.startsWith("drop_")) : [];
  const drops = dropNames.map((k, i) => ({name: k.replace("drop_", ""), color: colour(i), points: charts.rates(cum(p => p.lb[k] || 0))}))
    .concat([{name: "worker queue full", color: "#111827", dash: true, points: charts.rates(cum(p => p.workers.total_event_enqueue_err))},
             {name: "reassembly error", color: "#6b7280", dash: true, points: charts.rates(cum(p => p.workers.total_events_reassembly_err))}]);
  const nodes = hist.length && hist[hist.length - 1].nodes ? Object.keys(hist[hist.length - 1].nodes) : [];
  const packets = [{name: "LB rx", color: "#111827", width: 2.4, points: charts.rates(cum(p => p.lb.rx_packets))}]
    .concat(nodes.map((a, i) => ({name: `node ${a} rx`, color: NODE_COLOURS[i % NODE_COLOURS.length], dash: true,
                                  points: charts.rates(hist.filter(p => p.nodes && a in p.nodes).map(p => [p.t, p.nodes[a]]))})))
    .concat(ws.map((w, i) => ({name: `→ ${w.name}`, color: colour(i), points: charts.rates(cum(p => p.members[w.sessionId] || 0))})));
  // epochs: predicted event number per tick, the sync samples, and where each live epoch begins
  const pred = series[`/lb/${lbId}/predictedEventNumber`] || [];
  const base = pred.length ? pred[0][1] : 0;
  const syncPts = dash.syncSamples.map(s => [s.t, Number(s.eventNumber) - base]);
  const vlines = [];
  for (const e of dash.epochs) {
    const b = Number(e.boundary), i = pred.findIndex(p => p[1] >= b);
    if (i > 0) {
      const [ta, va] = pred[i - 1], [tb, vb] = pred[i];
      vlines.push({t: ta + (tb - ta) * (b - va) / ((vb - va) || 1), label: `epoch ${e.seq}`});
    }
  }
  return [
    charts.lineChart("Slot share vs capacity share" + of, {series: shares, yMin: 0, yLabel: "share", fmt: v => (100 * v).toFixed(0) + "%"}),
    charts.lineChart("Queue fill" + of, {series: fills, yMin: 0, yMax: 1, yLabel: "fill", fmt: v => (100 * v).toFixed(0) + "%"}),
    charts.lineChart("Event rate (workers)", {series: events, yMin: 0, yLabel: "events/s"}),
    charts.lineChart("Epoch boundaries: prediction vs sync", {yLabel: "event − first", vlines, series: [
      {name: "predicted", color: PALETTE[0], points: pred.map(([t, v]) => [t, v - base])},
      {name: "sync packets", color: PALETTE[1], dots: true, points: syncPts}]}),
    charts.lineChart("Drops by reason", {series: drops, yMin: 0, yLabel: "per s"}),
    charts.lineChart("Data plane: packets" + of, {series: packets, yMin: 0, yLabel: "packets/s"}),
  ];
}

// -- tokens --------------------------------------------------------------------------------------
const RESOURCES = ["ALL", "LOAD_BALANCER", "RESERVATION", "SESSION"];
const LEVELS = ["READ_ONLY", "REGISTER", "RESERVE", "UPDATE"];

function permText(p) { return `${p.permission} on ${p.resourceType}${p.resourceId ? " " + p.resourceId : ""}`; }

function tokensPage() {
  const mine = h("div", {class: "card"});
  const children = h("tbody");
  const create = session.may.manageTokens ? createTokenForm(() => load()) : null;
  show(h("section", {}, h("div", {class: "title"}, h("h1", {}, "Tokens")), mine,
    h("h2", {}, "Tokens made from this one"),
    h("table", {class: "grid", id: "tokens"}, h("thead", {}, h("tr", {}, ["Id", "Name", "Created", "Permissions", ""].map(t => h("th", {}, t)))), children),
    create));
  async function load() {
    try {
      const [self, kids] = await Promise.all([api("GET", "/api/v1/tokens/self"), api("GET", "/api/v1/tokens/self/children")]);
      const t = self.token;
      mine.replaceChildren(h("h2", {}, "This token"), h("p", {}, `${t.name} · id ${t.id} · created ${fmtTime(t.createdAt)}`),
        h("ul", {}, (t.permissions || []).map(p => h("li", {}, permText(p)))));
      const rows = (kids.tokens || []).map(k => h("tr", {"data-token": k.id},
        h("td", {}, k.id), h("td", {}, k.name), h("td", {}, fmtTime(k.createdAt)),
        h("td", {}, (k.permissions || []).map(permText).join("; ")),
        h("td", {}, session.may.manageTokens ? confirmButton("Revoke", async () => { await api("DELETE", `/api/v1/tokens/${k.id}`); load(); }) : "")));
      children.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", {colspan: 5, class: "muted"}, "none"))]));
    } catch (e) { mine.replaceChildren(errorBox(e)); }
  }
  load();
}

function createTokenForm(onCreated) {
  const name = h("input", {name: "token-name", placeholder: "name", required: true});
  const rows = h("div", {class: "perms"});
  const out = h("div");
  const addRow = () => rows.append(h("div", {class: "inline perm"},
    h("select", {name: "resourceType"}, RESOURCES.map(r => h("option", {value: r}, r))),
    h("input", {name: "resourceId", placeholder: "id (not for ALL)", size: 8}),
    h("select", {name: "permission"}, LEVELS.map(l => h("option", {value: l}, l)))));
  addRow();
  const form = h("form", {class: "card", id: "create-token"}, h("h2", {}, "Create a token"), name, rows,
    h("div", {class: "inline"}, h("button", {type: "button", class: "ghost", onclick: addRow}, "+ permission"),
      h("button", {type: "submit"}, "Create")), out);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const permissions = [...rows.children].map(r => ({resourceType: r.querySelector("[name=resourceType]").value,
      resourceId: r.querySelector("[name=resourceId]").value, permission: r.querySelector("[name=permission]").value}));
    try {
      const r = await api("POST", "/api/v1/tokens", {name: name.value, permissions});
      out.replaceChildren(h("div", {class: "notice"}, "New token (shown once, copy it now):", h("code", {class: "secret"}, r.token)));
      onCreated();
    } catch (e) { out.replaceChildren(errorBox(e)); }
  });
  return form;
}

// -- system --------------------------------------------------------------------------------------
function systemPage() {
  const box = h("div");
  show(h("section", {}, h("div", {class: "title"}, h("h1", {}, "System")), box));
  every(async () => {
    try {
      const s = await api("GET", "/api/v1/system");
      const kv = (k, v) => h("tr", {}, h("th", {}, k), h("td", {}, v));
      const parts = [h("table", {class: "kv", id: "system"},
        kv("ejlb version", s.version), kv("Compatibility", s.compatTag),
        kv("gRPC", `${s.grpc.host}:${s.grpc.port}${s.grpc.tls ? " (TLS)" : ""}`),
        kv("Data plane", s.backend), kv("Balancer", s.balancer), kv("Controller period", `${s.controllerPeriod} s`),
        kv("Uptime", `${Math.floor(s.uptimeSeconds / 3600)} h ${Math.floor(s.uptimeSeconds / 60) % 60} min`),
        kv("Reservations you can see", s.reservationsVisible), kv("Workers you can see", s.workersVisible)),
        h("h2", {}, "LB instances"),
        h("table", {class: "grid"}, h("thead", {}, h("tr", {}, ["Instance", "IPv4", "IPv6", "Data ports"].map(t => h("th", {}, t)))),
          h("tbody", {}, s.instances.map(i => h("tr", {}, h("td", {}, i.lbId), h("td", {}, i.ipv4 || "–"), h("td", {}, i.ipv6 || "–"),
            h("td", {}, i.dataPorts[0] === i.dataPorts[1] ? i.dataPorts[0] : i.dataPorts.join("–"))))))];
      if (s.dataplane) {  // counters as rows, instances as columns: the table stays narrow
        const ids = Object.keys(s.dataplane.lb), names = Object.keys(s.dataplane.lb[ids[0]] || {});
        parts.push(h("h2", {}, "Data-plane counters"),
          h("p", {class: "muted"}, "Before an LB is known: " + Object.entries(s.dataplane.global).map(([k, v]) => `${k} ${v}`).join(", ")),
          h("table", {class: "grid narrow", id: "dataplane"},
            h("thead", {}, h("tr", {}, h("th", {}, "Counter"), ids.map(id => h("th", {class: "num"}, `instance ${id}`)))),
            h("tbody", {}, names.map(n => h("tr", {}, h("td", {}, n), ids.map(id => h("td", {class: "num"}, charts.fmtNumber(s.dataplane.lb[id][n]))))))));
        if (s.dataplane.nodes) parts.push(nodeTable(s.dataplane.nodes));
      }
      box.replaceChildren(...parts);
    } catch (e) { box.replaceChildren(errorBox(e)); }
  });
}

// LB nodes (a data plane of nodes): health, and each node's packets and drops summed over LB instances
function nodeTable(nodes) {
  const sum = (n, f) => n.lb ? Object.values(n.lb).reduce((a, c) => a + f(c), 0) : null;
  const drops = c => Object.entries(c).filter(([k]) => k.startsWith("drop_")).reduce((a, [, v]) => a + v, 0);
  return h("div", {}, h("h2", {}, "LB nodes"),
    h("table", {class: "grid", id: "nodes"},
      h("thead", {}, h("tr", {}, ["Node", "State", "RX packets", "RX bytes", "Drops", "Reloads", "Failures", "Last error"].map(t => h("th", {}, t)))),
      h("tbody", {}, nodes.map(n => h("tr", {"data-node": n.address},
        h("td", {}, n.address), h("td", {}, h("span", {class: `badge ${n.up ? "ok" : "error"}`}, n.up ? "up" : "down")),
        [c => c.rx_packets, c => c.rx_bytes, drops].map(f => h("td", {class: "num"}, n.lb ? charts.fmtNumber(sum(n, f)) : "–")),
        h("td", {class: "num"}, n.reloads), h("td", {class: "num"}, n.failures), h("td", {class: "muted"}, n.lastError || "–"))))));
}

route();
