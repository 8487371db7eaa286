// The gonka-gateway dashboard. One script for every page: it reads which page it is on from
// <body data-page> and fills it from the account API (/api/...) or the admin API (/admin/..., /metrics),
// authenticated by the session cookie the browser sends by itself. Writes carry the session's CSRF
// token (the page's <meta name="csrf-token">). Nothing is kept in localStorage or sessionStorage; data
// is inserted as text, never as markup.
"use strict";

(() => {
  const page = document.body.dataset.page;
  const side = document.body.dataset.side;
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";

  // ---- the API -------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const e = body && body.error;
      super(e && e.message ? e.message : `The gateway answered ${status}.`);
      this.status = status;
      this.code = e && e.code;
      this.param = e && e.param;
    }
  }

  async function request(method, path, body, accept) {
    const headers = { Accept: accept || "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
    });
    if (r.status === 401 && page !== "sign-in" && page !== "sign-up") {
      // The session ended (signed out elsewhere, expired, or the token was rotated).
      location.assign("/dashboard/sign-in");
    }
    return r;
  }

  async function api(method, path, body) {
    const r = await request(method, path, body);
    const text = await r.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  // ---- money, numbers, days ------------------------------------------------------------------------

  const NGONKA_PER_GNK = 1000000000n;

  /** "1500000000" ngonka → "1.5 GNK" (exact: BigInt, never a float). */
  function gnk(ngonka) {
    if (ngonka === null || ngonka === undefined) return "—";
    let n = BigInt(ngonka);
    const negative = n < 0n;
    if (negative) n = -n;
    const whole = (n / NGONKA_PER_GNK).toLocaleString("en-US");
    const frac = (n % NGONKA_PER_GNK).toString().padStart(9, "0").replace(/0+$/, "");
    return `${negative ? "-" : ""}${whole}${frac ? "." + frac : ""} GNK`;
  }

  /** "1.5" GNK → "1500000000" ngonka; throws with a message a person can act on. */
  function toNgonka(text, what) {
    const t = text.trim().replace(/,/g, "");
    if (!/^\d+(\.\d{1,9})?$/.test(t)) {
      throw new Error(`${what} must be an amount of GNK, like 2 or 0.5 (at most 9 decimals).`);
    }
    const [whole, frac = ""] = t.split(".");
    return (BigInt(whole) * NGONKA_PER_GNK + BigInt(frac.padEnd(9, "0"))).toString();
  }

  /** "-1.5" GNK → "-1500000000" ngonka (a credit, or negative, an amount taken back). */
  function toSignedNgonka(text, what) {
    const t = text.trim();
    const negative = t.startsWith("-");
    const n = toNgonka(negative ? t.slice(1) : t, what);
    return negative && n !== "0" ? `-${n}` : n;
  }

  /** GNK as a float, for chart heights only. */
  const gnkValue = (ngonka) => Number(BigInt(ngonka)) / 1e9;
  const count = (n) => Number(n).toLocaleString("en-US");

  const today = () => new Date().toISOString().slice(0, 10);
  function addDays(day, n) {
    const d = new Date(`${day}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }
  const monthStart = (day) => `${day.slice(0, 7)}-01`;
  function nextMonthStart(day) {
    const d = new Date(`${monthStart(day)}T00:00:00Z`);
    d.setUTCMonth(d.getUTCMonth() + 1);
    return d.toISOString().slice(0, 10);
  }
  /** An RFC 3339 time as "2026-11-01 12:34 UTC". */
  function when(rfc3339) {
    if (!rfc3339) return "—";
    const d = new Date(rfc3339);
    return Number.isNaN(d.getTime()) ? rfc3339 : `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }
  function daysBetween(from, to) {
    const out = [];
    for (let d = from; d <= to && out.length < 1000; d = addDays(d, 1)) out.push(d);
    return out;
  }

  // ---- the page ------------------------------------------------------------------------------------

  const $ = (selector, root) => (root || document).querySelector(selector);

  /** An element with attributes and children (strings become text nodes, never markup). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function say(message, isError) {
    const s = $("#status");
    if (!s) return;
    s.textContent = message;
    s.classList.toggle("error", Boolean(isError));
  }

  /** Runs an action, saying what went wrong when it fails. */
  async function attempt(action) {
    try {
      await action();
    } catch (e) {
      say(e.message || String(e), true);
    }
  }

  /** Fills `table` with a caption, a head and one row per item. */
  function fillTable(table, caption, columns, rows, empty) {
    table.replaceChildren(
      el("caption", {}, caption),
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      el(
        "tbody",
        {},
        rows.length
          ? rows.map((r) => el("tr", {}, columns.map((c) => el("td", { class: c.num ? "num" : null, "data-label": c.label }, el("div", {}, c.cell(r))))))
          : el("tr", {}, el("td", { colspan: columns.length, class: "empty" }, empty || "Nothing yet.")),
      ),
    );
  }

  function badge(status) {
    return el("span", { class: `badge ${status}` }, status);
  }

  /** A yes/no question in the page's dialog; resolves true when confirmed. */
  function confirmAction(title, text, okLabel) {
    const dialog = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    $("#confirm-ok").textContent = okLabel;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    });
  }

  /** Shows a secret once: its value, a copy button, and the warning that it will not be shown again. */
  function showSecret(title, secret, note) {
    const slot = $("#secret-slot");
    const value = el("code", { class: "secret-value", id: "secret-value" }, secret);
    const copied = el("span", { class: "copied", role: "status", "aria-live": "polite" });
    const copy = el("button", { type: "button", id: "copy-secret" }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(secret);
        copied.textContent = "Copied.";
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(value);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        copied.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
      }
    });
    const done = el("button", { type: "button", class: "secondary" }, "Done, I have copied it");
    const box = el(
      "section",
      { class: "secret panel", role: "alert", "aria-labelledby": "secret-title" },
      el("h2", { id: "secret-title" }, title),
      el("p", { class: "warning" }, "Copy it now: it is shown only this once. The gateway keeps only a hash of it and cannot show it again."),
      note ? el("p", {}, note) : null,
      el("div", { class: "secret-row" }, value, copy, copied),
      done,
    );
    done.addEventListener("click", () => {
      box.remove();
      $("#main").focus();
    });
    slot.replaceChildren(box);
    copy.focus();
  }

  // ---- charts --------------------------------------------------------------------------------------

  /**
   * Fills `section` with a heading, a bar chart of `values` (GNK) over `labels`, the table of every
   * row behind it and a CSV export of that table.
   */
  function chartSection(section, spec) {
    const titleId = `${section.id}-title`;
    const canvas = el("canvas", {
      id: `${section.id}-chart`,
      role: "img",
      "aria-label": `${spec.title}: bar chart of spend in GNK over ${spec.labels.length} ${spec.unit}. The table below lists every value.`,
    });
    const table = el("table", { id: `${section.id}-table` });
    const csv = el("button", { type: "button", class: "secondary" }, "Export CSV");
    csv.addEventListener("click", () => download(spec.csvName, toCsv(spec.columns, spec.rows)));
    section.replaceChildren(
      el("div", { class: "section-head" }, el("h2", { id: titleId }, spec.title), csv),
      el("div", { class: "chart-box" }, canvas),
      el(
        "details",
        // Open beside a wide chart; on a phone the long table waits behind its summary.
        { open: spec.tableOpen && matchMedia("(min-width: 641px)").matches },
        el("summary", {}, "The table behind this chart"),
        el("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": `${spec.title}, table` }, table),
      ),
    );
    fillTable(table, `${spec.title}, every value`, spec.columns, spec.rows, "No requests in this range.");
    if (typeof Chart === "undefined") return;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: spec.labels,
        datasets: [{ label: "Spend, GNK", data: spec.values, backgroundColor: "#2f6db3", borderRadius: 2, maxBarThickness: 64 }],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: (c) => `${c.parsed.y} GNK` } } },
        scales: {
          x: { ticks: { autoSkip: true, maxRotation: 0 } },
          y: {
            beginAtZero: true,
            title: { display: true, text: "GNK" },
            ticks: { callback: (v) => Number(v).toLocaleString("en-US", { maximumSignificantDigits: 3 }) },
          },
        },
      },
    });
  }

  function toCsv(columns, rows) {
    const quote = (v) => {
      const s = String(v === null || v === undefined ? "" : v);
      return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    const lines = [columns.map((c) => quote(c.csvLabel || c.label)).join(",")];
    for (const r of rows) lines.push(columns.map((c) => quote(c.csv ? c.csv(r) : c.cell(r))).join(","));
    return lines.join("\n") + "\n";
  }

  function download(name, text) {
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  const usageColumns = (first) => [
    first,
    { label: "Requests", num: true, cell: (r) => count(r.requests), csv: (r) => r.requests },
    { label: "Prompt tokens", num: true, cell: (r) => count(r.prompt_tokens), csv: (r) => r.prompt_tokens },
    { label: "Completion tokens", num: true, cell: (r) => count(r.completion_tokens), csv: (r) => r.completion_tokens },
    { label: "Spend", csvLabel: "cost_ngonka", num: true, cell: (r) => gnk(r.cost_ngonka), csv: (r) => r.cost_ngonka },
  ];

  /** Names of the account's keys by id (managed, management and child keys). */
  async function keyNames() {
    const names = new Map();
    const [managed, management] = await Promise.all([api("GET", "/api/keys"), api("GET", "/api/management/keys")]);
    for (const k of [...managed.data, ...management.data]) names.set(k.id, `${k.name} (${k.prefix}…)`);
    const children = await Promise.all(
      management.data.map((m) => api("GET", `/api/management/keys/${m.id}/children`).catch(() => ({ data: [] }))),
    );
    for (const c of children.flatMap((l) => l.data)) names.set(c.id, `${c.name} (${c.prefix}…)`);
    return names;
  }

  const creditKinds = {
    admin: "Credit",
    deposit: "Deposit",
    referral: "Referral credit",
    refund: "Refund",
    adjustment: "Adjustment",
    referral_clawback: "Referral clawback",
  };

  /** What a credit entry came from, in words. */
  function creditSource(c) {
    if (c.kind === "referral" || c.kind === "referral_clawback") {
      const level = c.referral_level === 2 ? "second-level referral" : "referral";
      return `${c.source_reference} of ${c.source_account_id} (${level})`;
    }
    return c.kind === "refund" ? `refunds ${c.source_reference}` : "—";
  }

  const creditColumns = [
    { label: "When", cell: (c) => when(c.created_at) },
    { label: "Kind", cell: (c) => creditKinds[c.kind] || c.kind },
    { label: "Amount", num: true, cell: (c) => gnk(c.amount_ngonka) },
    { label: "Reference", cell: (c) => el("code", {}, c.reference) },
    { label: "From", cell: creditSource },
    { label: "Paid", cell: (c) => (c.paid ? "paid" : "—") },
    { label: "Withdrawable", cell: (c) => (c.withdrawable ? "yes" : "no") },
  ];

  /**
   * Fills `table` with the credit history at `path`, newest first; `more` (a button) loads older pages
   * into the same table.
   */
  async function creditHistory(table, caption, path, more) {
    let rows = [];
    const load = async (after) => {
      const page = await api("GET", `${path}?limit=50${after ? `&starting_after=${after}` : ""}`);
      rows = rows.concat(page.data);
      fillTable(table, caption, creditColumns, rows, "No credits yet.");
      if (more) more.hidden = !page.has_more;
    };
    if (more) {
      more.onclick = () => attempt(() => load(rows.length ? rows[rows.length - 1].id : ""));
    }
    await load("");
  }

  const usage = (from, to, groupBy) => api("GET", `/api/usage?from=${from}&to=${to}&group_by=${groupBy}`);

  // ---- sign-in and sign-out ------------------------------------------------------------------------

  function signInPage() {
    const admin = side === "admin";
    $("#sign-in-intro").textContent = admin
      ? "Sign in to the admin dashboard with the gateway's admin token."
      : "Sign in with your account token (gka-…), the one your administrator gave you when the account was made.";
    $("#token-label").textContent = admin ? "Admin token" : "Account token";
    const input = $("#token");
    const error = $("#sign-in-error");
    input.focus();
    $("#sign-in").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      input.removeAttribute("aria-invalid");
      const token = input.value.trim();
      if (!token) {
        error.textContent = "Enter the token.";
        input.setAttribute("aria-invalid", "true");
        return;
      }
      try {
        await api("POST", "/dashboard/sign-in", { token });
        input.value = "";
        location.assign("/dashboard");
      } catch (e) {
        error.textContent = e.message;
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
    });
  }

  function signUpPage() {
    const name = $("#signup-name");
    const code = $("#signup-code");
    const error = $("#sign-up-error");
    // A shared link names the referrer: /dashboard/sign-up?ref=<code>.
    code.value = new URLSearchParams(location.search).get("ref") || "";
    name.focus();
    $("#sign-up").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      const body = { name: name.value.trim() };
      if (!body.name) {
        error.textContent = "Enter a name for the account.";
        name.focus();
        return;
      }
      if (code.value.trim()) body.referral_code = code.value.trim();
      try {
        const a = await api("POST", "/api/signup", body);
        $("#sign-up").hidden = true;
        $("#sign-in-link").hidden = false;
        showSecret(`Account “${a.name}” is created`, a.token, "This is your account token: sign in with it to this dashboard, and use it to call the account API.");
      } catch (e) {
        error.textContent = e.message;
        (e.param === "referral_code" ? code : name).focus();
      }
    });
  }

  function wireSignOut() {
    const form = $("#sign-out");
    if (!form) return;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/dashboard/sign-out");
      } finally {
        location.assign("/dashboard/sign-in");
      }
    });
  }

  // ---- account pages -------------------------------------------------------------------------------

  async function overviewPage() {
    const t = today();
    const last30 = addDays(t, -29);
    const from = monthStart(t) < last30 ? monthStart(t) : last30;
    const [balance, days, byKey, byModel, names, me] = await Promise.all([
      api("GET", "/api/balance"),
      usage(from, t, "day"),
      usage(last30, t, "key"),
      usage(last30, t, "model"),
      keyNames(),
      api("GET", "/api/account"),
    ]);
    $("#account-status").replaceChildren(badge(balance.status));
    if (balance.status === "blocked") say("This account's balance is used up: its keys are refused (402) until it is credited.", true);
    $("#balance").textContent = gnk(balance.balance_ngonka);
    $("#referral-code").textContent = me.referral_code;
    $("#referred").textContent = count(me.referred_accounts);
    await creditHistory($("#credits"), "Credit history, newest first", "/api/credits", $("#credits-more"));
    $("#held").textContent = gnk(balance.held_ngonka);
    const sum = (rows) => rows.reduce((a, r) => a + BigInt(r.cost_ngonka), 0n).toString();
    $("#spent-today").textContent = gnk(sum(days.data.filter((r) => r.day === t)));
    $("#spent-month").textContent = gnk(sum(days.data.filter((r) => r.day >= monthStart(t))));
    const byDay = new Map(days.data.map((r) => [r.day, r]));
    const labels = daysBetween(last30, t);
    const rows = labels.map((d) => byDay.get(d) || { day: d, requests: 0, prompt_tokens: 0, completion_tokens: 0, cost_ngonka: "0" });
    chartSection($("#daily"), {
      title: "Spend per day, last 30 days",
      unit: "days",
      labels: labels.map((d) => d.slice(5)),
      values: rows.map((r) => gnkValue(r.cost_ngonka)),
      rows,
      columns: usageColumns({ label: "Day (UTC)", csvLabel: "day", cell: (r) => r.day }),
      csvName: `spend-per-day-${last30}-${t}.csv`,
    });
    const top = (list) => [...list].sort((a, b) => (BigInt(b.cost_ngonka) > BigInt(a.cost_ngonka) ? 1 : -1)).slice(0, 5);
    fillTable($("#top-keys"), "Top keys by spend, last 30 days", [
      { label: "Key", cell: (r) => names.get(r.key_id) || r.key_id },
      { label: "Requests", num: true, cell: (r) => count(r.requests) },
      { label: "Spend", num: true, cell: (r) => gnk(r.cost_ngonka) },
    ], top(byKey.data), "No requests in the last 30 days.");
    fillTable($("#top-models"), "Top models by spend, last 30 days", [
      { label: "Model", cell: (r) => r.model },
      { label: "Requests", num: true, cell: (r) => count(r.requests) },
      { label: "Spend", num: true, cell: (r) => gnk(r.cost_ngonka) },
    ], top(byModel.data), "No requests in the last 30 days.");
    await depositsPanel();
  }

  /** The deposit address and the deposits of the account; the panel stays hidden while deposits are off. */
  async function depositsPanel() {
    let terms;
    try {
      terms = await api("GET", "/api/deposit-address");
    } catch (e) {
      if (e.status === 404) return;
      throw e;
    }
    const list = await api("GET", "/api/deposits");
    $("#deposit-address").textContent = terms.address;
    const rate = BigInt(terms.rate_ppm) === 1000000n ? "1:1" : `${Number(terms.rate_ppm) / 1e6} per GNK`;
    const fee = terms.fee_bps ? `, less a ${Number(terms.fee_bps) / 100}% fee` : "";
    const min = BigInt(terms.min_ngonka) > 0n ? ` Deposits below ${gnk(terms.min_ngonka)} are held until they add up to it.` : "";
    $("#deposit-terms").textContent =
      `Credited at ${rate}${fee} after ${terms.confirmations} confirmation${terms.confirmations === 1 ? "" : "s"}.${min}`;
    const statusText = (d) => (d.status === "pending" ? `pending (${d.confirmations}/${d.confirmations_required})` : d.status);
    fillTable($("#deposit-list"), "Deposits", [
      { label: "Transaction", cell: (d) => el("code", { title: d.tx_hash }, `${d.tx_hash.slice(0, 12)}…`) },
      { label: "Received", num: true, cell: (d) => gnk(d.amount_ngonka) },
      { label: "Credit", num: true, cell: (d) => gnk(d.credit_ngonka) },
      { label: "Status", cell: (d) => el("span", { class: `badge ${d.status}` }, statusText(d)) },
      { label: "Seen", cell: (d) => when(d.seen_at) },
    ], list.data, "No deposits yet.");
    $("#deposits").hidden = false;
  }

  /** A key's `allowed_models` as shown: the ids, or "every model". */
  function modelsText(list, none) {
    return list === null || list === undefined ? none || "every model" : list.join(", ");
  }

  /** The `allowed_models` of a comma-separated field: the ids, or `null` (every model) when empty. */
  function modelList(value) {
    const ids = value.split(",").map((m) => m.trim()).filter((m) => m !== "");
    return ids.length ? ids : null;
  }

  /** Edits the models a managed or management key may use (`PATCH /api/keys/{id}`). */
  function editModels(k, reload, what) {
    const dialog = $("#models-dialog");
    $("#models-dialog-title").textContent = `Models of “${k.name}”`;
    $("#models-input").value = k.allowed_models ? k.allowed_models.join(", ") : "";
    $("#models-error").textContent = "";
    const form = $("#models-form");
    const cancel = $("#models-cancel");
    const close = () => {
      form.removeEventListener("submit", save);
      cancel.removeEventListener("click", close);
      dialog.close();
    };
    const save = async (ev) => {
      ev.preventDefault();
      try {
        const saved = await api("PATCH", `/api/keys/${k.id}`, { allowed_models: modelList($("#models-input").value) });
        close();
        await reload();
        say(`The ${what} “${k.name}” may use ${modelsText(saved.allowed_models)}.`);
      } catch (e) {
        $("#models-error").textContent = e.message;
      }
    };
    form.addEventListener("submit", save);
    cancel.addEventListener("click", close);
    dialog.showModal();
    $("#models-input").focus();
  }

  /** Buttons for models, pause/resume, rotate and archive of a managed or management key. */
  function keyActions(k, reload, what) {
    if (k.status === "archived") return el("span", { class: "muted" }, "archived for good");
    const act = (action) => api("POST", `/api/keys/${k.id}/${action}`);
    const toggle = k.status === "paused" ? "resume" : "pause";
    return el(
      "div",
      { class: "actions" },
      el("button", {
        type: "button",
        class: "secondary",
        "aria-label": `Models of ${what} ${k.name}`,
        onclick: () => editModels(k, reload, what),
      }, "Models"),
      el("button", {
        type: "button",
        class: "secondary",
        "aria-label": `${toggle === "pause" ? "Pause" : "Resume"} ${what} ${k.name}`,
        onclick: () => attempt(async () => {
          await act(toggle);
          await reload();
          say(`${what[0].toUpperCase()}${what.slice(1)} “${k.name}” is ${toggle === "pause" ? "paused" : "active again"}.`);
        }),
      }, toggle === "pause" ? "Pause" : "Resume"),
      el("button", {
        type: "button",
        class: "secondary",
        "aria-label": `Rotate ${what} ${k.name}`,
        onclick: () => attempt(async () => {
          const ok = await confirmAction(`Rotate “${k.name}”?`, "A new secret is made now and the current one stops working at once: every client using it needs the new one.", "Rotate");
          if (!ok) return;
          const rotated = await act("rotate");
          await reload();
          showSecret(`New secret of “${k.name}”`, rotated.key, "The previous secret no longer works.");
        }),
      }, "Rotate"),
      el("button", {
        type: "button",
        class: "danger",
        "aria-label": `Archive ${what} ${k.name}`,
        onclick: () => attempt(async () => {
          const extra = k.kind === "management" ? " Its child keys are archived with it." : "";
          const ok = await confirmAction(`Archive “${k.name}”?`, `This cannot be undone: the key stops working for good and nothing brings it back.${extra}`, "Archive for good");
          if (!ok) return;
          await act("archive");
          await reload();
          say(`“${k.name}” is archived.`);
        }),
      }, "Archive"),
    );
  }

  async function keysPage() {
    const reload = async () => {
      const [keys, spend] = await Promise.all([api("GET", "/api/keys"), usage("2000-01-01", today(), "key")]);
      const byKey = new Map(spend.data.map((r) => [r.key_id, r]));
      fillTable($("#keys"), "Managed keys of this account", [
        { label: "Name", cell: (k) => k.name },
        { label: "Prefix", cell: (k) => el("code", {}, `${k.prefix}…`) },
        { label: "Status", cell: (k) => badge(k.status) },
        { label: "Models", cell: (k) => modelsText(k.allowed_models) },
        { label: "Created", cell: (k) => when(k.created_at) },
        { label: "Last used", cell: (k) => (byKey.has(k.id) ? when(byKey.get(k.id).last_request_at) : "never") },
        { label: "Spend", num: true, cell: (k) => gnk(byKey.has(k.id) ? byKey.get(k.id).cost_ngonka : "0") },
        { label: "Actions", cell: (k) => keyActions(k, reload, "key") },
      ], keys.data, "No managed keys yet: create one above.");
      // Direct keys exist only when the gateway's chain is enabled (the route answers 404 otherwise).
      const direct = await api("GET", "/api/direct-keys").catch(() => null);
      $("#direct-panel").hidden = direct === null;
      if (direct === null) return;
      fillTable($("#direct-keys"), "Direct keys of this account", [
        { label: "Name", cell: (k) => k.name },
        { label: "Address", cell: (k) => el("code", {}, k.address) },
        { label: "Status", cell: (k) => badge(k.status) },
        { label: "Float", num: true, cell: (k) => gnk(k.float_ngonka) },
        { label: "Spend", num: true, cell: (k) => gnk(k.spent_ngonka) },
        { label: "Created", cell: (k) => when(k.created_at) },
      ], direct.data, "No direct keys: create one with POST /api/direct-keys.");
    };
    $("#create-key").addEventListener("submit", (ev) => {
      ev.preventDefault();
      attempt(async () => {
        const name = $("#key-name").value.trim();
        const k = await api("POST", "/api/keys", { name, allowed_models: modelList($("#key-models").value) });
        $("#key-name").value = "";
        $("#key-models").value = "";
        await reload();
        showSecret(`New key “${k.name}”`, k.key, "Use it as the API key of any OpenAI client (base URL: this gateway's /v1).");
      });
    });
    await reload();
  }

  /** A limit's progress: spent of limit, what is left, when it resets. */
  function limitCell(spent, limit, remaining, resets, window) {
    if (limit === null) return el("span", { class: "muted" }, `no ${window} limit · ${gnk(spent)} spent`);
    const max = Math.max(gnkValue(limit), 1e-9);
    return el(
      "div",
      { class: "limit" },
      el("progress", { max, value: Math.min(gnkValue(spent), max), "aria-label": `${window} limit used: ${gnk(spent)} of ${gnk(limit)}` }),
      el("span", {}, `${gnk(spent)} of ${gnk(limit)}`),
      el("span", { class: "muted" }, `${gnk(remaining)} left · resets ${resets} 00:00 UTC`),
    );
  }

  async function managementPage() {
    const dialog = $("#child-dialog");
    const form = $("#child-form");
    let editing = null; // { parent, child } or { parent } for a new one
    const reload = async () => {
      const mkeys = (await api("GET", "/api/management/keys")).data;
      const lists = await Promise.all(mkeys.map((m) => (m.status === "archived" ? { data: [] } : api("GET", `/api/management/keys/${m.id}/children`))));
      const t = today();
      const now = Date.now();
      const sections = mkeys.map((m, i) => {
        const h = `mgmt-${m.id}`;
        const children = lists[i].data.filter((c) => c.status !== "archived");
        const table = el("table", { id: `children-${m.id}` });
        fillTable(table, `Child keys of ${m.name}`, [
          { label: "Name", cell: (c) => [c.name, " ", el("code", {}, `${c.prefix}…`)] },
          { label: "Status", cell: (c) => (c.expires_at && Date.parse(c.expires_at) <= now ? badge("expired") : badge(c.status)) },
          { label: "Daily limit", cell: (c) => limitCell(c.daily_spent_ngonka, c.limit_daily_ngonka, c.daily_remaining, addDays(t, 1), "daily") },
          { label: "Monthly limit", cell: (c) => limitCell(c.monthly_spent_ngonka, c.limit_monthly_ngonka, c.monthly_remaining, nextMonthStart(t), "monthly") },
          { label: "RPM", num: true, cell: (c) => (c.rate_limit_rpm === null ? "default" : count(c.rate_limit_rpm)) },
          { label: "Expires", cell: (c) => (c.expires_at ? when(c.expires_at) : "never") },
          { label: "Models", cell: (c) => modelsText(c.allowed_models, m.allowed_models ? `${m.allowed_models.join(", ")} (its management key's)` : "every model") },
          { label: "Actions", cell: (c) => childActions(m, c) },
        ], children, "No child keys yet.");
        const newChild = el("button", { type: "button", "aria-label": `New child key of ${m.name}` }, "New child key");
        newChild.addEventListener("click", () => openChild({ parent: m }));
        return el(
          "section",
          { class: "panel mgmt", "aria-labelledby": h },
          el("div", { class: "section-head" }, el("h2", { id: h }, m.name, " ", el("code", {}, `${m.prefix}…`), " ", badge(m.status)), keyActions(m, reload, "management key")),
          el("p", { class: "muted" }, `Models: ${modelsText(m.allowed_models)}`),
          m.status === "archived" ? null : newChild,
          m.status === "archived" ? null : el("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": `Child keys of ${m.name}` }, table),
        );
      });
      $("#mgmt-list").replaceChildren(...(sections.length ? sections : [el("p", { class: "panel muted" }, "No management keys yet: create one above.")]));
    };

    const childActions = (m, c) => {
      const path = `/api/management/keys/${m.id}/children/${c.id}`;
      const toggle = c.status === "paused" ? "active" : "paused";
      return el(
        "div",
        { class: "actions" },
        el("button", { type: "button", class: "secondary", "aria-label": `Edit child key ${c.name}`, onclick: () => openChild({ parent: m, child: c }) }, "Edit"),
        el("button", {
          type: "button",
          class: "secondary",
          "aria-label": `${toggle === "paused" ? "Pause" : "Resume"} child key ${c.name}`,
          onclick: () => attempt(async () => {
            await api("PATCH", path, { status: toggle });
            await reload();
            say(`Child key “${c.name}” is ${toggle === "paused" ? "paused" : "active again"}.`);
          }),
        }, toggle === "paused" ? "Pause" : "Resume"),
        el("button", {
          type: "button",
          class: "danger",
          "aria-label": `Delete child key ${c.name}`,
          onclick: () => attempt(async () => {
            const ok = await confirmAction(`Delete “${c.name}”?`, "This cannot be undone: the child key is archived and stops working for good.", "Delete for good");
            if (!ok) return;
            await api("DELETE", path);
            await reload();
            say(`Child key “${c.name}” is deleted.`);
          }),
        }, "Delete"),
      );
    };

    const gnkField = (c, field) => (c && c[field] !== null ? gnk(c[field]).replace(/ GNK$/, "").replace(/,/g, "") : "");
    function openChild(target) {
      editing = target;
      const c = target.child;
      $("#child-dialog-title").textContent = c ? `Edit “${c.name}”` : `New child key of “${target.parent.name}”`;
      $("#child-name").value = c ? c.name : "";
      $("#child-daily").value = gnkField(c, "limit_daily_ngonka");
      $("#child-monthly").value = gnkField(c, "limit_monthly_ngonka");
      $("#child-rpm").value = c && c.rate_limit_rpm !== null ? c.rate_limit_rpm : "";
      $("#child-expires").value = c && c.expires_at ? c.expires_at.slice(0, 16) : "";
      $("#child-models").value = c && c.allowed_models ? c.allowed_models.join(", ") : "";
      $("#child-save").textContent = c ? "Save" : "Create child key";
      $("#child-error").textContent = "";
      dialog.showModal();
      $("#child-name").focus();
    }
    $("#child-cancel").addEventListener("click", () => dialog.close());
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const error = $("#child-error");
      error.textContent = "";
      try {
        const editingChild = Boolean(editing.child);
        const body = { name: $("#child-name").value.trim() };
        const optional = (value, make) => (value.trim() === "" ? (editingChild ? null : undefined) : make(value));
        body.limit_daily_ngonka = optional($("#child-daily").value, (v) => toNgonka(v, "The daily limit"));
        body.limit_monthly_ngonka = optional($("#child-monthly").value, (v) => toNgonka(v, "The monthly limit"));
        body.rate_limit_rpm = optional($("#child-rpm").value, (v) => Number(v));
        body.expires_at = optional($("#child-expires").value, (v) => `${v.length === 16 ? v + ":00" : v}Z`);
        body.allowed_models = optional($("#child-models").value, modelList);
        for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
        const base = `/api/management/keys/${editing.parent.id}/children`;
        if (editingChild) {
          await api("PATCH", `${base}/${editing.child.id}`, body);
          dialog.close();
          await reload();
          say(`Child key “${body.name}” is saved.`);
        } else {
          const made = await api("POST", base, body);
          dialog.close();
          await reload();
          showSecret(`New child key “${made.name}”`, made.key, `Billed to this account, within its limits; it belongs to “${editing.parent.name}”.`);
        }
      } catch (e) {
        error.textContent = e.message;
      }
    });
    $("#create-mgmt").addEventListener("submit", (ev) => {
      ev.preventDefault();
      attempt(async () => {
        const k = await api("POST", "/api/management/keys", { name: $("#mgmt-name").value.trim(), allowed_models: modelList($("#mgmt-models").value) });
        $("#mgmt-name").value = "";
        $("#mgmt-models").value = "";
        await reload();
        showSecret(`New management key “${k.name}”`, k.key, "It can create child keys through the API (it cannot call models itself).");
      });
    });
    await reload();
  }

  async function usagePage() {
    const from = $("#from");
    const to = $("#to");
    to.value = today();
    from.value = addDays(to.value, -29);
    const show = async () => {
      if (!from.value || !to.value || from.value > to.value) {
        say("Choose a start day on or before the end day.", true);
        return;
      }
      say("");
      const [days, models, keys, names] = await Promise.all([
        usage(from.value, to.value, "day"),
        usage(from.value, to.value, "model"),
        usage(from.value, to.value, "key"),
        keyNames(),
      ]);
      const range = `${from.value} to ${to.value}`;
      const byDay = new Map(days.data.map((r) => [r.day, r]));
      const allDays = daysBetween(from.value, to.value);
      const dayRows = allDays.length < 1000
        ? allDays.map((d) => byDay.get(d) || { day: d, requests: 0, prompt_tokens: 0, completion_tokens: 0, cost_ngonka: "0" })
        : days.data;
      chartSection($("#by-day"), {
        title: `Spend by day, ${range}`,
        unit: "days",
        labels: dayRows.map((r) => r.day),
        values: dayRows.map((r) => gnkValue(r.cost_ngonka)),
        rows: dayRows,
        columns: usageColumns({ label: "Day (UTC)", csvLabel: "day", cell: (r) => r.day }),
        tableOpen: true,
        csvName: `usage-by-day-${from.value}-${to.value}.csv`,
      });
      chartSection($("#by-model"), {
        title: `Spend by model, ${range}`,
        unit: "models",
        labels: models.data.map((r) => r.model),
        values: models.data.map((r) => gnkValue(r.cost_ngonka)),
        rows: models.data,
        columns: usageColumns({ label: "Model", csvLabel: "model", cell: (r) => r.model }),
        tableOpen: true,
        csvName: `usage-by-model-${from.value}-${to.value}.csv`,
      });
      const keyName = (r) => names.get(r.key_id) || r.key_id;
      chartSection($("#by-key"), {
        title: `Spend by key, ${range}`,
        unit: "keys",
        labels: keys.data.map(keyName),
        values: keys.data.map((r) => gnkValue(r.cost_ngonka)),
        rows: keys.data,
        columns: usageColumns({ label: "Key", csvLabel: "key", cell: keyName, csv: (r) => r.key_id }),
        tableOpen: true,
        csvName: `usage-by-key-${from.value}-${to.value}.csv`,
      });
    };
    $("#range").addEventListener("submit", (ev) => {
      ev.preventDefault();
      attempt(show);
    });
    await show();
  }

  // ---- admin pages ---------------------------------------------------------------------------------

  /** Samples of a Prometheus text scrape: [{name, labels, value}]. */
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      out.push({ name: m[1], labels, value: Number(m[3]) });
    }
    return out;
  }

  async function adminOverviewPage() {
    const r = await request("GET", "/metrics", undefined, "text/plain");
    if (!r.ok) throw new ApiError(r.status, null);
    const samples = parseMetrics(await r.text());
    const of = (name) => samples.filter((s) => s.name === name);
    const total = (name) => of(name).reduce((a, s) => a + s.value, 0);
    const nodes = of("gateway_node_up");
    const redis = total("gateway_redis_up");
    const accounts = await api("GET", "/admin/accounts");
    const cards = [
      ["Requests answered", count(total("gateway_requests_total"))],
      ["Requests in flight", count(total("gateway_requests_in_flight"))],
      ["Client connections", count(total("gateway_connections_open"))],
      ["Nodes up", `${nodes.filter((n) => n.value === 1).length} of ${nodes.length}`],
      ["Held by requests in flight", gnk(BigInt(Math.round(total("gateway_held_ngonka"))).toString())],
      ["Usage records waiting for the store", count(total("gateway_journal_lag_records"))],
      ["Keys in the cache", count(total("gateway_key_cache_entries"))],
      ["Accounts", count(accounts.data.length)],
      ["Redis", redis < 0 ? "not used" : redis > 0 ? "up" : "down"],
    ];
    $("#metrics").replaceChildren(...cards.map(([k, v]) => el("div", { class: "card" }, el("dt", {}, k), el("dd", {}, v))));
    const byRoute = new Map();
    for (const s of of("gateway_requests_total")) {
      const key = `${s.labels.route} ${s.labels.status}`;
      byRoute.set(key, { route: s.labels.route, status: s.labels.status, n: (byRoute.get(key) || { n: 0 }).n + s.value });
    }
    fillTable($("#requests"), "Requests by route and status", [
      { label: "Route", cell: (x) => x.route },
      { label: "Status", num: true, cell: (x) => x.status },
      { label: "Requests", num: true, cell: (x) => count(x.n) },
    ], [...byRoute.values()].sort((a, b) => b.n - a.n), "No requests yet.");
  }

  async function adminAccountsPage() {
    const reload = async () => {
      const accounts = (await api("GET", "/admin/accounts")).data;
      const names = new Map(accounts.map((a) => [a.id, a.name]));
      fillTable($("#accounts"), "Accounts", [
        { label: "Name", cell: (a) => a.name },
        { label: "Id", cell: (a) => el("code", {}, a.id) },
        { label: "Balance", num: true, cell: (a) => gnk(a.balance_ngonka) },
        { label: "Held", num: true, cell: (a) => gnk(a.held_ngonka) },
        { label: "Status", cell: (a) => badge(a.status) },
        { label: "Created", cell: (a) => when(a.created_at) },
        { label: "Referral code", cell: (a) => el("code", {}, a.referral_code) },
        { label: "Referred by", cell: (a) => (a.referrer_id ? (names.get(a.referrer_id) || a.referrer_id) : "—") },
        // With deposits enabled every account has a deposit address.
        ...(accounts.some((a) => a.deposit_address)
          ? [{ label: "Deposit address", cell: (a) => el("code", { class: "address" }, a.deposit_address || "—") }]
          : []),
        {
          label: "Actions",
          cell: (a) => el(
            "div",
            { class: "actions" },
            el("button", {
              type: "button",
              class: "secondary",
              "aria-label": `Credit history of account ${a.name}`,
              onclick: () => attempt(async () => {
                const panel = $("#account-credits-panel");
                panel.hidden = false;
                $("#h-account-credits").textContent = `Credit history of “${a.name}”`;
                await creditHistory($("#account-credits"), `Credits of ${a.name}, newest first`, `/admin/accounts/${a.id}/credits`);
                panel.scrollIntoView();
              }),
            }, "Credit history"),
            el("button", {
              type: "button",
              class: "secondary",
              "aria-label": `New token for account ${a.name}`,
              onclick: () => attempt(async () => {
                const ok = await confirmAction(`New token for “${a.name}”?`, "The account's current token, and every dashboard session signed in with it, stop working at once.", "Make a new token");
                if (!ok) return;
                const t = await api("POST", `/admin/accounts/${a.id}/token`);
                showSecret(`New token of “${a.name}”`, t.token, "Give it to the account's owner: it signs in to the dashboard and calls the account API.");
              }),
            }, "New token"),
          ),
        },
      ], accounts, "No accounts yet: create one.");
      const select = $("#credit-account");
      const chosen = select.value;
      select.replaceChildren(...accounts.map((a) => el("option", { value: a.id }, `${a.name} (${a.id})`)));
      if (chosen) select.value = chosen;
    };
    $("#create-account").addEventListener("submit", (ev) => {
      ev.preventDefault();
      attempt(async () => {
        const body = { name: $("#account-name").value.trim() };
        const code = $("#account-referral").value.trim();
        if (code) body.referral_code = code;
        const a = await api("POST", "/admin/accounts", body);
        $("#account-name").value = "";
        $("#account-referral").value = "";
        await reload();
        showSecret(`Account “${a.name}” is created`, a.token, "This is the account's token: give it to the account's owner. It signs in to the dashboard and calls the account API.");
      });
    });
    $("#credit").addEventListener("submit", (ev) => {
      ev.preventDefault();
      attempt(async () => {
        const id = $("#credit-account").value;
        const amount = toSignedNgonka($("#credit-amount").value, "The amount");
        const reference = $("#credit-reference").value.trim();
        const body = { amount_ngonka: amount, reference };
        if ($("#credit-paid").checked) body.paid = true;
        const refundOf = $("#credit-refund-of").value.trim();
        if (refundOf) body.refund_of = refundOf;
        const r = await api("POST", `/admin/accounts/${id}/credits`, body);
        $("#credit-amount").value = "";
        $("#credit-reference").value = "";
        $("#credit-refund-of").value = "";
        $("#credit-paid").checked = false;
        await reload();
        const others = r.entries.slice(1);
        const referrals = others.length
          ? ` ${others.map((e) => `${gnk(e.amount_ngonka)} to ${e.account_id || "a referrer"}`).join(", ")} (${others[0].kind === "referral" ? "referral credits" : "clawed back"}).`
          : "";
        say(r.credited
          ? `Credited ${gnk(amount)}; the balance is now ${gnk(r.balance_ngonka)}.${referrals}`
          : `Reference “${reference}” was already credited with this amount: nothing changed (balance ${gnk(r.balance_ngonka)}).`);
      });
    });
    await reload();
  }

  async function adminModelsPage() {
    const dialog = $("#price-dialog");
    let model = null;
    const modelPath = (id) => `/admin/models/${id.split("/").map(encodeURIComponent).join("/")}`;
    const reload = async () => {
      const models = (await api("GET", "/admin/models")).data;
      fillTable($("#models"), "Models the gateway serves", [
        { label: "Model", cell: (m) => m.id },
        { label: "Source", cell: (m) => (m.configured ? "config" : "stored price only") },
        { label: "Context", num: true, cell: (m) => (m.context_length ? count(m.context_length) : "—") },
        { label: "Prompt price", num: true, cell: (m) => count(m.price_prompt_ngonka) },
        { label: "Completion price", num: true, cell: (m) => count(m.price_completion_ngonka) },
        {
          label: "Actions",
          cell: (m) => el(
            "div",
            { class: "actions" },
            el("button", {
              type: "button",
              class: "secondary",
              "aria-label": `Set prices of ${m.id}`,
              onclick: () => {
                model = m;
                $("#price-dialog-title").textContent = `Prices of ${m.id}`;
                $("#price-prompt").value = m.price_prompt_ngonka;
                $("#price-completion").value = m.price_completion_ngonka;
                $("#price-error").textContent = "";
                dialog.showModal();
              },
            }, "Set prices"),
            el("button", {
              type: "button",
              class: "danger",
              "aria-label": `Remove stored price of ${m.id}`,
              onclick: () => attempt(async () => {
                const text = m.configured
                  ? "The model goes back to the prices in the config file."
                  : "The model has no price in the config file: it is no longer served.";
                if (!(await confirmAction(`Remove the stored price of ${m.id}?`, text, "Remove"))) return;
                const r = await api("DELETE", modelPath(m.id));
                await reload();
                say(r.price_override_removed ? `The stored price of ${m.id} is removed.` : `${m.id} had no stored price.`);
              }),
            }, "Remove stored price"),
          ),
        },
      ], models, "No models.");
    };
    $("#price-cancel").addEventListener("click", () => dialog.close());
    $("#price-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        const body = { price_prompt_ngonka: $("#price-prompt").value.trim(), price_completion_ngonka: $("#price-completion").value.trim() };
        await api("PUT", modelPath(model.id), body);
        dialog.close();
        await reload();
        say(`Prices of ${model.id} are saved.`);
      } catch (e) {
        $("#price-error").textContent = e.message;
      }
    });
    await reload();
  }

  async function adminNodesPage() {
    const nodes = (await api("GET", "/admin/nodes")).data;
    fillTable($("#nodes"), "Upstream nodes", [
      { label: "Node", cell: (n) => n.url },
      { label: "Kind", cell: (n) => n.kind },
      { label: "Models", cell: (n) => (n.models.length ? n.models.join(", ") : "all") },
      { label: "Health", cell: (n) => badge(n.health) },
      { label: "In flight", num: true, cell: (n) => count(n.outstanding) },
      { label: "Requests", num: true, cell: (n) => count(n.requests_total) },
      { label: "Failures", num: true, cell: (n) => count(n.failures_total) },
      { label: "Latency", num: true, cell: (n) => (n.first_byte_avg_us === null ? "—" : `${(n.first_byte_avg_us / 1000).toFixed(1)} ms`) },
    ], nodes, "No nodes configured.");
  }

  // ---- start ---------------------------------------------------------------------------------------

  const pages = {
    "sign-in": signInPage,
    "sign-up": signUpPage,
    overview: overviewPage,
    keys: keysPage,
    management: managementPage,
    usage: usagePage,
    "admin-overview": adminOverviewPage,
    "admin-accounts": adminAccountsPage,
    "admin-models": adminModelsPage,
    "admin-nodes": adminNodesPage,
  };
  wireSignOut();
  const run = pages[page];
  if (run) {
    Promise.resolve()
      .then(run)
      .then(() => document.body.setAttribute("data-ready", "true"))
      .catch((e) => {
        say(e.message || String(e), true);
        document.body.setAttribute("data-ready", "error");
      });
  }
})();
