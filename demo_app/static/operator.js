// The operator page: polls /api/metrics and draws it.
"use strict";

const SOURCE_LABEL = { server: "server", edge: "on-device rerank", cache: "cache", popular: "popular", other: "no list" };
const SOURCE_COLOR = { "server": "#1a7f37", "on-device rerank": "#0969da", "cache": "#bf8700", "popular": "#6e7781", "no list": "#8c959f" };
const PALETTE = ["#8250df", "#cf222e", "#0969da", "#1a7f37", "#bf8700", "#57606a"];
const FIXED = {
  "tracked on device": "#0969da", "acknowledged by server": "#1a7f37",
  "device to server": "#8250df", "server to device": "#0969da", "events waiting": "#cf222e",
};
let segment = "source";
let last = null;

function color(name) {
  if (FIXED[name]) return FIXED[name];
  if (SOURCE_COLOR[name]) return SOURCE_COLOR[name];
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function relabel(series) {
  if (segment !== "source") {
    return Object.fromEntries(Object.entries(series).map(([k, v]) => [k === "other" ? "no list" : "user " + k, v]));
  }
  return Object.fromEntries(Object.entries(series).map(([k, v]) => [SOURCE_LABEL[k] || k, v]));
}

const pct = (v) => (v * 100).toFixed(v < 0.1 && v > 0 ? 1 : 0) + "%";
const money = (v) => "$" + (v >= 100 ? v.toFixed(0) : v.toFixed(2));
const bytes = (v) => (v >= 1e6 ? (v / 1e6).toFixed(1) + " MB" : v >= 1e3 ? (v / 1e3).toFixed(0) + " kB" : v.toFixed(0) + " B");
const perSec = (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + "/s";

function chart(id) {
  const root = document.getElementById(id);
  return [root.querySelector("svg"), root.querySelector(".legend")];
}

function tile(value, label) {
  const d = document.createElement("div");
  d.className = "tile";
  d.innerHTML = `<div class="v"></div><div class="k"></div>`;
  d.querySelector(".v").textContent = value;
  d.querySelector(".k").textContent = label;
  return d;
}

function dl(el, rows) {
  el.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    if (v instanceof Node) dd.append(v); else dd.textContent = v;
    return [dt, dd];
  }));
}

function pill(text, kind) {
  const s = document.createElement("span");
  s.className = "pill " + (kind || "");
  s.textContent = text;
  return s;
}

const age = (t) => {
  if (!t) return "–";
  const s = Date.now() / 1000 - t;
  return s < 120 ? `${s.toFixed(0)} s` : s < 7200 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;
};

function render(m) {
  const t = m.totals;
  const ctr = t.impressions ? pct(t.clicks / t.impressions) : "–";
  document.getElementById("tiles").replaceChildren(
    tile(t.lists, "lists shown"), tile(t.impressions, "impressions"), tile(t.clicks, "clicks"),
    tile(ctr, "CTR overall"), tile(money(t.revenue), "revenue (synthetic)"), tile(`${t.uploaded} / ${t.events}`, "events uploaded / tracked"));
  document.getElementById("session-info").textContent =
    `session ${Math.round(m.now - m.t0)} s · network ${m.network.mode} · outbox ${m.device.outbox}`;
  const x = m.edges;

  Charts.line(...chart("c-ctr"), { x, series: relabel(m.ctr[segment]), colors: color, yFormat: pct, yMin: 0.05,
    emptyText: "no lists shown yet" });
  Charts.line(...chart("c-bounce"), { x, series: relabel(m.bounce[segment]), colors: color, yFormat: pct, yMin: 0.05,
    emptyText: "no list has been left yet" });
  Charts.line(...chart("c-revenue"), { x, series: relabel(m.revenue[segment]), colors: color, yFormat: money, yMin: 1,
    emptyText: "no purchases yet" });
  Charts.bars(...chart("c-eps"), { x, series: m.events_per_s, colors: color, yFormat: perSec, emptyText: "no events yet" });
  Charts.line(...chart("c-fresh"), { x, series: { "events waiting": m.outbox }, colors: color, yFormat: String, yMin: 1 });
  Charts.bars(...chart("c-traffic"), { x, series: m.traffic_bytes, colors: color, yFormat: bytes, emptyText: "no traffic yet" });
  Charts.scatter(...chart("c-latency"), {
    points: m.latency.map((p) => ({ x: p.t, y: p.ms, group: SOURCE_LABEL[p.source] || p.source })),
    colors: color, yFormat: (v) => v.toFixed(0) + " ms", xMax: x[x.length - 1], emptyText: "no lists yet" });

  const net = m.network;
  document.getElementById("traffic-total").textContent =
    `Whole session: ${bytes(net.bytes_down)} to the device, ${bytes(net.bytes_up)} to the server, ` +
    `${net.connections} connections, ${net.refused} reset while offline, ${net.lost} lost on the poor link.`;
  const dev = m.versions.device, srv = m.versions.server;
  dl(document.getElementById("fresh-info"), [
    ["bundle age", dev.synced_at ? `synced ${age(dev.synced_at)} ago` : "never synced"],
    ["bundle expires", dev.expires_at ? new Date(dev.expires_at * 1000).toLocaleString() : "–"],
  ]);
  const rows = m.syncs.slice(-4).reverse().map((s) =>
    `<tr><td>${Math.round(s.t)} s</td><td>${s.error ? "failed" : s.changed ? "v" + s.version + " applied" : "304 unchanged"}</td>` +
    `<td>${bytes(s.bytes)}</td><td>${s.ms} ms</td></tr>`);
  document.getElementById("sync-table").innerHTML =
    `<tr><th>at</th><th>sync</th><th>downloaded</th><th>took</th></tr>` + rows.join("");
  const same = srv.model_version && srv.model_version === dev.model_version && srv.bundle_version === dev.bundle_version;
  // The rollout as the server's own monitoring reports it (/v1/metrics/summary), not /healthz.
  const ro = (m.server_monitoring || {}).canary;
  const canary = ro
    ? pill(`${ro.version} to ${Math.round(ro.share * 100)}% of users, ${ro.looks} look(s)`, "warn")
    : pill(m.server_monitoring && !m.server_monitoring.error ? "none running" : "unknown: server monitoring unreachable");
  dl(document.getElementById("versions"), [
    ["server", srv.status === "ready" ? pill("ready", "ok") : pill(srv.status || "unknown", "warn")],
    ["server model", srv.model_version || "–"],
    ["server bundle", srv.bundle_version ? "v" + srv.bundle_version : "–"],
    ["device model", dev.model_version || "–"],
    ["device bundle", dev.bundle_version ? "v" + dev.bundle_version : "–"],
    ["device vs server", same ? pill("in step", "ok") : pill("differs: the device syncs on reconnect", "warn")],
    ["canary", canary],
    ["policy", m.device.connectivity || "–"],
  ]);
}

function renderServer(sm) {
  const table = document.getElementById("server-table");
  const info = document.getElementById("server-info");
  if (!sm || sm.error || !sm.overall) {
    table.innerHTML = "";
    info.textContent = "server monitoring unreachable" + (sm && sm.error ? ": " + sm.error : "");
    return;
  }
  const fmt = (v, f) => (v === null || v === undefined ? "–" : f(v));
  const row = (name, f) => `<tr><td>${name}</td><td>${f.impressions}</td><td>${f.clicks}</td>` +
    `<td>${fmt(f.ctr, pct)}</td><td>${fmt(f.bounce_rate, pct)}</td><td>${fmt(f.revenue_per_user, money)}</td></tr>`;
  const rows = Object.entries(sm.by_source || {}).map(([k, f]) => row(SOURCE_LABEL[k] || k, f));
  table.innerHTML = `<tr><th>served by</th><th>shown</th><th>clicks</th><th>CTR</th><th>bounce</th><th>revenue/user</th></tr>` +
    rows.join("") + row("<b>all</b>", sm.overall);
  const eps = sm.events_per_second;
  info.textContent = `${sm.window ? sm.window.events : 0} events in the window` +
    (typeof eps === "number" ? ` · ${perSec(eps)} now` : "") +
    ` · canary: ${sm.canary ? sm.canary.version + " at " + pct(sm.canary.share) : "none running"}`;
}

async function poll() {
  try {
    const resp = await fetch("/api/metrics");
    last = await resp.json();
    render(last);
    renderServer(last.server_monitoring);
  } catch (err) { /* next poll */ }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".toolbar .segmented button")) {
    b.addEventListener("click", () => {
      segment = b.dataset.seg;
      for (const o of document.querySelectorAll(".toolbar .segmented button")) o.setAttribute("aria-checked", String(o === b));
      if (last) { render(last); renderServer(last.server_monitoring); }
    });
  }
  poll();
  setInterval(poll, 2000);
  window.addEventListener("resize", () => last && render(last));
});
