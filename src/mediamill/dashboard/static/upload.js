/* Upload page: drop or choose a file → resumable tus upload with a progress bar → a job on the
 * chosen workflow (POST /v1/jobs naming the upload) → the job's steps, followed live below. */
"use strict";
(() => {
  const MM = window.MM;

  function fmtBytes(n) {
    if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(0)} kB`;
    return `${n} B`;
  }

  function setup(form) {
    const drop = document.getElementById("drop");
    const input = document.getElementById("upload-file");
    const wrap = document.getElementById("upload-progress-wrap");
    const bar = document.getElementById("upload-progress");
    const status = document.getElementById("upload-status");
    const pauseBtn = document.getElementById("upload-pause");
    let current = null;

    const progress = (done, total) => {
      const pct = total ? (100 * done) / total : 100;
      bar.value = pct;
      status.textContent = `${fmtBytes(done)} of ${fmtBytes(total)} (${pct.toFixed(0)} %)`;
    };

    async function run(upload) {
      current = upload;
      wrap.hidden = false;
      pauseBtn.textContent = "Pause";
      pauseBtn.hidden = false;
      try {
        await upload.start();
      } catch (err) {
        if (err.message === "paused") { status.textContent += " — paused"; return; }
        status.textContent = `Upload failed: ${err.message}`;
        MM.toast(`Upload failed: ${err.message}`, "error");
        return;
      }
      pauseBtn.hidden = true;
      status.textContent = "Uploaded. Creating the job…";
      await submit(upload);
    }

    async function submit(upload) {
      const body = { upload_id: upload.id, filename: upload.file.name };
      const workflow = form.elements.workflow.value;
      if (workflow) body.workflow = workflow;
      if (form.elements.priority.value !== "") body.priority = Number(form.elements.priority.value);
      let job;
      try {
        job = await MM.api("POST", "/v1/jobs", body);
      } catch (err) {
        status.textContent = `Could not create the job: ${err.message}`;
        MM.toast(err.message, "error");
        return;
      }
      status.textContent = `Job ${job.job_code} created on ${job.workflow} v${job.workflow_version}.`;
      follow(job);
    }

    async function follow(job) {
      const box = document.getElementById("followed");
      const card = document.createElement("section");
      card.className = "card followed-job";
      card.dataset.followJob = String(job.id);
      card.innerHTML = `<h2>Following <a class="mono"></a></h2><div class="job-body"></div>`;
      const link = card.querySelector("a");
      link.href = `/jobs/${job.id}`;
      link.textContent = job.job_code;
      box.prepend(card);
      const body = card.querySelector(".job-body");
      const res = await fetch(`/jobs/${job.id}?fragment=1`, { credentials: "same-origin" });
      body.innerHTML = await res.text();
      const refresher = new MM.Refresher(body, `/jobs/${job.id}`, 500);
      MM.followJob(body, refresher);
      MM.drawWaveforms(body);
      link.focus();
    }

    function start(file) {
      if (!file) return;
      if (current && !current.stopped) current.pause();
      run(new MM.TusUpload(file, { endpoint: form.dataset.endpoint, onProgress: progress }));
    }

    input.addEventListener("change", () => start(input.files[0]));
    drop.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
    });
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
    }
    for (const type of ["dragleave", "drop"]) {
      drop.addEventListener(type, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (e) => { e.preventDefault(); start(e.dataTransfer.files[0]); });
    pauseBtn.addEventListener("click", () => {
      if (!current) return;
      if (current.stopped) { pauseBtn.textContent = "Pause"; run(current); }
      else { current.pause(); pauseBtn.textContent = "Resume"; }
    });
    form.addEventListener("submit", (e) => e.preventDefault());
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("upload-form");
    if (form) setup(form);
  });
})();
