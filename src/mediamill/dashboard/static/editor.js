/* Workflow editor: validate as you type (the API's dry run, POST /v1/workflows/validate),
 * save as a new immutable version (PUT) or create (POST), and diff two versions. */
"use strict";
(() => {
  const MM = window.MM;
  const YAML = { "Content-Type": "application/yaml" };

  function showProblems(box, problems, title) {
    box.dataset.state = "invalid";
    box.replaceChildren(document.createTextNode(title));
    const ul = document.createElement("ul");
    for (const p of problems) {
      const li = document.createElement("li");
      li.textContent = p;
      ul.appendChild(li);
    }
    box.appendChild(ul);
  }

  function setup(editor) {
    const area = document.getElementById("yaml");
    const box = document.getElementById("validation");
    const save = document.getElementById("save");
    const code = editor.dataset.code;
    let seq = 0;
    let timer = null;
    let valid = false;

    async function validate() {
      const mine = ++seq;
      box.dataset.state = "busy";
      box.textContent = "Validating…";
      try {
        const res = await MM.api("POST", "/v1/workflows/validate", area.value, YAML);
        if (mine !== seq) return;  // a newer keystroke is being validated
        valid = res.valid;
        if (res.valid) {
          box.dataset.state = "ok";
          box.textContent = `Valid: ${res.code}, ${res.steps} step${res.steps === 1 ? "" : "s"}.`;
        } else {
          showProblems(box, res.problems, `${res.problems.length} problem${res.problems.length === 1 ? "" : "s"}:`);
        }
      } catch (err) {
        if (mine === seq) { box.dataset.state = "invalid"; box.textContent = err.message; }
      }
      if (save) save.disabled = !valid;
    }

    area.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(validate, 300);
    });
    validate();

    if (save) {
      save.addEventListener("click", async () => {
        const comment = (document.getElementById("comment") || {}).value || "";
        const query = comment ? `?comment=${encodeURIComponent(comment)}` : "";
        save.setAttribute("aria-busy", "true");
        try {
          const res = code
            ? await MM.api("PUT", `/v1/workflows/${encodeURIComponent(code)}${query}`, area.value, YAML)
            : await MM.api("POST", `/v1/workflows${query}`, area.value, YAML);
          MM.toast(res.created === false ? `No change: v${res.version} has this content` : `Saved ${res.code} v${res.version}`);
          location.href = `/workflows/${encodeURIComponent(res.code)}`;
        } catch (err) {
          const problems = (err.data && err.data.errors) || [];
          if (problems.length) showProblems(box, problems, "Not saved:");
          MM.toast(`Not saved: ${err.message}`, "error");
        } finally {
          save.removeAttribute("aria-busy");
        }
      });
    }

    async function diff(from, to) {
      const out = document.getElementById("diff");
      out.textContent = "…";
      try {
        const res = await MM.api("GET", `/v1/workflows/${encodeURIComponent(code)}/diff?from=${from}&to=${to}`);
        out.replaceChildren();
        const head = document.createElement("p");
        head.textContent = `v${from} → v${to}: ` + [["added", res.steps_added], ["removed", res.steps_removed],
          ["changed", res.steps_changed]].filter(([, l]) => l.length).map(([k, l]) => `${k} ${l.join(", ")}`).join("; ");
        out.appendChild(head);
        for (const line of (res.diff || "(identical)").split("\n")) {
          const span = document.createElement("span");
          span.className = line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "";
          span.textContent = line + "\n";
          out.appendChild(span);
        }
      } catch (err) {
        out.textContent = err.message;
      }
    }
    document.addEventListener("click", (e) => {
      const btn = e.target.closest("[data-diff-from]");
      if (btn) diff(btn.dataset.diffFrom, btn.dataset.diffTo);
    });
    const run = document.getElementById("diff-run");
    if (run) run.addEventListener("click", () => diff(document.getElementById("diff-from").value, document.getElementById("diff-to").value));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const editor = document.getElementById("editor");
    if (editor) setup(editor);
  });
})();
