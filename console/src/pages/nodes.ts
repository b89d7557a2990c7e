import { api, ApiError, enc, get } from "../api";
import { ago, bytes, clear, h, notice, table, time } from "../dom";
import type { Ctx } from "../ctx";

// The fleet's nodes (`GET /v1/nodes`, served by `paddock control`): state, labels, capacity
// against what their sandboxes reserve, sandbox count, last heartbeat, and drain/undrain.
// Operators and admins only (the server's role table says the same). On `paddock serve` the
// route does not exist (404): the page says it is a single host and shows that host.

interface NodeInfo {
  id: string;
  name: string;
  address: string;
  state: string;
  labels: Record<string, string>;
  capacity: { memory_bytes?: number; cpus?: number; cpu_millis?: number; disk_bytes?: number; max_sandboxes?: number };
  usage: { memory_reserved_bytes?: number; cpu_reserved_millis?: number; disk_free_bytes?: number; memory_available_bytes?: number; load1?: number | null; volumes?: string[] };
  sandboxes: number;
  templates: string[];
  registered_at: string;
  last_heartbeat: string;
}

const REFRESH_MS = 5000;

/** "used of total" with a bar, for one resource. */
function meter(used: number | undefined, total: number | undefined, fmt: (n: number) => string, label: string): HTMLElement {
  const u = used ?? 0;
  const t = total ?? 0;
  const pct = t > 0 ? Math.min(100, Math.round((u / t) * 100)) : 0;
  return h(
    "div",
    { class: "meter", title: `${label}: ${fmt(u)} of ${fmt(t)} (${pct}%)` },
    h("span", { class: "small" }, `${fmt(u)} / ${fmt(t)}`),
    h("progress", { max: "100", value: String(pct), "aria-label": `${label} ${pct}%` }),
  );
}

const cores = (millis: number) => `${(millis / 1000).toFixed(1)}`;

/** Node ids to names, for the sandbox list and detail (empty on a single host or without access). */
export const nodeNames = new Map<string, string>();

/** What a sandbox's `node` is shown as: its node's name, else its id, else `local`. */
export function nodeLabel(id: string | null | undefined): string {
  if (!id) return "local";
  return nodeNames.get(id) ?? id;
}

/** Fills `nodeNames` once per page load, best effort (403 and 404 leave it empty). */
export async function loadNodeNames(): Promise<void> {
  try {
    const r = await get<{ nodes: NodeInfo[] }>("/v1/nodes");
    for (const n of r.nodes) nodeNames.set(n.id, n.name);
  } catch {
    // a single host, or a role that may not list nodes
  }
}

export function nodesPage(ctx: Ctx): () => void {
  const { main, me } = ctx;
  if (me.role !== "operator" && !me.admin) {
    clear(
      main,
      h("h1", {}, "Nodes"),
      h("p", { class: "notice error", role: "alert", id: "admin-forbidden" }, "The nodes page needs an operator or admin key."),
    );
    return () => {};
  }
  const status = h("div", { "aria-live": "polite" });
  const out = h("div", { class: "scroll" });
  let timer = 0;
  let stopped = false;

  const act = async (n: NodeInfo, what: "drain" | "undrain") => {
    if (what === "drain" && !confirm(`Drain ${n.name}? No new sandboxes go to it; its ${n.sandboxes} sandboxes run until they end.`)) return;
    try {
      await api("POST", `/v1/nodes/${enc(n.id)}/${what}`);
      status.replaceChildren(notice("ok", `${n.name}: ${what === "drain" ? "draining" : "ready"}.`));
      load();
    } catch (e) {
      status.replaceChildren(notice("error", (e as Error).message));
    }
  };

  const fleet = (nodes: NodeInfo[]) => {
    const { table: t, body } = table(["Node", "State", "Labels", "CPU reserved", "Memory reserved", "Disk used", "Sandboxes", "Templates", "Last heartbeat", ""], "nodes");
    for (const n of nodes) {
      nodeNames.set(n.id, n.name);
      const c = n.capacity ?? {};
      const u = n.usage ?? {};
      body.append(
        h(
          "tr",
          { "data-node": n.id },
          h("td", {}, h("strong", {}, n.name), h("div", { class: "mono small muted" }, n.id), h("div", { class: "mono small muted" }, n.address)),
          h("td", {}, h("span", { class: `state node-${n.state}` }, n.state)),
          h("td", {}, Object.entries(n.labels ?? {}).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))),
          h("td", {}, meter(u.cpu_reserved_millis, c.cpu_millis, cores, "CPU reserved (cores, with overcommit)")),
          h("td", {}, meter(u.memory_reserved_bytes, c.memory_bytes, bytes, "memory reserved")),
          h("td", {}, meter((c.disk_bytes ?? 0) - (u.disk_free_bytes ?? 0), c.disk_bytes, bytes, "disk used")),
          h("td", {}, `${n.sandboxes} / ${c.max_sandboxes ?? "–"}`),
          h("td", { class: "small", title: (n.templates ?? []).join(", ") }, String((n.templates ?? []).length)),
          h("td", { title: time(n.last_heartbeat) }, `${ago(n.last_heartbeat)} ago`),
          h(
            "td",
            { class: "actions" },
            n.state === "ready" ? h("button", { class: "danger", onclick: () => act(n, "drain") }, "Drain") : null,
            n.state === "draining" ? h("button", { onclick: () => act(n, "undrain") }, "Undrain") : null,
          ),
        ),
      );
    }
    clear(
      out,
      nodes.length ? t : notice("info", "No node has registered with this fleet yet."),
      h("p", { class: "muted small" }, "Reserved: the sum of the limits of each node's sandboxes, against its capacity (CPU with the node's overcommit). Dead: no heartbeat for 10 s."),
    );
  };

  // `paddock serve`: one host, which runs its sandboxes itself.
  const single = async () => {
    let row: HTMLElement | null = null;
    try {
      const s = await get("/v1/status");
      const l = s.load ?? {};
      const { table: t, body } = table(["Node", "State", "CPUs", "Memory used", "Disk used", "Sandboxes", "Last heartbeat"], "nodes");
      body.append(
        h(
          "tr",
          { "data-node": "local" },
          h("td", {}, h("strong", {}, "local"), h("div", { class: "small muted" }, "this server")),
          h("td", {}, h("span", { class: "state node-ready" }, "ready")),
          h("td", {}, String(l.cpus ?? "–")),
          h("td", {}, meter((l.memory_total_bytes ?? 0) - (l.memory_available_bytes ?? 0), l.memory_total_bytes, bytes, "memory used")),
          h("td", {}, meter((l.disk_total_bytes ?? 0) - (l.disk_free_bytes ?? 0), l.disk_total_bytes, bytes, "disk used")),
          h("td", {}, String(s.sandboxes_running ?? "–")),
          h("td", {}, "– (no heartbeats on a single host)"),
        ),
      );
      row = t;
    } catch {
      row = null;
    }
    clear(
      out,
      h(
        "p",
        { class: "notice info", id: "nodes-single-host", role: "status" },
        "Single host: this server (paddock serve) runs its sandboxes itself. There is no fleet, so there are no nodes to drain. A fleet is paddock control with paddock node processes on one database.",
      ),
      row,
    );
  };

  const load = async () => {
    try {
      const r = await get<{ nodes: NodeInfo[] }>("/v1/nodes");
      fleet(r.nodes);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) await single();
      else clear(out, notice("error", (e as Error).message));
    }
    if (!stopped) {
      window.clearTimeout(timer);
      timer = window.setTimeout(load, REFRESH_MS);
    }
  };
  clear(main, h("h1", {}, "Nodes"), status, out);
  load();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}
