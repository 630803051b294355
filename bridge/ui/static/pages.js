// The developer UI, part 5 of 5: send a test event, status, open joins; then start.
"use strict";

// ------------------------------------------------------------------ send

PAGES.send = async function sendPage(main, arg, params) {
  const cat = await catalog();
  const types = cat.types.filter((t) => !t.pattern);
  const typeSelect = h("select", { id: "send-type" }, types.map((t) => h("option", { value: t.type }, t.type)));
  const typeFree = h("input", { id: "send-type-free", placeholder: "or another type", title: "a type matching a pattern of the catalog, e.g. db/users.insert for db/*" });
  const data = h("textarea", { id: "send-data", spellcheck: "false" });
  const corr = h("input", { id: "send-correlation", placeholder: "optional" });
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
};

// ------------------------------------------------------------------ status

PAGES.status = async function statusPage(main) {
  const conns = h("tbody", { id: "connectors" });
  const handlers = h("tbody", { id: "handlers" });
  const windowNote = h("span", { class: "muted", id: "window" });
  main.replaceChildren(
    h("h1", {}, "Status"), h("div", { id: "page-error", class: "error" }),
    h("h2", {}, "Connectors"),
    scroller(h("table", {}, h("thead", {}, h("tr", {}, ["Connector", "Connected", "Backlog (lag / queue depth)", "Detail"].map((c) => h("th", {}, c)))), conns)),
    h("h2", {}, "Handlers ", windowNote),
    scroller(h("table", {}, h("thead", {}, h("tr", {}, ["Handler", "Runs", "Succeeded", "Dead-lettered", "Success rate", "Mean latency", "p95 (≤)", "Runs since start"].map((c) => h("th", {}, c)))), handlers)));
  async function load() {
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
  }
  await load();
  onHistory(load);  // runs that finished change the figures
};


// ------------------------------------------------------------------ joins

PAGES.joins = async function joinsPage(main) {
  const list = h("div", { id: "open-joins" });
  main.replaceChildren(h("h1", {}, "Open joins"), h("div", { id: "page-error", class: "error" }), list);
  async function load() {
    const res = await api("/joins");
    if (unchanged(list, res.items)) return;
    list.replaceChildren(...(res.items.length ? res.items.map(renderJoin)
      : [h("p", { class: "muted" }, "No join is waiting. A join handler opens one on its start event.")]));
  }
  await load();
  onHistory(load);  // a member or a start event arriving is written to the history
};

// ------------------------------------------------------------------ start

window.addEventListener("hashchange", render);
connectLive();
setInterval(tick, 5000);  // relative times stay current; nothing is asked of the server
render();
