// The Live page: the tenant's change events, as server-sent events, added to the
// top of the table as they arrive. The page works without this script (it shows
// the latest changes when loaded). EventSource reconnects by itself and sends the
// last revision it saw (Last-Event-ID), so the stream resumes without a gap.
"use strict";
(() => {
  const status = document.getElementById("live-status");
  const body = document.querySelector("#events tbody");
  if (!status || !body || !window.EventSource) return;
  const say = (text) => { status.textContent = text; };
  const cell = (row, text, code) => {
    const td = row.insertCell();
    if (code) {
      const c = document.createElement("code");
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text;
    }
    return td;
  };
  const source = new EventSource(status.dataset.stream);
  source.addEventListener("open", () => say("Live: new changes appear as they happen."));
  source.addEventListener("error", () => say("Disconnected; reconnecting…"));
  source.addEventListener("change", (message) => {
    const e = JSON.parse(message.data);
    const empty = document.getElementById("no-events");
    if (empty) empty.remove();
    const row = body.insertRow(0);
    row.dataset.revision = e.revision;
    row.className = "new";
    cell(row, String(e.revision));
    cell(row, e.time);
    const what = cell(row, e.type, true);
    if (e.changed.length) {
      const s = document.createElement("span");
      s.className = "muted";
      s.textContent = " " + e.changed.join(", ");
      what.appendChild(s);
    }
    cell(row, `${e.resource_type} ${e.summary}`);
    cell(row, e.actor);
    cell(row, e.request_id || "—", true);
    while (body.rows.length > 500) body.deleteRow(-1);
    say(`Live: revision ${e.revision}, ${e.type}.`);
  });
  source.addEventListener("reset", (message) => {
    const e = JSON.parse(message.data);
    say(`Some changes were too old to send (compacted); live again from revision ${e.revision}.`);
  });
  for (const name of ["signed-out", "end"]) {
    source.addEventListener(name, () => {
      source.close();
      say(name === "signed-out" ? "Your session ended: sign in again to follow changes." : "The stream ended: reload the page.");
    });
  }
})();
