import { api, ApiError, enc, get } from "../api";
import { ago, bytes, clear, h, notice, table, time, until } from "../dom";
import type { Ctx } from "../ctx";
import type { Sandbox } from "./sandboxes";
import { nodeLabel } from "./nodes";
import { filesPanel } from "./files";
import { desktopView } from "./desktop";

// xterm.js and uPlot load only when a sandbox's terminal or charts are shown, so the first
// load (the list) stays small: see BENCHMARKS.md.
const loadTerminal = () => import("./terminal");
const loadCharts = () => import("./charts");

/** How often the page reads the sandbox's state. */
const STATE_POLL_MS = 3000;

const TABS: [string, string][] = [
  ["overview", "Overview"],
  ["terminal", "Terminal"],
  ["files", "Files"],
  ["ports", "Ports & network"],
  ["activity", "Events & commands"],
];

export function detailPage(ctx: Ctx, id: string, tab: string): () => void {
  const { main } = ctx;
  const cleanups: (() => void)[] = [];
  const status = h("div", { "aria-live": "polite" });
  const head = h("div", { class: "page-head" });
  const panel = h("section", { class: "panel", role: "tabpanel" });
  const base = `#/sandboxes/${enc(id)}`;
  const tabs = h(
    "nav",
    { class: "tabs", "aria-label": "Sandbox sections" },
    TABS.map(([k, label]) => h("a", { href: `${base}/${k}`, "aria-current": k === tab ? "page" : null, id: `tab-${k}` }, label)),
  );
  clear(main, h("p", {}, h("a", { href: "#/sandboxes" }, "← Sandboxes")), head, status, tabs, panel);

  let sbx: Sandbox | null = null;
  const renderHead = () => {
    if (!sbx) return;
    const running = sbx.state === "running" || sbx.state === "starting";
    clear(
      head,
      h("h1", { class: "mono" }, sbx.id),
      h("span", { class: `state ${sbx.state}`, id: "sandbox-state" }, sbx.state),
      h(
        "div",
        { class: "actions" },
        running ? h("button", { onclick: () => extend(300) }, "+5 min") : null,
        running ? h("button", { onclick: () => extend(3600) }, "+1 h") : null,
        running ? h("button", { class: "danger", id: "kill", onclick: kill }, "Kill") : null,
      ),
    );
  };
  // The head (state and actions) is rebuilt only when the state or expiry changed, so a
  // refresh never replaces the button under the pointer.
  const load = async () => {
    const s = await get<Sandbox>(`/v1/sandboxes/${enc(id)}`);
    const changed = !sbx || s.state !== sbx.state || s.expires_at !== sbx.expires_at;
    sbx = s;
    if (changed) renderHead();
    return s;
  };
  const extend = async (secs: number) => {
    try {
      await api("POST", `/v1/sandboxes/${enc(id)}/timeout`, { extend: secs });
      await load();
      status.replaceChildren(notice("ok", `Timeout extended; ${until(sbx!.expires_at)} left.`));
      if (tab === "overview") showTab();
    } catch (e) {
      status.replaceChildren(notice("error", (e as Error).message));
    }
  };
  async function kill() {
    if (!confirm(`Kill sandbox ${id}?`)) return;
    try {
      await api("DELETE", `/v1/sandboxes/${enc(id)}`);
      await load();
      status.replaceChildren(notice("ok", "Killed."));
      showTab();
    } catch (e) {
      status.replaceChildren(notice("error", (e as Error).message));
    }
  }

  let closed = false;
  // Runs a lazily loaded panel unless the page was left meanwhile.
  const later = <M>(load: Promise<M>, run: (m: M) => () => void) =>
    load.then(
      (m) => {
        if (!closed) cleanups.push(run(m));
      },
      (e) => status.replaceChildren(notice("error", `loading the page: ${e}`)),
    );
  const showTab = () => {
    cleanups.splice(0).forEach((f) => f());
    const s = sbx!;
    switch (tab) {
      case "terminal":
        clear(panel, h("p", { class: "muted" }, "Loading the terminal…"));
        later(loadTerminal(), (m) => m.terminalPanel(panel, s));
        break;
      case "files":
        cleanups.push(filesPanel(panel, s));
        break;
      case "ports":
        portsPanel(panel, s);
        break;
      case "activity":
        activityPanel(panel, s);
        break;
      default:
        clear(panel, infoList(s));
        if (s.state === "running") later(loadCharts(), (m) => m.chartsPanel(panel, s));
        desktopView(panel, s);
    }
  };

  // The state is polled until the sandbox stops: a starting sandbox shows up running (and
  // its charts start), one killed or timed out elsewhere shows up stopped, and a first
  // load that failed (a slow or busy server) is retried instead of leaving the page empty.
  let pollTimer = 0;
  let loadError: HTMLElement | null = null;
  let gone = false;
  const poll = async () => {
    const before = sbx?.state;
    try {
      await load();
      loadError?.remove();
      loadError = null;
      if (!closed && (before === undefined || (before !== sbx!.state && tab === "overview"))) showTab();
    } catch (e) {
      gone = e instanceof ApiError && e.status === 404;
      if (!sbx && !closed) {
        loadError?.remove();
        loadError = notice("error", (e as Error).message);
        status.append(loadError);
      }
    }
    if (!closed && !gone && sbx?.state !== "stopped") pollTimer = window.setTimeout(poll, STATE_POLL_MS);
  };
  poll();
  return () => {
    closed = true;
    window.clearTimeout(pollTimer);
    cleanups.forEach((f) => f());
  };
}

function infoList(s: Sandbox): HTMLElement {
  const row = (k: string, v: string | Node) => [h("dt", {}, k), h("dd", {}, v)];
  return h(
    "dl",
    { class: "info" },
    row("Template", s.template),
    row("State", s.stop_reason ? `${s.state} (${s.stop_reason})` : s.state),
    row("Created", `${time(s.created_at)} (${ago(s.created_at)} ago)`),
    row("Time left", s.state === "running" ? until(s.expires_at) : "–"),
    row("Node", nodeLabel(s.node)),
    row("User", s.user ?? "default"),
    row("CPUs", s.limits.cpu_millis ? String(s.limits.cpu_millis / 1000) : "–"),
    row("Memory", bytes(s.limits.memory_bytes)),
    row("Disk", bytes(s.limits.disk_bytes)),
    row("Processes", String(s.limits.pids ?? "–")),
    row("Network", `${s.network.mode}${s.network.allow?.length ? `: ${s.network.allow.join(", ")}` : ""}`),
    row("Environment", s.env_keys.length ? s.env_keys.join(", ") : "–"),
    row("Metadata", Object.entries(s.metadata).map(([k, v]) => `${k}=${v}`).join(", ") || "–"),
  );
}

async function portsPanel(panel: HTMLElement, s: Sandbox): Promise<void> {
  clear(panel, h("p", {}, "Loading…"));
  try {
    const [ports, net] = await Promise.all([
      s.state === "running" ? get(`/v1/sandboxes/${enc(s.id)}/ports`) : Promise.resolve({ ports: [] }),
      get(`/v1/sandboxes/${enc(s.id)}/network`),
    ]);
    const { table: t, body } = table(["Port", "Listening", "Public", "URL", "Path URL (for API clients)"]);
    for (const p of ports.ports) {
      body.append(
        h(
          "tr",
          {},
          h("td", {}, String(p.port)),
          h("td", {}, p.listening ? "yes" : "no"),
          h("td", {}, p.public ? "yes" : "no"),
          h("td", {}, h("a", { href: p.url, target: "_blank", rel: "noopener noreferrer" }, p.url)),
          // Not a link: a path-routed page would share the console's origin, so the server
          // refuses it to a browser with a console session (docs/console.md).
          h("td", { class: "mono small" }, p.path_url),
        ),
      );
    }
    const policy = net.network;
    clear(
      panel,
      h("h2", {}, "Ports"),
      ports.ports.length ? h("div", { class: "scroll" }, t) : h("p", { class: "muted" }, "Nothing listens."),
      h("h2", {}, "Network policy"),
      h(
        "dl",
        { class: "info" },
        h("dt", {}, "Mode"),
        h("dd", {}, policy.mode),
        h("dt", {}, "Allowed"),
        h("dd", {}, (policy.allow ?? []).join(", ") || "–"),
        h("dt", {}, "Address"),
        h("dd", {}, net.address ?? "–"),
      ),
    );
  } catch (e) {
    clear(panel, notice("error", (e as Error).message));
  }
}

async function activityPanel(panel: HTMLElement, s: Sandbox): Promise<void> {
  clear(panel, h("p", {}, "Loading…"));
  try {
    const logs = await get(`/v1/sandboxes/${enc(s.id)}/logs`);
    const ev = table(["Time", "Kind", "Data"]);
    for (const e of [...logs.events].reverse()) {
      ev.body.append(h("tr", {}, h("td", {}, time(e.at)), h("td", {}, e.kind), h("td", { class: "mono small" }, JSON.stringify(e.data ?? {}))));
    }
    const ex = table(["Time", "Command", "Exit", "Status", "Duration"]);
    for (const e of [...logs.execs].reverse()) {
      ex.body.append(
        h(
          "tr",
          {},
          h("td", {}, time(e.at)),
          h("td", { class: "mono" }, e.command),
          h("td", {}, e.exit_code ?? "–"),
          h("td", {}, e.status ?? "–"),
          h("td", {}, e.duration_ms != null ? `${e.duration_ms} ms` : "–"),
        ),
      );
    }
    const ac = table(["Time", "Action", "Outcome", "Detail"]);
    for (const a of logs.activity) {
      ac.body.append(h("tr", {}, h("td", {}, time(a.at)), h("td", {}, a.action), h("td", {}, a.outcome), h("td", { class: "mono small" }, a.detail ?? "")));
    }
    clear(
      panel,
      h("h2", {}, "Command history"),
      logs.execs.length ? h("div", { class: "scroll" }, ex.table) : h("p", { class: "muted" }, "No commands yet."),
      h("h2", {}, "Events"),
      h("div", { class: "scroll" }, ev.table),
      h("h2", {}, "File activity"),
      logs.activity.length ? h("div", { class: "scroll" }, ac.table) : h("p", { class: "muted" }, "None."),
    );
  } catch (e) {
    clear(panel, notice("error", (e as Error).message));
  }
}
