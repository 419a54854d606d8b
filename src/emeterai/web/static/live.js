/* Pages that change by themselves: the buy form's total, an order's status, the queue.
   Each poll waits as long as the server asks (Retry-After or retry_after_s), never less
   than a second, and stops when the answer is final. Without JavaScript the pages
   reload themselves (<noscript> refresh) at the same pace. */
(function () {
  "use strict";
  var lang = document.documentElement.lang === "en" ? "en-US" : "id-ID";

  function rupiah(amount) { return "Rp" + amount.toLocaleString(lang); }

  function waitOf(response, body, fallback) {
    var header = parseInt(response.headers.get("Retry-After") || "", 10);
    var asked = body && typeof body.retry_after_s === "number" ? body.retry_after_s : NaN;
    var seconds = !isNaN(header) ? header : (!isNaN(asked) ? asked : fallback);
    return Math.max(1, Math.min(60, seconds)) * 1000;
  }

  function poll(url, fallback, handle) {
    function ask() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          return response.json().catch(function () { return null; }).then(function (body) {
            var more = response.ok ? handle(body) : true;
            if (more) { setTimeout(ask, waitOf(response, body, fallback)); }
          });
        })
        .catch(function () { setTimeout(ask, fallback * 1000); });
    }
    return ask;
  }

  // The buy form: the total follows the number of stamps.
  var count = document.getElementById("count");
  if (count && document.getElementById("total")) {
    var update = function () {
      var n = parseInt(count.value, 10);
      if (isNaN(n) || n < 1) { return; }
      ["duty-total", "fee-total", "total"].forEach(function (id) {
        var cell = document.getElementById(id);
        cell.textContent = rupiah(n * parseInt(cell.getAttribute("data-unit"), 10));
      });
    };
    count.addEventListener("input", update);
  }

  // An order: its status and timeline as they change.
  var order = document.getElementById("order");
  if (order && order.getAttribute("data-final") !== "true") {
    var badge = document.getElementById("order-status");
    var explained = document.getElementById("order-explained");
    var timeline = document.getElementById("timeline");
    var ask = poll(order.getAttribute("data-status-url"), 3, function (body) {
      if (!body) { return true; }
      if (badge.textContent !== body.status_text) {
        badge.textContent = body.status_text;
        badge.className = "badge status-" + body.status;
        explained.textContent = body.explained;
      }
      timeline.textContent = "";
      body.timeline.forEach(function (entry) {
        var item = document.createElement("li");
        var when = document.createElement("span");
        when.className = "small muted";
        when.textContent = entry.when;
        item.appendChild(when);
        item.appendChild(document.createTextNode(" " + entry.text));
        timeline.appendChild(item);
      });
      if (body.status !== "awaiting_payment") {
        document.getElementById("order-actions").hidden = true;
        var before = document.getElementById("pay-before");
        if (before) { before.hidden = true; }
      }
      if (body.status === "credited") { document.getElementById("order-next").hidden = false; }
      return !body.final;
    });
    setTimeout(ask, Math.max(1, parseInt(order.getAttribute("data-retry"), 10) || 3) * 1000);
  }

  // The waiting room: place and wait, then on to the page the user was going to.
  var queue = document.getElementById("queue");
  if (queue) {
    var position = document.getElementById("queue-position");
    var eta = document.getElementById("queue-eta");
    var state = document.getElementById("queue-state");
    var next = queue.getAttribute("data-next") || "/";
    var askQueue = poll("/api/v1/queue", 5, function (body) {
      if (!body) { return true; }
      if (body.ticket_state === "admitted") {
        state.textContent = queue.getAttribute("data-admitted-text");
        document.getElementById("queue-go").hidden = false;
        window.location.assign(next);
        return false;
      }
      if (body.ticket_state !== "waiting") {
        return false;
      }
      if (position) { position.textContent = body.position.toLocaleString(lang); }
      if (eta) { eta.textContent = Math.max(1, Math.ceil(body.eta_s / 60)).toLocaleString(lang); }
      return true;
    });
    setTimeout(askQueue, Math.max(1, parseInt(queue.getAttribute("data-retry"), 10) || 5) * 1000);
  }
})();
