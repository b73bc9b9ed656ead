/* Routing rules page: drag (or ↑/↓) to reorder — one POST /v1/routing-rules/reorder with every id —
 * and the explain box, which asks POST /v1/routing-rules/explain as you type. */
"use strict";
(() => {
  const MM = window.MM;

  function rows() {
    return [...document.querySelectorAll("#rules tbody tr[data-rule-id]")];
  }

  async function saveOrder() {
    const ids = rows().map((r) => Number(r.dataset.ruleId));
    try {
      await MM.api("POST", "/v1/routing-rules/reorder", { ids });
      MM.toast("Order saved");
    } catch (err) {
      MM.toast(err.message, "error");
    }
    if (MM.page) MM.page.schedule(0);
    explain();
  }

  let dragged = null;
  document.addEventListener("dragstart", (e) => {
    const row = e.target.closest && e.target.closest("#rules tr[draggable]");
    if (!row) return;
    dragged = row;
    row.classList.add("dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", row.dataset.ruleId);
  });
  document.addEventListener("dragover", (e) => {
    const row = e.target.closest && e.target.closest("#rules tr[data-rule-id]");
    if (!dragged || !row || row === dragged) return;
    e.preventDefault();
    const box = row.getBoundingClientRect();
    row.parentNode.insertBefore(dragged, e.clientY < box.top + box.height / 2 ? row : row.nextSibling);
  });
  document.addEventListener("drop", (e) => {
    if (dragged) e.preventDefault();
  });
  document.addEventListener("dragend", () => {
    if (!dragged) return;
    dragged.classList.remove("dragging");
    dragged = null;
    saveOrder();
  });
  document.addEventListener("click", (e) => {
    const btn = e.target.closest("button[data-move]");
    if (!btn) return;
    const row = btn.closest("tr");
    const sibling = btn.dataset.move === "up" ? row.previousElementSibling : row.nextElementSibling;
    if (!sibling) return;
    row.parentNode.insertBefore(row, btn.dataset.move === "up" ? sibling : sibling.nextSibling);
    saveOrder();
  });

  // ---------------------------------------------------------------- explain
  const form = document.getElementById("explain-form");
  const out = document.getElementById("explain-result");
  let timer = null;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function show(res) {
    out.replaceChildren();
    const head = el("p");
    head.append(el("strong", res.workflow), ` (${res.decision}${res.rule ? `: rule ${res.rule}` : ""})`);
    head.dataset.decision = res.decision;
    out.append(head, el("p", res.reason, "muted"));
    const list = el("ol", undefined, "evaluated");
    for (const e of res.evaluated || []) {
      const verdict = e.error ? `error: ${e.error}` : e.skipped ? `matched, skipped: ${e.skipped}` : String(e.result);
      const item = el("li");
      item.append(el("strong", e.rule), " ", el("code", e.condition), ` → ${verdict}`);
      list.append(item);
    }
    if (list.children.length) out.append(list);
    for (const row of rows()) row.classList.toggle("match", res.rule !== null && row.dataset.rule === res.rule);
  }

  async function explain() {
    if (!form) return;
    let metadata = {};
    try {
      metadata = JSON.parse(form.metadata.value || "{}");
    } catch (_err) {
      out.replaceChildren(el("p", "metadata must be a JSON object", "err"));
      return;
    }
    const body = { filename: form.filename.value || null, metadata };
    if (form.mime.value) body.mime = form.mime.value;
    try {
      show(await MM.api("POST", "/v1/routing-rules/explain", body));
    } catch (err) {
      out.replaceChildren(el("p", err.message, "err"));
    }
  }

  if (form) {
    form.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(explain, 250);
    });
    form.addEventListener("submit", (e) => e.preventDefault());
    document.addEventListener("mm:refreshed", explain);
    explain();
  }
})();
