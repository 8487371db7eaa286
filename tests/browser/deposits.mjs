// Deposits on the dashboards in Chromium: signed in with the account token, the overview shows the
// account's deposit address and terms, and the deposit the test made, credited; signed in with the admin
// token, the accounts page shows the account's deposit address. Screenshots at 1280 and 390 px and an
// axe check of each. Prints a JSON report on its last line.
//
// Environment: GATEWAY_URL, ADMIN_URL, ACCOUNT_TOKEN, ADMIN_TOKEN, DEPOSIT_ADDRESS, TX_HASH, and what
// lib.mjs reads.
import { assert, check, env, launch, newPage, ready } from "./lib.mjs";

const gw = env("GATEWAY_URL");
const report = { pages: [] };
const browser = await launch();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await newPage(context);
  await page.goto(`${gw}/dashboard/sign-in`);
  await ready(page);
  await page.fill("#token", env("ACCOUNT_TOKEN"));
  await page.press("#token", "Enter");
  await page.waitForURL(`${gw}/dashboard`);
  await ready(page);
  await page.waitForSelector("#deposits:not([hidden])", { timeout: 15000 });
  assert.equal((await page.textContent("#deposit-address")).trim(), env("DEPOSIT_ADDRESS"));
  assert.match(await page.textContent("#deposit-terms"), /1:1 after 1 confirmation\./);
  const row = page.locator("#deposit-list tbody tr", { has: page.locator(`code[title="${env("TX_HASH")}"]`) });
  assert.equal(await row.count(), 1, "the deposit is listed");
  assert.match(await row.textContent(), /credited/);
  assert.match(await row.textContent(), /0\.000003 GNK/);
  await check(page, "account-overview-deposits", report);

  const admin = await newPage(await browser.newContext({ viewport: { width: 1280, height: 900 } }));
  await admin.goto(`${env("ADMIN_URL")}/dashboard/sign-in`);
  await ready(admin);
  await admin.fill("#token", env("ADMIN_TOKEN"));
  await admin.press("#token", "Enter");
  await admin.waitForURL(`${env("ADMIN_URL")}/dashboard`);
  await admin.goto(`${env("ADMIN_URL")}/dashboard/accounts`);
  await ready(admin);
  assert.match(await admin.textContent("#accounts"), new RegExp(env("DEPOSIT_ADDRESS")));
  await check(admin, "admin-accounts-deposits", report);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
