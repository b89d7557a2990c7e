// Drives the web console in Debian's chromium through a fleet's two control planes
// (`paddock control`): log in through the first, create a sandbox and see it running on the
// Sandboxes page, see every node on the Nodes page; on the second control plane the browser
// is still logged in (sessions live in the fleet's store); kill there, log out there, and
// the first one asks for a key again. Run by crates/paddock/tests/console.rs with:
//   PADDOCK_URL, PADDOCK_URL2, PADDOCK_ADMIN_KEY, PADDOCK_NODE_IDS (comma-separated),
//   SCREENSHOT_DIR [, CHROMIUM]
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.env.PADDOCK_URL;
const url2 = process.env.PADDOCK_URL2;
const adminKey = process.env.PADDOCK_ADMIN_KEY;
const nodeIds = (process.env.PADDOCK_NODE_IDS ?? "").split(",").filter(Boolean);
const shots = process.env.SCREENSHOT_DIR;
if (!url || !url2 || !adminKey || !nodeIds.length || !shots) throw new Error("PADDOCK_URL, PADDOCK_URL2, PADDOCK_ADMIN_KEY, PADDOCK_NODE_IDS and SCREENSHOT_DIR are needed");
mkdirSync(shots, { recursive: true });

const T = 60_000;
const step = (s) => console.log(`console fleet e2e: ${s}`);
const assert = (c, m) => {
  if (!c) throw new Error(`assertion failed: ${m}`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await context.newPage();
page.setDefaultTimeout(T);
page.on("dialog", (d) => d.accept());
page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const status = (path) => page.evaluate(async (p) => (await fetch(p)).status, path);

try {
  step("log in through the first control plane");
  await page.goto(url);
  await page.waitForSelector("#api-key");
  await page.fill("#api-key", adminKey);
  await page.click("button[type=submit]");
  await page.waitForSelector("h1:text('Sandboxes')");

  step("create through it");
  await page.click("summary:text('New sandbox')");
  await page.fill("#create-template", "base");
  await page.fill("#create-timeout", "600");
  await page.click("form.grid-form button[type=submit]");
  const created = await page.waitForSelector(".notice.ok:has-text('Created')");
  const id = (await created.textContent()).match(/Created ([a-z0-9]+)/)[1];
  step(`created ${id}`);
  await page.waitForSelector(`tr[data-id='${id}'] .state.running`);
  await shot("fleet-01-sandboxes");

  step("nodes");
  await page.click("nav a:text('Nodes')");
  for (const n of nodeIds) await page.waitForSelector(`tr[data-node='${n}'] .state:text('ready')`);
  assert((await page.locator("#nodes-single-host").count()) === 0, "a fleet is not a single host");
  await shot("fleet-02-nodes");

  step("the second control plane: still logged in");
  await page.goto(`${url2}/#/admin/nodes`);
  for (const n of nodeIds) await page.waitForSelector(`tr[data-node='${n}'] .state:text('ready')`);
  assert((await page.locator("#api-key").count()) === 0, "no login form on the second control plane");
  await shot("fleet-03-nodes-second-control");
  await page.goto(`${url2}/#/sandboxes/${id}`);
  await page.waitForSelector("#sandbox-state:text('running')");
  await page.click("#kill");
  await page.waitForSelector("#sandbox-state:text('stopped')");
  await shot("fleet-04-killed-second-control");

  step("log out through the second; the first asks for a key again");
  await page.click("button:text('Log out')");
  await page.waitForSelector("#api-key");
  await page.goto(url);
  await page.waitForSelector("#api-key");
  const after = await status("/v1/sandboxes");
  assert(after === 401, `through the first after logout: ${after}`);
  await shot("fleet-05-logged-out");
  console.log("console fleet e2e: all steps passed");
} catch (e) {
  await shot("fleet-failure").catch(() => {});
  console.log(`console fleet e2e: FAILED: ${e.stack ?? e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
