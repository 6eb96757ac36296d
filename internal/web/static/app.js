// fota dashboard: progressive enhancement only. Every page works without
// this file; with it, live pages update themselves (Server-Sent Events),
// uploads show their progress and the rollout form counts devices as the
// operator types. No third-party code.
"use strict";

(function () {
  function each(sel, fn) { Array.prototype.forEach.call(document.querySelectorAll(sel), fn); }

  function watch(url, handlers) {
    var es = new EventSource(url);
    Object.keys(handlers).forEach(function (name) {
      es.addEventListener(name, function (e) { handlers[name](e.data); });
    });
    // The session ended (signed out elsewhere, expired): show sign-in.
    es.addEventListener("signedout", function () { es.close(); window.location.reload(); });
    return es;
  }

  // A live section: the server sends the section's new HTML, rendered
  // from the same template as the page.
  // Pushed sections are shared by every watcher, so their forms come
  // without this session's CSRF token: it is filled in here.
  var meta = document.querySelector("meta[name=csrf-token]");
  function fillTokens(el) {
    if (!meta) { return; }
    Array.prototype.forEach.call(el.querySelectorAll("input[data-csrf]"), function (i) {
      if (!i.value) { i.value = meta.getAttribute("content"); }
    });
  }
  each("[data-live]", function (el) {
    watch(el.getAttribute("data-live"), {
      update: function (html) {
        // Keep what the user is typing into a reason box across updates.
        var typing = document.activeElement && el.contains(document.activeElement) ? document.activeElement : null;
        var typed = typing ? { id: typing.id, value: typing.value } : null;
        el.innerHTML = html;
        fillTokens(el);
        if (typed && typed.id) {
          var again = document.getElementById(typed.id);
          if (again) { again.value = typed.value; again.focus(); }
        }
        el.setAttribute("data-updated", String(Date.now()));
      }
    });
  });

  // The events page: new rows go on top; rows already shown are skipped.
  each("[data-live-events]", function (el) {
    var url = el.getAttribute("data-live-events");
    var body = el.querySelector("[data-live-rows]");
    if (!url || !body) { return; }
    watch(url, {
      rows: function (html) {
        var tmp = document.createElement("tbody");
        tmp.innerHTML = html;
        var rows = Array.prototype.slice.call(tmp.children).reverse();
        rows.forEach(function (row) {
          if (!row.id || !document.getElementById(row.id)) { body.insertBefore(row, body.firstChild); }
        });
      }
    });
  });

  // Bundle upload with a progress bar; the server answers in JSON.
  each("form[data-upload]", function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var box = form.querySelector(".upload-progress");
      var bar = form.querySelector("progress");
      var status = form.querySelector("[data-upload-status]");
      var button = form.querySelector("button[type=submit]");
      box.hidden = false;
      button.disabled = true;
      status.textContent = "Uploading…";
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          var p = Math.round(e.loaded * 100 / e.total);
          bar.value = p;
          bar.textContent = p + "%";
          status.textContent = p < 100 ? "Uploading… " + p + "%" : "Verifying…";
        }
      });
      xhr.addEventListener("load", function () {
        var answer = {};
        try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = { message: "The server answered " + xhr.status + "." }; }
        if (answer.ok) { window.location.href = answer.location; return; }
        status.textContent = answer.message || "Upload refused.";
        status.className = "error";
        button.disabled = false;
      });
      xhr.addEventListener("error", function () {
        status.textContent = "The upload did not reach the server; check the connection and try again.";
        status.className = "error";
        button.disabled = false;
      });
      xhr.send(new FormData(form));
    });
  });

  // The rollout form's live count of matching devices.
  each("form[data-rollout-form]", function (form) {
    var out = form.querySelector("[data-count-url]");
    var release = form.querySelector("[name=release]");
    var selector = form.querySelector("[name=selector]");
    var devices = form.querySelector("[name=devices]");
    each("[data-nojs]", function (b) { b.hidden = true; });
    var timer = null;
    var seq = 0;
    function count() {
      var mine = ++seq;
      var url = out.getAttribute("data-count-url") + "?release=" + encodeURIComponent(release.value) +
        "&selector=" + encodeURIComponent(selector.value) + "&devices=" + encodeURIComponent(devices.value);
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (a) {
          if (mine !== seq) { return; }
          out.textContent = a.error ? a.error : a.text;
          out.className = a.error ? "count error" : "count";
          out.setAttribute("data-count", a.error ? "" : String(a.count));
        })
        .catch(function () { if (mine === seq) { out.textContent = ""; } });
    }
    function later() { clearTimeout(timer); timer = setTimeout(count, 250); }
    selector.addEventListener("input", later);
    devices.addEventListener("input", later);
    release.addEventListener("change", count);
    count();
  });
})();
