// The developer UI, part 2 of 5: the events list (live, filtered, paged by cursor).
"use strict";

PAGES.events = async function eventsPage(main, arg, params) {
  const cat = await catalog();
  const state = {
    type: params.get("type") || "", status: params.get("status") || "", q: params.get("q") || "",
    cursors: [], before: null,
  };
  const typeInput = h("input", { id: "filter-type", list: "types", placeholder: "type", value: state.type });
  const statusSelect = h("select", { id: "filter-status" },
    ["", "running", "succeeded", "partial", "dead_lettered", "unrouted"].map(
      (s) => h("option", { value: s, selected: s === state.status }, s || "any status")));
  const search = h("input", { id: "search", placeholder: "event id or correlation id", value: state.q });
  const liveBox = h("input", { type: "checkbox", id: "live", checked: true });
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
      if (!page.items.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No events match. Send one from “Send event”.")));
    }
    newer.disabled = state.cursors.length === 0;
    pageInfo.textContent = "page " + (state.cursors.length + 1) + (state.before ? "" : (liveBox.checked ? " · live" : ""));
  }
  const reload = () => { state.cursors = []; state.before = null; load().catch(showError); };
  typeInput.addEventListener("change", () => { state.type = typeInput.value.trim(); reload(); });
  statusSelect.addEventListener("change", () => { state.status = statusSelect.value; reload(); });
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") { state.q = search.value.trim(); reload(); } });
  older.addEventListener("click", () => { state.cursors.push(state.before); state.before = next; load().catch(showError); });
  newer.addEventListener("click", () => { state.before = state.cursors.pop() || null; load().catch(showError); });
  liveBox.addEventListener("change", () => { if (liveBox.checked && !state.before) load().catch(showError); });

  const columns = [["Received", ""], ["Type", ""], ["Status", ""], ["Handlers", "num"], ["Duration", "num"],
    ["Event id", ""], ["Correlation id", "wide"], ["Source", "wide"]];
  main.replaceChildren(
    h("h1", {}, "Events"),
    h("datalist", { id: "types" }, cat.types.map((t) => h("option", { value: t.type }))),
    h("div", { class: "filters" }, typeInput, statusSelect, search,
      h("button", { class: "secondary", onclick: () => { state.q = search.value.trim(); reload(); } }, "Search"),
      h("label", {}, liveBox, " live")),
    h("div", { id: "page-error", class: "error" }),
    scroller(h("table", { class: "events cards" }, h("thead", {}, h("tr", {}, columns.map(([c, cls]) => h("th", { class: cls || null }, c)))), body)),
    h("div", { class: "pager" }, newer, older, pageInfo));
  await load();
  // Live: a history notice reloads the newest page (only the rows that changed repaint).
  onHistory(async () => { if (!state.before && liveBox.checked) await load(); });
};

function eventRow(e) {
  return h("tr", { "data-event-id": e.id, "data-status": e.status },
    h("td", { class: "when" }, ago(e.received_at)),
    h("td", { class: "type" }, h("a", { href: eventHref(e.id) }, e.type),
      e.parent_id ? h("div", { class: "muted small" }, "child of ", idCell(e.parent_id, eventHref(e.parent_id))) : null),
    h("td", { class: "status", "data-aggregate": e.aggregate || e.status }, badge(e.status),
      e.aggregate && e.aggregate !== e.status ? h("div", { class: "aggregate", title: "the worst status among the events it led to" }, "subtree ", badge(e.aggregate)) : null),
    h("td", { class: "num handlers" }, e.handlers ? String(e.handlers) : h("span", { class: "muted" }, "0")),
    h("td", { class: "num duration" }, e.duration === null || e.duration === undefined ? h("span", { class: "muted" }, "–") : ms(e.duration)),
    h("td", {}, eventLink(e.id)),
    h("td", { class: "wide" }, e.correlation_id
      ? h("span", { class: "idcell" }, h("a", { class: "mono id", title: e.correlation_id, href: "#/events?q=" + encodeURIComponent(e.correlation_id) }, short(e.correlation_id)), copyButton(e.correlation_id))
      : ""),
    h("td", { class: "wide" }, e.source));
}
