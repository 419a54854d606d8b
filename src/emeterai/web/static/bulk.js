// A bulk job's page follows the job by itself: it asks /bulk/{id}/status.json again only
// after the Retry-After the server gives (never sooner than a second), and stops once
// the job is final. Without JavaScript a <noscript> refresh does the same, more slowly.
(function () {
  "use strict";
  var job = document.getElementById("job");
  if (!job || job.getAttribute("data-final") === "true") return;
  var lang = document.documentElement.lang === "en" ? "en-US" : "id-ID";
  var url = job.getAttribute("data-status-url");

  function text(id, value) { document.getElementById(id).textContent = value; }
  function number(value) { return value.toLocaleString(lang); }

  function row(line) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-state", line.state);
    var name = document.createElement("td");
    name.className = "name";
    var position = document.createElement("span");
    position.className = "muted";
    position.textContent = line.position + ".";
    name.appendChild(position);
    name.appendChild(document.createTextNode(" " + line.name));
    var result = document.createElement("td");
    if (line.serial) {
      var link = document.createElement("a");
      link.className = "serial";
      link.href = "/stamps/" + encodeURIComponent(line.serial);
      link.textContent = line.serial;
      result.appendChild(link);
    } else {
      var badge = document.createElement("span");
      badge.className = "badge item-" + line.state;
      badge.textContent = line.state_text;
      result.appendChild(badge);
      if (line.problem) {
        result.appendChild(document.createElement("br"));
        var problem = document.createElement("span");
        problem.className = "small";
        problem.setAttribute("data-code", line.error_code || "");
        problem.textContent = line.problem;
        result.appendChild(problem);
      }
    }
    tr.appendChild(name); tr.appendChild(result);
    return tr;
  }

  function show(body) {
    var state = document.getElementById("job-state");
    state.textContent = body.state_text;
    state.className = "badge job-" + body.state;
    var bar = document.getElementById("job-progress");
    bar.value = body.percent;
    bar.textContent = body.percent + "%";
    text("count-stamped", number(body.stamped));
    text("count-failed", number(body.not_stamped));
    text("count-pending", number(body.pending));
    var rows = document.getElementById("report-rows");
    rows.textContent = "";
    body.lines.forEach(function (line) { rows.appendChild(row(line)); });
    if (body.final) {
      document.getElementById("job-done").hidden = false;
      var wait = document.getElementById("job-wait");
      if (wait) wait.hidden = true;
    }
  }

  function ask() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().catch(function () { return null; }).then(function (body) {
          var header = parseInt(response.headers.get("Retry-After") || "", 10);
          var seconds = Math.max(1, Math.min(60, isNaN(header) ? 5 : header));
          if (response.ok && body) {
            show(body);
            if (body.final) return;
          } else if (response.status === 401 || response.status === 404) {
            return;
          }
          setTimeout(ask, seconds * 1000);
        });
      })
      .catch(function () { setTimeout(ask, 5000); });
  }

  setTimeout(ask, Math.max(1, parseInt(job.getAttribute("data-retry"), 10) || 2) * 1000);
})();
