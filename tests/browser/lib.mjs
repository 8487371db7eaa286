// What the dashboard's browser tests share: Chromium through Playwright, screenshots at two widths, the
// axe-core accessibility check, a watch for Content-Security-Policy violations, and small HTTP helpers
// that talk to the gateway the way any client would. Run by tests/dashboard.rs with:
// CHROMIUM (the browser), NODE_DEPS (node_modules with playwright-core and axe-core), SCREENSHOTS (dir).
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";

const require = createRequire(join(process.env.NODE_DEPS, "package.json"));
const { chromium } = require("playwright-core");
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

export { assert };
export const env = (name) => {
  const v = process.env[name];
  assert.ok(v, `${name} is not set`);
  return v;
};

export const WIDTHS = [1280, 390];

/** Chromium headless, as the tests run it. */
export async function launch() {
  return chromium.launch({
    executablePath: env("CHROMIUM"),
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
  });
}

/**
 * A new page that fails the test on any CSP violation or script error it reports, and records what
 * the page logged (for the failure message).
 */
export async function newPage(context) {
  const page = await context.newPage();
  page.problems = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource: the server responded with a status of (4\d\d)/.test(m.text())) {
      page.problems.push(`console: ${m.text()}`);
    }
  });
  page.on("pageerror", (e) => page.problems.push(`page error: ${e.message}`));
  return page;
}

export function noProblems(page) {
  assert.deepEqual(page.problems, [], `the page reported problems (CSP violations, script errors)`);
}

/** Waits until the page's script has filled it (or failed, which fails the test with its message). */
export async function ready(page) {
  await page.waitForSelector("body[data-ready]", { timeout: 20000 });
  const state = await page.getAttribute("body", "data-ready");
  const status = await page.textContent("#status").catch(() => "");
  assert.equal(state, "true", `the page did not load: ${status}`);
}

/** Opens `url` and waits for it to be filled. */
export async function open(page, url) {
  await page.goto(url);
  await ready(page);
}

/** Screenshots of the page at 1280 and 390 px, as `<name>-<width>.png`; returns the paths. */
export async function screenshots(page, name) {
  const dir = env("SCREENSHOTS");
  mkdirSync(dir, { recursive: true });
  const paths = [];
  const size = page.viewportSize();
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 900 });
    await page.waitForTimeout(150); // charts resize on the next frame
    const path = join(dir, `${name}-${width}.png`);
    await page.screenshot({ path, fullPage: true });
    paths.push(path);
    // Nothing may be wider than the window (a table scrolls inside its own box).
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 1, `${name} at ${width} px is ${overflow} px wider than the window`);
  }
  await page.setViewportSize(size);
  return paths;
}

/**
 * The axe-core check of the page as it is now: no serious or critical violation. axe is evaluated
 * through the DevTools protocol, so the page's CSP (which allows no injected script) stays on.
 */
export async function accessible(page, name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
  const bad = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad, [], `${name}: serious or critical accessibility violations`);
  return result;
}

/** A page's screenshots and accessibility check, recorded into `report`. */
export async function check(page, name, report) {
  noProblems(page);
  const shots = await screenshots(page, name);
  const violations = await accessible(page, name);
  report.pages.push({ name, url: page.url(), screenshots: shots, minor_violations: violations.map((v) => v.id) });
}

/** Security headers every dashboard answer must carry. */
export function assertSecurityHeaders(headers, what) {
  const csp = headers["content-security-policy"] || "";
  assert.match(csp, /script-src 'self'/, `${what}: CSP ${csp}`);
  assert.match(csp, /frame-ancestors 'none'/, `${what}: CSP ${csp}`);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, `${what}: CSP ${csp}`);
  assert.equal(headers["x-content-type-options"], "nosniff", what);
}

/** A chat completion with `key` through the gateway: its status and error code. */
export async function chat(gateway, key, content) {
  const r = await fetch(`${gateway}/v1/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model: env("MODEL"), max_tokens: 16, messages: [{ role: "user", content }] }),
  });
  const body = await r.json().catch(() => null);
  return { status: r.status, code: body && body.error ? body.error.code : null, body };
}

/** A call of the account or admin API with a bearer token. */
export async function call(base, token, method, path, body) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

/** The secret the page shows once, after an action that made one. */
export async function shownSecret(page) {
  await page.waitForSelector("#secret-value");
  const text = (await page.textContent("#secret-value")).trim();
  assert.ok(await page.isVisible("#copy-secret"), "a copy button beside the secret");
  assert.match(await page.textContent(".secret .warning"), /shown only this once/);
  return text;
}

/** Answers the page's confirmation dialog by keyboard: Tab to the confirming button, Enter. */
export async function confirmByKeyboard(page, expectText) {
  await page.waitForSelector("#confirm[open]");
  if (expectText) assert.match(await page.textContent("#confirm-text"), expectText);
  await page.focus("#confirm-ok");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#confirm[open]", { state: "detached" });
}

/** Nothing in the page's storage (no token, no key, no session). */
export async function storageIsEmpty(page) {
  const sizes = await page.evaluate(() => [localStorage.length, sessionStorage.length]);
  assert.deepEqual(sizes, [0, 0], "localStorage and sessionStorage stay empty");
}
