// pgq_nb web dashboard: live updates without full reloads. Every data-refresh-ms (2 s) while
// the tab is visible, fetch this page again and swap in each element marked data-live,
// keeping ticked boxes and opened details. No dependencies; nothing loaded from elsewhere.
(function () {
  "use strict";
  var every = parseInt(document.body.getAttribute("data-refresh-ms"), 10) || 2000;
  var note = null;
  var touched = 0; // when the user last pressed a button or a key: no swap under a click
  ["mousedown", "touchstart", "keydown"].forEach(function (kind) {
    document.addEventListener(kind, function () { touched = Date.now(); }, true);
  });

  function say(text) {
    if (!note) {
      note = document.createElement("p");
      note.className = "problem";
      note.id = "live-note";
      document.querySelector("main").prepend(note);
    }
    note.textContent = text;
  }

  function keep(region) {
    var kept = { checked: [], open: [] };
    region.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) {
      kept.checked.push(box.name + "=" + box.value);
    });
    region.querySelectorAll("details[open] > summary").forEach(function (summary) {
      kept.open.push(summary.textContent);
    });
    return kept;
  }

  function restore(region, kept) {
    region.querySelectorAll("input[type=checkbox]").forEach(function (box) {
      box.checked = kept.checked.indexOf(box.name + "=" + box.value) >= 0;
    });
    region.querySelectorAll("details > summary").forEach(function (summary) {
      if (kept.open.indexOf(summary.textContent) >= 0) summary.parentNode.open = true;
    });
  }

  function swap(fresh) {
    if (Date.now() - touched < 1000) return;
    document.querySelectorAll("[data-live]").forEach(function (region) {
      var name = region.getAttribute("data-live");
      var next = fresh.querySelector('[data-live="' + name + '"]');
      if (!next || region.innerHTML === next.innerHTML) return;
      if (region.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
      var kept = keep(region);
      region.innerHTML = next.innerHTML;
      restore(region, kept);
    });
  }

  function refresh() {
    if (document.hidden) return schedule();
    fetch(location.href, { headers: { "X-Pgq-Live": "1" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.redirected && /\/login/.test(response.url)) {
          throw new Error("logged out: reload the page to log in again");
        }
        if (!response.ok) throw new Error("the server answered " + response.status);
        return response.text();
      })
      .then(function (text) {
        swap(new DOMParser().parseFromString(text, "text/html"));
        if (note) { note.remove(); note = null; }
        document.body.setAttribute("data-updated", String(Date.now()));
      })
      .catch(function (error) { say("live updates paused: " + error.message); })
      .then(schedule);
  }

  function schedule() { window.setTimeout(refresh, every); }

  schedule();
})();
