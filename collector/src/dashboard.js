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
function change(path, body) {
  return api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body || {}) });
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

// A host as a link to its page.
const host = (ip, label) => `<a href="#/asset/${encodeURIComponent(ip)}">${esc(label || ip)}</a>`;
const incidentLink = (id) => `<a href="#/incident/${encodeURIComponent(id)}">#${esc(id)}</a>`;

function alertRow(a) {
  return `<tr class="new"><td>${esc(a.ts)}</td><td>${sev(a.severity)}</td><td title="${esc(a.title)}">${esc(a.rule)}</td>` +
    `<td>${host(a.src_ip)}:${esc(a.src_port)}</td><td>${host(a.dst_ip)}:${esc(a.dst_port)}</td><td>${esc(units(a))}</td>` +
    `<td>${esc(a.count)}</td><td>${esc((a.technique || []).join(", "))}</td><td>${esc(a.message || a.title)}</td></tr>`;
}

// An alert with its agent, for the explorer and asset pages.
function agentAlertRow(a) {
  return `<tr><td>${esc(a.ts)}</td><td>${sev(a.severity)}</td><td title="${esc(a.title)}">${esc(a.rule)}</td>` +
    `<td>${host(a.src_ip)}:${esc(a.src_port)}</td><td>${host(a.dst_ip)}:${esc(a.dst_port)}</td><td>${esc(units(a))}</td>` +
    `<td>${esc(a.count)}</td><td>${esc((a.technique || []).join(", "))}</td><td>${esc(a.agent)}</td><td>${esc(a.message || a.title)}</td></tr>`;
}

function incidentRow(i, actions) {
  const last = i.history.length ? i.history[i.history.length - 1].by : "";
  return `<tr><td>${incidentLink(i.id)}</td><td>${esc(i.state)}</td><td>${sev(i.severity)}</td><td>${esc(i.rule)}</td><td>${host(i.src_ip)}</td>` +
    `<td>${host(i.dst_ip)}</td><td>${i.alerts}</td><td>${esc(i.last_ts)}</td>` + (actions === undefined ? "" : `<td>${esc(last)}</td><td>${actions}</td>`) + "</tr>";
}

// The policy the collector assigned to an agent and its version, marked when the agent applies
// another (it has not fetched it yet, or rejected it).
// An agent's latest learn request: learning, or what it sent.
function learningText(g) {
  const l = g.learning;
  if (!l) return "";
  if (!l.received_at) return `learning into ${l.proposal} (asked ${l.requested_at})`;
  return `learned ${l.requests} requests into ${l.proposal}${l.error ? `; ${l.error}` : ""}`;
}

function assignedCell(g) {
  const p = g.assigned_policy;
  const local = g.heartbeat.policy_source !== "collector";
  if (!p) return `<td class="dim">${local ? "local file" : "none assigned"}</td>`;
  const behind = p.hash !== g.heartbeat.policy_hash;
  const why = local ? "the agent reads a local policy file, not the collector's (policy_source)"
    : behind ? "the agent applies another version" : "applied";
  return `<td class="${behind ? "conflict" : "online"}" title="${esc(why)}">${esc(p.name)} ${esc(p.hash || "")}${local ? " (agent on a local file)" : ""}</td>`;
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
    `<tr><td>${host(r.ip, r.name || r.ip)}</td><td>${esc(r.zone)}</td><td>${r.score.toFixed(0)}</td><td>${esc(r.factors.map((f) => f.factor).join("; "))}</td></tr>`).join("");
  $("#zones tbody").innerHTML = posture.zones.map((z) =>
    `<tr><td>${esc(z.zone)}</td><td>${z.score.toFixed(0)}</td><td>${esc(z.factors.map((f) => f.factor).join("; "))}</td></tr>`).join("");
  $("#incidents tbody").innerHTML = incidents.map((i) => {
    const actions = role === "admin" && i.state !== "resolved"
      ? `${i.state === "open" ? `<button data-act="ack" data-id="${i.id}">ack</button>` : ""} <button data-act="resolve" data-id="${i.id}">resolve</button>` : "";
    return incidentRow(i, actions);
  }).join("");
  const conflicts = (a) => Object.entries(a.conflicts || {}).map(([field, claims]) =>
    `${field}: ${claims.map((c) => `${c.agent}=${c.value}`).join(", ")}`).join("; ");
  $("#assets tbody").innerHTML = assets.map((a) =>
    `<tr><td>${host(a.ip, a.name || a.ip)}</td><td>${a.master ? "master " : ""}${a.slave ? "slave" : ""}</td><td>${esc((a.units || []).join(","))}</td>` +
    `<td>${esc([a.vendor, a.product_name || a.product_code, a.revision].filter(Boolean).join(" "))}</td><td>${esc(a.last_seen)}</td>` +
    `<td class="conflict">${esc(conflicts(a))}</td></tr>`).join("");
  $("#agents tbody").innerHTML = agents.map((g) =>
    `<tr><td>${esc(g.heartbeat.agent)}</td><td class="${g.online ? "online" : "offline"}">${g.online ? "online" : "offline"}</td>` +
    `<td>${(g.heartbeat.packets_per_s || 0).toFixed(0)}</td><td>${g.heartbeat.drops}</td><td>${g.heartbeat.outbox_depth}</td>` +
    `<td>${esc(g.heartbeat.policy_hash)}</td>${assignedCell(g)}<td>${esc(learningText(g))}</td></tr>`).join("");
}

// ---- views: each has its own URL (#/, #/charts?range=7d, #/alerts?rule=...) ----

const VIEWS = ["overview", "map", "charts", "alerts", "incident", "asset", "policies"];
let current = "overview";

function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const [name, arg] = (path || "/").replace(/^\//, "").split("/").map(decodeURIComponent);
  current = VIEWS.includes(name) ? name : "overview";
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== current;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const shown = {
    map: () => showMap(),
    charts: () => showCharts(params),
    alerts: () => showAlerts(params),
    incident: () => showIncident(arg, params),
    asset: () => showAsset(arg),
    policies: () => showPolicies(arg),
  }[current] || refresh;
  return shown().catch((e) => console.error(e));
}

// ---- policies: the versions in force, an editor, history with diffs and rollback, assignment
// and learning ----

let shownPolicy = null;

async function showPolicies(name) {
  const list = await api("/api/v1/policies");
  $("#policies tbody").innerHTML = list.map((p) =>
    `<tr><td><a href="#/policies/${encodeURIComponent(p.name)}">${esc(p.name)}</a></td><td>${esc(p.version)}</td>` +
    `<td>${esc(p.hash)}</td><td>${esc(p.author)}</td><td>${esc(p.at)}</td></tr>`).join("");
  const admin = role === "admin";
  $("#policy-new-box").hidden = !admin;
  $("#learn-ask").disabled = !admin;
  if (!name) { $("#policy-detail").hidden = true; shownPolicy = null; return; }
  const r = await fetch(`/api/v1/policies/${encodeURIComponent(name)}`, { credentials: "same-origin" });
  if (r.status === 401) { showLogin(); return; }
  const exists = r.ok;
  // A policy being edited keeps its text through a redraw of the same version.
  const etag = exists ? r.headers.get("etag") : null;
  const text = exists ? await r.text() : "version = 1\n";
  const same = shownPolicy && shownPolicy.name === name && shownPolicy.etag === etag;
  if (!same) {
    $("#policy-text").value = text;
    $("#policy-result").textContent = ""; $("#policy-warnings").innerHTML = "";
  }
  shownPolicy = { name, etag };
  $("#policy-detail").hidden = false;
  $("#policy-title").textContent = exists ? `Policy ${name}` : `New policy ${name}`;
  $("#policy-text").readOnly = !admin;
  $("#policy-save").hidden = !admin;
  $("#policy-assign-box").hidden = !admin || !exists;
  if (!exists) {
    $("#policy-history").innerHTML = "<p class=\"dim\">Not stored yet.</p>";
    $("#policy-assignments tbody").innerHTML = "";
    return;
  }
  const changes = await api(`/api/v1/policies/${encodeURIComponent(name)}/assignments`);
  $("#policy-assignments tbody").innerHTML = changes.map((c) =>
    `<tr><td>${esc(c.at)}</td><td>${esc(c.agent)}</td><td>${c.assigned ? "assigned" : "taken away"}</td><td>${esc(c.by)}</td></tr>`).join("");
  const history = await api(`/api/v1/policies/${encodeURIComponent(name)}/history`);
  $("#policy-history").innerHTML = history.map((v, i) =>
    `<div class="version"><p><b>version ${esc(v.version)}</b> ${esc(v.hash)} by ${esc(v.author)} at ${esc(v.at)}` +
    `${v.note ? ` (${esc(v.note)})` : ""}${admin && i > 0 ? ` <button data-rollback="${esc(v.version)}">roll back to this</button>` : ""}</p>` +
    `${v.diff ? `<pre class="diff">${esc(v.diff)}</pre>` : ""}</div>`).join("");
}

async function savePolicy() {
  if (!shownPolicy) return;
  const headers = { "content-type": "application/toml" };
  if (shownPolicy.etag) headers["if-match"] = shownPolicy.etag;
  const r = await fetch(`/api/v1/policies/${encodeURIComponent(shownPolicy.name)}`, { method: "PUT", credentials: "same-origin",
    headers, body: $("#policy-text").value });
  const body = await r.json().catch(() => ({}));
  $("#policy-warnings").innerHTML = (body.warnings || []).map((w) => `<li>${esc(w)}</li>`).join("");
  if (r.ok) {
    shownPolicy = null;
    await showPolicies(body.policy);
    $("#policy-result").textContent = body.changed ? `Version ${body.version} is in force.` : "Unchanged: the same text is in force.";
    $("#policy-warnings").innerHTML = (body.warnings || []).map((w) => `<li>${esc(w)}</li>`).join("");
    return;
  }
  $("#policy-result").textContent = r.status === 400 && body.line
    ? `Refused: line ${body.line}, column ${body.column}: ${body.field}: ${body.message}`
    : r.status === 412 ? "Someone changed the policy meanwhile: reload it and make the change again." : `Refused: ${body.error || r.statusText}`;
}

async function rollbackPolicy(version) {
  const body = await change(`/api/v1/policies/${encodeURIComponent(shownPolicy.name)}/rollback`, { version: Number(version) });
  shownPolicy = null;
  await showPolicies(body.policy);
  $("#policy-result").textContent = `Version ${body.version} restores version ${version}.`;
}

// Assigns the shown policy to each agent named (a comma-separated group), one request each.
async function assignPolicy() {
  const agents = $("#policy-assign-agent").value.split(",").map((a) => a.trim()).filter(Boolean);
  if (!agents.length || !shownPolicy) return;
  const said = [];
  for (const agent of agents) {
    const r = await fetch(`/api/v1/agents/${encodeURIComponent(agent)}/policy`, { method: "PUT", credentials: "same-origin",
      headers: { "content-type": "application/json" }, body: JSON.stringify({ policy: shownPolicy.name }) });
    const body = await r.json().catch(() => ({}));
    said.push(r.ok ? `Assigned to ${agent}.` : `${agent} refused: ${body.error || r.statusText}`);
  }
  await showPolicies(shownPolicy.name);
  $("#policy-assign-result").textContent = said.join(" ");
}

async function askToLearn() {
  const agents = $("#learn-agents").value.split(",").map((a) => a.trim()).filter(Boolean);
  const duration = $("#learn-duration").value.trim(), proposal = $("#learn-proposal").value.trim();
  const said = [];
  for (const agent of agents) {
    try {
      await change(`/api/v1/agents/${encodeURIComponent(agent)}/learn`, { duration, proposal });
      said.push(`${agent}: asked`);
    } catch (e) {
      said.push(`${agent}: ${e.message}`);
    }
  }
  $("#learn-result").textContent = said.join("; ");
}

$("#policy-save").addEventListener("click", savePolicy);
$("#policy-assign").addEventListener("click", assignPolicy);
$("#learn-ask").addEventListener("click", askToLearn);
$("#policy-create").addEventListener("click", () => {
  const name = $("#policy-new").value.trim();
  if (name) location.hash = `#/policies/${encodeURIComponent(name)}`;
});
$("#policy-history").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-rollback]");
  if (b) rollbackPolicy(b.dataset.rollback);
});

// ---- incident page: its alerts decoded on a timeline, ATT&CK names, state and history ----

// What a folded alert saw: units, functions and address ranges.
function seenText(a) {
  const s = a.seen;
  if (!s) return "";
  const parts = [];
  if (s.units && s.units.length) parts.push(`units ${runs(s.units)}`);
  if (s.functions && s.functions.length) parts.push(`functions ${s.functions.join(",")}`);
  if (s.ranges && s.ranges.length) parts.push(`addresses ${s.ranges.map((r) => r[0] === r[1] ? r[0] : `${r[0]}-${r[1]}`).join(", ")}`);
  return parts.join("; ");
}

let shownIncident = null;
// The shown incident's (rule, source, target): alerts with the same join it.
let shownIncidentKey = null;

async function showIncident(id, params) {
  const cursor = params.get("cursor");
  let data;
  try {
    data = await api(`/api/v1/incidents/${encodeURIComponent(id)}${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`);
  } catch (e) {
    $("#incident-title").textContent = `Incident ${id}: ${e.message}`;
    return;
  }
  const i = data.incident;
  // A change being reviewed stays through the live redraws of its own incident.
  if (shownIncident !== i.id) { $("#incident-allow").hidden = true; allowOffer = null; }
  shownIncident = i.id;
  shownIncidentKey = [i.rule, i.src_ip, i.dst_ip].join(" ");
  $("#incident-title").textContent = `Incident #${i.id}: ${i.title}`;
  const fact = (k, v) => `<dt>${esc(k)}</dt><dd>${v}</dd>`;
  $("#incident-head").innerHTML = fact("rule", esc(i.rule)) + fact("severity", sev(i.severity)) + fact("state", esc(i.state)) +
    fact("source", host(i.src_ip)) + fact("target", host(i.dst_ip)) + fact("first", esc(i.first_ts)) + fact("last", esc(i.last_ts)) +
    fact("alerts", `${i.alerts} (${i.occurrences} occurrences)`) + fact("seen by", esc([...i.agents].join(", "))) +
    fact("all alerts", `<a href="#/alerts?rule=${encodeURIComponent(i.rule)}&asset=${encodeURIComponent(i.src_ip)}">in the explorer</a>`);
  $("#incident-attack").innerHTML = data.techniques.map((t) =>
    `<div class="technique-card"><b>${esc(t.id)} ${esc(t.name || "(not in ATT&CK for ICS)")}</b>` +
    `<span class="dim">${esc(t.tactics.map((x) => x.name).join(", "))}</span><div>${esc(t.description || "")}</div></div>`).join("");
  $("#incident-state").innerHTML = `<p>${esc(i.state)}</p><ul class="history">` +
    i.history.map((h) => `<li>${esc(h.at)}: ${esc(h.state)} by ${esc(h.by)}${h.note ? `: ${esc(h.note)}` : ""}</li>`).join("") +
    (i.earlier_changes ? `<li class="dim">${i.earlier_changes} earlier changes</li>` : "") + "</ul>";
  const actions = role === "admin" && i.state !== "resolved";
  $("#incident-actions").hidden = !actions;
  $("#incident-ack").hidden = i.state !== "open";
  $("#incident-timeline").innerHTML = incidentTimeline(data.alerts, i);
  const withPackets = new Set(data.packets || []);
  $("#incident-alerts tbody").innerHTML = data.alerts.map((a) =>
    `<tr><td>${esc(a.ts)}</td><td>${sev(a.severity)}</td><td>${esc(a.function || "")}${a.function_code != null ? ` (${a.function_code})` : ""}</td>` +
    `<td>${esc(units(a))}</td><td>${esc(a.address)}</td><td>${esc(a.quantity)}</td><td title="${esc((a.values || []).join(" "))}">${esc((a.values || []).slice(0, 8).join(" "))}${(a.values || []).length > 8 ? " ..." : ""}</td>` +
    `<td>${esc(a.exception || "")}</td><td>${esc(seenText(a))}</td><td>${esc(a.count)}</td><td>${esc(a.agent)}</td><td class="wrap">${esc(a.message || a.title)}</td>` +
    `<td>${withPackets.has(a.id) ? `<a class="pcap" href="/api/v1/alerts/${encodeURIComponent(a.id)}/pcap" download>pcap</a>` : ""}</td>` +
    `<td><button class="allow" data-alert="${esc(a.id)}">allow</button></td></tr>`).join("");
  const more = $("#incident-more");
  more.hidden = !data.next;
  if (data.next) more.href = `#/incident/${i.id}?cursor=${encodeURIComponent(data.next)}`;
}

// "Allow this": the smallest change to the alert's agent's assigned policy, as a diff; an
// admin applies it as a new version against the version it was made from.
let allowOffer = null;
async function offerAllow(id) {
  const box = $("#incident-allow");
  box.hidden = false;
  $("#allow-notes").innerHTML = ""; $("#allow-diff").textContent = ""; $("#allow-result").textContent = "";
  $("#allow-apply").hidden = true;
  allowOffer = null;
  try {
    allowOffer = await api(`/api/v1/alerts/${encodeURIComponent(id)}/allow-rule`);
  } catch (e) {
    $("#allow-summary").textContent = `No change offered: ${e.message}`;
    return;
  }
  $("#allow-summary").textContent = `Policy ${allowOffer.policy} (version ${allowOffer.base_version}): ${allowOffer.summary}`;
  $("#allow-notes").innerHTML = allowOffer.notes.map((n) => `<li>${esc(n)}</li>`).join("");
  $("#allow-diff").textContent = allowOffer.diff;
  $("#allow-apply").hidden = role !== "admin";
  box.scrollIntoView({ block: "nearest" });
}
async function applyAllow() {
  if (!allowOffer) return;
  const r = await fetch(`/api/v1/policies/${encodeURIComponent(allowOffer.policy)}`, { method: "PUT", credentials: "same-origin",
    headers: { "content-type": "application/toml", "if-match": `"${allowOffer.base}"` }, body: allowOffer.toml });
  const body = await r.json().catch(() => ({}));
  $("#allow-result").textContent = r.ok
    ? `Version ${body.version} of ${body.policy} is in force; agents following it apply it at their next heartbeat.`
    : r.status === 412 ? "Someone changed the policy meanwhile: offer the change again." : `Refused: ${body.error || r.statusText}`;
  if (r.ok) { $("#allow-apply").hidden = true; allowOffer = null; }
}
$("#incident-alerts").addEventListener("click", (e) => {
  const b = e.target.closest("button.allow");
  if (b) offerAllow(b.dataset.alert);
});
$("#allow-apply").addEventListener("click", applyAllow);

// The incident's alerts as marks along its time span, higher for more severe.
function incidentTimeline(alerts, i) {
  const W = Math.max(400, $("#incident-timeline").clientWidth || 1000), H = 90, pad = 12;
  const t0 = Date.parse(i.first_ts), t1 = Math.max(Date.parse(i.last_ts), t0 + 1000);
  const x = (t) => pad + ((Date.parse(t) - t0) / (t1 - t0)) * (W - 2 * pad);
  let out = `<svg viewBox="0 0 ${W} ${H + 16}" role="img" aria-label="alerts over the incident's span">`;
  out += `<line x1="${pad}" y1="${H - 10}" x2="${W - pad}" y2="${H - 10}" stroke="var(--line)"/>`;
  for (const a of alerts) {
    const y = H - 20 - SEVERITIES.indexOf(a.severity) * 12;
    out += `<circle cx="${x(a.ts).toFixed(1)}" cy="${y}" r="5" class="f-${esc(a.severity)}"><title>${esc(a.ts)}: ${esc(a.message || a.title)}</title></circle>`;
  }
  out += `<text x="${pad}" y="${H + 12}">${esc(i.first_ts)}</text><text x="${W - pad}" y="${H + 12}" text-anchor="end">${esc(i.last_ts)}</text>`;
  return out + "</svg>";
}

async function changeIncident(act) {
  const note = $("#incident-note").value.trim();
  await change(`/api/v1/incidents/${shownIncident}/${act}`, note ? { note } : {});
  $("#incident-note").value = "";
  route();
}
$("#incident-ack").addEventListener("click", () => changeIncident("ack"));
$("#incident-resolve").addEventListener("click", () => changeIncident("resolve"));

// ---- asset page: identity, risk and why, its incidents and latest alerts ----

// The shown asset's address: alerts from or to it redraw its page.
let shownAsset = null;

async function showAsset(ip) {
  shownAsset = ip;
  let data;
  try {
    data = await api(`/api/v1/assets/${encodeURIComponent(ip)}`);
  } catch (e) {
    $("#asset-title").textContent = `${ip}: ${e.message}`;
    $("#asset-identity").innerHTML = "";
    return;
  }
  const r = data.record ? data.record : null;
  const a = r || {};
  $("#asset-title").textContent = `${a.name ? `${a.name} (${data.ip})` : data.ip}`;
  const fact = (k, v) => v ? `<dt>${esc(k)}</dt><dd>${v}</dd>` : "";
  const roles = [a.master ? "master" : "", a.slave ? "slave" : ""].filter(Boolean).join(", ");
  $("#asset-identity").innerHTML = (r ? "" : `<dt>inventory</dt><dd>no agent reported this host: it is seen only in alerts</dd>`) +
    fact("vendor", esc(a.vendor)) + fact("product", esc([a.product_name, a.product_code].filter(Boolean).join(" / "))) +
    fact("revision", esc(a.revision)) + fact("role", esc(roles)) + fact("zone", esc(a.zone)) + fact("criticality", esc(a.criticality)) +
    fact("units", esc(runs(a.units || []))) +
    fact("functions", esc(data.functions.map((f) => `${f.name || "function"} (${f.code})`).join(", "))) +
    fact("peers", (a.peers || []).map((p) => host(p)).join(", ")) + fact("MACs", esc((a.macs || []).join(", "))) +
    fact("first seen", esc(a.first_seen)) + fact("last seen", esc(a.last_seen)) +
    fact("seen by", esc(((r && r.reported_by) || []).map((x) => x.agent).join(", ")));
  $("#asset-risk").innerHTML = data.risk
    ? `<p><b>${data.risk.score.toFixed(0)}</b> / 100</p><ul class="history">${data.risk.factors.map((f) => `<li>${esc(f.factor)} (${f.points.toFixed(1)})</li>`).join("")}</ul>`
    : `<p class="dim">No risk factors.</p>`;
  // Table ranges as text: "holding_registers 0-9, 100".
  const ranges = (t) => Object.entries(t || {}).map(([table, list]) =>
    `${table} ${list.map((r) => r[0] === r[1] ? r[0] : `${r[0]}-${r[1]}`).join(", ")}`).join("; ");
  const conversationRow = (master, slave, c) =>
    `<tr><td>${host(master)}</td><td>${host(slave)}</td><td>${Number(c.rate).toFixed(1)}</td><td>${esc(runs(c.units || []))}</td>` +
    `<td>${esc((c.functions || []).join(", "))}</td><td>${esc(ranges(c.reads))}</td><td>${esc(ranges(c.writes))}</td><td>${esc(c.last_seen)}</td></tr>`;
  $("#asset-conversations tbody").innerHTML =
    (data.as_slave || []).map((c) => conversationRow(c.master, data.ip, c)).join("") +
    (data.as_master || []).map((c) => conversationRow(data.ip, c.slave, c)).join("");
  $("#asset-incidents tbody").innerHTML = data.incidents.map((i) => incidentRow(i)).join("");
  $("#asset-alerts tbody").innerHTML = data.alerts.map(agentAlertRow).join("");
  $("#asset-all-alerts").href = `#/alerts?asset=${encodeURIComponent(data.ip)}`;
}

// ---- network map: hosts grouped by zone, conversations as lines master -> slave ----

const NODE_W = 130, NODE_H = 78;
let mapView = null;   // { x, y, w, h, bounds, keep }
let mapNodes = [];    // [{ ip, name, x, y, ... }]

// Places each host on a grid inside its zone's box, zones side by side in rows.
function layout(nodes) {
  const groups = new Map();
  for (const n of nodes) {
    const zone = n.zone ? `zone ${n.zone}` : n.in_inventory ? "unzoned" : "not in the inventory";
    if (!groups.has(zone)) groups.set(zone, []);
    groups.get(zone).push(n);
  }
  const names = [...groups.keys()].sort((a, b) => {
    const rank = (z) => z.startsWith("zone ") ? 0 : z === "unzoned" ? 1 : 2;
    return rank(a) - rank(b) || a.localeCompare(b);
  });
  const role = (n) => n.master && !n.slave ? 0 : n.slave ? 1 : 2;
  const boxes = names.map((name) => {
    const members = groups.get(name).sort((a, b) => role(a) - role(b) || a.ip.localeCompare(b.ip, undefined, { numeric: true }));
    const cols = Math.max(1, Math.ceil(Math.sqrt(members.length * 1.6)));
    const rows = Math.ceil(members.length / cols);
    return { name, members, cols, w: cols * NODE_W + 20, h: rows * NODE_H + 40 };
  });
  const area = boxes.reduce((a, b) => a + b.w * b.h, 0);
  const maxW = Math.max(900, Math.sqrt(area) * 1.6);
  let x = 0, y = 0, rowH = 0, widest = 0;
  for (const b of boxes) {
    if (x > 0 && x + b.w > maxW) { x = 0; y += rowH + 30; rowH = 0; }
    b.x = x; b.y = y;
    b.members.forEach((n, i) => {
      n.x = x + 10 + (i % b.cols) * NODE_W + NODE_W / 2;
      n.y = y + 40 + Math.floor(i / b.cols) * NODE_H + 20;
    });
    x += b.w + 30; rowH = Math.max(rowH, b.h); widest = Math.max(widest, x);
  }
  return { boxes, width: widest, height: y + rowH };
}

async function showMap() {
  const data = await api("/api/v1/map");
  const { boxes, width, height } = layout(data.nodes);
  const at = new Map(data.nodes.map((n) => [n.ip, n]));
  mapNodes = data.nodes;
  let svg = `<svg id="map-svg" role="img" aria-label="network map"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="12" markerHeight="12" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#8a94a6"/></marker></defs><g id="map-layer">`;
  for (const b of boxes) {
    svg += `<g class="zone"><rect x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}" rx="8"/><text x="${b.x + 10}" y="${b.y + 22}">${esc(b.name)} (${b.members.length})</text></g>`;
  }
  for (const e of data.edges) {
    const m = at.get(e.master), sl = at.get(e.slave);
    if (!m || !sl) continue;
    const dx = sl.x - m.x, dy = sl.y - m.y, len = Math.max(1, Math.hypot(dx, dy));
    const x1 = m.x + (dx / len) * 16, y1 = m.y + (dy / len) * 16, x2 = sl.x - (dx / len) * 18, y2 = sl.y - (dy / len) * 18;
    const width = e.kind === "incident" ? 1.5 : 1 + Math.min(7, Math.log2(1 + e.rate));
    const what = e.kind === "incident" ? "only incidents link them" :
      `${e.rate.toFixed(1)} requests/s, functions ${e.functions.join(", ")}`;
    const title = `${e.master} -> ${e.slave}: ${what}${e.incidents ? `; ${e.incidents} open incidents, worst ${e.worst}` : ""}`;
    const line = `x1="${x1.toFixed(1)}" y1="${y1.toFixed(1)}" x2="${x2.toFixed(1)}" y2="${y2.toFixed(1)}"`;
    svg += `<g class="edge ${e.kind}${e.worst ? ` e-${esc(e.worst)}` : ""}" data-master="${esc(e.master)}" data-slave="${esc(e.slave)}"><title>${esc(title)}</title>` +
      `<line class="show" ${line} stroke-width="${width.toFixed(1)}" marker-end="url(#arrow)"/><line class="hit" ${line}/></g>`;
  }
  for (const n of data.nodes) {
    const classes = ["node", n.master ? "master" : "", n.slave ? "slave" : "", n.name ? "" : "unknown", n.only_in_alerts ? "alerts-only" : ""].filter(Boolean).join(" ");
    const what = [n.master ? "master" : "", n.slave ? "slave" : "", n.vendor || "", n.only_in_alerts ? "seen only in alerts" : "",
      n.name ? "" : "not named by any policy", n.worst ? `worst open incident ${n.worst}` : ""].filter(Boolean).join(", ");
    svg += `<g class="${classes}" data-ip="${esc(n.ip)}" tabindex="0" role="link" aria-label="${esc(n.name || n.ip)}"><title>${esc(n.ip)}: ${esc(what)}</title>` +
      `<circle cx="${n.x}" cy="${n.y}" r="14"/>` +
      (n.worst ? `<circle class="worst w-${esc(n.worst)}" cx="${n.x}" cy="${n.y}" r="19"/>` : "") +
      `<text x="${n.x}" y="${n.y + 31}">${esc(n.name || n.ip)}</text>` + (n.name ? `<text class="ip" x="${n.x}" y="${n.y + 43}">${esc(n.ip)}</text>` : "") + "</g>";
  }
  svg += "</g></svg>";
  $("#map").innerHTML = svg;
  const bounds = { x: -20, y: -20, w: width + 40, h: height + 40 };
  mapView = mapView && mapView.keep ? Object.assign(mapView, { bounds }) : Object.assign({}, bounds, { bounds });
  setView();
  $("#map-status").textContent = `${data.nodes.length} hosts, ${data.edges.length} links` +
    (data.truncated ? " (the busiest shown: the plant has more)" : "");
  findHosts($("#map-search").value);
}

function setView() {
  const svg = $("#map-svg");
  if (svg && mapView) svg.setAttribute("viewBox", `${mapView.x} ${mapView.y} ${mapView.w} ${mapView.h}`);
}

function fitMap() {
  if (!mapView) return;
  Object.assign(mapView, mapView.bounds, { keep: false });
  setView();
}

// Marks the hosts whose address or name holds `q`; returns the first.
function findHosts(q) {
  q = (q || "").trim().toLowerCase();
  $("#map").classList.toggle("searching", !!q);
  let first = null;
  for (const g of document.querySelectorAll("#map .node")) {
    const n = mapNodes.find((x) => x.ip === g.dataset.ip);
    const hit = !!q && !!n && (n.ip.includes(q) || (n.name || "").toLowerCase().includes(q));
    g.classList.toggle("match", hit);
    if (hit && !first) first = n;
  }
  return first;
}

$("#map-search").addEventListener("input", (e) => findHosts(e.target.value));
$("#map-search").addEventListener("keydown", (e) => {
  if (e.key !== "Enter") return;
  const n = findHosts(e.target.value);
  if (!n || !mapView) return;
  Object.assign(mapView, { x: n.x - 300, y: n.y - 200, w: 600, h: 400, keep: true });
  setView();
  const g = document.querySelector(`#map .node[data-ip="${CSS.escape(n.ip)}"]`);
  if (g) g.focus();
});
$("#map-fit").addEventListener("click", fitMap);

// Zooms by `k` (below 1 is closer) about the point at fractions (fx, fy) of the view.
function zoomMap(k, fx, fy) {
  const w = Math.min(mapView.bounds.w * 4, Math.max(80, mapView.w * k)), h = w * (mapView.h / mapView.w);
  Object.assign(mapView, { x: mapView.x + (mapView.w - w) * fx, y: mapView.y + (mapView.h - h) * fy, w, h, keep: true });
  setView();
}

// Zoom about the pointer; pan by dragging.
$("#map").addEventListener("wheel", (e) => {
  if (!mapView) return;
  e.preventDefault();
  const r = $("#map").getBoundingClientRect();
  zoomMap(e.deltaY > 0 ? 1.15 : 1 / 1.15, (e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
}, { passive: false });
let drag = null;
$("#map").addEventListener("pointerdown", (e) => {
  if (!mapView || e.target.closest(".node, .edge")) return;
  drag = { x: e.clientX, y: e.clientY, vx: mapView.x, vy: mapView.y };
  $("#map").setPointerCapture(e.pointerId);
});
$("#map").addEventListener("pointermove", (e) => {
  if (!drag) return;
  const r = $("#map").getBoundingClientRect();
  mapView.x = drag.vx - (e.clientX - drag.x) * (mapView.w / r.width);
  mapView.y = drag.vy - (e.clientY - drag.y) * (mapView.h / r.height);
  mapView.keep = true;
  setView();
});
$("#map").addEventListener("pointerup", () => { drag = null; });
$("#map").addEventListener("click", (e) => {
  const node = e.target.closest(".node");
  if (node) { location.hash = `#/asset/${encodeURIComponent(node.dataset.ip)}`; return; }
  const edge = e.target.closest(".edge");
  if (edge) location.hash = `#/alerts?asset=${encodeURIComponent(edge.dataset.master)}&peer=${encodeURIComponent(edge.dataset.slave)}`;
});
// From the keyboard: Enter on a node opens it; + and - zoom about the centre, the arrows pan
// by a tenth of the view, 0 fits the whole map.
$("#map").addEventListener("keydown", (e) => {
  const node = e.target.closest(".node");
  if (node && e.key === "Enter") { location.hash = `#/asset/${encodeURIComponent(node.dataset.ip)}`; return; }
  if (!mapView || e.ctrlKey || e.metaKey || e.altKey) return;
  const pan = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
  if (pan) {
    mapView.x += pan[0] * mapView.w / 10;
    mapView.y += pan[1] * mapView.h / 10;
    mapView.keep = true;
    setView();
  } else if (e.key === "+" || e.key === "=") zoomMap(1 / 1.25, 0.5, 0.5);
  else if (e.key === "-") zoomMap(1.25, 0.5, 0.5);
  else if (e.key === "0") fitMap();
  else return;
  e.preventDefault();
});

// ---- charts: answered by the collector's aggregation endpoints ----

const RANGES = { "24h": [86400e3, "hour"], "7d": [7 * 86400e3, "hour"], "30d": [30 * 86400e3, "day"] };
const SEVERITIES = ["info", "low", "medium", "high", "critical"];
let attack = null;
let chartRange = null;

async function showCharts(params) {
  const range = RANGES[params.get("range")] ? params.get("range") : "24h";
  const [ms, bucket] = RANGES[range];
  let until = params.get("until") ? new Date(params.get("until")) : null;
  if (!until || isNaN(until)) {
    until = new Date();
    // A replayed capture's alerts carry the capture's times: when the newest alert is older
    // than the range, the range ends at it instead (never later than now: one alert dated in
    // the future must not empty everyone's charts).
    const latest = await api("/api/v1/alerts?limit=1");
    if (latest.alerts.length) {
      const t = new Date(latest.alerts[0].ts);
      if (t < until - ms) until = new Date(Math.ceil((t.getTime() + 1) / 3600e3) * 3600e3);
    }
  }
  const since = new Date(until.getTime() - ms);
  const q = `since=${since.toISOString()}&until=${until.toISOString()}`;
  chartRange = { range, q, since, until };
  for (const a of document.querySelectorAll("#chart-range a")) {
    if (a.dataset.range === range) a.setAttribute("aria-current", "true"); else a.removeAttribute("aria-current");
  }
  $("#chart-span").textContent = `${since.toISOString()} to ${until.toISOString()} (UTC)`;
  attack = attack || await api("/api/v1/attack");
  const [line, rules, sources, techniques] = await Promise.all([
    api(`/api/v1/stats/timeline?${q}&bucket=${bucket}`),
    api(`/api/v1/stats/top?by=rule&limit=10&${q}`),
    api(`/api/v1/stats/top?by=source&limit=10&${q}`),
    api(`/api/v1/stats/techniques?${q}`)]);
  $("#timeline").innerHTML = timelineSvg(line.buckets, bucket);
  $("#top-rules").innerHTML = bars(rules, "rule", q);
  $("#top-sources").innerHTML = bars(sources, "asset", q);
  sizeBars($("#view-charts"));
  matrix(techniques, q);
}

// The range the charts show, as query parameters (for tests and links).
function chartRangeQuery() { return chartRange ? chartRange.q : ""; }

// Alerts per bucket as stacked bars, the most severe on top.
function timelineSvg(buckets, bucket) {
  // Drawn at the element's own width, so labels keep the page's text size on any screen.
  const W = Math.max(400, $("#timeline").clientWidth || 1000), H = Math.round(Math.min(400, Math.max(160, W / 5)));
  const left = 40, bottom = 20;
  const total = (b) => SEVERITIES.reduce((n, s) => n + b[s], 0);
  const max = Math.max(1, ...buckets.map(total));
  const w = (W - left) / Math.max(1, buckets.length);
  let out = `<svg viewBox="0 0 ${W} ${H + bottom}" role="img" aria-label="alerts per ${bucket} by severity">`;
  out += `<text x="0" y="12">${max}</text><text x="0" y="${H}">0</text>`;
  buckets.forEach((b, i) => {
    let y = H;
    const x = left + i * w;
    for (const s of SEVERITIES) {
      if (!b[s]) continue;
      const h = (b[s] / max) * (H - 10);
      y -= h;
      out += `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, w - 1).toFixed(1)}" height="${h.toFixed(1)}" class="f-${s}"><title>${esc(b.start)}: ${b[s]} ${s}</title></rect>`;
    }
    const every = Math.ceil(buckets.length / 8);
    if (i % every === 0) {
      const label = bucket === "day" ? b.start.slice(5, 10) : b.start.slice(5, 16).replace("T", " ");
      out += `<text x="${x.toFixed(1)}" y="${H + 15}">${esc(label)}</text>`;
    }
  });
  return out + "</svg>";
}

// A top-N list as bars, each a link to the alerts behind it.
function bars(top, filter, q) {
  if (!top.top.length) return `<p class="dim">No alerts in this range.</p>`;
  const max = Math.max(1, ...top.top.map((r) => r.count));
  const rows = top.top.map((r) =>
    `<div class="bar"><a href="#/alerts?${filter}=${encodeURIComponent(r.value)}&${q}">${esc(r.value)}</a>` +
    `<span><span class="fill" data-share="${(100 * r.count / max).toFixed(1)}"></span></span><b>${r.count}</b></div>`).join("");
  return rows + (top.rest ? `<p class="dim">${top.rest} more in other values</p>` : "");
}

// Bar widths, set through the CSSOM: the page's policy allows no inline style attributes.
function sizeBars(root) {
  for (const f of root.querySelectorAll(".fill[data-share]")) f.style.width = `${f.dataset.share}%`;
}

// The ATT&CK for ICS matrix: every technique under its tactics, those seen in the range as links.
function matrix(seen, q) {
  const counts = new Map(seen.techniques.map((t) => [t.id, t.count]));
  const cell = (t) => counts.has(t.id)
    ? `<a class="t" href="#/alerts?technique=${encodeURIComponent(t.id)}&${q}" title="${esc(t.id)}: ${esc(t.description)}"><b>${counts.get(t.id)}</b>${esc(t.name)}</a>`
    : `<div class="t" title="${esc(t.id)}: ${esc(t.description)}">${esc(t.name)}</div>`;
  $("#matrix").innerHTML = attack.tactics.map((tactic) =>
    `<div><h3>${esc(tactic.name)}</h3>${attack.techniques.filter((t) => t.tactics.includes(tactic.id)).map(cell).join("")}</div>`).join("");
  const unknown = seen.techniques.filter((t) => !t.name);
  $("#matrix-other").innerHTML = unknown.length
    ? `<p class="dim">Techniques outside ATT&amp;CK for ICS: ${unknown.map((t) => `<a href="#/alerts?technique=${encodeURIComponent(t.id)}&${q}">${esc(t.id)}</a> (${t.count})`).join(", ")}</p>` : "";
  $("#attribution").textContent = `${attack.domain} ${attack.version}. ${attack.attribution} Licensed by MITRE: see /api/v1/attack.`;
}

// ---- alert explorer: every filter of the API, paged by cursor, exported as shown ----

const FILTERS = ["min_severity", "rule", "technique", "asset", "peer", "agent", "since", "until"];

async function showAlerts(params) {
  const form = $("#filters");
  const q = new URLSearchParams();
  for (const f of FILTERS) {
    form.elements[f].value = params.get(f) || "";
    if (params.get(f)) q.set(f, params.get(f));
  }
  $("#export-csv").href = `/api/v1/alerts/export?format=csv&${q}`;
  $("#export-jsonl").href = `/api/v1/alerts/export?format=jsonl&${q}`;
  $("#first-page").href = `#/alerts?${q}`;
  $("#explorer-error").textContent = "";
  const cursor = params.get("cursor");
  let page;
  try {
    page = await api(`/api/v1/alerts?limit=50&${q}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  } catch (e) {
    $("#explorer-error").textContent = e.message;
    $("#explorer tbody").innerHTML = "";
    return;
  }
  $("#explorer tbody").innerHTML = page.alerts.map(agentAlertRow).join("");
  $("#explorer-status").textContent = `${page.alerts.length} alerts on this page${cursor ? " (not the first)" : ""}`;
  const next = $("#next-page");
  next.hidden = !page.next;
  if (page.next) next.href = `#/alerts?${q}&cursor=${encodeURIComponent(page.next)}`;
}

$("#filters").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = new URLSearchParams();
  for (const f of FILTERS) { const v = e.target.elements[f].value.trim(); if (v) q.set(f, v); }
  location.hash = `#/alerts?${q}`;
});
$("#clear-filters").addEventListener("click", () => { location.hash = "#/alerts"; });

// Keys 1-5 switch views (not while typing in a field).
document.addEventListener("keydown", (e) => {
  if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  const i = ["1", "2", "3", "4", "5"].indexOf(e.key);
  if (i >= 0) location.hash = ["#/", "#/map", "#/charts", "#/alerts", "#/policies"][i];
});

window.addEventListener("hashchange", () => { if (!$("#app").hidden) route(); });

// Charts, the map, and the incident or asset page an alert concerns follow new alerts, at
// most every few seconds.
let redrawDue = null;
function alertArrived(a) {
  const concerned = current === "charts" || current === "map" ||
    (current === "incident" && [a.rule, a.src_ip, a.dst_ip].join(" ") === shownIncidentKey) ||
    (current === "asset" && (a.src_ip === shownAsset || a.dst_ip === shownAsset));
  if (!concerned || redrawDue) return;
  redrawDue = setTimeout(() => { redrawDue = null; route(); }, 3000);
}

async function start() {
  $("#login").hidden = true; $("#app").hidden = false;
  const page = await api("/api/v1/alerts?limit=50");
  $("#feed tbody").innerHTML = page.alerts.map(alertRow).join("");
  await route();
  events = new EventSource("/api/v1/alerts/stream");
  events.addEventListener("alert", (e) => {
    const body = $("#feed tbody");
    const alert = JSON.parse(e.data);
    body.insertAdjacentHTML("afterbegin", alertRow(alert));
    while (body.rows.length > 200) body.deleteRow(-1);
    alertArrived(alert);
  });
  // The collector ends the stream when the session ends or its credential is revoked.
  events.addEventListener("error", () => { refresh().catch(() => {}); });
  timer = setInterval(() => { if (current === "overview") refresh().catch(() => {}); }, 5000);
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
    history.replaceState(null, "", "/#/");
    if (ok) return start();
  }
  try { signedIn(await api("/api/v1/session")); start(); } catch (_) { showLogin(); }
})();
