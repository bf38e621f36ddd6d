// The support page: a capture (history dump plus follow) for a user, the captured lines as they
// arrive, recent incidents, and rules to enable or disable. Every call sends the bearer token; log
// content is only ever inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let watch = null; // {user, sinceUs, timer}

function token() {
  return $("token").value.trim();
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token()}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401) {
    askForToken("the token was refused");
    throw new Error("401 the API token is missing or wrong");
  }
  if (!response.ok) {
    const detail = data && data.errors ? data.errors.map((e) => `${e.path}: ${e.message}`).join("; ") : text;
    throw new Error(`${response.status} ${detail}`);
  }
  return data;
}

function row(cells, className) {
  const tr = document.createElement("tr");
  if (className) tr.className = className;
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return tr;
}

function time(us) {
  // ISO-8601 in UTC, the zone said ("Z"), to the millisecond: the same as the CLI's tables
  return new Date(us / 1000).toISOString().replace("T", " ");
}

const TOKEN_HINT =
  "enter the API token: HINDSIGHT_API_TOKEN, or the one `hindsight api` printed when it started";

function askForToken(why) {
  status(why ? `${why}: ${TOKEN_HINT}` : TOKEN_HINT, true);
  $("token").focus();
}

async function refreshLines() {
  if (!watch) return;
  try {
    const params = new URLSearchParams({ user: watch.user, since_us: String(watch.sinceUs), limit: "5000" });
    const lines = await api("GET", `/lines?${params}`);
    const body = $("lines");
    body.replaceChildren(
      ...lines.map((l) =>
        row(
          [
            [time(l.timestamp_us)],
            [l.level],
            [l.service],
            [l.endpoint],
            [l.session_id],
            [l.trigger_reasons.join(", ")],
            [l.message, "message"],
          ],
          l.level,
        ),
      ),
    );
    $("capture-info").textContent = `${watch.label}: ${lines.length} line(s) so far`;
  } catch (err) {
    status(`lines: ${err.message}`, true);
  }
}

async function refreshIncidents() {
  try {
    const incidents = await api("GET", "/incidents?limit=50");
    $("incidents").replaceChildren(
      ...incidents.map((i) =>
        row([[time(i.started_us)], [i.reasons.join(", ")], [i.service], [i.endpoint], [i.user_id], [i.lines], [i.message, "message"]]),
      ),
    );
  } catch (err) {
    status(`incidents: ${err.message}`, true);
  }
}

async function refreshRules() {
  try {
    const rules = await api("GET", "/rules");
    $("rules").replaceChildren(
      ...rules.map((rule) => {
        const tr = row([[rule.id], [rule.priority], [rule.description], [rule.enabled ? "enabled" : "disabled"]]);
        tr.dataset.rule = rule.id;
        const td = document.createElement("td");
        const button = document.createElement("button");
        button.textContent = rule.enabled ? "Disable" : "Enable";
        button.dataset.testid = `toggle-${rule.id}`;
        button.addEventListener("click", async () => {
          try {
            await api("PUT", `/rules/${encodeURIComponent(rule.id)}`, { ...rule, enabled: !rule.enabled });
            status(`rule ${rule.id} ${rule.enabled ? "disabled" : "enabled"}`);
            await refreshRules();
          } catch (err) {
            status(`rule ${rule.id}: ${err.message}`, true);
          }
        });
        td.appendChild(button);
        tr.appendChild(td);
        return tr;
      }),
    );
  } catch (err) {
    status(`rules: ${err.message}`, true);
  }
}

async function capture(event) {
  event.preventDefault();
  const user = $("user").value.trim();
  try {
    const result = await api("POST", "/captures", {
      user_id: user,
      lookback: $("lookback").value.trim(),
      follow: $("follow").value.trim(),
      reason: $("reason").value.trim(),
    });
    if (watch) clearInterval(watch.timer);
    watch = {
      user,
      sinceUs: result.since_us,
      label: `capture ${result.capture_id} of ${user}, following until ${result.follow_until}`,
      timer: setInterval(refreshLines, 2000),
    };
    status(`capture started: ${result.history_lines} line(s) of history replayed`);
    await refreshLines();
  } catch (err) {
    status(`capture: ${err.message}`, true);
  }
}

function start() {
  $("token").value = sessionStorage.getItem("hindsight-token") || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("hindsight-token", token());
    refreshIncidents();
    refreshRules();
  });
  $("capture-form").addEventListener("submit", capture);
  if (token()) {
    refreshIncidents();
    refreshRules();
  } else {
    askForToken();
  }
  setInterval(() => token() && refreshIncidents(), 10000);
}

document.addEventListener("DOMContentLoaded", start);
