// Live updates: when the server says something changed (server-sent
// events), fetch this page again and swap in its [data-live] part. Without
// JavaScript every page is complete as served; reload to refresh.
(function () {
  var live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) return;
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
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        if (fresh) live.innerHTML = fresh.innerHTML;
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
