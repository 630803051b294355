// The bridge's developer UI, part 1 of 5: helpers, live updates and the router.
// One page, switched by the URL fragment, fed by /ui/api. No framework, no build step;
// every value is put in the DOM as text, never as HTML. Pages live in events.js,
// event.js, letters.js and pages.js; main.js starts it.
"use strict";

const API = "/ui/api";
// The server refuses a UI action (POST) without this page's CSRF token in X-CSRF-Token.
const CSRF = document.querySelector('meta[name="bridge-csrf"]').content;
let generation = 0;    // bumped on navigation, so a late answer never paints over a newer page

// ------------------------------------------------------------------ DOM and API

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
  if (!resp.ok) {
    const err = new Error((body && body.error) || resp.statusText);
    err.status = resp.status; err.body = body;
    throw err;
  }
  return body;
}

const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body || {}) });

// Live reloads repaint only what changed, so open details, checkboxes and scroll survive.
const painted = new WeakMap();
function unchanged(el, value) {
  const text = JSON.stringify(value);
  if (painted.get(el) === text) return true;
  painted.set(el, text);
  return false;
}

function showError(e) {
  const slot = document.getElementById("page-error");
  if (slot) slot.textContent = e && e.message ? e.message : String(e);
}

const scroller = (...children) => h("div", { class: "scroll" }, ...children);
const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");

// ------------------------------------------------------------------ times

function absolute(epoch) {
  const d = new Date(epoch * 1000);
  return d.toLocaleString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function span(seconds) {
  const s = Math.abs(seconds);
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 86400) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}

// "12 s ago" / "in 3 min", from now; kept current by tick() without asking the server.
function relative(epoch) {
  const delta = Date.now() / 1000 - epoch;
  if (Math.abs(delta) < 1.5) return "just now";
  return delta > 0 ? span(delta) + " ago" : "in " + span(delta);
}

function ago(epoch) {
  if (!epoch) return h("span", { class: "muted" }, "–");
  return h("time", { "data-ts": epoch, title: absolute(epoch), datetime: new Date(epoch * 1000).toISOString() }, relative(epoch));
}

function tick() {
  for (const t of document.querySelectorAll("time[data-ts]")) t.textContent = relative(Number(t.dataset.ts));
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return (seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1) + " ms";
  return seconds < 60 ? seconds.toFixed(2) + " s" : span(seconds);
}

const offset = (seconds) => "+" + ms(Math.max(seconds, 0));

// ------------------------------------------------------------------ ids, statuses

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const area = h("textarea", { class: "offscreen", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

// Two overlapping sheets, drawn as SVG so no font has to have the glyph.
function copyIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 16 16"); svg.setAttribute("width", "12"); svg.setAttribute("height", "12");
  svg.setAttribute("aria-hidden", "true");
  for (const [x, y] of [[5, 1], [1, 5]]) {
    const r = document.createElementNS(ns, "rect");
    for (const [k, v] of Object.entries({ x, y, width: 10, height: 10, rx: 2, fill: x === 1 ? "currentColor" : "none", stroke: "currentColor", "stroke-width": 1.6 })) r.setAttribute(k, v);
    svg.append(r);
  }
  return svg;
}

function copyButton(text) {
  return h("button", { class: "copy", type: "button", title: "copy " + text, "aria-label": "copy", "data-copy": text,
    onclick: async (ev) => {
      ev.preventDefault(); ev.stopPropagation();
      const btn = ev.currentTarget;
      try { await copyText(text); btn.classList.add("copied"); btn.title = "copied"; }
      catch (e) { btn.classList.add("failed"); btn.title = "could not copy: " + (e.message || e); }
      setTimeout(() => { btn.classList.remove("copied", "failed"); btn.title = "copy " + text; }, 1200);
    } }, copyIcon());
}

const short = (id) => (id.length > 10 ? id.slice(0, 8) + "…" : id);

// A shortened id, its full value on hover, a copy button; a link when href is given.
function idCell(id, href) {
  if (!id) return h("span", { class: "muted" }, "–");
  const text = h(href ? "a" : "span", { class: "mono id", title: id, href: href || null, "data-id": id }, short(id));
  return h("span", { class: "idcell" }, text, copyButton(id));
}

const eventHref = (id) => "#/event/" + encodeURIComponent(id);
const eventLink = (id) => idCell(id, eventHref(id));
const badge = (status) => h("span", { class: "badge " + status, "data-status": status }, String(status).replace(/_/g, " "));
const json = (value) => h("pre", { class: "mono" }, JSON.stringify(value, null, 2));

// Any status a run carries, with its reason and due time when it has them.
function statusLine(run) {
  const reason = run.status !== "succeeded" ? run.error : null;
  return h("span", { class: "status-line" }, badge(run.status),
    reason ? h("span", { class: "reason" }, reason) : null,
    run.due_at ? h("span", { class: "due muted" }, "due ", ago(run.due_at)) : null);
}

// ------------------------------------------------------------------ live updates (SSE)

// One EventSource for the whole page; each page says what to do with a history notice.
const live = { source: null, handler: null, timer: null, pending: null, failed: false };

function onHistory(handler) { live.handler = handler; }

function connectLive() {
  const conn = document.getElementById("conn");
  const source = new EventSource(API + "/stream");
  live.source = source;
  let before = false;
  source.addEventListener("ready", () => {
    conn.classList.remove("down"); conn.title = "live: updates stream from the bridge"; conn.dataset.live = "on";
    // Back after a break (the bridge restarted, `bridge dev` reloaded): what changed meanwhile
    // was never announced, so the page reloads what it shows once; a page that could not
    // load at all (it asked while the bridge was down) is rendered again.
    if (before && live.failed) render();
    else if (before && live.handler) live.handler({ all: true, events: [], parents: [] }).catch(showError);
    before = true;
  });
  source.addEventListener("closed", (ev) => {
    conn.classList.add("down"); conn.dataset.live = "off";
    conn.title = "no live updates: " + JSON.parse(ev.data).reason;
    source.close();
  });
  source.addEventListener("error", () => { conn.classList.add("down"); conn.dataset.live = "off"; conn.title = "reconnecting to the bridge…"; });
  source.addEventListener("history", (ev) => {
    const notice = JSON.parse(ev.data);
    const mine = generation;
    // Coalesce a burst of notices into one reload.
    if (live.pending) {
      live.pending.all = live.pending.all || notice.all;
      live.pending.events.push(...notice.events); live.pending.parents.push(...notice.parents);
    } else {
      live.pending = { all: notice.all, events: [...notice.events], parents: [...notice.parents] };
    }
    clearTimeout(live.timer);
    live.timer = setTimeout(async () => {
      const batch = live.pending; live.pending = null;
      if (mine !== generation || !live.handler) return;
      try { await live.handler(batch); } catch (e) { showError(e); }
    }, 120);
  });
}

// ------------------------------------------------------------------ router

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

let catalogCache = null;
async function catalog() {
  if (!catalogCache) catalogCache = await api("/catalog");
  return catalogCache;
}

const PAGES = {};  // name -> async (main, arg, params), filled by the page scripts

async function render() {
  generation += 1;
  live.handler = null;
  live.failed = false;
  const { page, arg, params } = route();
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.page === page || (page === "event" && a.dataset.page === "events"));
  }
  const main = document.getElementById("main");
  const show = PAGES[page === "event" && !arg ? "events" : page] || PAGES.events;
  const mine = generation;
  try { await show(main, arg, params); }
  catch (e) {
    if (mine !== generation) return;  // another page is on its way
    live.failed = true;  // rendered again when the live stream is back
    main.replaceChildren(h("p", { class: "note" }, "Could not load this page: " + (e.message || e)));
  }
}
