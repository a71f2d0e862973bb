// Live updates: when the server says something changed (server-sent
// events), fetch this page again and swap in its [data-live] parts (each
// found by its id; a form between them keeps what was typed). Without
// JavaScript every page is complete as served; reload to refresh.
(function () {
  var lives = document.querySelectorAll("[data-live]");
  if (!lives.length || !window.EventSource) return;
  // From the mark the page was rendered at: a change in between is not missed.
  var events = new EventSource("/events?since=" + encodeURIComponent(document.body.getAttribute("data-mark") || ""));
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var page = new DOMParser().parseFromString(html, "text/html");
        Array.prototype.forEach.call(lives, function (live) {
          var fresh = page.getElementById(live.id);
          if (fresh) live.innerHTML = fresh.innerHTML;
        });
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  events.addEventListener("change", refresh);
  events.addEventListener("hello", function () { document.body.setAttribute("data-live-connected", "1"); });
})();
