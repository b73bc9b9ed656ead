/* Job detail: follow one job over its SSE stream (GET /v1/jobs/{id}/events, resumed after the
 * last event the page was rendered with). Each event updates the step, status and progress at
 * once; the server re-renders the timeline and outputs shortly after (regions that did not change,
 * like a playing video, stay as they are). Audio waveforms are drawn from the peaks JSON; an HLS
 * ladder plays natively where the browser can. */
"use strict";
(() => {
  const MM = (window.MM = window.MM || {});
  const FINAL = ["completed", "failed", "partial", "cancelled"];

  function badge(status) {
    const span = document.createElement("span");
    span.className = `badge s-${status}`;
    span.textContent = status;
    return span;
  }

  function setMeter(holder, percent) {
    const bar = holder && holder.querySelector(".meter > span");
    if (bar) bar.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  }

  function applyEvent(root, e) {
    const data = e.data || {};
    if (e.type === "step" && e.step) {
      const li = root.querySelector(`li.step[data-step="${CSS.escape(e.step)}"]`);
      if (li && data.status) {
        li.dataset.status = data.status;
        const holder = li.querySelector(".step-badge");
        if (holder) holder.replaceChildren(badge(data.status));
      }
    } else if (e.type === "progress") {
      setMeter(root.querySelector("#job-progress"), data.percent || 0);
      const pct = root.querySelector("#job-percent");
      if (pct) pct.textContent = `${Math.round(data.percent || 0)} %`;
    } else if (e.type === "status" && data.status) {
      const holder = root.querySelector("#job-status");
      if (holder) holder.replaceChildren(badge(data.status));
    }
  }

  function logEvent(root, e) {
    const list = root.querySelector("#events");
    if (!list) return;
    const li = document.createElement("li");
    li.className = "fresh";
    const time = document.createElement("time");
    time.className = "mono";
    time.textContent = (e.at || "").slice(11, 19);
    const strong = document.createElement("strong");
    strong.textContent = e.type;
    const rest = document.createElement("span");
    rest.className = "mono muted";
    rest.textContent = JSON.stringify(e.data || {}).slice(0, 160);
    li.append(time, " ", strong, e.step ? ` · ${e.step} ` : " ", rest);
    list.prepend(li);
  }

  /** Follow the job rendered in `root` (its [data-job-id]); `refresher` re-renders its regions. */
  MM.followJob = function followJob(root, refresher) {
    const job = root.querySelector("[data-job-id]") || root;
    if (!job.dataset.jobId || job.dataset.final === "true") return null;
    const url = `/v1/jobs/${job.dataset.jobId}/events?after=${job.dataset.after || 0}`;
    const es = MM.stream(url, (ev) => {
      let e;
      try { e = JSON.parse(ev.data); } catch { return; }
      applyEvent(root, e);
      logEvent(root, e);
      const final = e.type === "status" && FINAL.includes((e.data || {}).status);
      if (final) {
        es.close();  // the stream ends after the final status; do not let EventSource reconnect
        MM.setLive("idle");  // the job is final: nothing more to follow
        job.dataset.final = "true";
      }
      if (refresher) refresher.schedule(final ? 0 : 300);
    });
    return es;
  };

  // ---------------------------------------------------------------- waveform
  async function drawWaveform(canvas) {
    if (canvas.dataset.drawn) return;
    canvas.dataset.drawn = "1";
    try {
      const res = await fetch(canvas.dataset.waveform, { credentials: "same-origin" });
      const peaks = await res.json();
      const data = peaks.data || [];
      const full = peaks.bits === 16 ? 32768 : 128;
      const ctx = canvas.getContext("2d");
      const { width, height } = canvas;
      const color = getComputedStyle(document.documentElement).getPropertyValue("--chart-line") || "#2457c5";
      ctx.clearRect(0, 0, width, height);
      ctx.fillStyle = color.trim();
      const pairs = data.length / 2;
      for (let x = 0; x < width; x++) {
        const from = Math.floor((x * pairs) / width), to = Math.max(from + 1, Math.floor(((x + 1) * pairs) / width));
        let lo = 0, hi = 0;
        for (let i = from; i < to && i < pairs; i++) { lo = Math.min(lo, data[2 * i]); hi = Math.max(hi, data[2 * i + 1]); }
        const top = height / 2 - (hi / full) * (height / 2), bottom = height / 2 - (lo / full) * (height / 2);
        ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
      }
      canvas.dataset.peaks = String(pairs);
    } catch (err) {
      canvas.replaceWith(Object.assign(document.createElement("p"), { className: "muted", textContent: "waveform unavailable" }));
    }
  }
  MM.drawWaveforms = (root) => (root || document).querySelectorAll("canvas[data-waveform]").forEach(drawWaveform);

  // ---------------------------------------------------------------- HLS
  // The master playlist plays natively where the browser supports HLS (Safari, iOS, Android, Edge
  // on some platforms); elsewhere the player is replaced by a note and the playlist link stays.
  function prepareHls(video) {
    if (video.canPlayType("application/vnd.apple.mpegurl")) {
      if (!video.getAttribute("src")) video.src = video.dataset.hls;
      return;
    }
    video.hidden = true;
    const note = video.parentElement && video.parentElement.querySelector(".hls-note");
    if (note) note.hidden = false;
  }
  MM.prepareHls = (root) => (root || document).querySelectorAll("video[data-hls]").forEach(prepareHls);
  document.addEventListener("mm:refreshed", () => { MM.drawWaveforms(); MM.prepareHls(); });

  document.addEventListener("DOMContentLoaded", () => {
    MM.drawWaveforms();
    MM.prepareHls();
    const live = document.getElementById("live");
    if (live && live.querySelector("#job") && MM.page) MM.followJob(live, MM.page);
  });
})();
