/* A small tus 1.0 client (core + creation), resumable: the upload URL is remembered per file
 * (name, size, mtime) in localStorage, and after an error or a reload the client asks the server
 * where it stands (HEAD → Upload-Offset) and continues from there. Chunks go with XMLHttpRequest
 * for byte-level progress. The session cookie authenticates; X-CSRF-Token protects. */
"use strict";
(() => {
  const MM = (window.MM = window.MM || {});
  const VERSION = "1.0.0";
  const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000];

  function b64(text) {
    const bytes = new TextEncoder().encode(text);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  class TusError extends Error {
    constructor(message, status) { super(message); this.status = status; }
    get fatal() { return this.status && this.status >= 400 && this.status < 500 && ![409, 423, 429].includes(this.status); }
  }

  class TusUpload {
    constructor(file, { endpoint, metadata, chunkSize, onProgress }) {
      this.file = file;
      this.endpoint = endpoint;
      this.metadata = { filename: file.name, filetype: file.type || "application/octet-stream", ...(metadata || {}) };
      this.chunkSize = chunkSize || 8 * 1024 * 1024;
      this.onProgress = onProgress || (() => {});
      this.fingerprint = `mm-tus:${file.name}:${file.size}:${file.lastModified}`;
      this.url = null;
      this.xhr = null;
      this.stopped = false;
    }

    get id() { return this.url ? this.url.split("/").pop() : null; }

    /** Upload (or resume) to the end; resolves with the upload URL. */
    async start() {
      this.stopped = false;
      let offset = await this.resumeOffset();
      if (offset === null) {
        this.url = await this.create();
        localStorage.setItem(this.fingerprint, this.url);
        offset = 0;
      }
      let failures = 0;
      this.onProgress(offset, this.file.size);
      while (offset < this.file.size) {
        if (this.stopped) throw new TusError("paused", 0);
        try {
          offset = await this.patch(offset);
          failures = 0;
        } catch (err) {
          if (this.stopped || err.fatal || failures >= RETRY_DELAYS.length) throw err;
          await new Promise((r) => setTimeout(r, RETRY_DELAYS[failures++]));
          offset = (await this.head()) ?? offset;
        }
        this.onProgress(offset, this.file.size);
      }
      localStorage.removeItem(this.fingerprint);
      return this.url;
    }

    pause() {
      this.stopped = true;
      if (this.xhr) this.xhr.abort();
    }

    async resumeOffset() {
      this.url = this.url || localStorage.getItem(this.fingerprint);
      if (!this.url) return null;
      const offset = await this.head().catch(() => null);
      if (offset === null) { localStorage.removeItem(this.fingerprint); this.url = null; }
      return offset;
    }

    async create() {
      const meta = Object.entries(this.metadata).map(([k, v]) => `${k} ${b64(String(v))}`).join(",");
      const res = await fetch(this.endpoint, {
        method: "POST", credentials: "same-origin",
        headers: { "Tus-Resumable": VERSION, "Upload-Length": String(this.file.size), "Upload-Metadata": meta,
          "X-CSRF-Token": MM.csrf() },
      });
      if (res.status !== 201) throw new TusError(await problem(res, "could not create the upload"), res.status);
      const location = new URL(res.headers.get("Location"), window.location.href);
      return location.origin === window.location.origin ? location.pathname : location.href;
    }

    /** Where the server stands (Upload-Offset), or null when the upload is gone. */
    async head() {
      const res = await fetch(this.url, { method: "HEAD", credentials: "same-origin", headers: { "Tus-Resumable": VERSION } });
      if (res.status === 404 || res.status === 410) return null;
      if (!res.ok) throw new TusError(`HEAD ${res.status}`, res.status);
      return Number(res.headers.get("Upload-Offset"));
    }

    patch(offset) {
      return new Promise((resolve, reject) => {
        const xhr = (this.xhr = new XMLHttpRequest());
        xhr.open("PATCH", this.url);
        xhr.withCredentials = true;
        xhr.setRequestHeader("Tus-Resumable", VERSION);
        xhr.setRequestHeader("Upload-Offset", String(offset));
        xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
        xhr.setRequestHeader("X-CSRF-Token", MM.csrf());
        xhr.upload.onprogress = (e) => this.onProgress(offset + e.loaded, this.file.size);
        xhr.onload = () => {
          if (xhr.status === 204) resolve(Number(xhr.getResponseHeader("Upload-Offset")));
          else reject(new TusError(detail(xhr.responseText) || `PATCH ${xhr.status}`, xhr.status));
        };
        xhr.onerror = () => reject(new TusError("network error", 0));
        xhr.onabort = () => reject(new TusError("aborted", 0));
        xhr.send(this.file.slice(offset, offset + this.chunkSize));
      });
    }
  }

  function detail(text) {
    try { const p = JSON.parse(text); return p.detail || p.title; } catch { return null; }
  }
  async function problem(res, fallback) {
    return detail(await res.text()) || `${fallback} (${res.status})`;
  }

  MM.TusUpload = TusUpload;
})();
