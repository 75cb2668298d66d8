// The phone's UI. Every action goes to the device app, which tracks it through the SDK.
// Products are named by their own ids, strings ("167", "Toy Story (1995)"): kept as given, never parsed as numbers.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { user: null, list: null, previous: {}, busy: false };
const NET_HINTS = {
  online: "Requests pass straight through to the server.",
  poor: "Each chunk is delayed on the way in and out, and some requests are lost: " +
        "the server misses the latency budget and the device reranks on its own.",
  offline: "Every connection is reset: the device serves from its cache and on-device model; " +
           "events wait in the outbox.",
};
const ACTION_LABELS = { view: "View", click: "Click", add_to_cart: "Cart", purchase: "Buy" };

async function api(method, url, body) {
  const resp = await fetch(url, {
    method, headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.message || resp.statusText);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const money = (x) => "$" + Number(x).toFixed(2);
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
const ago = (t) => {
  if (!t) return "never";
  const s = Math.max(0, Date.now() / 1000 - t);
  return s < 60 ? `${s.toFixed(0)} s ago` : s < 3600 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
};

function itemCard(it, listId, moveInfo) {
  const actions = el("div", { class: "actions" });
  for (const [type, label] of Object.entries(ACTION_LABELS)) {
    const b = el("button", { type: "button", dataset: { action: type } }, label);
    b.addEventListener("click", () => act(type, it.item_id, listId, b));
    actions.append(b);
  }
  const rank = el("div", { class: "rank" }, it.rank ? String(it.rank) : "·", moveInfo);
  return el("li", { class: "item" + (moveInfo && moveInfo.classList.contains("new") ? " fresh" : ""),
                    dataset: { itemId: it.item_id } },
    rank,
    el("div", { class: "body" },
      el("div", { class: "title" }, it.title || `item ${it.item_id}`),
      el("div", { class: "meta" },
        el("span", { class: "chip" }, it.category || "—"),
        el("span", { class: "price" }, money(it.price)),
        el("span", { class: "price-note" }, "synthetic price")),
      actions));
}

function moveOf(itemId, index, prev) {
  if (!prev) return null;
  const was = prev.indexOf(itemId);
  if (was < 0) return el("span", { class: "move new" }, "new");
  if (was > index) return el("span", { class: "move up" }, "▲" + (was - index));
  if (was < index) return el("span", { class: "move down" }, "▼" + (index - was));
  return null;
}

function renderFeed(list) {
  const prev = state.previous[list.user_id];
  const feed = $("#feed");
  feed.replaceChildren(...list.items.map((it, i) => itemCard(it, list.list_id, moveOf(it.item_id, i, prev))));
  if (!list.items.length) {
    feed.append(el("li", { class: "empty-feed" },
      "Nothing to show: the device holds no candidates or popular items for this user yet. " +
      "Go online so it can sync."));
  }
  feed.dataset.listId = list.list_id;
  feed.dataset.source = list.source;
  state.previous[list.user_id] = list.items.map((it) => it.item_id);
  const badge = $("#source-badge");
  badge.dataset.source = list.source;
  badge.textContent = list.source_label;
  $("#list-info").innerHTML = "";
  $("#list-info").append(
    "model ", el("b", {}, list.model_version || "–"),
    " · candidates ", el("b", {}, list.candidates_version ? "v" + list.candidates_version : "–"),
    " · ", el("b", {}, list.latency_ms.toFixed(1) + " ms"),
    list.stale ? " · stale" : "");
  const reason = $("#list-reason");
  reason.hidden = !list.reason;
  reason.textContent = list.reason ? "server not used: " + list.reason : "";
}

async function loadFeed() {
  const feed = $("#feed");
  feed.classList.add("busy");
  try {
    state.list = await api("GET", "/api/feed?user_id=" + encodeURIComponent(state.user));
    renderFeed(state.list);
  } catch (err) {
    showBanner("Could not load the feed: " + err.message, true);
  } finally {
    feed.classList.remove("busy");
  }
}

async function act(type, itemId, listId, button) {
  if (state.busy) return;
  state.busy = true;
  try {
    await api("POST", "/api/track", { user_id: state.user, type, item_id: itemId, list_id: listId });
    if (button) button.classList.add("done");
    await loadFeed();
  } catch (err) {
    showBanner(`${type} failed: ${err.message}`, true);
  } finally {
    state.busy = false;
    refreshStatus();
  }
}

async function search(query) {
  await api("POST", "/api/track", { user_id: state.user, type: "search", query });
  const found = await api("GET", "/api/search?q=" + encodeURIComponent(query));
  $("#results-title").textContent = found.items.length
    ? `Catalog matches for “${query}” (searched on the device)` : `No titles match “${query}”`;
  $("#results-list").replaceChildren(...found.items.map((it) => itemCard(it, null, null)));
  $("#results").hidden = false;
  await loadFeed();
  refreshStatus();
}

function showBanner(html, bad) {
  const b = $("#banner");
  b.className = "banner" + (bad ? " offline" : "");
  b.innerHTML = html;
  b.hidden = false;
}

function setMode(mode) {
  for (const b of document.querySelectorAll(".segmented button")) {
    b.setAttribute("aria-checked", String(b.dataset.mode === mode));
  }
  $("#signal").dataset.mode = mode;
  $("#signal-text").textContent = mode === "offline" ? "No signal" : mode === "poor" ? "1 bar" : "";
  $("#net-hint").textContent = NET_HINTS[mode];
}

async function switchNetwork(mode) {
  const answer = await api("POST", "/api/connectivity", { mode });
  setMode(answer.mode);
  const rc = answer.reconnect;
  if (rc) {
    const f = rc.flush, s = rc.sync;
    const synced = s.error ? `sync failed (${s.error.slice(0, 60)})`
      : s.changed ? `synced bundle v${s.version} (${s.bytes.toLocaleString()} B)` : `bundle v${s.version} is current (304)`;
    const up = f.error ? `upload failed, ${f.remaining} still waiting`
      : `uploaded <b>${f.acknowledged}</b> events · outbox <b>${rc.outbox_before} → ${f.remaining}</b>`;
    showBanner(`Back ${answer.mode}: ${up} · ${synced}`, Boolean(f.error || s.error));
  } else if (mode === "offline") {
    showBanner("<b>Offline.</b> The feed now comes from the device; your actions queue in the outbox.", true);
  } else {
    $("#banner").hidden = true;
  }
  renderStatus(answer.status);
  await loadFeed();
  refreshStatus();
}

function renderStatus(st) {
  $("#outbox-count").textContent = st.outbox ?? 0;
  $("#st-connectivity").textContent = (st.connectivity || "–") +
    (st.uploads ? ` · uploads ${st.uploads}` + (st.uploads_retry_in ? ` (retry in ${st.uploads_retry_in.toFixed(0)} s)` : "") : "");
  $("#st-bundle").textContent = st.bundle_version ? `v${st.bundle_version}` +
    (st.expires_at ? ` · expires ${new Date(st.expires_at * 1000).toLocaleDateString()}` : "") : "none";
  $("#st-model").textContent = st.model_version || "–";
  $("#st-sync").textContent = st.last_sync
    ? `${ago(st.last_sync.t)} · ${st.last_sync.changed ? st.last_sync.bytes.toLocaleString() + " B" : "304, nothing new"}` : "never";
  const f = st.last_flush;
  $("#st-upload").textContent = f ? `${ago(f.t)} · ${f.error ? "failed" : f.acknowledged + " acknowledged"}` : "never";
  const dropped = Object.entries(st.dropped || {});
  $("#st-dropped").textContent = dropped.length ? dropped.map(([k, v]) => `${v} ${k}`).join(", ") : "none";
  $("#log").replaceChildren(...(st.notes || []).slice().reverse().slice(0, 22).map((n) =>
    el("li", { class: n.kind }, el("time", {}, clock(n.t)), el("span", {}, n.text))));
  if (st.network && st.network.mode) {
    const hint = NET_HINTS[st.network.mode];
    if (st.network.mode === "poor") {
      $("#net-hint").textContent = `+${Math.round(st.network.delay_s * 1000)} ms each way, ` +
        `${Math.round(st.network.loss * 100)}% of requests lost. ` + hint;
    }
  }
}

async function refreshStatus() {
  try { renderStatus(await api("GET", "/api/status")); } catch (err) { /* the next poll retries */ }
}

function tick() {
  $("#clock").textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

document.addEventListener("DOMContentLoaded", () => {
  state.user = $("#user").value;
  setMode($("#signal").dataset.mode);
  $("#user").addEventListener("change", (e) => { state.user = e.target.value; $("#results").hidden = true; loadFeed(); });
  $("#search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("#search").value.trim();
    if (q) search(q).catch((err) => showBanner("search failed: " + err.message, true));
  });
  $("#results-close").addEventListener("click", () => { $("#results").hidden = true; });
  for (const b of document.querySelectorAll(".segmented button")) {
    b.addEventListener("click", () => switchNetwork(b.dataset.mode).catch((err) => showBanner(err.message, true)));
  }
  tick(); setInterval(tick, 10000);
  loadFeed().then(refreshStatus);
  setInterval(refreshStatus, 1000);
});
