// mta console: the live tail of the Events page (server-sent events). The pages work
// without it; this only adds rows as events arrive.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("events");
  if (!table || !window.EventSource) return;
  const body = table.tBodies[0];
  const status = document.getElementById("live-status");
  const when = (t) => new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  const source = new EventSource(table.dataset.stream);
  source.onopen = () => { status.textContent = "Live: new events appear at the top."; };
  source.onerror = () => { status.textContent = "Live tail interrupted; retrying."; };
  source.onmessage = (msg) => {
    const r = JSON.parse(msg.data);
    const row = body.insertRow(0);
    row.className = "live";
    for (const v of [when(r.time), r.event, r.id, r.tenant, r.recipient, r.reply || r.reason]) {
      row.insertCell().textContent = v == null ? "" : String(v);  // text, never HTML
    }
    while (body.rows.length > 500) body.deleteRow(-1);
  };
});
