// The developer UI, part 4 of 5: dead letters (filter, replay, discard, bulk replay).
"use strict";

PAGES["dead-letters"] = async function deadLettersPage(main, arg, params) {
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
      h("td", {}, h("input", { type: "checkbox", class: "pick", value: d.id, "aria-label": "select", disabled: d.status !== "pending" || !d.replayable })),
      h("td", { class: "when" }, ago(d.created_at)),
      h("td", {}, d.handler || h("span", { class: "muted" }, "(no handler)"), h("div", { class: "muted small" }, d.event_type || "")),
      h("td", {}, d.event_id ? eventLink(d.event_id) : h("span", { class: "muted" }, "never an event")),
      h("td", { class: "reason-cell" }, h("span", { class: "error mono" }, d.reason), h("div", { class: "muted small" }, plural(d.attempts.length, "attempt"))),
      h("td", {}, badge(d.status)),
      // Actions stay on one line, however narrow the table gets (the table scrolls instead).
      h("td", { class: "actions" }, h("div", { class: "action-row" },
        d.replayable && d.status === "pending" ? h("button", { class: "replay", onclick: (ev) => act("replay", ev.currentTarget) }, "Replay") : null,
        // A discarded letter was put aside on purpose: replaying it takes a confirmation (force).
        d.replayable && d.status === "discarded" ? h("button", { class: "secondary replay-discarded", onclick: (ev) => {
          const btn = ev.currentTarget;
          if (window.confirm("This dead letter was discarded. Replay it anyway?")) act("replay?force=true", btn);
        } }, "Replay anyway") : null,
        d.status === "pending" ? h("button", { class: "danger discard", onclick: (ev) => act("discard", ev.currentTarget) }, "Discard") : null)));
  }
  async function bulk(payload) {
    try {
      const res = await post("/dead-letters/replay", payload);
      note.replaceChildren(h("div", { class: "note ok-note" }, "Replayed " + plural(res.replayed.length, "dead letter") +
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
    scroller(h("table", { class: "letters cards" }, h("thead", {}, h("tr", {}, ["", "Created", "Handler", "Event", "Reason", "Status", ""].map((c) => h("th", {}, c)))), body)),
    h("div", { class: "pager" }, back, more));
  await load();
  onHistory(load);  // a run that was dead-lettered or replayed shows up in the history
};
