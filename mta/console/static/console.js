// mta console: the live tail of the Events page (server-sent events), and the Overview's
// figures fetched again every data-refresh seconds. The pages work without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  const every = live ? Number(live.dataset.refresh) : 0;
  if (every > 0) {
    const again = async () => {
      try {
        const r = await fetch(location.href, {credentials: "same-origin", redirect: "manual"});
        if (r.status !== 200) return;  // signed out (a redirect) or an error: stop
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        const fresh = doc.getElementById("live");
        if (fresh) live.replaceChildren(...fresh.childNodes);  // the server's own markup
      } catch (e) { /* the daemon restarting: try at the next tick */ }
      setTimeout(again, every * 1000);
    };
    setTimeout(again, every * 1000);
  }
});
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
