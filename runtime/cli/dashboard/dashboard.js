// The Weir dashboard: polls the job's HTTP API and draws it. No framework, no build step.
// Every text from the API goes in with textContent (job and operator names are the user's).
"use strict";

const state = { jobId: null, refreshMs: 1000, timer: null, busy: false };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const errors = data && data.errors ? data.errors.join("; ") : response.statusText;
    throw new Error(`${errors} (HTTP ${response.status})`);
  }
  return data;
}

function say(text, error) {
  const message = $("message");
  message.textContent = text;
  message.className = error ? "error" : "";
}

const number = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"));
const ms = (n) => (n === null || n === undefined ? "-" : `${number(n)} ms`);
function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}
const time = (t) => (t ? new Date(t).toLocaleTimeString() : "-");

// -- jobs --------------------------------------------------------------------------------

async function refreshJobs() {
  const { jobs } = await api("GET", "/jobs");
  const select = $("job-select");
  const wanted = new URLSearchParams(location.search).get("job");
  if (!state.jobId || !jobs.some((j) => j.id === state.jobId)) {
    const running = jobs.filter((j) => j.status === "RUNNING");
    const pick = jobs.find((j) => wanted && j.id.startsWith(wanted))
      || running[running.length - 1] || jobs[jobs.length - 1];
    state.jobId = pick ? pick.id : null;
  }
  select.replaceChildren(...jobs.map((j) => {
    const option = el("option", { value: j.id }, `${j.name} · ${j.id.slice(0, 8)} · ${j.status}`);
    option.selected = j.id === state.jobId;
    return option;
  }));
  return jobs;
}

function renderJob(job) {
  const badge = $("job-state");
  badge.textContent = job.state;
  badge.className = `state ${job.state}`;
  $("job-restarts").textContent = job.restarts ? `${job.restarts} restart(s)` : "";
  const running = job.state === "RUNNING";
  for (const id of ["btn-checkpoint", "btn-savepoint", "btn-stop"]) $(id).disabled = !running;
  const graph = $("graph");
  const parts = [];
  job.vertices.forEach((v, i) => {
    if (i > 0) {
      const strategy = v.inputs.map((input) => input.ship_strategy).join(", ");
      parts.push(el("div", { class: "edge" }, strategy || " "));
    }
    const m = v.metrics;
    const level = v["backpressure-level"];
    parts.push(el("div", { class: `vertex ${level}`, "data-vertex": v.id, "data-level": level },
      el("h4", {}, v.name),
      el("dl", {},
        el("dt", {}, "parallelism"), el("dd", {}, v.parallelism),
        el("dt", {}, "status"), el("dd", {}, v.status),
        el("dt", {}, "records in"), el("dd", { class: "records-in" }, number(m["read-records"])),
        el("dt", {}, "records out"), el("dd", { class: "records-out" }, number(m["write-records"])),
        el("dt", {}, "in / s"), el("dd", {}, number(Math.round(m["records-in-per-second"]))),
        el("dt", {}, "out / s"), el("dd", {}, number(Math.round(m["records-out-per-second"]))),
        el("dt", {}, "busy"), el("dd", {}, `${Math.round(m.busyRatio * 100)} %`),
        el("dt", {}, "backpressured"), el("dd", { class: "bp" }, `${Math.round(m.backPressuredRatio * 100)} % (${level})`))));
  });
  graph.replaceChildren(...parts);
}

// -- checkpoints -------------------------------------------------------------------------

function renderCheckpoints(stats) {
  const c = stats.counts;
  $("checkpoint-counts").replaceChildren(
    ...[["triggered", c.total], ["in progress", c.in_progress], ["completed", c.completed],
      ["failed", c.failed], ["restored", c.restored]].map(([label, value]) =>
      el("span", { "data-count": label }, el("b", {}, number(value)), ` ${label}`)));
  const latest = stats.latest;
  const line = (label, entry, extra) => el("span", {}, `${label}: `,
    entry ? `#${entry.id} ${extra(entry)}` : "none");
  $("checkpoint-latest").replaceChildren(
    line("latest completed", latest.completed, (e) => `${ms(e.end_to_end_duration)}, ${bytes(e.state_size)}`),
    line("latest savepoint", latest.savepoint, (e) => e.external_path || ""),
    line("latest failed", latest.failed, (e) => e.failure_message || ""),
    el("span", {}, "restored: ", latest.restored ? latest.restored.external_path : "no"));
  const rows = stats.history.map((h) => {
    const row = el("tr", { class: h.status, "data-checkpoint": h.id },
      el("td", {}, h.id), el("td", {}, h.status),
      el("td", {}, h.checkpoint_type.toLowerCase().replace("_", " ")),
      el("td", {}, time(h.trigger_timestamp)), el("td", {}, ms(h.end_to_end_duration)),
      el("td", {}, ms(h.sync_duration)), el("td", {}, ms(h.async_duration)),
      el("td", {}, ms(h.alignment_duration)), el("td", {}, bytes(h.state_size)),
      el("td", {}, bytes(h.persisted_data)),
      el("td", {}, `${h.num_acknowledged_subtasks}/${h.num_subtasks}`));
    if (h.failure_message) row.title = h.failure_message;
    return row;
  });
  document.querySelector("#checkpoint-history tbody").replaceChildren(...rows);
  drawChart(stats.history.filter((h) => h.status !== "IN_PROGRESS").slice(0, 40).reverse());
}

function drawChart(entries) {
  const chart = $("checkpoint-chart");
  const width = 900, height = 220, left = 50, right = 60, top = 16, bottom = 28;
  const plotW = width - left - right, plotH = height - top - bottom;
  const parts = [];
  const maxMs = Math.max(1, ...entries.map((e) => (e.sync_duration || 0) + (e.async_duration || 0) + (e.alignment_duration || 0)));
  const maxBytes = Math.max(1, ...entries.map((e) => e.persisted_data || 0));
  parts.push(svg("line", { x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH, stroke: "#9aa3b2" }));
  const axis = svg("text", { x: 4, y: top + 8, "font-size": 11, fill: "#5b6475" });
  axis.textContent = `${number(maxMs)} ms`;
  parts.push(axis);
  const axis2 = svg("text", { x: left + plotW + 4, y: top + 8, "font-size": 11, fill: "#8e44ad" });
  axis2.textContent = bytes(maxBytes);
  parts.push(axis2);
  const slot = plotW / Math.max(entries.length, 1);
  const barW = Math.max(4, Math.min(28, slot * 0.7));
  const points = [];
  entries.forEach((e, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let y = top + plotH;
    for (const [kind, value] of [["align", e.alignment_duration], ["sync", e.sync_duration], ["async", e.async_duration]]) {
      const h = ((value || 0) / maxMs) * plotH;
      y -= h;
      const rect = svg("rect", { x, y, width: barW, height: Math.max(h, 0), class: kind });
      const title = svg("title", {});
      title.textContent = `#${e.id} ${kind}: ${ms(value)}`;
      rect.append(title);
      parts.push(rect);
    }
    if (e.status === "FAILED") {
      const mark = svg("text", { x: x + barW / 2, y: top + plotH - 4, "text-anchor": "middle", "font-size": 12, fill: "#c0392b" });
      mark.textContent = "✕";
      parts.push(mark);
    }
    if (e.unaligned) {
      const mark = svg("text", { x: x + barW / 2, y: Math.max(y - 3, 11), "text-anchor": "middle", "font-size": 11, "font-weight": "bold", class: "unaligned-mark" });
      mark.textContent = "U";
      parts.push(mark);
    }
    const label = svg("text", { x: x + barW / 2, y: height - 10, "text-anchor": "middle", "font-size": 10, fill: "#5b6475" });
    label.textContent = e.id;
    parts.push(label);
    points.push(`${x + barW / 2},${top + plotH - ((e.persisted_data || 0) / maxBytes) * plotH}`);
  });
  if (points.length > 1) {
    parts.push(svg("polyline", { points: points.join(" "), fill: "none", stroke: "#8e44ad", "stroke-width": 1.5 }));
  }
  chart.replaceChildren(...parts);
}

// -- exceptions --------------------------------------------------------------------------

function renderExceptions(exceptions) {
  const entries = exceptions.exceptionHistory.entries;
  $("exception-count").textContent = entries.length ? `(${entries.length})` : "";
  $("restarts-line").textContent = `${exceptions.restarts} restart(s); ${entries.length} failure(s), newest first`;
  $("exception-list").replaceChildren(...entries.map((e) => el("li", {}, e.stacktrace)));
}

// -- polling and actions -----------------------------------------------------------------

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    await refreshJobs();
    if (state.jobId) {
      const id = state.jobId;
      const [job, checkpoints, exceptions] = await Promise.all([
        api("GET", `/jobs/${id}`), api("GET", `/jobs/${id}/checkpoints`), api("GET", `/jobs/${id}/exceptions`)]);
      renderJob(job);
      renderCheckpoints(checkpoints);
      renderExceptions(exceptions);
      document.body.dataset.updated = String(Date.now());
    }
    $("connection").textContent = "";
  } catch (error) {
    // Kept apart from #message, which holds the outcome of the last action (a stopped
    // job's server goes away right after it answered the stop).
    $("connection").textContent = `cannot reach the job API (has the job ended?): ${error.message}`;
  } finally {
    state.busy = false;
  }
}

async function act(what, method, path, body) {
  if (!state.jobId) return;
  if (!window.confirm(`${what} job ${state.jobId.slice(0, 8)}?`)) return;
  say(`${what}: waiting for the job...`);
  try {
    const answer = await api(method, path, body);
    const op = answer.operation || {};
    say(`${what} done${op.checkpointId ? ` (#${op.checkpointId})` : ""}${op.location ? `: ${op.location}` : ""}`);
  } catch (error) {
    say(`${what} failed: ${error.message}`, true);
  }
  refresh();
}

function target() {
  const dir = $("savepoint-dir").value.trim();
  return dir ? dir : undefined;
}

function setup() {
  for (const tab of document.querySelectorAll("nav .tab")) {
    tab.addEventListener("click", () => {
      for (const other of document.querySelectorAll("nav .tab")) other.classList.toggle("active", other === tab);
      for (const panel of document.querySelectorAll(".panel")) panel.classList.toggle("hidden", panel.id !== `tab-${tab.dataset.tab}`);
    });
  }
  $("job-select").addEventListener("change", (event) => { state.jobId = event.target.value; refresh(); });
  $("btn-checkpoint").addEventListener("click", () =>
    act("Checkpoint", "POST", `/jobs/${state.jobId}/checkpoints`));
  $("btn-savepoint").addEventListener("click", () => {
    const body = { format: "canonical" };
    if (target()) body["target-directory"] = target();
    act("Savepoint", "POST", `/jobs/${state.jobId}/savepoints`, body);
  });
  $("btn-stop").addEventListener("click", () => {
    const body = { drain: false, format: "canonical" };
    if (target()) body.targetDirectory = target();
    act("Stop with a savepoint", "POST", `/jobs/${state.jobId}/stop`, body);
  });
}

async function start() {
  setup();
  try {
    const config = await api("GET", "/config");
    state.refreshMs = config["refresh-interval"] || 1000;
  } catch (_) { /* keep the default */ }
  await refresh();
  state.timer = setInterval(refresh, state.refreshMs);
}

start();
