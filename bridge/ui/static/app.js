// The bridge's developer UI: one page, switched by the URL fragment, fed by /ui/api.
// No framework and no build step; every value is put in the DOM as text, never as HTML.
"use strict";

const API = "/ui/api";
const POLL_MS = 2000;
// The server refuses a UI action (POST) without this page's CSRF token in X-CSRF-Token.
const CSRF = document.querySelector('meta[name="bridge-csrf"]').content;
let timer = null;      // the current page's refresh loop
let generation = 0;    // bumped on navigation, so a late answer never paints over a newer page

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

async function api(path, options) {
  const resp = await fetch(API + path, {
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": CSRF },
    ...options,
  });
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = { error: text }; }
  document.getElementById("conn").classList.toggle("down", resp.status >= 500);
  if (!resp.ok) {
    const err = new Error((body && body.error) || resp.statusText);
    err.status = resp.status; err.body = body;
    throw err;
  }
  return body;
}

const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body || {}) });

// Polling repaints only what changed, so open details, checkboxes and scroll survive.
const painted = new WeakMap();
function unchanged(el, value) {
  const text = JSON.stringify(value);
  if (painted.get(el) === text) return true;
  painted.set(el, text);
  return false;
}

function when(epoch) {
  if (!epoch) return "";
  const d = new Date(epoch * 1000);
  return d.toLocaleString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 1 ? (seconds * 1000).toFixed(1) + " ms" : seconds.toFixed(2) + " s";
}

const badge = (status) => h("span", { class: "badge " + status, "data-status": status }, status.replace("_", " "));
const json = (value) => h("pre", { class: "mono" }, JSON.stringify(value, null, 2));
const eventLink = (id) => h("a", { href: "#/event/" + encodeURIComponent(id), class: "mono" }, id);

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { page: parts[0] || "events", arg: parts.slice(1).join("/"), params: new URLSearchParams(query || "") };
}

function setQuery(page, params) {
  const q = params.toString();
  history.replaceState(null, "", "#/" + page + (q ? "?" + q : ""));
}

function poll(fn, every) {
  const mine = generation;
  const tick = async () => {
    if (mine !== generation) return;
    try { await fn(); } catch (e) { showError(e); }
    if (mine === generation) timer = setTimeout(tick, every || POLL_MS);
  };
  tick();
}

function showError(e) {
  const slot = document.getElementById("page-error");
  if (slot) slot.textContent = e && e.message ? e.message : String(e);
}

let catalogCache = null;
async function catalog() {
  if (!catalogCache) catalogCache = await api("/catalog");
  return catalogCache;
}

// ------------------------------------------------------------------ events

async function eventsPage(main, params) {
  const cat = await catalog();
  const state = {
    type: params.get("type") || "", status: params.get("status") || "", q: params.get("q") || "",
    cursors: [], before: null, live: true,
  };
  const typeInput = h("input", { id: "filter-type", list: "types", placeholder: "type", value: state.type });
  const statusSelect = h("select", { id: "filter-status" },
    ["", "running", "succeeded", "partial", "dead_lettered", "unrouted"].map(
      (s) => h("option", { value: s, selected: s === state.status }, s || "any status")));
  const search = h("input", { id: "search", placeholder: "event id or correlation id", value: state.q, size: 36 });
  const live = h("input", { type: "checkbox", id: "live", checked: true });
  const body = h("tbody", { id: "events" });
  const pageInfo = h("span", { class: "muted", id: "page-info" });
  const newer = h("button", { class: "secondary", id: "newer", disabled: true }, "← Newer");
  const older = h("button", { class: "secondary", id: "older", disabled: true }, "Older →");
  let next = null;

  async function load() {
    const q = new URLSearchParams();
    if (state.type) q.set("type", state.type);
    if (state.status) q.set("status", state.status);
    if (state.q) q.set("q", state.q);
    setQuery("events", q);
    if (state.before) q.set("before", state.before);
    const page = await api("/events?" + q.toString());
    next = page.next;
    older.disabled = !next;
    if (!unchanged(body, page.items)) {
      body.replaceChildren(...page.items.map(eventRow));
      if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No events match. Send one from “Send event”.")));
    }
    newer.disabled = state.cursors.length === 0;
    pageInfo.textContent = "page " + (state.cursors.length + 1) + (state.before ? "" : (live.checked ? " · live" : ""));
  }
  const reload = () => { state.cursors = []; state.before = null; load().catch(showError); };
  typeInput.addEventListener("change", () => { state.type = typeInput.value.trim(); reload(); });
  statusSelect.addEventListener("change", () => { state.status = statusSelect.value; reload(); });
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") { state.q = search.value.trim(); reload(); } });
  older.addEventListener("click", () => { state.cursors.push(state.before); state.before = next; load().catch(showError); });
  newer.addEventListener("click", () => { state.before = state.cursors.pop() || null; load().catch(showError); });

  main.replaceChildren(
    h("h1", {}, "Events"),
    h("datalist", { id: "types" }, cat.types.map((t) => h("option", { value: t.type }))),
    h("div", { class: "filters" }, typeInput, statusSelect, search,
      h("button", { class: "secondary", onclick: () => { state.q = search.value.trim(); reload(); } }, "Search"),
      h("label", {}, live, " live")),
    h("div", { id: "page-error", class: "error" }),
    h("table", {}, h("thead", {}, h("tr", {}, ["Time", "Type", "Status", "Event id", "Correlation id", "Source", "Parent"].map((c) => h("th", {}, c)))), body),
    h("div", { class: "pager" }, newer, older, pageInfo));
  // Live: only the newest page refreshes, and only rows change (no reload).
  poll(async () => { if (!state.before && live.checked) await load(); else if (!body.childElementCount) await load(); });
}

function eventRow(e) {
  return h("tr", { "data-event-id": e.id, "data-status": e.status },
    h("td", { class: "mono" }, when(e.received_at)),
    h("td", {}, e.type),
    h("td", {}, badge(e.status)),
    h("td", {}, eventLink(e.id)),
    h("td", { class: "mono" }, e.correlation_id ? h("a", { href: "#/events?q=" + encodeURIComponent(e.correlation_id) }, e.correlation_id) : ""),
    h("td", {}, e.source),
    h("td", {}, e.parent_id ? eventLink(e.parent_id) : ""));
}

// ------------------------------------------------------------------ one event

async function eventPage(main, id) {
  main.replaceChildren(h("h1", {}, "Event ", h("span", { class: "mono" }, id)), h("div", { id: "page-error", class: "error" }), h("div", { id: "event" }));
  poll(async () => {
    let e;
    try { e = await api("/events/" + encodeURIComponent(id)); }
    catch (err) {
      if (err.status === 404) { document.getElementById("event").replaceChildren(h("p", { class: "note" }, err.message)); return; }
      throw err;
    }
    const slot = document.getElementById("event");
    if (unchanged(slot, e)) return;
    const open = [...slot.querySelectorAll("details[open]")].map((d) => d.dataset.key);
    slot.replaceChildren(renderEvent(e));
    for (const d of slot.querySelectorAll("details")) if (open.includes(d.dataset.key)) d.open = true;
  });
}

function renderEvent(e) {
  const envelope = Object.assign({}, e.event); const data = envelope.data; delete envelope.data;
  const facts = h("dl", { class: "kv" },
    h("dt", {}, "type"), h("dd", {}, e.type),
    h("dt", {}, "status"), h("dd", {}, badge(e.status)),
    h("dt", {}, "correlation id"), h("dd", { class: "mono" }, e.correlation_id ? h("a", { href: "#/events?q=" + encodeURIComponent(e.correlation_id) }, e.correlation_id) : "–"),
    h("dt", {}, "trace id"), h("dd", { class: "mono", id: "trace-id" }, e.trace_id || "–"),
    h("dt", {}, "source"), h("dd", {}, e.source),
    h("dt", {}, "parent"), h("dd", {}, e.parent_id ? eventLink(e.parent_id) : "–"),
    h("dt", {}, "received"), h("dd", {}, when(e.received_at)),
    h("dt", {}, "finished"), h("dd", {}, when(e.finished_at) || "–"));
  return h("div", {},
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, "Event"), facts),
      h("div", { class: "panel" }, h("h2", {}, "Data"), json(data))),
    h("h2", {}, "Fan-out (" + e.runs.length + " handler" + (e.runs.length === 1 ? "" : "s") + ")"),
    e.runs.length ? h("div", { id: "runs" }, e.runs.map(renderRun)) : h("p", { class: "muted" }, e.status === "unrouted" ? "No handler subscribes to this event." : "No runs recorded yet."),
    e.children.length ? h("div", {}, h("h2", {}, "Child events"), h("ul", { class: "tree", id: "children" },
      e.children.map((c) => h("li", {}, eventLink(c.id), " ", c.type, " ", badge(c.status))))) : null,
    h("details", { class: "panel", "data-key": "envelope" }, h("summary", {}, "CloudEvents envelope"), json(envelope)));
}

function renderRun(run) {
  const letter = run.dead_letter;
  const replayBtn = letter && letter.status === "pending"
    ? h("button", { class: "replay", "data-letter": letter.id, onclick: async (ev) => {
        ev.target.disabled = true;
        try { await post("/dead-letters/" + encodeURIComponent(letter.id) + "/replay"); ev.target.textContent = "replayed"; }
        catch (e) { showError(e); ev.target.disabled = false; }
      } }, "Replay to " + run.handler)
    : null;
  const attempts = run.attempts.length
    ? h("table", { class: "attempts" },
        h("thead", {}, h("tr", {}, ["#", "Started", "Duration", "Error"].map((c) => h("th", {}, c)))),
        h("tbody", {}, run.attempts.map((a) => h("tr", { class: "attempt" },
          h("td", {}, a.number), h("td", { class: "mono" }, when(a.started_at)), h("td", {}, ms(a.duration)),
          h("td", { class: a.error ? "error mono" : "mono" }, a.error || "ok",
            a.traceback ? h("details", { class: "traceback", "data-key": "tb-" + run.handler + "-" + a.number },
              h("summary", {}, "traceback"), h("pre", { class: "mono" }, a.traceback)) : null)))))
    : h("p", { class: "muted" }, run.status === "succeeded" ? "Succeeded on the first attempt." : "No failed attempts.");
  return h("div", { class: "panel run " + run.status, "data-handler": run.handler, "data-status": run.status },
    h("h3", {}, run.handler, badge(run.status), replayBtn,
      letter ? h("span", { class: "muted" }, "dead letter ", h("span", { class: "mono" }, letter.id.slice(0, 12)), " · ", letter.status) : null),
    run.error ? h("p", { class: "error mono" }, run.error) : null,
    attempts,
    run.result !== null && run.result !== undefined ? h("div", {}, h("span", { class: "muted" }, "result"), json(run.result)) : null,
    run.children.length ? h("div", {}, h("span", { class: "muted" }, "emitted"), h("ul", { class: "tree" }, run.children.map((c) => h("li", {}, eventLink(c))))) : null);
}

// ------------------------------------------------------------------ dead letters

async function deadLettersPage(main, params) {
  const state = { status: params.has("status") ? params.get("status") : "pending", handler: params.get("handler") || "", type: params.get("type") || "", offset: 0 };
  const statusSelect = h("select", { id: "dl-status" }, ["pending", "replayed", "discarded", ""].map((s) => h("option", { value: s, selected: s === state.status }, s || "any status")));
  const handlerInput = h("input", { id: "dl-handler", placeholder: "handler", value: state.handler });
  const typeInput = h("input", { id: "dl-type", placeholder: "event type", value: state.type });
  const body = h("tbody", { id: "letters" });
  const note = h("div", { id: "dl-note" });
  const more = h("button", { class: "secondary", id: "dl-more", disabled: true }, "More →");
  const back = h("button", { class: "secondary", id: "dl-back", disabled: true }, "← Back");
  const limit = 50;
  let nextOffset = null;

  async function load() {
    const q = new URLSearchParams();
    if (state.status) q.set("status", state.status);
    if (state.handler) q.set("handler", state.handler);
    if (state.type) q.set("type", state.type);
    setQuery("dead-letters", q);
    q.set("limit", limit); q.set("offset", state.offset);
    const page = await api("/dead-letters?" + q.toString());
    nextOffset = page.next_offset;
    more.disabled = nextOffset === null; back.disabled = state.offset === 0;
    if (unchanged(body, page.items)) return;
    const picked = new Set([...body.querySelectorAll("input.pick:checked")].map((c) => c.value));
    body.replaceChildren(...page.items.map(letterRow));
    for (const c of body.querySelectorAll("input.pick")) c.checked = picked.has(c.value) && !c.disabled;
    if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No dead letters match.")));
  }
  function letterRow(d) {
    const act = async (what, btn) => {
      btn.disabled = true;
      try { await post("/dead-letters/" + encodeURIComponent(d.id) + "/" + what); await load(); }
      catch (e) { showError(e); btn.disabled = false; }
    };
    return h("tr", { "data-letter": d.id },
      h("td", {}, h("input", { type: "checkbox", class: "pick", value: d.id, disabled: d.status !== "pending" || !d.replayable })),
      h("td", { class: "mono" }, when(d.created_at)),
      h("td", {}, d.handler || h("span", { class: "muted" }, "(no handler)"), h("div", { class: "muted" }, d.event_type || "")),
      h("td", {}, d.event_id ? eventLink(d.event_id) : h("span", { class: "muted" }, "never an event")),
      h("td", { class: "error mono" }, d.reason, h("div", { class: "muted" }, d.attempts.length + " attempt" + (d.attempts.length === 1 ? "" : "s"))),
      h("td", {}, badge(d.status)),
      h("td", {},
        d.replayable && d.status === "pending" ? h("button", { class: "replay", onclick: (ev) => act("replay", ev.target) }, "Replay") : null,
        // A discarded letter was put aside on purpose: replaying it takes a confirmation (force).
        d.replayable && d.status === "discarded" ? h("button", { class: "secondary replay-discarded", onclick: (ev) => {
          if (window.confirm("This dead letter was discarded. Replay it anyway?")) act("replay?force=true", ev.target);
        } }, "Replay anyway") : null, " ",
        d.status === "pending" ? h("button", { class: "danger discard", onclick: (ev) => act("discard", ev.target) }, "Discard") : null));
  }
  async function bulk(payload) {
    try {
      const res = await post("/dead-letters/replay", payload);
      note.replaceChildren(h("div", { class: "note ok-note" }, "Replayed " + res.replayed.length + " dead letter" + (res.replayed.length === 1 ? "" : "s") +
        (res.failed.length ? "; " + res.failed.length + " could not be: " + res.failed.map((f) => f.error).join("; ") : ".")));
      await load();
    } catch (e) { showError(e); }
  }
  const reload = () => { state.offset = 0; load().catch(showError); };
  statusSelect.addEventListener("change", () => { state.status = statusSelect.value; reload(); });
  handlerInput.addEventListener("change", () => { state.handler = handlerInput.value.trim(); reload(); });
  typeInput.addEventListener("change", () => { state.type = typeInput.value.trim(); reload(); });
  more.addEventListener("click", () => { state.offset += limit; load().catch(showError); });
  back.addEventListener("click", () => { state.offset = Math.max(0, state.offset - limit); load().catch(showError); });

  main.replaceChildren(
    h("h1", {}, "Dead letters"),
    h("div", { class: "filters" }, statusSelect, handlerInput, typeInput,
      h("button", { class: "secondary", id: "replay-selected", onclick: () => {
        const ids = [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
        if (ids.length) bulk({ ids });
      } }, "Replay selected"),
      h("button", { id: "replay-all", onclick: () => {
        if (confirm("Replay every pending dead letter that matches the handler and type filters?")) {
          bulk({ handler: state.handler || null, type: state.type || null });
        }
      } }, "Replay all matching")),
    note, h("div", { id: "page-error", class: "error" }),
    h("table", {}, h("thead", {}, h("tr", {}, ["", "Time", "Handler", "Event", "Reason", "Status", ""].map((c) => h("th", {}, c)))), body),
    h("div", { class: "pager" }, back, more));
  poll(load, 4000);
}

// ------------------------------------------------------------------ send

async function sendPage(main, params) {
  const cat = await catalog();
  const types = cat.types.filter((t) => !t.pattern);
  const typeSelect = h("select", { id: "send-type" }, types.map((t) => h("option", { value: t.type }, t.type)));
  const typeFree = h("input", { id: "send-type-free", placeholder: "or another type", title: "a type matching a pattern of the catalog, e.g. db/users.insert for db/*" });
  const data = h("textarea", { id: "send-data", spellcheck: "false" });
  const corr = h("input", { id: "send-correlation", placeholder: "optional", size: 24 });
  const errors = h("ul", { class: "errors", id: "send-errors" });
  const verdict = h("span", { id: "send-verdict", class: "muted" });
  const sendBtn = h("button", { id: "send", disabled: true }, "Send");
  const result = h("div", { id: "send-result" });
  const schemaView = h("details", {}, h("summary", { class: "muted" }, "schema"), h("pre", { class: "mono", id: "send-schema" }));
  let checkSeq = 0;
  let debounce = null;

  const currentType = () => typeFree.value.trim() || typeSelect.value;
  function fill() {
    const t = types.find((x) => x.type === typeSelect.value);
    data.value = JSON.stringify(t ? t.example : {}, null, 2);
    schemaView.querySelector("pre").textContent = t && t.schema ? JSON.stringify(t.schema, null, 2) : "no schema: any JSON is valid";
    check();
  }
  async function check() {
    const mine = ++checkSeq;
    let parsed;
    try { parsed = JSON.parse(data.value); }
    catch (e) {
      errors.replaceChildren(h("li", {}, "Not JSON: " + e.message));
      verdict.textContent = "invalid"; sendBtn.disabled = true; return null;
    }
    const res = await post("/validate", { type: currentType(), data: parsed });
    if (mine !== checkSeq) return null;
    errors.replaceChildren(...res.errors.map((e) => h("li", {}, (e.loc && e.loc.length ? e.loc.join(".") + ": " : "") + e.msg)));
    verdict.textContent = res.valid ? "valid" : res.errors.length + " error" + (res.errors.length === 1 ? "" : "s");
    verdict.className = res.valid ? "" : "error";
    sendBtn.disabled = !res.valid;
    return res.valid ? parsed : null;
  }
  const later = () => { clearTimeout(debounce); sendBtn.disabled = true; debounce = setTimeout(() => check().catch(showError), 250); };
  data.addEventListener("input", later);
  typeFree.addEventListener("input", later);
  typeSelect.addEventListener("change", fill);
  sendBtn.addEventListener("click", async () => {
    const parsed = await check();
    if (parsed === null) return;
    sendBtn.disabled = true;
    try {
      const body = { type: currentType(), data: parsed };
      if (corr.value.trim()) body.correlationid = corr.value.trim();
      const res = await post("/send", body);
      result.replaceChildren(h("div", { class: "note ok-note" }, "Sent ", eventLink(res.id), res.duplicate ? " (an event with this id was sent before)" : ""));
    } catch (e) {
      if (e.body && e.body.errors) errors.replaceChildren(...e.body.errors.map((x) => h("li", {}, x.msg)));
      showError(e);
    } finally { sendBtn.disabled = false; }
  });
  main.replaceChildren(
    h("h1", {}, "Send a test event"),
    h("div", { class: "panel" },
      h("div", { class: "filters" }, h("label", { class: "field" }, "type", typeSelect), typeFree,
        h("label", { class: "field" }, "correlation id", corr)),
      data, schemaView,
      h("div", { class: "filters" }, sendBtn, verdict),
      errors, h("div", { id: "page-error", class: "error" }), result));
  if (!types.length && !cat.open) typeFree.placeholder = "type (the catalog holds only patterns)";
  fill();
}

// ------------------------------------------------------------------ status

async function statusPage(main) {
  const conns = h("tbody", { id: "connectors" });
  const handlers = h("tbody", { id: "handlers" });
  const windowNote = h("span", { class: "muted", id: "window" });
  main.replaceChildren(
    h("h1", {}, "Status"), h("div", { id: "page-error", class: "error" }),
    h("h2", {}, "Connectors"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Connector", "Connected", "Backlog (lag / queue depth)", "Detail"].map((c) => h("th", {}, c)))), conns),
    h("h2", {}, "Handlers ", windowNote),
    h("table", {}, h("thead", {}, h("tr", {}, ["Handler", "Runs", "Succeeded", "Dead-lettered", "Success rate", "Mean latency", "p95 (≤)", "Runs since start"].map((c) => h("th", {}, c)))), handlers));
  poll(async () => {
    const s = await api("/status");
    conns.replaceChildren(...s.connectors.map((c) => h("tr", { "data-connector": c.name },
      h("td", {}, c.name),
      h("td", {}, h("span", { class: "badge " + (c.connected ? "succeeded" : "dead_lettered") }, c.connected ? "connected" : "down")),
      h("td", {}, String(c.backlog), " ", h("span", { class: "muted mono" }, Object.entries(c.lag).map(([k, v]) => k + "=" + v).join(" "))),
      h("td", { class: "muted" }, c.detail))));
    windowNote.textContent = "(last " + Math.round(s.window_seconds) + " s)";
    handlers.replaceChildren(...s.handlers.map((r) => h("tr", { "data-handler": r.id },
      h("td", {}, r.id), h("td", {}, r.runs), h("td", {}, r.succeeded), h("td", {}, r.dead_lettered),
      h("td", {}, r.success_rate === null ? "–" : (r.success_rate * 100).toFixed(1) + " %"),
      h("td", {}, ms(r.mean_seconds)), h("td", {}, ms(r.p95_seconds)), h("td", {}, r.total_runs))));
  }, 3000);
}

// ------------------------------------------------------------------ router

async function render() {
  generation += 1;
  clearTimeout(timer);
  const { page, arg, params } = route();
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === page || (page === "event" && a.dataset.page === "events"));
  }
  const main = document.getElementById("main");
  try {
    if (page === "event" && arg) await eventPage(main, arg);
    else if (page === "dead-letters") await deadLettersPage(main, params);
    else if (page === "send") await sendPage(main, params);
    else if (page === "status") await statusPage(main);
    else await eventsPage(main, params);
  } catch (e) {
    main.replaceChildren(h("p", { class: "note" }, "Could not load this page: " + (e.message || e)));
  }
}

window.addEventListener("hashchange", render);
render();
