// Console bench (not a test): the gzipped size of what the first load fetches, and the
// time the sandbox list takes to render 1,000 sandboxes in Debian's chromium.
// Needs a built dist/ (`npm run build`) and /usr/bin/chromium (or CHROMIUM=...).
// The API is answered by Playwright's request interception with fake data, so no server
// runs: what is measured is the console's own work (fetching the page and the JSON from
// memory, parsing, building the rows).
import { chromium } from "playwright-core";
import { readFileSync, readdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const N = Number(process.env.SANDBOXES ?? 1000);
const RUNS = Number(process.env.RUNS ?? 10);

// 1. Bundle size: index.html and everything under assets/ (the first load fetches all of it).
const files = ["index.html", ...readdirSync(join(dist, "assets")).map((f) => `assets/${f}`)];
// The first load is index.html and what it references; the rest loads with a sandbox's
// terminal or charts.
const index = readFileSync(join(dist, "index.html"), "utf8");
const first = new Set(["index.html", ...[...index.matchAll(/"\/(assets\/[^"]+)"/g)].map((m) => m[1])]);
let raw = 0;
let gz = 0;
let allGz = 0;
const sizes = [];
for (const f of files) {
  const b = readFileSync(join(dist, f));
  const z = gzipSync(b, { level: 9 }).length;
  allGz += z;
  if (first.has(f)) {
    raw += b.length;
    gz += z;
  }
  sizes.push([f, b.length, z, first.has(f)]);
}

// 2. Render time of the list.
const now = Date.now();
const sandboxes = Array.from({ length: N }, (_, i) => ({
  id: `s${String(i).padStart(19, "0")}`,
  template: i % 3 ? "python" : "base",
  state: "running",
  stop_reason: null,
  metadata: { owner: `user${i % 17}`, job: String(i) },
  env_keys: [],
  user: "user",
  limits: { memory_bytes: 536870912, cpu_millis: 1000, pids: 512, disk_bytes: 2147483648 },
  timeout: 300,
  network: { mode: "none", allow: [] },
  created_at: new Date(now - i * 1000).toISOString(),
  ready_at: new Date(now - i * 1000).toISOString(),
  expires_at: new Date(now + 300000 - i * 1000).toISOString(),
  stopped_at: null,
}));
const me = { key_id: "key_bench", name: "bench", tenant: "tnt_bench", role: "admin", admin: true, csrf_token: "x" };
const history = { history: Array.from({ length: 30 }, (_, i) => ({ at: new Date(now - (30 - i) * 5000).toISOString(), cpu_usage_ns: i * 1e8, memory_bytes: 1e6 + i * 1e4 })) };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
await page.route("http://console.bench/**", (r) => {
  const u = new URL(r.request().url());
  const json = (v) => r.fulfill({ contentType: "application/json", body: JSON.stringify(v) });
  if (u.pathname === "/v1/session") return json(me);
  if (u.pathname === "/v1/sandboxes") return json({ sandboxes, next: null });
  if (u.pathname === "/v1/templates") return json({ templates: [] });
  if (u.pathname.endsWith("/stats")) return json(history);
  const f = u.pathname === "/" ? "index.html" : u.pathname.slice(1);
  const type = f.endsWith(".js") ? "text/javascript" : f.endsWith(".css") ? "text/css" : "text/html";
  return r.fulfill({ contentType: type, body: readFileSync(join(dist, f)) });
});
const loads = [];
const renders = [];
const marks = [];
for (let i = 0; i < RUNS; i++) {
  await page.goto("about:blank");
  const t0 = Date.now();
  await page.goto("http://console.bench/#/sandboxes");
  await page.waitForFunction((n) => document.querySelectorAll("table.list tbody tr").length === n, N, { timeout: 30000 });
  loads.push(Date.now() - t0);
  renders.push(Number(await page.getAttribute("table.list", "data-render-ms")));
  marks.push(await page.evaluate(() => performance.getEntriesByName("sandboxes-rendered")[0]?.startTime ?? NaN));
}
await browser.close();

const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(`| file | loaded | bytes | gzipped |\n|---|---|---|---|`);
for (const [f, b, z, f1] of sizes) console.log(`| ${f.replace(/-[A-Za-z0-9_-]{8}\./, "-<hash>.")} | ${f1 ? "first load" : "on demand"} | ${kib(b)} | ${kib(z)} |`);
console.log(`| **first load** | | ${kib(raw)} | **${kib(gz)}** (limit 300 KiB) |`);
console.log(`| everything | | | ${kib(allGz)} |\n`);
console.log(`| ${N} sandboxes, ${RUNS} runs | median | max |\n|---|---|---|`);
console.log(`| navigation start to ${N} rows on the page (in the page's clock) | ${med(marks).toFixed(0)} ms | ${Math.max(...marks).toFixed(0)} ms |`);
console.log(`| the same, seen from Playwright (goto, then polling for the rows) | ${med(loads)} ms | ${Math.max(...loads)} ms |`);
console.log(`| building the rows (renderRows) | ${med(renders).toFixed(1)} ms | ${Math.max(...renders).toFixed(1)} ms |`);
