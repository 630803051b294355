// The developer UI, part 3 of 5: one event — its whole fan-out tree (aggregate statuses),
// a waterfall of runs and attempts, its handler cards, and the joins its runs touch.
"use strict";

PAGES.event = async function eventPage(main, id) {
  main.replaceChildren(
    h("h1", {}, "Event ", h("span", { class: "mono break" }, id)),
    h("div", { id: "page-error", class: "error" }), h("div", { id: "event" }));
  let ids = new Set([id]);
  async function load() {
    let e;
    try { e = await api("/events/" + encodeURIComponent(id)); }
    catch (err) {
      if (err.status === 404) { document.getElementById("event").replaceChildren(h("p", { class: "note" }, err.message)); return; }
      throw err;
    }
    ids = treeIds(e.tree.root);
    const slot = document.getElementById("event");
    if (unchanged(slot, e)) return;
    const open = [...slot.querySelectorAll("details[open]")].map((d) => d.dataset.key);
    slot.replaceChildren(renderEvent(e));
    for (const d of slot.querySelectorAll("details")) if (open.includes(d.dataset.key)) d.open = true;
  }
  await load();
  // Live: reload when the history wrote an event of this tree, or a new child of one.
  onHistory(async (n) => {
    if (n.all || n.events.some((x) => ids.has(x)) || n.parents.some((x) => ids.has(x))) await load();
  });
};

function treeIds(node, into) {
  const out = into || new Set();
  out.add(node.id);
  for (const c of node.children) treeIds(c, out);
  return out;
}

function renderEvent(e) {
  const envelope = Object.assign({}, e.event); const data = envelope.data; delete envelope.data;
  const facts = h("dl", { class: "kv" },
    h("dt", {}, "type"), h("dd", {}, e.type),
    h("dt", {}, "status"), h("dd", {}, badge(e.status)),
    h("dt", {}, "event id"), h("dd", {}, idCell(e.id)),
    h("dt", {}, "correlation id"), h("dd", {}, e.correlation_id
      ? h("span", { class: "idcell" }, h("a", { class: "mono id", href: "#/events?q=" + encodeURIComponent(e.correlation_id), title: e.correlation_id }, short(e.correlation_id)), copyButton(e.correlation_id))
      : "–"),
    h("dt", {}, "trace id"), h("dd", { id: "trace-id" }, e.trace_id ? idCell(e.trace_id) : "–"),
    h("dt", {}, "source"), h("dd", {}, e.source),
    h("dt", {}, "parent"), h("dd", {}, e.parent_id ? eventLink(e.parent_id) : "–"),
    h("dt", {}, "received"), h("dd", {}, ago(e.received_at)),
    h("dt", {}, "took"), h("dd", {}, e.duration === null ? "still going" : ms(e.duration)));
  const tree = e.tree;
  return h("div", {},
    h("div", { class: "panel" }, h("h2", {}, "Fan-out tree ", h("span", { class: "muted small" }, plural(tree.nodes, "event") + (tree.truncated ? " (cut: too many to show)" : ""))),
      h("ul", { class: "tree root", id: "tree" }, treeNode(tree.root, tree.focus))),
    h("div", { class: "panel" }, h("h2", {}, "Timeline"), waterfall(tree.root)),
    e.joins.length ? h("div", { id: "joins" }, h("h2", {}, "Joins"), e.joins.map(renderJoin)) : null,
    h("h2", {}, "Handlers (" + e.runs.length + ")"),
    e.runs.length ? h("div", { id: "runs" }, e.runs.map((r) => renderRun(r, e.received_at)))
      : h("p", { class: "muted" }, e.status === "unrouted" ? "No handler subscribes to this event." : "No runs recorded yet."),
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, "Event"), facts),
      h("div", { class: "panel" }, h("h2", {}, "Data"), json(data))),
    h("details", { class: "panel", "data-key": "envelope" }, h("summary", {}, "CloudEvents envelope"), json(envelope)));
}

// ------------------------------------------------------------------ tree

// An event, its runs, and under each run the events it emitted; children no run claims
// (a join's outcome, say) hang under the event itself.
function treeNode(node, focus) {
  const byId = new Map(node.children.map((c) => [c.id, c]));
  const claimed = new Set();
  const runs = node.runs.map((r) => {
    const kids = r.children.map((cid) => byId.get(cid)).filter(Boolean);
    kids.forEach((k) => claimed.add(k.id));
    return h("li", { class: "run-node", "data-run": r.handler, "data-status": r.status },
      h("span", { class: "handler" }, r.handler), statusLine(r),
      kids.length ? h("ul", { class: "tree" }, kids.map((k) => treeNode(k, focus))) : null);
  });
  const rest = node.children.filter((c) => !claimed.has(c.id)).map((c) => treeNode(c, focus));
  // Said only where descendants make it differ: the event's own status covers its runs.
  const aggregate = node.aggregate !== node.status && node.children.length
    ? h("span", { class: "aggregate", title: "the worst status in this event's subtree" }, "subtree ", badge(node.aggregate)) : null;
  return h("li", { class: "event-node" + (node.id === focus ? " focus" : ""), "data-node": node.id, "data-status": node.status, "data-aggregate": node.aggregate },
    h("div", { class: "node-head" },
      badge(node.status), aggregate,
      h("a", { href: eventHref(node.id), class: "node-type" }, node.type),
      h("span", { class: "muted mono small", title: node.id }, short(node.id))),
    runs.length || rest.length ? h("ul", { class: "tree" }, runs, rest) : null);
}

// ------------------------------------------------------------------ waterfall

function waterfall(root) {
  const rows = [];
  const t0 = root.received_at;
  let end = t0;
  const now = Date.now() / 1000;
  (function walk(node, depth) {
    const stop = node.finished_at || now;
    end = Math.max(end, stop);
    rows.push({ kind: "event", node, depth, start: node.received_at, stop });
    for (const r of node.runs) {
      for (const a of r.attempts) end = Math.max(end, a.started_at + a.duration);
      rows.push({ kind: "run", run: r, node, depth: depth + 1 });
    }
    for (const c of node.children) walk(c, depth + 1);
  })(root, 0);
  const total = Math.max(end - t0, 0.001);
  const pct = (t) => Math.min(Math.max((t - t0) / total * 100, 0), 100);
  const bar = (cls, from, to, title, attrs) => {
    const el = h("span", Object.assign({ class: "wf-bar " + cls, title }, attrs || {}));
    el.style.left = pct(from) + "%";
    el.style.width = Math.max(pct(to) - pct(from), 0.4) + "%";
    return el;
  };
  const lines = rows.map((row) => {
    const label = h("span", { class: "wf-label" });
    label.style.paddingLeft = (row.depth * 12) + "px";
    const track = h("span", { class: "wf-track" });
    if (row.kind === "event") {
      const n = row.node;
      label.append(h("a", { href: eventHref(n.id) }, n.type));
      track.append(bar("event " + n.aggregate, row.start, row.stop, n.type + " · " + offset(row.start - t0) + " → " + (n.finished_at ? offset(n.finished_at - t0) : "still going")));
      return h("div", { class: "wf-row", "data-event": n.id }, label, track, h("span", { class: "wf-time muted" }, offset(row.start - t0)));
    }
    const r = row.run;
    label.append(h("span", {}, r.handler));
    for (const a of r.attempts) {
      const failed = Boolean(a.error);
      track.append(bar("attempt " + (failed ? "failed" : "ok"), a.started_at, a.started_at + a.duration,
        "attempt " + a.number + " · " + offset(a.started_at - t0) + " · " + ms(a.duration) + (failed ? " · " + a.error : ""),
        { "data-attempt": a.number, "data-outcome": failed ? "failed" : "succeeded" }));
    }
    const first = r.attempts.length ? r.attempts[0].started_at : null;
    return h("div", { class: "wf-row wf-run", "data-run": r.handler, "data-event": row.node.id }, label, track,
      h("span", { class: "wf-time muted" }, first === null ? r.status.replace(/_/g, " ") : offset(first - t0)));
  });
  const axis = h("div", { class: "wf-row axis" }, h("span", { class: "wf-label muted" }, "from receipt"),
    h("span", { class: "wf-track ticks" }, ...[0, 0.5, 1].map((f) => {
      const t = h("span", { class: "tick" }, offset(total * f));
      t.style.left = (f * 100) + "%";
      return t;
    })), h("span", { class: "wf-time muted" }, ms(total)));
  return h("div", { class: "waterfall", id: "waterfall" }, axis, lines);
}

// ------------------------------------------------------------------ handler cards

function renderRun(run, receivedAt) {
  const letter = run.dead_letter;
  const replayBtn = letter && letter.status === "pending"
    ? h("button", { class: "replay", "data-letter": letter.id, onclick: async (ev) => {
        const btn = ev.currentTarget;
        btn.disabled = true;
        try { await post("/dead-letters/" + encodeURIComponent(letter.id) + "/replay"); btn.textContent = "replayed"; }
        catch (e) { showError(e); btn.disabled = false; }
      } }, "Replay to " + run.handler)
    : null;
  const attempts = run.attempts.length
    ? scroller(h("table", { class: "attempts" },
        h("thead", {}, h("tr", {}, ["#", "Started", "Duration", "Outcome"].map((c) => h("th", {}, c)))),
        h("tbody", {}, run.attempts.map((a) => h("tr", { class: "attempt", "data-outcome": a.error ? "failed" : "succeeded" },
          h("td", {}, a.number),
          h("td", { class: "mono", title: absolute(a.started_at) }, offset(a.started_at - receivedAt)),
          h("td", {}, ms(a.duration)),
          h("td", { class: "outcome" }, a.error ? badge("failed") : badge("succeeded"),
            a.error ? h("div", { class: "error mono" }, a.error) : null,
            a.traceback ? h("details", { class: "traceback", "data-key": "tb-" + run.handler + "-" + a.number },
              h("summary", {}, "stack trace"), h("pre", { class: "mono" }, a.traceback)) : null))))))
    : h("p", { class: "muted" }, "No attempt recorded yet.");
  return h("div", { class: "panel run " + run.status, "data-handler": run.handler, "data-status": run.status },
    h("h3", {}, h("span", { class: "handler" }, run.handler), statusLine(run), replayBtn,
      letter ? h("span", { class: "muted" }, "dead letter ", idCell(letter.id), " · ", letter.status) : null),
    attempts,
    run.result !== null && run.result !== undefined ? h("div", {}, h("span", { class: "muted" }, "result"), json(run.result)) : null,
    run.children.length ? h("div", {}, h("span", { class: "muted" }, "emitted "), run.children.map((c) => h("span", { class: "emitted" }, eventLink(c), " "))) : null);
}

// ------------------------------------------------------------------ joins

function renderJoin(j) {
  const missing = Array.isArray(j.missing)
    ? (j.missing.length ? j.missing.map((m) => h("code", { class: "member missing" }, JSON.stringify(m))) : h("span", { class: "muted" }, "none"))
    : (j.missing ? plural(j.missing, "member") : h("span", { class: "muted" }, "none"));
  const arrived = j.arrived.length
    ? j.arrived.map((m) => h("span", { class: "member arrived" }, m.key !== null && m.key !== undefined ? h("code", {}, JSON.stringify(m.key)) : null, " ", eventLink(m.id)))
    : h("span", { class: "muted" }, "none yet");
  return h("div", { class: "panel join " + j.status, "data-join": j.id, "data-status": j.status },
    h("h3", {}, h("span", { class: "handler" }, j.handler), badge(j.status), j.overdue ? badge("overdue") : null),
    h("dl", { class: "kv" },
      h("dt", {}, "started by"), h("dd", {}, eventLink(j.start.id), " ", h("span", { class: "muted" }, j.start.type || "")),
      h("dt", {}, "expected"), h("dd", { class: "expected" }, j.expected === null ? "the first member" : String(j.expected),
        j.expected_items ? h("span", { class: "muted" }, " (", j.expected_items.map((x) => JSON.stringify(x)).join(", "), ")") : null),
      h("dt", {}, "arrived"), h("dd", { class: "arrived" }, h("span", { class: "count" }, String(j.arrived.length)), " ", arrived),
      h("dt", {}, "missing"), h("dd", { class: "missing" }, missing),
      h("dt", {}, "deadline"), h("dd", { class: "deadline", title: absolute(j.deadline) }, j.status === "open" ? ago(j.deadline) : "closed (was " + absolute(j.deadline) + ")")));
}
