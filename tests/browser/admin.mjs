// The admin dashboard in Chromium against a real gateway and simulator: sign in with the admin token;
// the headline metrics; create an account (its token shown once, and it works); credit it with a
// reference (once: the same reference again changes nothing); a referred account's paid credit pays
// its referrer, as its credit history shows; set a model's prices and remove them
// again; the upstream nodes with their health and latency; a forged form post from the public
// listener's origin refused; sign out and see the old session refused. Screenshots of every page at
// 1280 and 390 px and an axe check of each. Prints a JSON report on its last line.
//
// Environment: ADMIN_URL, ADMIN_TOKEN, GATEWAY_URL, API_KEY (a managed key), MODEL, ATTACKER_PORT, and
// what lib.mjs reads.
import { createServer } from "node:http";
import { assert, assertSecurityHeaders, call, chat, check, env, launch, newPage, noProblems, open, ready, shownSecret, storageIsEmpty } from "./lib.mjs";

const admin = env("ADMIN_URL");
const adminToken = env("ADMIN_TOKEN");
const gw = env("GATEWAY_URL");
const model = env("MODEL");
const report = { pages: [], steps: [] };

const statusSays = (page, text) =>
  page.waitForFunction((t) => document.querySelector("#status").textContent.includes(t), text, { timeout: 15000 });

const browser = await launch();
let server;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await newPage(context);
  const first = await page.goto(`${admin}/dashboard/accounts`);
  assert.equal(new URL(page.url()).pathname, "/dashboard/sign-in");
  assertSecurityHeaders(await first.allHeaders(), "the admin sign-in page");
  await ready(page);
  await check(page, "admin-sign-in", report);
  await page.fill("#token", "gadm-wrong");
  await page.press("#token", "Enter");
  await page.waitForFunction(() => document.querySelector("#sign-in-error").textContent.length > 0);
  await page.fill("#token", adminToken);
  await page.press("#token", "Enter");
  await page.waitForURL(`${admin}/dashboard`);
  await ready(page);
  const session = (await context.cookies(admin)).find((c) => c.name === "gonka_admin_session");
  assert.ok(session && session.httpOnly && session.sameSite === "Strict", JSON.stringify(session));
  assert.ok(!session.value.includes(adminToken), "the admin token is not the cookie");
  report.steps.push("signed in");

  // Headline metrics: a request through the gateway shows up in them.
  const c = await chat(gw, env("API_KEY"), "for the metrics");
  assert.equal(c.status, 200);
  await page.reload();
  await ready(page);
  const metrics = await page.textContent("#metrics");
  assert.match(metrics, /Nodes up1 of 1/, metrics);
  assert.match(await page.textContent("#requests"), /chat/);
  await check(page, "admin-overview", report);

  // Accounts: create one (its token shown once, and it is the account's), credit it once per reference.
  await open(page, `${admin}/dashboard/accounts`);
  await page.fill("#account-name", "browser customer");
  await page.click('#create-account button[type="submit"]');
  const accountToken = await shownSecret(page);
  assert.match(accountToken, /^gka-/);
  const balance = await call(gw, accountToken, "GET", "/api/balance");
  assert.deepEqual([balance.status, balance.body.balance_ngonka], [200, "0"]);
  const option = page.locator("#credit-account option", { hasText: "browser customer" });
  await page.selectOption("#credit-account", await option.getAttribute("value"));
  await page.fill("#credit-amount", "2.5");
  await page.fill("#credit-reference", "payment-1");
  await page.click('#credit button[type="submit"]');
  await statusSays(page, "Credited 2.5 GNK");
  await page.fill("#credit-amount", "2.5");
  await page.fill("#credit-reference", "payment-1");
  await page.click('#credit button[type="submit"]');
  await statusSays(page, "already credited");
  const after = await call(gw, accountToken, "GET", "/api/balance");
  assert.equal(after.body.balance_ngonka, "2500000000", "credited once");
  assert.match(await page.locator("#accounts tbody tr", { hasText: "browser customer" }).textContent(), /2\.5 GNK/);
  report.steps.push("created and credited an account");

  // Referrals: an account made with the customer's referral code; its paid credit pays the customer
  // 10 %, shown in the customer's credit history.
  const customer = (await call(admin, adminToken, "GET", "/admin/accounts")).body.data.find((a) => a.name === "browser customer");
  await page.fill("#account-name", "browser referred");
  await page.fill("#account-referral", customer.referral_code);
  await page.click('#create-account button[type="submit"]');
  await shownSecret(page);
  const referred = page.locator("#credit-account option", { hasText: "browser referred" });
  await page.selectOption("#credit-account", await referred.getAttribute("value"));
  await page.fill("#credit-amount", "10");
  await page.fill("#credit-reference", "payment-2");
  await page.check("#credit-paid");
  await page.click('#credit button[type="submit"]');
  await statusSays(page, "referral credits");
  await page.click('button[aria-label="Credit history of account browser customer"]');
  await page.waitForFunction(() => document.querySelector("#account-credits").textContent.includes("payment-2"));
  const history = await page.textContent("#account-credits");
  assert.match(history, /Referral credit/, history);
  assert.match(history, /1 GNK/, history);
  await check(page, "admin-accounts", report);
  report.steps.push("a referred account's paid credit paid its referrer");

  // Model prices: set in a dialog, then the stored price removed (back to the config's).
  await open(page, `${admin}/dashboard/models`);
  await page.click(`button[aria-label="Set prices of ${model}"]`);
  await page.waitForSelector("#price-dialog[open]");
  await page.fill("#price-prompt", "11");
  await page.fill("#price-completion", "23");
  await page.keyboard.press("Enter");
  await statusSays(page, "are saved");
  let listed = await call(admin, adminToken, "GET", "/admin/models");
  let m = listed.body.data.find((x) => x.id === model);
  assert.deepEqual([m.price_prompt_ngonka, m.price_completion_ngonka], ["11", "23"]);
  await check(page, "admin-models", report);
  await page.click(`button[aria-label="Remove stored price of ${model}"]`);
  await page.waitForSelector("#confirm[open]");
  await page.click("#confirm-ok");
  await statusSays(page, "is removed");
  listed = await call(admin, adminToken, "GET", "/admin/models");
  m = listed.body.data.find((x) => x.id === model);
  assert.deepEqual([m.price_prompt_ngonka, m.price_completion_ngonka], ["10", "20"], "the config's prices again");
  report.steps.push("set and removed a price");

  // Nodes: the simulator's node is up, with the latency of the requests it answered.
  await open(page, `${admin}/dashboard/nodes`);
  const node = await page.locator("#nodes tbody tr").first().locator("td").allTextContents();
  assert.equal(node[3], "up", `${node}`);
  assert.match(node[7], /^\d+\.\d ms$/, `latency: ${node}`);
  await check(page, "admin-nodes", report);

  // A forged form from the public listener's origin (same site as the admin listener) is refused.
  const port = Number(env("ATTACKER_PORT"));
  const html = `<!doctype html><html lang="en"><head><title>forged</title></head><body>
<form id="f" method="post" action="${admin}/admin/accounts" enctype="text/plain">
<input type="hidden" name='{"name":"forged","pad":"' value='"}'></form>
<script>document.getElementById("f").submit()</script></body></html>`;
  server = await new Promise((resolve) => {
    const s = createServer((_, res) => res.writeHead(200, { "Content-Type": "text/html" }).end(html));
    s.listen(port, "127.0.0.1", () => resolve(s));
  });
  const forged = await context.newPage();
  await forged.goto(`http://127.0.0.1:${port}/`);
  await forged.waitForURL(`${admin}/admin/accounts`);
  const refused = JSON.parse(await forged.textContent("body"));
  assert.equal(refused.error.code, "cross_site_request", JSON.stringify(refused));
  const accounts = await call(admin, adminToken, "GET", "/admin/accounts");
  assert.ok(!accounts.body.data.some((a) => a.name === "forged"), "no forged account");
  await forged.close();
  report.steps.push("forged form post refused");

  // Sign out: the old session no longer opens pages or calls the admin API.
  await storageIsEmpty(page);
  noProblems(page);
  await page.click("#sign-out button");
  await page.waitForURL(`${admin}/dashboard/sign-in`);
  const other = await browser.newContext();
  await other.addCookies([{ name: session.name, value: session.value, url: admin, httpOnly: true, sameSite: "Strict" }]);
  const otherPage = await other.newPage();
  await otherPage.goto(`${admin}/dashboard/nodes`);
  assert.equal(new URL(otherPage.url()).pathname, "/dashboard/sign-in");
  assert.equal(await otherPage.evaluate(async () => (await fetch("/admin/accounts")).status), 401);
  await other.close();
  report.steps.push("signed out: the old session is refused");
  report.session = session.value;
  report.account_token = accountToken;
} finally {
  await browser.close();
  if (server) server.close();
}
console.log(JSON.stringify(report));
