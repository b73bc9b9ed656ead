/* mediamill dashboard: shared behaviour (no framework, no build step).
 *
 * - MM.api: fetch with the session's CSRF token (X-CSRF-Token) and problem+json errors.
 * - Live regions: the page's SSE stream (data-live on #live) triggers a throttled re-render of
 *   the page's live block (?fragment=1); only regions whose HTML changed are swapped, and never
 *   the one holding the keyboard focus. No timer ever polls the server.
 * - Actions: button[data-url] and form[data-api] call the /v1 API, then refresh.
 */
"use strict";
(() => {
  const MM = (window.MM = window.MM || {});
  const EVENT_TYPES = ["status", "step", "progress", "decision", "retry", "wait", "rescue", "priority",
    "cancel_requested", "message"];
  MM.EVENT_TYPES = EVENT_TYPES;

  // ---------------------------------------------------------------- theme (before paint as far as possible)
  const THEMES = ["auto", "dark", "light"];
  function applyTheme(theme) {
    if (theme === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = theme;
  }
  applyTheme(localStorage.getItem("mm-theme") || "auto");

  MM.csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  MM.api = async function api(method, url, body, headers) {
    const opts = { method, credentials: "same-origin", headers: { "X-CSRF-Token": MM.csrf(), ...(headers || {}) } };
    if (body !== undefined && body !== null) {
      if (typeof body === "string") opts.body = body;
      else {
        opts.body = JSON.stringify(body);
        opts.headers["Content-Type"] = "application/json";
      }
    }
    const res = await fetch(url, opts);
    const type = res.headers.get("content-type") || "";
    const data = type.includes("json") ? await res.json() : null;
    if (!res.ok) {
      const err = new Error((data && (data.detail || data.title)) || `${res.status} ${res.statusText}`);
      err.status = res.status;
      err.data = data;
      throw err;
    }
    return data;
  };

  MM.toast = function toast(text, kind) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const el = document.createElement("div");
    el.className = "toast" + (kind === "error" ? " error" : "");
    el.textContent = text;
    box.appendChild(el);
    setTimeout(() => el.remove(), kind === "error" ? 8000 : 3500);
  };

  /* The pill shows only while the page follows a stream: "live", "reconnecting…", or "disconnected"
   * when the stream failed for good. "idle" (no stream, or one that ended on purpose) hides it. */
  const LIVE_TEXT = { on: "live", retrying: "reconnecting…", off: "disconnected" };
  const LIVE_TITLE = { on: "Live updates", retrying: "Live updates: reconnecting",
                       off: "Live updates stopped: reload the page" };
  MM.setLive = function setLive(state) {
    const el = document.getElementById("live-state");
    if (!el) return;
    el.dataset.state = state;
    el.hidden = !(state in LIVE_TEXT);
    if (state in LIVE_TEXT) {
      el.textContent = LIVE_TEXT[state];
      el.title = LIVE_TITLE[state];
    }
  };

  // ---------------------------------------------------------------- relative times
  function span(secs) {
    if (secs < 60) return `${Math.floor(secs)} s`;
    if (secs < 3600) return `${Math.floor(secs / 60)} min`;
    if (secs < 86400) return `${(secs / 3600).toFixed(1)} h`;
    return `${(secs / 86400).toFixed(1)} d`;
  }
  MM.updateTimes = function updateTimes(root) {
    const now = Date.now();
    for (const el of (root || document).querySelectorAll("time[data-ago]")) {
      const t = Date.parse(el.getAttribute("datetime"));
      if (Number.isNaN(t)) continue;
      const secs = (now - t) / 1000;
      el.textContent = span(Math.abs(secs)) + (secs >= 0 ? " ago" : " from now");
    }
  };

  // ---------------------------------------------------------------- live regions
  class Refresher {
    /** Re-render `container`'s [data-region]s from `url`?fragment=1, at most once per `gap` ms. */
    constructor(container, url, gap) {
      this.container = container;
      this.url = url;
      this.gap = gap || 1000;
      this.last = 0;
      this.timer = null;
      this.running = false;
      this.again = false;
      this.seen = new Map();
      for (const el of this.regions(container)) this.seen.set(el.dataset.region || "", el.innerHTML);
    }
    regions(root) {
      const found = [...root.querySelectorAll("[data-region]")];
      return found.length ? found : [];
    }
    schedule(delay) {
      if (this.timer) return;
      const wait = Math.max(delay === undefined ? 150 : delay, this.last + this.gap - Date.now());
      this.timer = setTimeout(() => { this.timer = null; this.run(); }, wait);
    }
    async run() {
      if (this.running) { this.again = true; return; }
      this.running = true;
      this.last = Date.now();
      try {
        const url = new URL(this.url, location.href);
        url.searchParams.set("fragment", "1");
        const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (res.redirected && new URL(res.url).pathname === "/login") { location.reload(); return; }
        if (res.ok) this.swap(await res.text());
      } catch (err) {
        /* offline for a moment: the next event tries again */
      } finally {
        this.running = false;
        if (this.again) { this.again = false; this.schedule(); }
      }
    }
    swap(html) {
      const tpl = document.createElement("template");
      tpl.innerHTML = html;
      const fresh = this.regions(tpl.content);
      let deferred = false;
      for (const el of fresh) {
        const name = el.dataset.region;
        const cur = this.container.querySelector(`[data-region="${CSS.escape(name)}"]`);
        if (!cur || this.seen.get(name) === el.innerHTML) continue;
        const active = document.activeElement;
        if (active && active !== document.body && cur.contains(active) && active.matches("input, select, textarea")) {
          deferred = true;  // never yank a control from under the keyboard
          continue;
        }
        this.seen.set(name, el.innerHTML);
        cur.replaceWith(el);
      }
      if (!fresh.length && this.seen.get("") !== html) {
        this.seen.set("", html);
        this.container.innerHTML = html;
      }
      MM.updateTimes(this.container);
      document.dispatchEvent(new CustomEvent("mm:refreshed", { detail: { container: this.container } }));
      if (deferred) this.schedule(2000);
    }
  }
  MM.Refresher = Refresher;

  MM.stream = function stream(url, onEvent) {
    const es = new EventSource(url, { withCredentials: true });
    es.onopen = () => MM.setLive("on");
    es.onerror = () => MM.setLive(es.readyState === EventSource.CLOSED ? "off" : "retrying");
    for (const type of EVENT_TYPES) es.addEventListener(type, onEvent);
    return es;
  };

  function startLive() {
    const live = document.getElementById("live");
    if (!live) return;
    MM.page = new Refresher(live, location.href, Number(live.dataset.gap) || 1500);
    const src = live.dataset.live;
    if (src) MM.pageStream = MM.stream(src, () => MM.page.schedule());
  }

  // ---------------------------------------------------------------- actions
  function busy(el, on) {
    el.setAttribute("aria-busy", on ? "true" : "false");
    if ("disabled" in el) el.disabled = on;
  }
  function afterAction(then) {
    if (then === "reload") location.reload();
    else if (then && then.startsWith("go:")) location.href = then.slice(3);
    else if (MM.page) MM.page.schedule(0);
  }
  async function runAction(el, method, url, body) {
    if (el.dataset.confirm && !window.confirm(el.dataset.confirm)) return;
    busy(el, true);
    try {
      await MM.api(method, url, body);
      MM.toast(el.dataset.done || "Done");
      afterAction(el.dataset.then);
    } catch (err) {
      MM.toast(err.message, "error");
    } finally {
      busy(el, false);
    }
  }
  function formBody(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled || el.value === "" || el.type === "submit") continue;
      body[el.name] = el.type === "number" || ["version", "priority"].includes(el.name) ? Number(el.value) : el.value;
    }
    return body;
  }
  document.addEventListener("click", (e) => {
    const btn = e.target.closest("button[data-url]");
    if (!btn) return;
    runAction(btn, btn.dataset.method || "POST", btn.dataset.url, btn.dataset.body ? JSON.parse(btn.dataset.body) : undefined);
  });
  document.addEventListener("submit", (e) => {
    const form = e.target.closest("form[data-api]");
    if (!form) return;
    e.preventDefault();
    const [method, url] = form.dataset.api.split(" ");
    runAction(form, method, url, formBody(form));
  });

  // dead letters: select rows, then retry or discard them one by one
  document.addEventListener("change", (e) => {
    if (!e.target.matches("[data-select-all]")) return;
    const table = e.target.closest("table");
    for (const box of table.querySelectorAll("[data-select]")) box.checked = e.target.checked;
  });
  document.addEventListener("click", async (e) => {
    const btn = e.target.closest("button[data-bulk]");
    if (!btn) return;
    const ids = [...document.querySelectorAll("[data-select]:checked")].map((b) => b.value);
    if (!ids.length) { MM.toast("Select dead letters first", "error"); return; }
    const verb = btn.dataset.bulk;
    if (!window.confirm(`${verb === "retry" ? "Retry" : "Discard"} ${ids.length} dead letter(s)?`)) return;
    busy(btn, true);
    let done = 0;
    for (const id of ids) {
      try { await MM.api("POST", `/v1/dead-letters/${id}/${verb}`); done += 1; } catch (err) { MM.toast(`#${id}: ${err.message}`, "error"); }
    }
    busy(btn, false);
    MM.toast(`${done} of ${ids.length} ${verb === "retry" ? "re-queued" : "discarded"}`);
    if (MM.page) MM.page.schedule(0);
  });

  // ---------------------------------------------------------------- chrome
  function chrome() {
    const menu = document.querySelector(".menu");
    const nav = document.getElementById("nav");
    if (menu && nav) {
      menu.addEventListener("click", () => {
        const open = nav.classList.toggle("open");
        menu.setAttribute("aria-expanded", open ? "true" : "false");
      });
    }
    const toggle = document.getElementById("theme-toggle");
    if (toggle) {
      toggle.addEventListener("click", () => {
        const cur = localStorage.getItem("mm-theme") || "auto";
        const next = THEMES[(THEMES.indexOf(cur) + 1) % THEMES.length];
        localStorage.setItem("mm-theme", next);
        applyTheme(next);
        MM.toast(`Theme: ${next}`);
      });
    }
    document.addEventListener("keydown", (e) => {
      if (e.key !== "/" || e.target.matches("input, textarea, select")) return;
      const search = document.querySelector('input[type="search"]');
      if (search) { e.preventDefault(); search.focus(); }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    startLive();  // first: it records the server's HTML before anything rewrites it
    chrome();
    MM.updateTimes();
    setInterval(() => MM.updateTimes(), 30000);  // local clock only, no request
  });
})();
