"use strict";
const $ = (s) => document.querySelector(s);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
const sev = (s) => `<span class="sev ${esc(s)}">${esc(s)}</span>`;
let role = "viewer";

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  if (r.status === 401) { showLogin(); throw new Error("unauthorized"); }
  if (!r.ok) throw new Error((await r.json()).error || r.statusText);
  return r.json();
}

function signedIn(me) {
  role = me.role;
  $("#who").textContent = `${me.name} (${me.role})`;
}

async function login(token) {
  const r = await fetch("/api/v1/login", { method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ token }) });
  if (r.status === 429) { $("#login-error").textContent = (await r.json()).error; return false; }
  if (!r.ok) { $("#login-error").textContent = "That token is not a viewer or admin credential."; return false; }
  signedIn(await r.json());
  return true;
}

// A change made with the session cookie: same origin (the browser sends Origin) and a JSON body.
function change(path) {
  return api(path, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
}

let events = null;
let timer = null;

function showLogin() {
  if (events) { events.close(); events = null; }
  if (timer) { clearInterval(timer); timer = null; }
  $("#app").hidden = true; $("#login").hidden = false;
}

// Ascending numbers as runs: [1, 2, 3, 7] -> "1-3, 7".
function runs(numbers) {
  const out = [];
  for (let i = 0; i < numbers.length; i++) {
    let j = i;
    while (j + 1 < numbers.length && numbers[j + 1] === numbers[j] + 1) j++;
    out.push(i === j ? `${numbers[i]}` : `${numbers[i]}-${numbers[j]}`);
    i = j;
  }
  return out.join(", ");
}

// The unit column: the unit, or every unit an alert folded per target covers.
function units(a) {
  const seen = a.seen && Array.isArray(a.seen.units) ? a.seen.units.filter(Number.isInteger) : [];
  return seen.length ? runs(seen) : a.unit_id;
}

function alertRow(a) {
  return `<tr class="new"><td>${esc(a.ts)}</td><td>${sev(a.severity)}</td><td title="${esc(a.title)}">${esc(a.rule)}</td>` +
    `<td>${esc(a.src_ip)}:${esc(a.src_port)}</td><td>${esc(a.dst_ip)}:${esc(a.dst_port)}</td><td>${esc(units(a))}</td>` +
    `<td>${esc(a.count)}</td><td>${esc((a.technique || []).join(", "))}</td><td>${esc(a.message || a.title)}</td></tr>`;
}

async function refresh() {
  const [posture, incidents, assets, agents] = await Promise.all([
    api("/api/v1/posture"), api("/api/v1/incidents?limit=100"), api("/api/v1/assets"), api("/api/v1/agents")]);
  const open = posture.open_incidents || {};
  const tile = (label, value, cls) => `<div class="tile"><span class="dim">${esc(label)}</span><b class="${cls || ""}">${esc(value)}</b></div>`;
  $("#tiles").innerHTML = tile("agents online", posture.agents_online, "online") +
    tile("agents offline", posture.agents_offline, posture.agents_offline ? "offline" : "") +
    ["critical", "high", "medium", "low", "info"].map((s) => tile(`open ${s}`, open[s] || 0)).join("") +
    tile("acknowledged", posture.acknowledged_incidents);
  $("#risky tbody").innerHTML = posture.assets.slice(0, 10).map((r) =>
    `<tr><td>${esc(r.name || r.ip)}</td><td>${esc(r.zone)}</td><td>${r.score.toFixed(0)}</td><td>${esc(r.factors.map((f) => f.factor).join("; "))}</td></tr>`).join("");
  $("#zones tbody").innerHTML = posture.zones.map((z) =>
    `<tr><td>${esc(z.zone)}</td><td>${z.score.toFixed(0)}</td><td>${esc(z.factors.map((f) => f.factor).join("; "))}</td></tr>`).join("");
  $("#incidents tbody").innerHTML = incidents.map((i) => {
    const last = i.history.length ? i.history[i.history.length - 1].by : "";
    const actions = role === "admin" && i.state !== "resolved"
      ? `${i.state === "open" ? `<button data-act="ack" data-id="${i.id}">ack</button>` : ""} <button data-act="resolve" data-id="${i.id}">resolve</button>` : "";
    return `<tr><td>${i.id}</td><td>${esc(i.state)}</td><td>${sev(i.severity)}</td><td>${esc(i.rule)}</td><td>${esc(i.src_ip)}</td>` +
      `<td>${esc(i.dst_ip)}</td><td>${i.alerts}</td><td>${esc(i.last_ts)}</td><td>${esc(last)}</td><td>${actions}</td></tr>`;
  }).join("");
  const conflicts = (a) => Object.entries(a.conflicts || {}).map(([field, claims]) =>
    `${field}: ${claims.map((c) => `${c.agent}=${c.value}`).join(", ")}`).join("; ");
  $("#assets tbody").innerHTML = assets.map((a) =>
    `<tr><td>${esc(a.name || a.ip)}</td><td>${a.master ? "master " : ""}${a.slave ? "slave" : ""}</td><td>${esc((a.units || []).join(","))}</td>` +
    `<td>${esc([a.vendor, a.product_name || a.product_code, a.revision].filter(Boolean).join(" "))}</td><td>${esc(a.last_seen)}</td>` +
    `<td class="conflict">${esc(conflicts(a))}</td></tr>`).join("");
  $("#agents tbody").innerHTML = agents.map((g) =>
    `<tr><td>${esc(g.heartbeat.agent)}</td><td class="${g.online ? "online" : "offline"}">${g.online ? "online" : "offline"}</td>` +
    `<td>${(g.heartbeat.packets_per_s || 0).toFixed(0)}</td><td>${g.heartbeat.drops}</td><td>${g.heartbeat.outbox_depth}</td><td>${esc(g.heartbeat.policy_hash)}</td></tr>`).join("");
}

async function start() {
  $("#login").hidden = true; $("#app").hidden = false;
  const page = await api("/api/v1/alerts?limit=50");
  $("#feed tbody").innerHTML = page.alerts.map(alertRow).join("");
  await refresh();
  events = new EventSource("/api/v1/alerts/stream");
  events.addEventListener("alert", (e) => {
    const body = $("#feed tbody");
    body.insertAdjacentHTML("afterbegin", alertRow(JSON.parse(e.data)));
    while (body.rows.length > 200) body.deleteRow(-1);
  });
  // The collector ends the stream when the session ends or its credential is revoked.
  events.addEventListener("error", () => { refresh().catch(() => {}); });
  timer = setInterval(() => refresh().catch(() => {}), 5000);
}

document.addEventListener("click", async (e) => {
  const b = e.target.closest("button[data-act]");
  if (!b) return;
  await change(`/api/v1/incidents/${b.dataset.id}/${b.dataset.act}`);
  refresh();
});

$("#logout").addEventListener("click", async () => {
  await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" }, body: "{}" });
  showLogin();
});

$("#signin").addEventListener("click", async () => { if (await login($("#token").value)) start(); });

(async () => {
  // A token in the fragment (#token=otw_...) signs in at once; the fragment never reaches
  // the server or its logs, and is removed from the address bar.
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("token")) {
    const ok = await login(params.get("token"));
    history.replaceState(null, "", "/");
    if (ok) return start();
  }
  try { signedIn(await api("/api/v1/session")); start(); } catch (_) { showLogin(); }
})();
