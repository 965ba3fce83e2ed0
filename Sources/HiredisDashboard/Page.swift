extension HiredisDashboard {
    /// The page: static HTML; `dashboard.js` fills it from `api/summary` every second.
    static func page(title: String, base: String) -> String {
        let title = escapeHTML(title)
        return """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(title) dashboard</title>
        <style>
          body { font: 14px system-ui, sans-serif; margin: 1.5rem; color: #1d2430; background: #f6f7f9; }
          h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
          h2 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
          .meta { color: #667; font-size: .85rem; }
          .tiles { display: flex; gap: .6rem; flex-wrap: wrap; margin-top: 1rem; }
          .tile { background: #fff; border: 1px solid #dde; border-radius: 6px; padding: .5rem .9rem; min-width: 7rem; }
          .tile b { display: block; font-size: 1.4rem; }
          table { border-collapse: collapse; background: #fff; min-width: 30rem; }
          th, td { border: 1px solid #dde; padding: .3rem .6rem; text-align: left; }
          th { background: #eef0f4; }
          td.n { text-align: right; font-variant-numeric: tabular-nums; }
          .dead { color: #b3261e; font-weight: 600; }
          .error { color: #b3261e; }
          button { font-size: .8rem; }
        </style>
        </head>
        <body data-base="\(escapeHTML(base))">
        <h1>\(title)</h1>
        <div class="meta">Refreshed every second · <span id="updated">loading…</span> <span id="status" class="error"></span></div>
        <div class="tiles" id="tiles"></div>
        <div id="token-row" hidden><h2>Actions</h2>
          <label>Bearer token <input id="token" type="password" autocomplete="off"></label></div>
        <h2>Queues</h2>
        <table id="queues"><thead><tr><th>Queue</th><th>Waiting</th><th>In flight</th><th>Dead letters</th><th>Delayed</th><th>State</th><th></th></tr></thead><tbody></tbody></table>
        <h2>Workers</h2>
        <table id="workers"><thead><tr><th>Worker</th><th>Queues</th><th>Heartbeat age</th><th>In flight</th><th></th></tr></thead><tbody></tbody></table>
        <h2>Locks</h2>
        <table id="locks"><thead><tr><th>Lock</th><th>Holder</th><th>Fencing token</th><th>TTL</th></tr></thead><tbody></tbody></table>
        <h2>Semaphores</h2>
        <table id="semaphores"><thead><tr><th>Semaphore</th><th>Permits held</th><th>Holders</th><th>TTL</th></tr></thead><tbody></tbody></table>
        <h2>Jobs</h2>
        <table id="jobs"><thead><tr><th>Pending</th><th>Leased</th><th>Fulfilled</th><th>Waiting notification</th></tr></thead><tbody></tbody></table>
        <script src="\(escapeHTML(base))/dashboard.js"></script>
        </body>
        </html>
        """
    }

    static func escapeHTML(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

/// The page's script: vanilla JavaScript, no dependencies.
let dashboardScript = #"""
"use strict";
(function () {
  const base = document.body.dataset.base || "";
  const $ = (id) => document.getElementById(id);
  const ms = (v) => v === null || v === undefined ? "-" : (v >= 10000 ? Math.round(v / 1000) + " s" : v + " ms");
  const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = String(text); if (cls) td.className = cls; return td; };
  const fill = (id, rows) => {
    const body = $(id).querySelector("tbody");
    body.replaceChildren(...rows.map((cells) => { const tr = document.createElement("tr"); tr.append(...cells); return tr; }));
  };
  const tokenInput = $("token");
  tokenInput.value = sessionStorage.getItem("hiredis-token") || "";
  tokenInput.addEventListener("change", () => sessionStorage.setItem("hiredis-token", tokenInput.value));

  async function act(path, confirmText) {
    if (!confirm(confirmText)) return;
    const response = await fetch(base + path, { method: "POST", headers: { "Authorization": "Bearer " + tokenInput.value } });
    const body = await response.json().catch(() => ({}));
    $("status").textContent = response.ok ? "" : (response.status + ": " + (body.error || "refused"));
    refresh();
  }
  const button = (label, path, question) => {
    const td = document.createElement("td"); const b = document.createElement("button");
    b.textContent = label; b.addEventListener("click", () => act(path, question)); td.append(b); return td;
  };

  async function refresh() {
    try {
      const response = await fetch(base + "/api/summary", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const { summary, actionsEnabled } = await response.json();
      $("token-row").hidden = !actionsEnabled;
      const sum = (key) => summary.queues.reduce((n, q) => n + q[key], 0);
      const tiles = [["queues", summary.queues.length], ["waiting", sum("waiting")], ["in flight", sum("inFlight")],
                     ["dead letters", sum("deadLetters")], ["workers", summary.workers.length], ["locks", summary.locks.length],
                     ["semaphores", summary.semaphores.length], ["jobs pending", summary.jobs.pending]];
      $("tiles").replaceChildren(...tiles.map(([label, value]) => {
        const div = document.createElement("div"); div.className = "tile"; div.id = "tile-" + label.replace(/ /g, "-");
        const b = document.createElement("b"); b.textContent = value; div.append(b, document.createTextNode(label)); return div;
      }));
      fill("queues", summary.queues.map((q) => {
        const enc = encodeURIComponent(q.name);
        const actions = actionsEnabled && q.deadLetters > 0
          ? button("retry", "/api/queues/" + enc + "/retry", "Retry every dead letter of " + q.name + "?") : cell("");
        return [cell(q.name), cell(q.waiting, "n"), cell(q.inFlight, "n"), cell(q.deadLetters, q.deadLetters ? "n dead" : "n"),
                cell(q.delayed, "n"), cell(q.paused ? "paused" : "running"), actions];
      }));
      fill("workers", summary.workers.map((w) => [cell(w.id), cell(w.queues.join(", ")), cell(ms(w.heartbeatAgeMilliseconds), "n"),
        cell(w.inFlight, "n"), actionsEnabled ? button("fail", "/api/workers/" + encodeURIComponent(w.id) + "/fail", "Fail worker " + w.id + "?") : cell("")]));
      fill("locks", summary.locks.map((l) => [cell(l.key), cell(l.token), cell(l.fencingToken ?? "-", "n"), cell(ms(l.ttlMilliseconds), "n")]));
      fill("semaphores", summary.semaphores.map((s) => [cell(s.key), cell(s.holders.length + " / " + (s.permits ?? "?"), "n"),
        cell(s.holders.map((h) => h.token).join(", ")), cell(ms(s.ttlMilliseconds), "n")]));
      const j = summary.jobs;
      fill("jobs", [[cell(j.pending, "n"), cell(j.leased, "n"), cell(j.fulfilled, "n"), cell(j.waitingNotification, "n")]]);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      if ($("status").textContent.startsWith("refresh")) $("status").textContent = "";
    } catch (error) {
      $("status").textContent = "refresh failed: " + error.message;
    }
  }
  refresh();
  setInterval(refresh, 1000);
})();
"""#
