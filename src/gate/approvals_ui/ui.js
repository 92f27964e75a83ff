// The approvals page. Everything the gate shows here was written by a model or a client:
// it is only ever put in the page as text (textContent), never as HTML.
"use strict";

(function () {
  let token = "";
  const cards = new Map(); // approval id -> {el, call}
  const $ = (id) => document.getElementById(id);

  function headers(json) {
    const h = { "Accept": "application/json" };
    if (token) h["Authorization"] = "Bearer " + token;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  // Characters that change how text reads without showing themselves (bidi overrides and
  // isolates, zero-width marks): shown as \u{XXXX}, so that a path cannot pass for another.
  const HIDDEN = /[\u200B-\u200F\u202A-\u202E\u2060-\u2069\uFEFF]/g;
  function visible(value) {
    return String(value).replace(HIDDEN, (c) => "\\u{" + c.charCodeAt(0).toString(16).toUpperCase() + "}");
  }

  function text(el, selector, value) {
    el.querySelector(selector).textContent = visible(value);
  }

  function seconds(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    return s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
  }

  function describeCaller(c) {
    const who = [];
    if (c.identity) who.push("id " + c.identity);
    if (c.subject) who.push("sub " + c.subject);
    who.push("from " + c.addr);
    return who.join(" · ");
  }

  function describeClient(c) {
    const parts = [];
    parts.push(c.client_name ? c.client_name : "(no clientInfo name)");
    if (c.protocol_version) parts.push("MCP " + c.protocol_version);
    if (c.session_id) parts.push("session " + c.session_id);
    return parts.join(" · ");
  }

  function fillTls(dd, t) {
    dd.textContent = "";
    const group = document.createElement("span");
    group.className = t.pq ? "pq" : "classical";
    group.textContent = (t.group || "no TLS") + (t.pq ? " (post-quantum)" : " (classical)");
    dd.appendChild(group);
    const rest = [t.version, t.cipher_suite].filter(Boolean).join(" · ");
    if (rest) dd.appendChild(document.createTextNode(" · " + rest));
  }

  function card(call) {
    const el = $("call-template").content.firstElementChild.cloneNode(true);
    el.dataset.id = call.id;
    text(el, ".tool", call.tool);
    text(el, ".rule", "rule " + call.rule + " · approvers " + call.approvers.join(", "));
    text(el, ".caller", describeCaller(call.caller));
    text(el, ".client", describeClient(call.caller));
    fillTls(el.querySelector(".tls"), call.tls);
    text(el, ".id", call.id);
    text(el, ".digest", call.arguments_digest);
    text(el, ".arguments", JSON.stringify(call.arguments, null, 2));
    el.querySelector(".approve").addEventListener("click", () => decide(call, el, "approve"));
    el.querySelector(".deny").addEventListener("click", () => decide(call, el, "deny"));
    return el;
  }

  function timer(el, call, since) {
    const left = call.expires_in_ms - (Date.now() - since);
    text(el, ".timer", "waiting " + seconds(call.age_ms + (Date.now() - since)) + " · expires in " + seconds(left));
  }

  async function decide(call, el, verb) {
    for (const b of el.querySelectorAll("button")) b.disabled = true;
    const reason = el.querySelector(".reason").value;
    const outcome = el.querySelector(".outcome");
    try {
      const r = await fetch("/approvals/" + encodeURIComponent(call.id) + "/" + verb, {
        method: "POST",
        headers: headers(true),
        body: JSON.stringify({ reason: reason || null, arguments_digest: call.arguments_digest }),
        credentials: "same-origin",
        cache: "no-store",
      });
      const body = await r.json().catch(() => ({}));
      if (r.ok) {
        outcome.textContent = (verb === "approve" ? "Approved" : "Denied") + " by " + body.approver;
        el.dataset.decided = verb;
      } else {
        outcome.textContent = "Not decided: " + (body.error || "HTTP " + r.status);
        for (const b of el.querySelectorAll("button")) b.disabled = false;
      }
    } catch (e) {
      outcome.textContent = "Not decided: " + e;
      for (const b of el.querySelectorAll("button")) b.disabled = false;
    }
  }

  async function refresh() {
    let r;
    try {
      r = await fetch("/approvals", { headers: headers(false), credentials: "same-origin", cache: "no-store" });
    } catch (e) {
      $("status").textContent = "The gate cannot be reached: " + e;
      return;
    }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      $("status").textContent = r.status === 401
        ? "Sign in: " + (body.error || "a token is needed")
        : "Refused (HTTP " + r.status + "): " + (body.error || "");
      return;
    }
    const since = Date.now();
    const seen = new Set();
    for (const call of body.approvals) {
      seen.add(call.id);
      let c = cards.get(call.id);
      if (!c) {
        c = { el: card(call) };
        cards.set(call.id, c);
        $("calls").appendChild(c.el);
      }
      c.call = call;
      c.since = since;
      timer(c.el, call, since);
    }
    for (const [id, c] of cards) {
      if (!seen.has(id) && !c.el.dataset.decided) {
        c.el.remove();
        cards.delete(id);
      } else if (!seen.has(id) && !c.gone) {
        // Decided here: kept a while so the approver sees the outcome.
        c.gone = true;
        setTimeout(() => { c.el.remove(); cards.delete(id); }, 5000);
      }
    }
    const n = body.approvals.length;
    $("status").textContent = (n === 0 ? "No calls are waiting" : n + (n === 1 ? " call is" : " calls are") + " waiting")
      + " · signed in as " + body.approver + " · updated " + new Date().toLocaleTimeString();
    let empty = $("calls").querySelector(".empty");
    if (n === 0 && cards.size === 0 && !empty) {
      empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = "Nothing to decide. Held calls appear here as they arrive.";
      $("calls").appendChild(empty);
    } else if ((n > 0 || cards.size > 0) && empty) {
      empty.remove();
    }
  }

  function tick() {
    for (const c of cards.values()) if (c.call && !c.gone) timer(c.el, c.call, c.since);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("use-token").addEventListener("click", () => {
      token = $("token").value.trim();
      $("token").value = "";
      refresh();
    });
    refresh();
    setInterval(refresh, 1000);
    setInterval(tick, 250);
  });
})();
