// The account dashboard in Chromium, end to end against a real gateway and simulator: sign up with a
// referral code; sign in; create a
// managed key and use the secret the page shows for a chat completion; pause it in the page and see
// inference refused, resume it and see it work; rotate it and see the old secret refused; create a
// management key and a child key with a daily limit, send traffic, and see its progress bar and the
// usage chart change; the referral code and credit history on the overview; archive with a confirmation; forged form posts from another origin and from
// another site refused; sign out and see the pages refuse the old session. Screenshots of every page
// at 1280 and 390 px and an axe check of each. Prints a JSON report on its last line.
//
// The gateway has [signup] enabled.
//
// Environment: GATEWAY_URL, ACCOUNT_TOKEN, MODEL, ATTACKER_PORT (a free port for the forged pages),
// and what lib.mjs reads.
import { createServer } from "node:http";
import {
  accessible, assert, assertSecurityHeaders, call, chat, check, confirmByKeyboard, env, launch, newPage, noProblems,
  open, ready, shownSecret, storageIsEmpty,
} from "./lib.mjs";

const gw = env("GATEWAY_URL");
const token = env("ACCOUNT_TOKEN");
const report = { pages: [], steps: [] };
const step = (what) => report.steps.push(what);

const statusSays = (page, text) =>
  page.waitForFunction((t) => document.querySelector("#status").textContent.includes(t), text, { timeout: 15000 });

/** Pages on another origin that post a forged form to the gateway as soon as they load. */
function attacker(host, port, target) {
  const html = `<!doctype html><html lang="en"><head><title>forged</title></head><body>
<form id="f" method="post" action="${target}" enctype="text/plain">
<input type="hidden" name='{"name":"forged","pad":"' value='"}'></form>
<script>document.getElementById("f").submit()</script></body></html>`;
  const server = createServer((_, res) => {
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end(html);
  });
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)));
}

async function forgedPost(context, origin) {
  const p = await context.newPage();
  await p.goto(origin);
  await p.waitForURL(`${gw}/api/keys`, { timeout: 15000 });
  const text = await p.textContent("body");
  await p.close();
  return JSON.parse(text);
}

const browser = await launch();
const servers = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await newPage(context);

  // Without a session every page sends the browser to the sign-in.
  const first = await page.goto(`${gw}/dashboard/keys`);
  assert.equal(new URL(page.url()).pathname, "/dashboard/sign-in");
  const headers = await first.allHeaders();
  assertSecurityHeaders(headers, "the sign-in page");
  assert.equal(headers["cache-control"], "no-store");
  await ready(page);
  await check(page, "account-sign-in", report);

  // Sign-up (enabled on this gateway) from a shared link naming the referrer: the new account's token
  // is shown once, it works, and the account was referred by the code's account.
  const referrer = (await call(gw, token, "GET", "/api/account")).body;
  await page.click('a[href="/dashboard/sign-up"]');
  await page.goto(`${gw}/dashboard/sign-up?ref=${referrer.referral_code}`);
  await ready(page);
  assert.equal(await page.inputValue("#signup-code"), referrer.referral_code);
  await page.fill("#signup-name", "browser sign-up");
  await page.click('#sign-up button[type="submit"]');
  const newToken = await shownSecret(page);
  assert.match(newToken, /^gka-/);
  const signedUp = await call(gw, newToken, "GET", "/api/account");
  assert.deepEqual([signedUp.status, signedUp.body.name, signedUp.body.referrer_id], [200, "browser sign-up", referrer.id]);
  await check(page, "account-sign-up", report);
  step("signed up with a referral code");
  await page.goto(`${gw}/dashboard/sign-in`);
  await ready(page);

  // A wrong token is refused on the page; the right one, typed and sent with Enter, signs in.
  await page.fill("#token", "gka-not-a-real-token");
  await page.press("#token", "Enter");
  await page.waitForFunction(() => document.querySelector("#sign-in-error").textContent.length > 0);
  assert.match(await page.textContent("#sign-in-error"), /not a valid account token/);
  await page.fill("#token", token);
  await page.press("#token", "Enter");
  await page.waitForURL(`${gw}/dashboard`);
  await ready(page);
  const cookies = await context.cookies(gw);
  const session = cookies.find((c) => c.name === "gonka_session");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.ok(session.expires > Date.now() / 1000, "the session expires");
  assert.match(session.value, /^gds-/);
  assert.ok(!cookies.some((c) => c.value.includes(token)), "the account token is not kept");
  assert.ok(!(await page.content()).includes(token), "nor in the page");
  await storageIsEmpty(page);
  step("signed in");

  // A managed key, made by keyboard; the secret it shows works for a real chat completion.
  await open(page, `${gw}/dashboard/keys`);
  await page.focus("#key-name");
  await page.keyboard.type("browser key");
  await page.keyboard.press("Enter");
  const secret = await shownSecret(page);
  assert.match(secret, /^gk-prx-/);
  let c = await chat(gw, secret, "Hello from the dashboard");
  assert.equal(c.status, 200, JSON.stringify(c.body));
  step("created a managed key and chatted with it");

  // Paused in the page: the next request is refused; resumed: it works again.
  await page.click('button[aria-label="Pause key browser key"]');
  await statusSays(page, "is paused");
  c = await chat(gw, secret, "while paused");
  assert.deepEqual([c.status, c.code], [403, "key_paused"]);
  await page.click('button[aria-label="Resume key browser key"]');
  await statusSays(page, "is active again");
  c = await chat(gw, secret, "after resuming");
  assert.equal(c.status, 200);
  step("paused and resumed in the page");

  // Its models, in the Models dialog: a name the gateway does not have is refused in the dialog; the
  // served model is kept and shown; cleared, it may use every model again.
  await page.click('button[aria-label="Models of key browser key"]');
  await page.waitForSelector("#models-dialog[open]");
  await page.fill("#models-input", "no/such-model");
  await page.click("#models-save");
  await page.waitForFunction(() => document.querySelector("#models-error").textContent.includes("not a model"));
  await page.fill("#models-input", env("MODEL"));
  await page.keyboard.press("Enter");
  await statusSays(page, `may use ${env("MODEL")}`);
  const modelsCell = async () =>
    (await page.locator("#keys tbody tr", { hasText: "browser key" }).locator("td").allTextContents())[3];
  assert.equal(await modelsCell(), env("MODEL"));
  c = await chat(gw, secret, "within its models");
  assert.equal(c.status, 200, JSON.stringify(c.body));
  await page.click('button[aria-label="Models of key browser key"]');
  await page.waitForSelector("#models-dialog[open]");
  await page.fill("#models-input", "");
  await page.click("#models-save");
  await statusSays(page, "may use every model");
  assert.equal(await modelsCell(), "every model");
  step("set and cleared the key's models");

  // Rotated in the page (confirmed by keyboard): the old secret is refused, the new one works.
  await page.click('button[aria-label="Rotate key browser key"]');
  await confirmByKeyboard(page, /stops working at once/);
  await page.waitForFunction((old) => {
    const v = document.querySelector("#secret-value");
    return v && v.textContent.trim() !== old;
  }, secret);
  const rotated = await shownSecret(page);
  assert.notEqual(rotated, secret);
  c = await chat(gw, secret, "with the old secret");
  assert.deepEqual([c.status, c.code], [401, "invalid_api_key"]);
  c = await chat(gw, rotated, "with the new secret");
  assert.equal(c.status, 200);
  step("rotated: the old secret is refused");
  await page.reload();
  await ready(page);
  const row = page.locator("#keys tbody tr", { hasText: "browser key" });
  const cells = await row.locator("td").allTextContents();
  assert.match(cells[5], /UTC/, `last used: ${cells}`);
  assert.match(cells[6], /[1-9].* GNK/, `spend: ${cells}`);
  // A direct key (made through the API: its private key is for the SDK) is listed with its address.
  const made = await fetch(`${gw}/api/direct-keys`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ name: "sdk laptop" }),
  });
  assert.equal(made.status, 201);
  const direct = await made.json();
  await page.reload();
  await ready(page);
  const directRow = page.locator("#direct-keys tbody tr", { hasText: "sdk laptop" });
  const directCells = await directRow.locator("td").allTextContents();
  assert.equal(directCells[1].trim(), direct.address, `address: ${directCells}`);
  assert.match(directCells[2], /active/, `status: ${directCells}`);
  assert.ok(!(await page.content()).includes(direct.private_key), "the private key is not in the page");
  step("a direct key is listed");
  await check(page, "account-keys", report);

  // A management key and a child key with a daily limit.
  await open(page, `${gw}/dashboard/management`);
  await page.fill("#mgmt-name", "team");
  await page.click('#create-mgmt button[type="submit"]');
  assert.match(await shownSecret(page), /^gm-/);
  await page.click('button[aria-label="New child key of team"]');
  await page.waitForSelector("#child-dialog[open]");
  await page.fill("#child-name", "child one");
  await page.fill("#child-daily", "0.00005");
  await page.click("#child-save");
  await page.waitForSelector("#child-dialog[open]", { state: "detached" });
  // The management key's secret is still shown until the page has reloaded its keys.
  await page.waitForFunction(() => (document.querySelector("#secret-value") || {}).textContent?.trim().startsWith("gc-"));
  const child = await shownSecret(page);
  assert.match(child, /^gc-/);
  const dailyBar = 'progress[aria-label^="daily limit used"]';
  assert.equal(Number(await page.getAttribute(dailyBar, "value")), 0);
  assert.match(await page.textContent("#mgmt-list"), /0 GNK of 0\.00005 GNK/);

  // The usage chart before traffic.
  const chartTotal = (p, id) =>
    p.evaluate((canvas) => Chart.getChart(document.querySelector(canvas)).data.datasets[0].data.reduce((a, b) => a + b, 0), id);
  const usagePage = await newPage(context);
  await open(usagePage, `${gw}/dashboard/usage`);
  const before = await chartTotal(usagePage, "#by-key-chart");
  assert.doesNotMatch(await usagePage.textContent("#by-key-table"), /child one/);

  for (let i = 0; i < 3; i++) {
    c = await chat(gw, child, `child request ${i}`);
    assert.equal(c.status, 200, JSON.stringify(c.body));
  }
  await page.reload();
  await ready(page);
  const spent = Number(await page.getAttribute(dailyBar, "value"));
  const max = Number(await page.getAttribute(dailyBar, "max"));
  assert.ok(spent > 0 && spent <= max, `the daily bar moved: ${spent} of ${max}`);
  assert.match(await page.textContent("#mgmt-list"), /left · resets \d{4}-\d\d-\d\d 00:00 UTC/);
  await usagePage.reload();
  await ready(usagePage);
  const after = await chartTotal(usagePage, "#by-key-chart");
  assert.ok(after > before, `the usage chart moved: ${before} → ${after}`);
  assert.match(await usagePage.textContent("#by-key-table"), /child one/);
  step("child traffic moved its progress bar and the usage chart");
  await check(usagePage, "account-usage", report);

  // The CSV export of a chart's table.
  const [download] = await Promise.all([usagePage.waitForEvent("download"), usagePage.click("#by-key button")]);
  const csvPath = `${env("SCREENSHOTS")}/usage-by-key.csv`;
  await download.saveAs(csvPath);
  await usagePage.close();

  // Edit the child's limits and rpm in the dialog, by keyboard; pause it: its next request is refused.
  await page.click('button[aria-label="Edit child key child one"]');
  await page.waitForSelector("#child-dialog[open]");
  await page.fill("#child-rpm", "30");
  await page.fill("#child-monthly", "1");
  await page.focus("#child-save");
  await page.keyboard.press("Enter");
  await statusSays(page, "is saved");
  const childRow = await page.locator("#mgmt-list tbody tr", { hasText: "child one" }).locator("td").allTextContents();
  assert.equal(childRow[4], "30", `rpm: ${childRow}`);
  assert.match(childRow[3], /of 1 GNK/, `monthly: ${childRow}`);
  await page.click('button[aria-label="Pause child key child one"]');
  await statusSays(page, "is paused");
  c = await chat(gw, child, "paused child");
  assert.deepEqual([c.status, c.code], [403, "key_paused"]);
  await check(page, "account-management", report);
  step("edited and paused the child key");

  // The overview: balance, spend, the daily chart, top keys and models.
  await open(page, `${gw}/dashboard`);
  assert.match(await page.textContent("#balance"), / GNK$/);
  assert.equal((await page.textContent("#account-status")).trim(), "active");
  assert.match(await page.textContent("#spent-today"), /[1-9].* GNK$/);
  assert.ok((await chartTotal(page, "#daily-chart")) > 0, "the daily chart shows today's spend");
  assert.match(await page.textContent("#top-keys"), /browser key/);
  assert.match(await page.textContent("#top-models"), new RegExp(env("MODEL")));
  // Its referral code and its credit history (the credit the test gateway starts it with).
  const me = await call(gw, token, "GET", "/api/account");
  assert.equal(await page.textContent("#referral-code"), me.body.referral_code);
  assert.match(await page.textContent("#credits"), /test-initial/);
  await check(page, "account-overview", report);

  // Archive, confirmed by keyboard: the confirmation says it cannot be undone.
  await open(page, `${gw}/dashboard/keys`);
  await page.click('button[aria-label="Archive key browser key"]');
  await confirmByKeyboard(page, /cannot be undone/);
  await statusSays(page, "is archived");
  c = await chat(gw, rotated, "archived");
  assert.deepEqual([c.status, c.code], [401, "invalid_api_key"]);
  step("archived");

  // Forged form posts: from another origin of the same site (the browser sends the SameSite cookie,
  // the gateway refuses the request), and from another site (the browser does not send the cookie).
  const port = Number(env("ATTACKER_PORT"));
  servers.push(await attacker("127.0.0.1", port, `${gw}/api/keys`));
  servers.push(await attacker("127.0.0.2", port, `${gw}/api/keys`));
  const sameSite = await forgedPost(context, `http://127.0.0.1:${port}/`);
  assert.equal(sameSite.error.code, "cross_site_request", JSON.stringify(sameSite));
  const crossSite = await forgedPost(context, `http://127.0.0.2:${port}/`);
  assert.equal(crossSite.error.code, "invalid_api_key", JSON.stringify(crossSite));
  const keys = await call(gw, token, "GET", "/api/keys");
  assert.ok(!keys.body.data.some((k) => k.name === "forged"), "no forged key was made");
  step("forged form posts refused");

  // Sign out: the pages refuse the old session, in this browser and in a fresh one holding its cookie.
  await storageIsEmpty(page);
  noProblems(page);
  await page.click("#sign-out button");
  await page.waitForURL(`${gw}/dashboard/sign-in`);
  await page.goto(`${gw}/dashboard/keys`);
  assert.equal(new URL(page.url()).pathname, "/dashboard/sign-in");
  const other = await browser.newContext();
  await other.addCookies([{ name: "gonka_session", value: session.value, url: gw, httpOnly: true, sameSite: "Strict" }]);
  const otherPage = await other.newPage();
  await otherPage.goto(`${gw}/dashboard/management`);
  assert.equal(new URL(otherPage.url()).pathname, "/dashboard/sign-in", "the old session no longer opens pages");
  const api = await otherPage.evaluate(async () => (await fetch("/api/keys")).status);
  assert.equal(api, 401, "nor calls the API");
  await other.close();
  step("signed out: the old session is refused");
  await accessible(page, "account-sign-in after sign-out");

  report.session = session.value;
  report.secrets = { old: secret, rotated, child };
  report.csv = csvPath;
} finally {
  await browser.close();
  for (const s of servers) s.close();
}
console.log(JSON.stringify(report));
