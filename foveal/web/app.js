/* foveal's web page: search with evidence, the agent's graph, index stats and ingest jobs.
 *
 * Plain JavaScript, no framework, nothing from outside this server. Every string that comes from an index (titles,
 * texts, ids, metadata, answers) is inserted with textContent or as an SVG text node: never as HTML. The API key
 * typed in the header is kept in sessionStorage (this tab only) and sent as "Authorization: Bearer".
 */
"use strict";

const KEY_STORE = "foveal.apiKey";
/* Research stages a request can switch by name (SearchRequest.stages); shown when the index config has them. */
const RESEARCH_STAGES = ["lexsem", "paraformer", "events", "freshness", "xpool"];
const state = { index: null, config: null, jobsTimer: null, askAbort: null, graph: null, selected: null };

const $ = (id) => document.getElementById(id);

/* An element with attributes and children; strings become text nodes (never parsed as HTML). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "onclick") node.addEventListener("click", value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function fmt(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// -- the API -------------------------------------------------------------------------------------------------------
function headers(json) {
  const h = {};
  if (json) h["content-type"] = "application/json";
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) h["authorization"] = "Bearer " + key;
  return h;
}

async function api(method, path, body) {
  const response = await fetch(path, { method, headers: headers(body !== undefined),
                                       body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : response.status + " " + response.statusText;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

function showError(error) {
  const box = $("error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = error.status === 401 ? "This server needs an API key: type it in the header. (" + error.message + ")"
                                         : error.message;
}

const indexPath = (suffix) => "v1/indexes/" + encodeURIComponent(state.index) + (suffix || "");

// -- tabs and indexes ------------------------------------------------------------------------------------------------
function showTab(name) {
  for (const button of document.querySelectorAll(".tabs button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== "tab-" + name;
  clearInterval(state.jobsTimer);
  if (name === "status") { loadStatus(); state.jobsTimer = setInterval(loadJobs, 2000); }
}

async function loadIndexes() {
  const select = $("index");
  let indexes = [];
  try { indexes = await api("GET", "v1/indexes"); showError(null); } catch (e) { showError(e); }
  const previous = state.index || new URLSearchParams(location.search).get("index");
  select.replaceChildren(...indexes.map((i) => el("option", { value: i.name }, i.name)));
  if (!indexes.length) { state.index = null; $("index-summary").textContent = "no index yet"; return; }
  select.value = indexes.some((i) => i.name === previous) ? previous : (indexes.some((i) => i.name === "default") ? "default" : indexes[0].name);
  await selectIndex(select.value);
}

async function selectIndex(name) {
  state.index = name;
  state.config = null;
  try {
    const stats = await api("GET", indexPath());
    state.config = stats.config || {};
    $("index-summary").textContent = stats.documents + " documents, " + stats.passages + " passages";
  } catch (e) { showError(e); }
  renderStageSwitches();
  renderSuggestions();
  if (!$("tab-status").hidden) loadStatus();
}

function renderStageSwitches() {
  const box = $("stages");
  const config = state.config || {};
  const switches = [el("legend", {}, "stages")];
  const rerankOn = !config.rerank || config.rerank.enabled !== false;
  switches.push(el("label", { title: "Pyramid-ERNIE rerank stage (runs when trained weights are present)" },
    el("input", { type: "checkbox", name: "stage", value: "rerank", checked: rerankOn }), " rerank"));
  for (const name of RESEARCH_STAGES) {
    const section = config[name];
    if (!section || typeof section !== "object" || !("enabled" in section)) continue;
    switches.push(el("label", {}, el("input", { type: "checkbox", name: "stage", value: name, checked: !!section.enabled }), " " + name));
  }
  box.replaceChildren(...switches);
}

let suggestions = null;
async function renderSuggestions() {
  if (suggestions === null) {
    try { suggestions = await (await fetch("static/suggestions.json")).json(); } catch (e) { suggestions = {}; }
  }
  const forIndex = suggestions[state.index] || suggestions["*"] || { search: [], ask: [] };
  const chips = (list, input, form) => (list || []).map((text) => el("button", { type: "button", onclick: () => {
    $(input).value = text; $(form).requestSubmit(); } }, text));
  $("suggestions").replaceChildren(...(forIndex.search && forIndex.search.length ? [el("span", { class: "muted" }, "try:")] : []),
                                   ...chips(forIndex.search, "q", "search-form"));
  $("ask-suggestions").replaceChildren(...(forIndex.ask && forIndex.ask.length ? [el("span", { class: "muted" }, "try:")] : []),
                                       ...chips(forIndex.ask, "question", "ask-form"));
}

// -- search ----------------------------------------------------------------------------------------------------------
function searchBody() {
  const body = { query: $("q").value, k: Number($("k").value), text: "full", explain: true,
                 pipeline: document.querySelector("input[name=pipeline]:checked").value };
  const stages = {};
  for (const box of document.querySelectorAll("input[name=stage]")) {
    if (box.value === "rerank") body.rerank = box.checked;
    else stages[box.value] = box.checked;
  }
  if (Object.keys(stages).length) body.stages = stages;
  const filter = {};
  const meta = {};
  for (const pair of $("filter-meta").value.split(",")) {
    const at = pair.indexOf("=");
    if (at < 1) continue;
    const key = pair.slice(0, at).trim();
    const values = pair.slice(at + 1).split("|").map((v) => v.trim()).filter(Boolean).map(guessType);
    if (key && values.length) meta[key] = values.length === 1 ? values[0] : values;
  }
  if (Object.keys(meta).length) filter.metadata = meta;
  const from = $("filter-from").value, to = $("filter-to").value;
  if (from || to) {
    filter.timestamp = {};
    if (from) filter.timestamp.gte = from + "T00:00:00Z";
    if (to) filter.timestamp.lte = to + "T23:59:59Z";
  }
  if (Object.keys(filter).length) body.filter = filter;
  return body;
}

function guessType(text) {
  if (/^-?\d+$/.test(text)) return Number(text);
  if (/^-?\d*\.\d+$/.test(text)) return Number(text);
  if (text === "true" || text === "false") return text === "true";
  return text;
}

async function runSearch(event) {
  if (event) event.preventDefault();
  if (!state.index) return;
  const body = searchBody();
  $("search-button").disabled = true;
  try {
    const response = await api("POST", indexPath("/search"), body);
    showError(null);
    renderResults(response);
  } catch (e) { showError(e); $("results").replaceChildren(); $("search-info").textContent = ""; }
  finally { $("search-button").disabled = false; }
}

function renderResults(response) {
  const info = [response.hits.length + " hits", response.took_ms.toFixed(1) + " ms", "pipeline " + response.pipeline];
  const stages = (response.query_info || {}).stages;
  if (stages) info.push("query stages: " + Object.keys(stages).join(", "));
  const timings = (response.query_info || {}).timings_ms;
  if (timings) info.push(Object.entries(timings).map(([stage, ms]) => stage + " " + Number(ms).toFixed(1) + " ms").join(", "));
  $("search-info").textContent = info.join(" · ");
  $("results").replaceChildren(...response.hits.map((hit) => renderHit(hit, response)));
}

/* The document's text with the matched passage marked (offsets are in title + "\n" + text), cut to a window. */
function highlighted(hit) {
  const title = hit.title || "", text = hit.text || "";
  const shift = title && text ? title.length + 1 : (title ? 0 : 0);
  const box = el("div", { class: "hit-text" });
  if (!hit.passage || !text) { box.textContent = text.length > 600 ? text.slice(0, 600) + "…" : text; return box; }
  let start = hit.passage.start - shift, end = hit.passage.end - shift;
  if (!title) { start = hit.passage.start; end = hit.passage.end; }
  start = Math.max(0, Math.min(text.length, start)); end = Math.max(start, Math.min(text.length, end));
  if (end === start) { box.textContent = text.slice(0, 600); return box; }
  const from = Math.max(0, start - 240), to = Math.min(text.length, end + 240);
  box.append((from > 0 ? "…" : "") + text.slice(from, start), el("mark", {}, text.slice(start, end)),
             text.slice(end, to) + (to < text.length ? "…" : ""));
  return box;
}

function renderHit(hit, response) {
  const evidenceBox = el("div", { class: "evidence", hidden: true });
  const toggle = el("button", { type: "button", class: "evidence-toggle", "aria-expanded": "false", onclick: () => {
    const open = evidenceBox.hidden;
    if (open && !evidenceBox.childNodes.length) evidenceBox.append(renderEvidence(hit, response));
    evidenceBox.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = open ? "hide evidence" : "evidence";
  } }, "evidence");
  const meta = [];
  if (hit.timestamp) meta.push(el("span", { class: "chip" }, hit.timestamp.slice(0, 10)));
  for (const [key, value] of Object.entries(hit.metadata || {})) meta.push(el("span", { class: "chip" }, key + ": " + fmt(value)));
  return el("li", { class: "hit", "data-id": hit.id },
    el("div", { class: "hit-head" },
      el("span", { class: "hit-rank" }, "#" + hit.rank),
      el("a", { class: "hit-title", href: "#", onclick: (e) => { e.preventDefault(); openDocument(hit.id); } }, hit.title || hit.id),
      el("span", { class: "hit-id" }, hit.id),
      el("span", { class: "hit-score" }, "score " + fmt(hit.score))),
    meta.length ? el("div", { class: "hit-meta" }, meta) : null,
    highlighted(hit),
    toggle, evidenceBox);
}

/* One row per thing a stage said about the hit: rank and score per retriever, fused score, rerank and other factors. */
function renderEvidence(hit, response) {
  const rows = [];
  const evidence = hit.evidence || {};
  const order = ["bm25", "dense", "fused", "rerank", "freshness"];
  const names = Object.keys(evidence).sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99));
  for (const name of names) {
    const value = evidence[name];
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const entries = Object.entries(value);
      entries.forEach(([field, v], i) => rows.push(el("tr", { "data-stage": name },
        el("th", {}, i === 0 ? name : ""), el("td", {}, field), el("td", { class: "num" }, fmt(v)))));
    } else {
      rows.push(el("tr", { "data-stage": name }, el("th", {}, name), el("td", {}, ""), el("td", { class: "num" }, fmt(value))));
    }
  }
  rows.push(el("tr", {}, el("th", {}, "final"), el("td", {}, "rank / score"), el("td", { class: "num" }, hit.rank + " / " + fmt(hit.score))));
  if (hit.passage) rows.push(el("tr", {}, el("th", {}, "passage"), el("td", {}, "ordinal / chars"),
    el("td", { class: "num" }, hit.passage.index + " / " + hit.passage.start + "–" + hit.passage.end)));
  const table = el("table", { class: "ev" }, el("thead", {}, el("tr", {}, el("th", {}, "stage"), el("th", {}, "what"), el("th", {}, "value"))),
                   el("tbody", {}, rows));
  const stages = (response.query_info || {}).stages;
  return el("div", {}, table, stages ? el("details", {}, el("summary", {}, "query stages"), el("pre", {}, JSON.stringify(stages, null, 2))) : null);
}

async function openDocument(id) {
  try {
    const doc = await api("GET", indexPath("/documents/" + encodeURIComponent(id)));
    $("doc-title").textContent = doc.title || doc._id;
    $("doc-meta").textContent = [doc._id, doc.timestamp || "", JSON.stringify(doc.metadata)].filter(Boolean).join(" · ");
    $("doc-text").textContent = doc.text;
    $("doc-dialog").showModal();
  } catch (e) { showError(e); }
}

// -- ask: the agent's graph as it streams -----------------------------------------------------------------------------
async function runAsk(event) {
  if (event) event.preventDefault();
  if (!state.index) return;
  if (state.askAbort) state.askAbort.abort();
  const abort = state.askAbort = new AbortController();
  $("answer").replaceChildren(); $("references").replaceChildren(); $("node-detail").replaceChildren();
  state.graph = null; state.selected = null; drawGraph();
  $("ask-status").textContent = "planning…";
  $("ask-button").disabled = true;
  try {
    const response = await fetch("v1/agent/ask", { method: "POST", headers: headers(true), signal: abort.signal,
      body: JSON.stringify({ question: $("question").value, index: state.index }) });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
      const error = new Error(message); error.status = response.status; throw error;
    }
    showError(null);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        handleEvent(block);
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") { showError(e); $("ask-status").textContent = ""; }
  } finally { $("ask-button").disabled = false; }
}

function handleEvent(block) {
  let kind = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) kind = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  let payload;
  try { payload = JSON.parse(data); } catch (e) { return; }
  if (kind === "graph") {
    state.graph = mergeGraph(state.graph, payload.graph);
    $("ask-status").textContent = payload.change;
    drawGraph();
  } else if (kind === "node") {
    state.graph = mergeGraph(state.graph, { nodes: { [payload.node.name]: payload.node }, edges: state.graph ? state.graph.edges : [] });
    drawGraph();
  } else if (kind === "error") {
    showError(new Error(payload.message));
  } else if (kind === "final") {
    state.graph = mergeGraph(state.graph, payload.graph);
    drawGraph();
    $("ask-status").textContent = "status: " + payload.status;
    renderAnswer(payload.answer, payload.references);
  }
}

/* Node details (answers, references) arrive with "node" and "final" events; "graph" events carry states only. */
function mergeGraph(old, incoming) {
  const nodes = {};
  for (const [name, node] of Object.entries(incoming.nodes || {})) nodes[name] = Object.assign({}, old && old.nodes[name], node);
  for (const [name, node] of Object.entries((old && old.nodes) || {})) if (!(name in nodes)) nodes[name] = node;
  return { nodes, edges: incoming.edges || (old && old.edges) || [] };
}

/* Columns by depth (longest path from the root), rows in order of appearance. */
function drawGraph() {
  const box = $("graph");
  const graph = state.graph;
  if (!graph) { box.replaceChildren(); box.setAttribute("width", 0); box.setAttribute("height", 0); return; }
  const names = Object.keys(graph.nodes);
  const depth = {};
  for (const name of names) depth[name] = graph.nodes[name].type === "root" ? 0 : 1;
  for (let round = 0; round < names.length; round++) {
    let changed = false;
    for (const edge of graph.edges) {
      if (depth[edge.end] !== undefined && depth[edge.start] !== undefined && depth[edge.end] < depth[edge.start] + 1) {
        depth[edge.end] = depth[edge.start] + 1; changed = true;
      }
    }
    if (!changed) break;
  }
  const maxDepth = Math.max(0, ...names.filter((n) => graph.nodes[n].type !== "response").map((n) => depth[n]));
  for (const name of names) if (graph.nodes[name].type === "response") depth[name] = Math.max(depth[name], maxDepth + 1);
  const columns = {};
  for (const name of names) (columns[depth[name]] = columns[depth[name]] || []).push(name);
  const W = 200, H = 56, GX = 60, GY = 18;
  const rows = Math.max(...Object.values(columns).map((c) => c.length));
  const height = rows * (H + GY) + GY, width = (Object.keys(columns).length) * (W + GX) + GX;
  const pos = {};
  for (const [d, column] of Object.entries(columns)) {
    const offset = (height - column.length * (H + GY) + GY) / 2;
    column.forEach((name, i) => { pos[name] = { x: GX / 2 + Number(d) * (W + GX), y: offset + i * (H + GY) }; });
  }
  const defs = svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
                                    svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#9aa5b4" })));
  const parts = [defs];
  for (const edge of graph.edges) {
    const a = pos[edge.start], b = pos[edge.end];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    parts.push(svg("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
  }
  for (const name of names) {
    const node = graph.nodes[name], p = pos[name];
    const label = node.type === "root" ? "question" : (node.type === "response" ? "answer" : name);
    const content = node.content || "";
    const shown = content.length > 30 ? content.slice(0, 29) + "…" : content;
    const group = svg("g", { class: `node ${node.type} ${node.state}` + (state.selected === name ? " selected" : ""),
                             transform: `translate(${p.x},${p.y})`, "data-name": name, "data-state": node.state, tabindex: 0 },
      svg("title", {}, content),
      svg("rect", { width: W, height: H }),
      svg("text", { x: 10, y: 20 }, shown),
      svg("text", { x: 10, y: 40, class: "state" }, label + " · " + node.state));
    group.addEventListener("click", () => { state.selected = name; drawGraph(); showNode(name); });
    parts.push(group);
  }
  box.setAttribute("width", width); box.setAttribute("height", height);
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  box.replaceChildren(...parts);
}

function showNode(name) {
  const node = state.graph.nodes[name];
  const items = [el("h3", {}, node.content || name), el("p", { class: "muted" }, node.type + " · " + node.state)];
  if (node.queries && node.queries.length) items.push(el("p", {}, "searched: " + node.queries.join(" · ")));
  if (node.answer) items.push(...answerParts(node.answer, null));
  if (node.error) items.push(el("p", { class: "error" }, node.error));
  for (const ref of node.references || []) items.push(el("p", { class: "ref-text" }, "[" + ref.id + "] " + (ref.title || ref.doc_id) + ": " + ref.text));
  $("node-detail").replaceChildren(...items);
}

/* The answer's lines: "## x" as headings, [[n]] as links to reference n (everything else as text). */
function answerParts(answer, references) {
  const parts = [];
  for (const line of (answer || "").split("\n")) {
    if (!line.trim()) continue;
    if (line.startsWith("## ")) { parts.push(el("h4", {}, line.slice(3))); continue; }
    const p = el("p", {});
    let last = 0;
    for (const match of line.matchAll(/\[\[(\d+)\]\]/g)) {
      p.append(line.slice(last, match.index));
      const n = match[1];
      p.append(references ? el("a", { class: "cite", href: "#ref-" + n, "data-ref": n,
        onclick: (e) => { e.preventDefault(); flashReference(n); } }, "[" + n + "]") : "[" + n + "]");
      last = match.index + match[0].length;
    }
    p.append(line.slice(last));
    parts.push(p);
  }
  return parts;
}

function renderAnswer(answer, references) {
  $("answer").replaceChildren(...(answer ? answerParts(answer, references) : [el("p", { class: "muted" }, "no answer")]));
  const items = Object.entries(references || {}).sort((a, b) => Number(a[0]) - Number(b[0])).map(([n, ref]) =>
    el("li", { id: "ref-" + n, value: n },
      el("a", { href: "#", onclick: (e) => { e.preventDefault(); openDocument(ref.doc_id); } }, ref.title || ref.doc_id),
      " ", el("span", { class: "hit-id" }, ref.doc_id),
      el("div", { class: "ref-text" }, (ref.text || "").slice(0, 280))));
  $("references").replaceChildren(...items);
}

function flashReference(n) {
  const item = $("ref-" + n);
  if (!item) return;
  item.scrollIntoView({ block: "nearest" });
  item.classList.add("flash");
  setTimeout(() => item.classList.remove("flash"), 1500);
}

// -- index stats and jobs -------------------------------------------------------------------------------------------
async function loadStatus() {
  if (!state.index) return;
  try {
    const stats = await api("GET", indexPath());
    const rows = ["documents", "passages", "vectors", "lexical_documents", "seq", "dimension"].map((k) =>
      el("tr", {}, el("th", {}, k), el("td", {}, fmt(stats[k]))));
    $("stats").replaceChildren(...rows);
    $("config").textContent = JSON.stringify(stats.config, null, 2);
    $("index-summary").textContent = stats.documents + " documents, " + stats.passages + " passages";
  } catch (e) { showError(e); }
  loadJobs();
}

async function loadJobs() {
  if (!state.index) return;
  try {
    const jobs = await api("GET", "v1/jobs?index=" + encodeURIComponent(state.index) + "&limit=20");
    $("jobs-note").textContent = jobs.length ? "" : "no recent job for this index";
    $("jobs").replaceChildren(...jobs.map((job) => el("li", { "data-job": job.id, "data-state": job.state },
      el("div", {}, el("span", { class: "hit-id" }, job.id.slice(0, 8)), " ", job.state, " · ",
         job.done + " indexed, " + job.failed + " failed of " + job.total, " · ",
         el("span", { class: "muted" }, new Date(job.created * 1000).toLocaleString())),
      el("progress", { max: Math.max(1, job.total), value: job.done + job.failed }),
      job.errors.length ? el("details", {}, el("summary", {}, job.errors.length + " errors"),
        el("ul", {}, job.errors.slice(0, 50).map((err) => el("li", {}, (err.id || "?") + ": " + err.reason)))) : null)));
  } catch (e) {
    $("jobs-note").textContent = e.status === 403 ? "listing jobs needs a key with the write scope" : e.message;
    $("jobs").replaceChildren();
  }
}

async function queueDocuments() {
  const lines = $("docs-input").value.split("\n").map((l) => l.trim()).filter(Boolean);
  try {
    const documents = lines.map((line) => JSON.parse(line));
    await api("POST", indexPath("/documents"), { documents });
    $("docs-input").value = "";
    showError(null);
    loadJobs();
  } catch (e) { showError(e); }
}

// -- start ------------------------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("apikey").value = sessionStorage.getItem(KEY_STORE) || "";
  $("apikey").addEventListener("change", () => {
    const key = $("apikey").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
    loadIndexes();
  });
  for (const button of document.querySelectorAll(".tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  $("index").addEventListener("change", () => selectIndex($("index").value));
  $("search-form").addEventListener("submit", runSearch);
  for (const radio of document.querySelectorAll("input[name=pipeline]")) radio.addEventListener("change", () => { if ($("q").value.trim()) runSearch(); });
  $("stages").addEventListener("change", () => { if ($("q").value.trim()) runSearch(); });
  $("ask-form").addEventListener("submit", runAsk);
  $("docs-submit").addEventListener("click", queueDocuments);
  loadIndexes();
});
