// Taskward dashboard script. Pages read without it; it adds live updates, and sends actions
// to the REST API with the session's CSRF token. No inline script anywhere (CSP).
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const slug = (location.pathname.match(/^\/p\/([^/]+)/) || [])[1];

  // ---- API calls -------------------------------------------------------------------------
  async function api(url, method, body) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json = null;
    try { json = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const message = (json && json.error && json.error.message) || response.statusText;
      throw new Error(response.status + ": " + message);
    }
    return json;
  }

  function show(target, text, ok, href) {
    if (!target) return;
    target.textContent = text;
    target.className = ok ? "ok" : "failed";
    if (href) {
      const link = document.createElement("a");
      link.href = href;
      link.textContent = " Open it";
      target.appendChild(link);
    }
  }

  function resultOf(element) {
    const scope = element.closest("section, main") || document;
    return scope.querySelector("[data-result]") || document.querySelector("[data-result]");
  }

  // A form's fields as the API's JSON body; empty optional fields are left out.
  function bodyOf(form) {
    const body = {};
    for (const field of form.elements) {
      if (!field.name || field.disabled) continue;
      if (field.type === "checkbox") { if (field.checked) body[field.name] = true; continue; }
      const value = field.value.trim();
      if (value === "") continue;
      if (field.dataset.type === "int") {
        const n = Number(value);
        if (!Number.isInteger(n)) throw new Error(field.name + ": a whole number is needed");
        body[field.name] = n;
      } else if (field.dataset.json === "object") {
        let parsed;
        try { parsed = JSON.parse(value); } catch (e) {
          throw new Error(field.name + ": not valid JSON (" + e.message + ")");
        }
        if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
          throw new Error(field.name + ": must be a JSON object, like {\"key\": 1}");
        }
        if (Object.keys(parsed).length > 0) body[field.name] = parsed;
      } else {
        body[field.name] = value;
      }
    }
    return body;
  }

  function commandLink(command) {
    return command && command.id && slug ? "/p/" + slug + "/commands/" + command.id : null;
  }

  async function submitApiForm(event) {
    const form = event.target.closest("form[data-api]");
    if (!form) return;
    event.preventDefault();
    const target = resultOf(form);
    let body;
    try { body = bodyOf(form); } catch (e) { show(target, e.message, false); return; }
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try {
      const command = await api(form.dataset.api, "POST", body);
      show(target, "Command " + (command.kind || "") + " issued: " + (command.status || "ok") + ".", true, commandLink(command));
    } catch (e) {
      show(target, e.message, false);
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---- Bulk selection ----------------------------------------------------------------------
  function selected() {
    return Array.from(document.querySelectorAll("input[data-select]:checked")).map((b) => b.dataset.select);
  }

  function syncBulk() {
    const button = document.querySelector("button[data-bulk-delete]");
    if (button) button.disabled = selected().length === 0;
  }

  async function bulkDelete(button) {
    const ids = selected();
    if (ids.length === 0) return;
    if (!window.confirm("Delete " + ids.length + " task record(s)? Tasks still running are refused.")) return;
    const target = resultOf(button);
    try {
      const reply = await api(button.dataset.bulkDelete, "POST", { task_ids: ids });
      show(target, "Deleted " + reply.deleted_count + " task record(s).", true);
      refresh(true);
    } catch (e) {
      show(target, e.message, false);
    }
  }

  // ---- Purge dialog ------------------------------------------------------------------------
  async function openPurge(button) {
    const dialog = document.getElementById("purge-dialog");
    const queue = button.dataset.queue;
    const error = dialog.querySelector("[data-dialog-error]");
    const typed = dialog.querySelector('input[name="typed"]');
    const force = dialog.querySelector('input[name="force"]');
    const confirm = dialog.querySelector("button[data-confirm-purge]");
    dialog.querySelector("[data-queue-name]").textContent = queue;
    error.textContent = "";
    typed.value = "";
    force.checked = false;
    confirm.disabled = true;
    let token = null;
    try {
      const queues = await api(button.dataset.queues, "GET");
      const found = (queues.items || []).find((q) => q.queue === queue);
      if (!found) throw new Error("the agent no longer reports queue " + queue);
      token = found.confirm_token;
      dialog.querySelector("[data-depth]").textContent =
        "It holds " + found.depth + " message(s). Purging deletes them; the confirmation is bound to this depth.";
    } catch (e) {
      dialog.querySelector("[data-depth]").textContent = "";
      error.textContent = e.message;
    }
    typed.oninput = () => { confirm.disabled = typed.value !== queue; };
    confirm.onclick = async () => {
      const body = { agent_id: button.dataset.agent, queue };
      if (force.checked) body.force = true; else body.confirm_token = token;
      try {
        const command = await api(button.dataset.purge, "POST", body);
        dialog.close();
        show(resultOf(button), "Purge of " + queue + " issued: " + command.status + ".", true, commandLink(command));
      } catch (e) {
        error.textContent = e.message;
      }
    };
    dialog.showModal();
    typed.focus();
  }

  // ---- Live updates ------------------------------------------------------------------------
  const main = document.getElementById("main");
  let pending = false;

  function busy() {
    const active = document.activeElement;
    const dialogOpen = document.querySelector("dialog[open]");
    return dialogOpen || (active && main.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName));
  }

  async function refresh(force) {
    if (!force && busy()) { pending = true; return; }
    pending = false;
    const response = await fetch(location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.getElementById("main");
    if (!fresh) return;
    const keep = new Set(selected());
    main.innerHTML = fresh.innerHTML;
    main.dataset.watermark = fresh.dataset.watermark || "";
    for (const box of document.querySelectorAll("input[data-select]")) box.checked = keep.has(box.dataset.select);
    syncBulk();
    const note = document.querySelector(".live-note") || document.body.appendChild(Object.assign(document.createElement("div"), { className: "live-note", textContent: "Updated" }));
    note.classList.add("shown");
    setTimeout(() => note.classList.remove("shown"), 1200);
  }

  if (main && main.dataset.liveUrl && window.EventSource) {
    const source = new EventSource(main.dataset.liveUrl);
    source.onmessage = (event) => {
      if (event.data !== main.dataset.watermark) refresh(false);
    };
    document.addEventListener("focusout", () => { if (pending) setTimeout(() => refresh(false), 50); });
  }

  // ---- Wiring (delegated, so it survives live refreshes) ------------------------------------
  document.addEventListener("submit", submitApiForm);
  document.addEventListener("change", (event) => {
    if (event.target.matches("input[data-select-all]")) {
      for (const box of document.querySelectorAll("input[data-select]")) box.checked = event.target.checked;
    }
    if (event.target.matches("input[data-select], input[data-select-all]")) syncBulk();
  });
  document.addEventListener("click", (event) => {
    const purge = event.target.closest("button[data-purge]");
    if (purge) { event.preventDefault(); openPurge(purge); }
    const bulk = event.target.closest("button[data-bulk-delete]");
    if (bulk) { event.preventDefault(); bulkDelete(bulk); }
  });
})();
