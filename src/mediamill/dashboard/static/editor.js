/* Workflow editor: validate as you type (the API's dry run, POST /v1/workflows/validate),
 * save as a new immutable version (PUT) or create (POST), diff two versions, and an action
 * palette (GET /v1/actions) that lists every action's parameters and inserts a step skeleton. */
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

  // ---------------------------------------------------------------- action palette
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  };
  const scalar = (value) => JSON.stringify(value);  // a JSON scalar or array is valid YAML

  function paramLine(p) {
    const bits = [p.type];
    if (p.required) bits.push("required");
    else if (p.default !== null && p.default !== undefined) bits.push(`default ${scalar(p.default)}`);
    if (p.allowed) bits.push(`one of ${p.allowed.map(scalar).join(", ")}`);
    if (p.bounds) bits.push(p.bounds);
    const li = el("li", { "data-param": p.name }, el("code", {}, p.name), ` — ${bits.join("; ")}`);
    if (p.description) li.append(el("span", { class: "muted" }, ` (${p.description})`));
    return li;
  }

  /* A step with every parameter that has a default (and the required ones, to be filled in). */
  function skeleton(action, name, indent) {
    const inner = indent + "  ";
    const lines = [`${indent}- name: ${name}`, `${inner}action: ${action.name}`];
    const params = action.params.filter((p) => p.required || (p.default !== null && p.default !== undefined));
    if (params.length) {
      lines.push(`${inner}params:`);
      for (const p of params) lines.push(`${inner}  ${p.name}: ${p.required ? "null  # required" : scalar(p.default)}`);
    }
    return lines.join("\n") + "\n";
  }

  function stepName(action, text) {
    const base = action.name.split("_").map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(" ");
    let name = base;
    for (let n = 2; new RegExp(`name:\\s*["']?${name}["']?\\s*$`, "m").test(text); n++) name = `${base} ${n}`;
    return name;
  }

  /* Insert after the last line of the top-level `steps:` block, matching the block's item indent. */
  function insertStep(text, action) {
    const lines = text.replace(/\s+$/, "").split("\n");
    let start = lines.findIndex((l) => /^steps:\s*(\[\s*\])?\s*(#.*)?$/.test(l));
    if (start < 0) { lines.push("steps:"); start = lines.length - 1; }
    lines[start] = "steps:";
    let end = start + 1;
    let indent = null;
    for (; end < lines.length; end++) {
      const line = lines[end];
      if (!line.trim() || line.trim().startsWith("#")) continue;
      const item = line.match(/^(\s*)- /);
      if (indent === null && item) indent = item[1];
      if (!/^\s/.test(line) && !(indent === "" && line.startsWith("- "))) break;
    }
    while (end > start + 1 && !lines[end - 1].trim()) end--;
    const name = stepName(action, text);
    const block = skeleton(action, name, indent === null ? "  " : indent).replace(/\n$/, "");
    lines.splice(end, 0, block);
    return { text: lines.join("\n") + "\n", name };
  }

  function renderPalette(list, actions, writable) {
    const families = new Map();
    for (const a of actions) {
      if (!families.has(a.family)) families.set(a.family, []);
      families.get(a.family).push(a);
    }
    list.replaceChildren();
    for (const [family, items] of families) {
      const group = el("details", { "data-family": family, open: "" }, el("summary", {}, `${family} (${items.length})`));
      for (const a of items) {
        const head = el("div", { class: "action-head" }, el("strong", {}, a.name));
        if (writable) head.append(el("button", { type: "button", class: "btn small", "data-insert": a.name,
          "aria-label": `Insert a ${a.name} step` }, "Insert"));
        const box = el("div", { class: "action", "data-action": a.name,
          "data-search": [a.name, a.family, ...a.params.map((p) => p.name)].join(" ").toLowerCase() }, head);
        if (a.description) box.append(el("div", { class: "muted" }, a.description));
        const facts = [`errors: ${a.errors.join(", ") || "none"}`, a.isolated ? "isolated" : "in-process",
          a.idempotent ? "idempotent" : "not idempotent"];
        if (a.plugin) facts.push(`plug-in ${a.plugin.package}`);
        box.append(el("div", { class: "muted small" }, facts.join(" · ")));
        box.append(a.params.length ? el("ul", { class: "params" }, ...a.params.map(paramLine))
          : el("div", { class: "muted small" }, "no parameters"));
        group.append(box);
      }
      list.append(group);
    }
    list.dataset.state = "ready";
  }

  async function setupPalette(editor) {
    const list = document.getElementById("palette-list");
    const area = document.getElementById("yaml");
    if (!list || !area) return;
    const writable = editor.dataset.writable === "true";
    let actions = [];
    try {
      actions = (await MM.api("GET", "/v1/actions")).items;
    } catch (err) {
      list.dataset.state = "error";
      list.textContent = `Actions could not be loaded: ${err.message}`;
      return;
    }
    renderPalette(list, actions, writable);
    const filter = document.getElementById("palette-filter");
    filter.addEventListener("input", () => {
      const q = filter.value.trim().toLowerCase();
      for (const box of list.querySelectorAll(".action")) box.hidden = Boolean(q) && !box.dataset.search.includes(q);
      for (const group of list.querySelectorAll("details")) group.hidden = !group.querySelector(".action:not([hidden])");
    });
    list.addEventListener("click", (e) => {
      const btn = e.target.closest("[data-insert]");
      if (!btn || area.readOnly) return;
      const action = actions.find((a) => a.name === btn.dataset.insert);
      const { text, name } = insertStep(area.value, action);
      area.value = text;
      area.dispatchEvent(new Event("input", { bubbles: true }));  // validate the new document
      const at = text.lastIndexOf(`name: ${name}`) + "name: ".length;
      area.focus();
      area.setSelectionRange(at, at + name.length);  // ready to be renamed
      MM.toast(`Inserted a ${action.name} step`);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const editor = document.getElementById("editor");
    if (editor) {
      setup(editor);
      setupPalette(editor);
    }
  });
})();
