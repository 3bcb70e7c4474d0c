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
    const own = element.querySelector && element.querySelector("[data-result]");
    if (own) return own;
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

  // A schedule's body: the type's settings go in its own object (retentionConfig, …).
  function scheduleBody(form) {
    const fields = bodyOf(form);
    const body = {
      name: fields.name, type: fields.type, cronExpression: fields.cronExpression,
      timezone: fields.timezone, enabled: true,
    };
    if (fields.type === "retention") body.retentionConfig = { olderThanDays: fields.amount };
    if (fields.type === "stale-cleanup") body.staleCleanupConfig = { inactiveHours: fields.amount };
    if (fields.type === "health-check") body.healthCheckConfig = { alertOnFailure: true };
    return body;
  }

  // A bulk retry's body: the list's filters (state, name, queue) as its filter.
  function bulkRetryBody(form) {
    const fields = bodyOf(form);
    const filter = {};
    for (const key of ["state", "name", "queue", "include_retried"]) if (fields[key]) filter[key] = fields[key];
    return { agent_id: fields.agent_id, filter, max: fields.max };
  }

  async function countBulkRetry(button) {
    const form = button.closest("form.bulk-retry");
    const target = form.querySelector("[data-result]");
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      const preview = await api(form.dataset.dryRun, "POST", bulkRetryBody(form));
      const skipped = preview.skipped_not_retryable.length;
      const within = preview.selected < preview.matched ? " (" + preview.selected + " within max)" : "";
      show(target, preview.matched + " match" + within + "; " + preview.retryable + " would be retried" +
        (skipped ? ", " + skipped + " cannot be (arguments unavailable)." : "."), true);
      submit.disabled = preview.retryable === 0;
      submit.textContent = "Retry " + preview.retryable;
    } catch (e) {
      show(target, e.message, false);
    }
  }

  // The next five runs of the expression being typed, in UTC and in its zone.
  let previewTimer = null;
  function schedulePreview(form) {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(async () => {
      const list = form.querySelector("[data-upcoming]");
      const error = form.querySelector("[data-preview-error]");
      const params = new URLSearchParams({
        cron: form.elements.cronExpression.value, timezone: form.elements.timezone.value,
      });
      try {
        const reply = await api(form.dataset.preview + "?" + params, "GET");
        error.textContent = "";
        list.replaceChildren(...reply.upcoming.map((run) => {
          const item = document.createElement("li");
          item.textContent = run.local + " (" + run.utc + ")";
          return item;
        }));
      } catch (e) {
        list.replaceChildren();
        error.textContent = e.message;
      }
    }, 250);
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
    try {
      body = form.matches(".schedule") ? scheduleBody(form)
        : form.matches(".bulk-retry") ? bulkRetryBody(form) : bodyOf(form);
    } catch (e) { show(target, e.message, false); return; }
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    const method = form.dataset.method || "POST";
    try {
      const reply = await api(form.dataset.api, method, method === "DELETE" ? undefined : body);
      if (reply && reply.schedule && slug) {
        location.href = "/p/" + slug + "/schedules/" + reply.schedule.id;
        return;
      } else if (reply && reply.execution) {
        await refresh(true);
        show(document.querySelector("[data-result]"), "Ran: " + reply.execution.status + ".", reply.execution.status !== "failed");
      } else if (reply && reply.token) {
        show(target, "Token created; copy it now, it is not shown again: " + reply.token, true);
      } else if (reply && reply.kind && reply.status) {
        show(target, "Command " + reply.kind + " issued: " + reply.status + ".", true, commandLink(reply));
      } else {
        await refresh(true);
        show(document.querySelector("[data-result]"), "Done.", true);
      }
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

  // ---- Add agent dialog ---------------------------------------------------------------------
  // Registers the agent, then shows the one line its host runs: the brain as this browser
  // reaches it, the one-time token (shown only here), the broker `serve --agent-broker` names.
  function addAgentStep(dialog, step) {
    for (const part of dialog.querySelectorAll("[data-step]")) part.hidden = part.dataset.step !== step;
  }

  // One shell word: as is when no shell would split or expand it, else single-quoted.
  function shellWord(word) {
    return /^[A-Za-z0-9_\-.\/:@%+=,]+$/.test(word) ? word : "'" + word.replace(/'/g, "'\\''") + "'";
  }

  function openAddAgent() {
    const dialog = document.getElementById("add-agent-dialog");
    const form = dialog.querySelector("form");
    form.reset();
    form.elements.name.disabled = false;
    dialog.querySelector("[data-run-command]").textContent = "";
    dialog.querySelector("[data-dialog-error]").textContent = "";
    dialog.querySelector("[data-copy]").textContent = "Copy";
    addAgentStep(dialog, "name");
    // However it closes (Close, Escape), the list then shows the new agent.
    dialog.onclose = () => refresh(true);
    dialog.showModal();
    form.elements.name.focus();
  }

  async function createAgent(form) {
    const dialog = form.closest("dialog");
    const error = dialog.querySelector("[data-dialog-error]");
    const submit = form.querySelector("button[type=submit]");
    error.textContent = "";
    submit.disabled = true;
    try {
      const reply = await api(dialog.dataset.api, "POST", bodyOf(form));
      dialog.querySelector("[data-run-command]").textContent = "taskward-agent run --brain " + location.origin +
        " --enroll " + reply.enrollment_token + " --broker " + shellWord(dialog.dataset.agentBroker);
      dialog.querySelector("[data-expires]").textContent = reply.agent.enrollment_expires_at || "";
      form.elements.name.disabled = true;
      addAgentStep(dialog, "command");
    } catch (e) {
      error.textContent = e.message;
    } finally {
      submit.disabled = false;
    }
  }

  // Copies an element's text; where the clipboard is out of reach (plain HTTP on another
  // host), selects it for the operator to copy.
  async function copyText(button) {
    const source = document.getElementById(button.dataset.copy);
    let copied = false;
    try {
      await navigator.clipboard.writeText(source.textContent);
      copied = true;
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(source);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      try { copied = document.execCommand("copy"); } catch (_) { copied = false; }
    }
    button.textContent = copied ? "Copied" : "Selected: copy it";
  }

  // ---- Live updates ------------------------------------------------------------------------
  const main = document.getElementById("main");
  let pending = false;

  // A field the user changed and has not sent yet (a filter picked, kwargs being edited): a
  // live refresh would put the page's values back, so it waits until the form is sent or the
  // page reloads. The row checkboxes are kept across refreshes instead.
  function dirty() {
    for (const field of main.querySelectorAll("input, select, textarea")) {
      if (field.matches("[data-select], [data-select-all]")) continue;
      if (field.tagName === "SELECT") {
        const options = Array.from(field.options);
        const chosen = options.findIndex((o) => o.defaultSelected);
        if (field.selectedIndex !== (chosen < 0 ? 0 : chosen)) return true;
      } else if (field.type === "checkbox" || field.type === "radio") {
        if (field.checked !== field.defaultChecked) return true;
      } else if (field.value !== field.defaultValue) {
        return true;
      }
    }
    return false;
  }

  function busy() {
    const active = document.activeElement;
    const dialogOpen = document.querySelector("dialog[open]");
    return dialogOpen || dirty() || (active && main.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName));
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

  // One stream per visible page: browsers allow six connections per host over HTTP/1.1, shared
  // by every tab, so a hidden or left page closes its stream. Coming back reconnects, and the
  // first event (the current watermark) brings the page up to date if anything changed.
  if (main && main.dataset.liveUrl && window.EventSource) {
    let source = null;
    const connect = () => {
      if (source || document.visibilityState === "hidden") return;
      source = new EventSource(main.dataset.liveUrl);
      source.onmessage = (event) => {
        if (event.data !== main.dataset.watermark) refresh(false);
      };
    };
    const disconnect = () => {
      if (source) source.close();
      source = null;
    };
    connect();
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") disconnect(); else connect();
    });
    window.addEventListener("pagehide", disconnect);
    window.addEventListener("pageshow", connect);
    document.addEventListener("focusout", () => { if (pending) setTimeout(() => refresh(false), 50); });
  }

  // ---- Wiring (delegated, so it survives live refreshes) ------------------------------------
  document.addEventListener("submit", (event) => {
    const addAgent = event.target.closest("form[data-add-agent-form]");
    if (addAgent) { event.preventDefault(); createAgent(addAgent); return; }
    submitApiForm(event);
  });
  document.addEventListener("input", (event) => {
    const form = event.target.closest("form.schedule");
    if (form && /^(cronExpression|timezone)$/.test(event.target.name)) schedulePreview(form);
  });
  for (const form of document.querySelectorAll("form.schedule")) schedulePreview(form);
  document.addEventListener("change", (event) => {
    if (event.target.matches("input[data-select-all]")) {
      for (const box of document.querySelectorAll("input[data-select]")) box.checked = event.target.checked;
    }
    if (event.target.matches("input[data-select], input[data-select-all]")) syncBulk();
  });
  document.addEventListener("click", (event) => {
    const purge = event.target.closest("button[data-purge]");
    if (purge) { event.preventDefault(); openPurge(purge); }
    const count = event.target.closest("button[data-count]");
    if (count) { event.preventDefault(); countBulkRetry(count); }
    const bulk = event.target.closest("button[data-bulk-delete]");
    if (bulk) { event.preventDefault(); bulkDelete(bulk); }
    if (event.target.closest("button[data-add-agent]")) openAddAgent();
    const copy = event.target.closest("button[data-copy]");
    if (copy) copyText(copy);
    const close = event.target.closest("button[data-close-dialog]");
    if (close) close.closest("dialog").close();
  });
})();
