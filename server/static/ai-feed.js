// Live feed of the AI supervisor page (/ai): refreshes the status block and the feed rows from
// /ai/feed (a server-rendered HTML fragment) every data-refresh-ms milliseconds. A static file
// because the pages' Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var table = document.querySelector("table[data-feed-url]");
  if (!table) {
    return;
  }
  var url = table.getAttribute("data-feed-url");
  var every = Math.max(1000, parseInt(table.getAttribute("data-refresh-ms"), 10) || 5000);

  function swap(fragment, selector) {
    var fresh = fragment.querySelector(selector);
    var current = document.querySelector(selector);
    if (fresh && current) {
      current.replaceWith(fresh);
    }
  }

  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("feed answered " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var holder = document.createElement("template");
        holder.innerHTML = html;
        swap(holder.content, "#ai-status");
        swap(holder.content, "#feed-body");
        var stamp = document.getElementById("feed-updated");
        if (stamp) {
          stamp.textContent = new Date().toLocaleTimeString();
        }
      })
      .catch(function () {
        var stamp = document.getElementById("feed-updated");
        if (stamp) {
          stamp.textContent = "failed at " + new Date().toLocaleTimeString() + ", retrying";
        }
      })
      .finally(function () {
        window.setTimeout(refresh, every);
      });
  }

  window.setTimeout(refresh, every);
})();
