// The admin dashboard: logs in through the API, keeps the token for this tab only
// (sessionStorage), and renders the /api/v1/admin views. Every value from the server is
// inserted as text, never as HTML.
"use strict";

const api = "/api/v1";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("hivesync-admin-token");

function say(text) { $("status").textContent = text; }

async function call(path, options = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = "Bearer " + token;
  const response = await fetch(api + path, { ...options, headers });
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.message ? body.message : response.statusText;
    throw new Error(response.status + " " + (body && body.code ? body.code + ": " : "") + message);
  }
  return body;
}

function table(id, columns, rows, actions) {
  const el = $(id);
  el.replaceChildren();
  const head = el.createTHead().insertRow();
  for (const [title] of columns) head.appendChild(document.createElement("th")).textContent = title;
  if (actions) head.appendChild(document.createElement("th"));
  const body = el.createTBody();
  if (rows.length === 0) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = columns.length + (actions ? 1 : 0);
    cell.textContent = "none";
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    for (const [, value, tone] of columns) {
      const cell = tr.insertCell();
      const text = value(row);
      cell.textContent = text === null || text === undefined ? "" : String(text);
      if (tone) cell.className = tone(row) || "";
    }
    if (actions) actions(row, tr.insertCell());
  }
}

async function refresh() {
  say("loading…");
  try {
    const [workers, queues, dead, jobs, autoscaler] = await Promise.all([
      call("/admin/workers"), call("/admin/queues"), call("/admin/dead-letters"),
      call("/admin/jobs?limit=25"), call("/admin/autoscaler"),
    ]);
    table("workers", [
      ["id", (w) => w.id], ["role", (w) => w.role],
      ["state", (w) => w.state, (w) => (w.state === "responsive" ? "ok" : w.state === "draining" ? "warn" : "bad")],
      ["queues", (w) => w.queues.join(", ")], ["jobs", (w) => w.active_jobs.length + " / " + w.concurrency],
      ["heartbeat", (w) => w.seconds_since_heartbeat + " s ago"], ["host", (w) => w.hostname + ":" + w.pid],
    ], workers.items);
    table("queues", [
      ["queue", (q) => q.queue], ["ready", (q) => q.ready], ["delayed", (q) => q.delayed],
      ["running", (q) => q.running], ["dead", (q) => q.dead, (q) => (q.dead > 0 ? "bad" : "")],
      ["oldest wait", (q) => (q.oldest_ready_ms == null ? "" : Math.round(q.oldest_ready_ms / 1000) + " s")],
    ], queues.items);
    table("dead", [
      ["job", (d) => d.job_id], ["queue", (d) => d.queue], ["kind", (d) => d.kind],
      ["attempts", (d) => d.attempts], ["error", (d) => d.error_code + ": " + d.error_message, () => "bad"],
      ["died", (d) => d.died_at],
    ], dead.items, (d, cell) => {
      const retry = cell.appendChild(document.createElement("button"));
      retry.textContent = "Retry";
      retry.onclick = () => act(() => call("/admin/dead-letters/" + d.job_id + "/retry", { method: "POST", body: "{}" }));
      const drop = cell.appendChild(document.createElement("button"));
      drop.textContent = "Delete";
      drop.onclick = () => confirm("Delete this dead letter?") && act(() => call("/admin/dead-letters/" + d.job_id, { method: "DELETE" }));
    });
    table("jobs", [
      ["job", (j) => j.id], ["queue", (j) => j.queue], ["kind", (j) => j.kind],
      ["state", (j) => j.state, (j) => (j.state === "success" ? "ok" : j.state === "failed" ? "bad" : "")],
      ["progress", (j) => Math.round(j.progress * 100) + "%"], ["attempts", (j) => j.attempts],
      ["error", (j) => j.error_code || ""], ["updated", (j) => j.updated_at],
    ], jobs.items);
    table("autoscaler", [
      ["enabled", (a) => a.enabled], ["active here", (a) => a.active], ["scaler", (a) => a.scaler],
      ["bounds", (a) => a.min_workers + "–" + a.max_workers],
      ["thresholds", (a) => "in < " + a.scale_in_threshold + ", out > " + a.scale_out_threshold],
      ["targets", (a) => a.targets.map((t) => t.role + ": " + t.workers).join(", ")],
      ["last error", (a) => a.last_error || "", () => "bad"],
    ], [autoscaler]);
    say("updated " + new Date().toLocaleTimeString());
  } catch (error) {
    say(error.message);
    if (error.message.startsWith("401")) logout();
  }
}

async function act(action) {
  try { await action(); } catch (error) { say(error.message); return; }
  refresh();
}

function show() {
  const signedIn = Boolean(token);
  $("login").hidden = signedIn;
  $("session").hidden = !signedIn;
  $("views").hidden = !signedIn;
  if (signedIn) refresh();
}

function logout() {
  token = null;
  sessionStorage.removeItem("hivesync-admin-token");
  show();
}

$("login").onsubmit = async (event) => {
  event.preventDefault();
  try {
    const session = await call("/auth/login", {
      method: "POST",
      body: JSON.stringify({ email: $("email").value, password: $("password").value }),
    });
    if (!session.user.is_admin) throw new Error("this account is not an admin");
    token = session.access_token;
    sessionStorage.setItem("hivesync-admin-token", token);
    $("who").textContent = session.user.email;
    $("password").value = "";
    show();
  } catch (error) {
    say(error.message);
  }
};
$("refresh").onclick = refresh;
$("logout").onclick = logout;
show();
