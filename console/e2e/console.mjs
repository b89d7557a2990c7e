// Drives the web console in Debian's chromium (headless, no browser download) against a
// real `paddock serve`. Run by crates/paddock/tests/console.rs with:
//   PADDOCK_URL, PADDOCK_ADMIN_KEY, PADDOCK_USER_KEY, SCREENSHOT_DIR [, CHROMIUM]
// Every step of the console's acceptance list is here; each page is saved as a screenshot.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const url = process.env.PADDOCK_URL;
const adminKey = process.env.PADDOCK_ADMIN_KEY;
const userKey = process.env.PADDOCK_USER_KEY;
const shots = process.env.SCREENSHOT_DIR;
if (!url || !adminKey || !userKey || !shots) throw new Error("PADDOCK_URL, PADDOCK_ADMIN_KEY, PADDOCK_USER_KEY and SCREENSHOT_DIR are needed");
mkdirSync(shots, { recursive: true });

const T = 60_000;
const step = (s) => console.log(`console e2e: ${s}`);
const assert = (c, m) => {
  if (!c) throw new Error(`assertion failed: ${m}`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
// The console must not reach any other host: record every request that leaves for one.
const foreign = [];
context.on("request", (r) => {
  const u = new URL(r.url());
  if (u.origin !== new URL(url).origin && u.protocol.startsWith("http") && u.hostname !== "evil.test") foreign.push(r.url());
});
const page = await context.newPage();
page.setDefaultTimeout(T);
page.on("dialog", (d) => d.accept());
page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const api = (method, path, body) =>
  page.evaluate(
    async ([m, p, b]) => {
      const r = await fetch(p, { method: m, body: b, headers: b ? { "Content-Type": "application/json" } : {} });
      return { status: r.status, body: await r.text() };
    },
    [method, path, body ? JSON.stringify(body) : undefined],
  );

try {
  // Log in.
  step("log in");
  await page.goto(url);
  await page.waitForSelector("#api-key");
  await shot("01-login");
  await page.fill("#api-key", adminKey);
  await page.click("button[type=submit]");
  await page.waitForSelector("h1:text('Sandboxes')");
  const stored = await page.evaluate(() => [JSON.stringify(localStorage), JSON.stringify(sessionStorage), document.cookie]);
  assert(!stored.join("").includes(adminKey.slice(4)), "the key is not kept in browser storage");
  assert(!stored[2].includes("paddock_session"), "the session cookie is HttpOnly");
  assert((await page.textContent("header.top")).includes("admin"), "the header says admin");

  // Create a sandbox and see it listed.
  step("create");
  await page.click("summary:text('New sandbox')");
  await page.fill("#create-template", "base");
  await page.fill("#create-timeout", "600");
  await page.fill("#create-metadata", "suite=console");
  await page.click("form.grid-form button[type=submit]");
  const created = await page.waitForSelector(".notice.ok:has-text('Created')");
  const id = (await created.textContent()).match(/Created ([a-z0-9]+)/)[1];
  step(`created ${id}`);
  await page.waitForSelector(`tr[data-id='${id}'] .state.running`);
  await page.fill("#filter-metadata", "suite=console");
  await page.dispatchEvent("#filter-metadata", "change");
  await page.waitForSelector(`tr[data-id='${id}']`);
  await shot("02-sandboxes");

  // The list's refreshes keep the row's link, and the keyboard focus on it: a refresh that
  // replaced it between a click's press and release made that click nothing (CI once waited
  // 60 s for a detail page that was never opened).
  step("the list refreshes under a focused link");
  const link = await page.$(`a[href='#/sandboxes/${id}']`);
  await link.focus();
  const polls = Number(await page.getAttribute("table.list", "data-polls"));
  await page.waitForFunction((n) => Number(document.querySelector("table.list").dataset.polls) >= n + 2, polls);
  assert(await link.evaluate((a) => a.isConnected && document.activeElement === a), "a refresh of the list replaced the focused link");

  // Open its detail (from the keyboard) and see a chart draw.
  step("detail and charts");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#sandbox-state:text('running')");
  await page.waitForFunction(() => Number(document.querySelector(".charts")?.dataset.samples ?? 0) >= 3, null, { timeout: T });
  // Pixels of the memory series' colour (#10b981) on the memory chart's canvas.
  const drawn = await page.waitForFunction(
    () => {
      const c = document.querySelectorAll(".chart canvas")[1];
      if (!c) return 0;
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 16) < 30 && Math.abs(d[i + 1] - 185) < 30 && Math.abs(d[i + 2] - 129) < 30 && d[i + 3] > 200) n++;
      return n > 20 ? n : 0;
    },
    null,
    { timeout: T },
  );
  step(`chart pixels: ${await drawn.jsonValue()}`);
  await shot("03-detail");

  // Terminal: type a command, read its output back.
  step("terminal");
  await page.click("#tab-terminal");
  await page.waitForSelector("text=Connected.");
  await page.click("#terminal");
  await page.keyboard.type("echo console-$((6*7))\n");
  await page.waitForFunction(() => (document.querySelector("#terminal .xterm-rows")?.textContent ?? "").includes("console-42"), null, { timeout: T });
  await shot("04-terminal");

  // Files: upload, list, download, delete.
  step("files");
  await page.click("#tab-files");
  await page.fill("#files-path", "/tmp");
  await page.press("#files-path", "Enter");
  const content = `hello from the console ${Date.now()}\n`;
  await page.setInputFiles("#files-upload", { name: "hello.txt", mimeType: "text/plain", buffer: Buffer.from(content) });
  await page.waitForSelector(".notice.ok:has-text('Uploaded hello.txt')");
  await page.waitForSelector("tr[data-name='hello.txt']");
  await shot("05-files");
  const [dl] = await Promise.all([page.waitForEvent("download"), page.click("tr[data-name='hello.txt'] a")]);
  const got = readFileSync(await dl.path(), "utf8");
  assert(got === content, `downloaded ${JSON.stringify(got)}`);
  await page.click("tr[data-name='hello.txt'] button.danger");
  await page.waitForSelector("tr[data-name='hello.txt']", { state: "detached" });

  step("ports, activity");
  await page.click("#tab-ports");
  await page.waitForSelector("h2:text('Network policy')");
  await shot("06-ports");
  await page.click("#tab-activity");
  await page.waitForSelector("h2:text('Command history')");
  await shot("07-activity");

  step("templates and admin pages");
  await page.click("nav a:text('Templates')");
  await page.waitForSelector("td:text('base')");
  // Build a small template with live progress, see it listed, delete it.
  await page.click("summary:text('Build from a build file')");
  await page.fill("#build-name", "console-e2e");
  await page.fill("#build-file", "FROM base\nENV GREETING=hello\nWORKDIR /tmp\n");
  await page.click("form:has(#build-name) button[type=submit]");
  await page.waitForSelector(".notice:has-text('build of console-e2e')", { timeout: 180_000 });
  const buildLog = await page.textContent("#template-log");
  assert(/\[1\/\d\] FROM base/.test(buildLog) && buildLog.includes("done: console-e2e"), `build log: ${buildLog}`);
  await page.waitForSelector("tr[data-template='console-e2e']");
  await shot("08-templates");
  await page.click("tr[data-template='console-e2e'] button.danger");
  await page.waitForSelector("tr[data-template='console-e2e']", { state: "detached" });
  await page.click("nav a:text('Keys')");
  await page.waitForSelector("tr[data-key]");
  // Create a key (its secret shown once), then revoke it.
  await page.click("summary:text('New key')");
  await page.fill("#key-name", "made-in-the-console");
  await page.click("form:has(#key-name) button[type=submit]");
  const secret = await page.textContent("#new-key-secret");
  assert(/^pdk_[0-9a-f]{40}$/.test(secret), `new key ${secret}`);
  await shot("09-keys");
  const row = page.locator("tr:has(td:text-is('made-in-the-console'))");
  await row.locator("button.danger").click();
  await page.waitForFunction(() => [...document.querySelectorAll("tr")].some((r) => r.textContent.includes("made-in-the-console") && !r.querySelector("button.danger")));
  const check = await fetch(`${url}/v1/sandboxes`, { headers: { Authorization: `Bearer ${secret}` } });
  assert(check.status === 401, `a revoked key answers ${check.status}`);
  await page.click("nav a:text('Audit')");
  await page.waitForSelector("td:text('sandbox.create')");
  await shot("10-audit");
  await page.click("nav a:text('Events')");
  await page.waitForSelector("text=Live.");
  // A sandbox made and killed meanwhile (by the page's own session, with its CSRF token)
  // shows up live.
  const other = await page.evaluate(async () => {
    const csrf = (await (await fetch("/v1/session")).json()).csrf_token;
    const h = { "Content-Type": "application/json", "X-CSRF-Token": csrf };
    const s = await (await fetch("/v1/sandboxes", { method: "POST", headers: h, body: '{"template":"base"}' })).json();
    await fetch(`/v1/sandboxes/${s.id}`, { method: "DELETE", headers: h });
    return s.id;
  });
  await page.waitForSelector(`tr:has(a[href='#/sandboxes/${other}']):has(td:text('created'))`);
  await page.waitForSelector(`tr:has(a[href='#/sandboxes/${other}']):has(td:text('killed'))`);
  await shot("11-events");
  await page.click("nav a:text('Status')");
  await page.waitForSelector("h2:text('Host')");
  await shot("12-status");
  // Nodes: on paddock serve, a single host, said plainly, with this host as its one row.
  step("nodes");
  await page.click("nav a:text('Nodes')");
  await page.waitForSelector("#nodes-single-host");
  assert((await page.textContent("#nodes-single-host")).includes("Single host"), "the nodes page says single host");
  await page.waitForSelector("tr[data-node='local'] .state:text('ready')");
  await shot("12b-nodes");

  // Kill it.
  step("kill");
  await page.goto(`${url}/#/sandboxes/${id}`);
  await page.waitForSelector("#kill");
  await page.click("#kill");
  await page.waitForSelector("#sandbox-state:text('stopped')");
  await shot("13-killed");
  const after = JSON.parse((await api("GET", `/v1/sandboxes/${id}`)).body);
  assert(after.state === "stopped", `state after kill: ${after.state}`);

  // Phone width.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${url}/#/sandboxes`);
  await page.waitForSelector("h1:text('Sandboxes')");
  await shot("14-phone");
  await page.setViewportSize({ width: 1280, height: 860 });

  // Log out; a user key cannot see admin pages.
  step("user key");
  await page.click("button:text('Log out')");
  await page.waitForSelector("#api-key");
  const gone = await api("GET", "/v1/sandboxes");
  assert(gone.status === 401, `after logout: ${gone.status}`);
  await page.fill("#api-key", userKey);
  await page.click("button[type=submit]");
  await page.waitForSelector("h1:text('Sandboxes')");
  assert((await page.locator("nav a:text('Keys')").count()) === 0, "no admin links for a user");
  assert((await page.locator("nav a:text('Nodes')").count()) === 0, "no nodes link for a user");
  await page.goto(`${url}/#/admin/keys`);
  await page.waitForSelector("#admin-forbidden");
  const keys = await api("GET", "/v1/keys");
  assert(keys.status === 403, `user GET /v1/keys: ${keys.status}`);
  const audit = await api("GET", "/v1/audit");
  assert(audit.status === 403, `user GET /v1/audit: ${audit.status}`);
  await shot("15-user-admin-denied");

  // A page of another origin cannot make the logged-in browser change anything.
  step("cross-origin POST");
  const before = JSON.parse((await api("GET", "/v1/sandboxes?state=all")).body).sandboxes.length;
  await page.route("http://evil.test/**", (r) =>
    r.fulfill({
      contentType: "text/html",
      body: `<!doctype html><body><form id=f method=POST action="${url}/v1/sandboxes" enctype="text/plain"><input name='{"template":"base","x":"' value='"}'></form>
        <p id=fetch>pending</p>
        <script>
          fetch(${JSON.stringify(url)} + "/v1/sandboxes", {method: "POST", credentials: "include", headers: {"Content-Type": "application/json"}, body: '{"template":"base"}'})
            .then(r => document.getElementById("fetch").textContent = "status " + r.status, e => document.getElementById("fetch").textContent = "blocked: " + e);
        </script></body>`,
    }),
  );
  await page.goto("http://evil.test/");
  await page.waitForFunction(() => document.getElementById("fetch").textContent !== "pending");
  const fetchResult = await page.textContent("#fetch");
  assert(fetchResult.startsWith("blocked"), `cross-origin fetch: ${fetchResult}`);
  await Promise.all([page.waitForURL(`${url}/v1/sandboxes`), page.evaluate(() => document.getElementById("f").submit())]);
  const formResult = await page.textContent("body");
  assert(/"code":"(unauthorized|csrf|unsupported_media_type)"/.test(formResult), `cross-origin form POST answered ${formResult}`);
  await shot("16-cross-origin");
  await page.goto(url);
  await page.waitForSelector("h1:text('Sandboxes')");
  const afterCount = JSON.parse((await api("GET", "/v1/sandboxes?state=all")).body).sandboxes.length;
  assert(afterCount === before, `sandboxes before ${before}, after ${afterCount}`);

  assert(foreign.length === 0, `requests to other hosts: ${foreign.join(", ")}`);
  step("all steps passed");
} catch (e) {
  await shot("failure").catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
