import { api, ApiError, enc, get } from "../api";
import { ago, append, bytes, clear, field, h, notice, pairs, table, until } from "../dom";
import type { Child } from "../dom";
import { cpuSeries, sparkline } from "../sparkline";
import type { Ctx } from "../ctx";
import { loadNodeNames, nodeLabel } from "./nodes";

export interface Sandbox {
  id: string;
  template: string;
  state: string;
  stop_reason: string | null;
  metadata: Record<string, string>;
  env_keys: string[];
  user: string | null;
  limits: { memory_bytes: number; cpu_millis: number; pids: number; disk_bytes: number };
  timeout: number | null;
  network: { mode: string; allow?: string[] };
  created_at: string;
  ready_at: string | null;
  expires_at: string | null;
  stopped_at: string | null;
  /** The fleet node holding it (null on a single host). */
  node?: string | null;
}

/** Rows with live sparklines at most (each costs one stats request per refresh). */
const SPARK_ROWS = 30;
const REFRESH_MS = 3000;

/** One cell of a row: a key naming what it shows, its class and title, and its content. */
type Cell = [key: string, cls: string, title: string, make: () => Child | Child[]];

function rowCells(
  s: Sandbox,
  sp: { cpu: number[]; mem: number[] } | undefined,
  actions: { kill: (id: string) => void; extend: (id: string) => void },
): Cell[] {
  const running = s.state === "running" || s.state === "starting";
  const left = running ? until(s.expires_at) : "–";
  const meta = Object.entries(s.metadata ?? {}).map(([k, v]) => `${k}=${v}`);
  return [
    [s.id, "", "", () => h("a", { href: `#/sandboxes/${enc(s.id)}`, class: "mono" }, s.id)],
    [s.state, "", "", () => h("span", { class: `state ${s.state}` }, s.state)],
    [s.template, "", "", () => s.template],
    [ago(s.created_at), "", s.created_at, () => ago(s.created_at)],
    [left, "", s.expires_at ?? "", () => left],
    [`${s.node}|${nodeLabel(s.node)}`, "small", s.node ?? "this server", () => nodeLabel(s.node)],
    [
      sp ? `${sp.cpu.join()}|${sp.mem.join()}` : "",
      "spark",
      "",
      () => (sp ? [sparkline(sp.cpu, "#3b82f6", "CPU"), sparkline(sp.mem, "#10b981", "memory")] : []),
    ],
    [meta.join("\n"), "", "", () => meta.map((m) => h("span", { class: "tag" }, m))],
    [
      String(running),
      "actions",
      "",
      () =>
        running
          ? [
              h("button", { onclick: () => actions.extend(s.id), title: "Add 5 minutes to the timeout" }, "+5 min"),
              h("button", { class: "danger", onclick: () => actions.kill(s.id) }, "Kill"),
            ]
          : [],
    ],
  ];
}

/**
 * Renders the table body for a list; exported for the bench (bench/render.mjs).
 * Rows are kept by sandbox id and a cell is rebuilt only when what it shows changed, so the
 * list's refresh never replaces the link or button under the pointer or the keyboard focus
 * (a click whose press and release land on two different elements is no click at all).
 */
export function renderRows(
  body: HTMLTableSectionElement,
  list: Sandbox[],
  sparks: Map<string, { cpu: number[]; mem: number[] }>,
  actions: { kill: (id: string) => void; extend: (id: string) => void },
): void {
  const old = new Map<string, HTMLTableRowElement>();
  for (const tr of Array.from(body.rows)) old.set(tr.dataset.id ?? "", tr);
  let prev: HTMLTableRowElement | null = null;
  for (const s of list) {
    const cells = rowCells(s, sparks.get(s.id), actions);
    let tr = old.get(s.id);
    if (tr) old.delete(s.id);
    else {
      tr = h("tr", { "data-id": s.id });
      for (let i = 0; i < cells.length; i++) tr.appendChild(document.createElement("td"));
    }
    cells.forEach(([key, cls, title, make], i) => {
      const td = tr.cells[i];
      if (td.dataset.k === key) return;
      td.dataset.k = key;
      td.className = cls;
      if (title) td.title = title;
      else td.removeAttribute("title");
      td.replaceChildren();
      append(td, [make()]);
    });
    const at: ChildNode | null = prev ? prev.nextSibling : body.firstChild;
    if (at !== tr) body.insertBefore(tr, at);
    prev = tr;
  }
  for (const tr of old.values()) tr.remove();
}

export function sandboxesPage(ctx: Ctx): () => void {
  const { main, me } = ctx;
  let stopped = false;
  // Node names for the Node column (a fleet's `/v1/nodes` is for operators and admins).
  if (me.admin || me.role === "operator") loadNodeNames();
  const status = h("div", { "aria-live": "polite" });
  const stateSel = h(
    "select",
    { id: "filter-state" },
    h("option", { value: "" }, "starting, running"),
    h("option", { value: "running" }, "running"),
    h("option", { value: "stopped" }, "stopped"),
    h("option", { value: "all" }, "all"),
  );
  const tplFilter = h("input", { id: "filter-template", placeholder: "any", list: "template-names" });
  const metaFilter = h("input", { id: "filter-metadata", placeholder: "key=value, …" });
  const count = h("span", { class: "muted" });
  const { table: t, body } = table(["ID", "State", "Template", "Age", "Time left", "Node", "CPU / memory", "Metadata", ""], "list");
  const sparks = new Map<string, { cpu: number[]; mem: number[] }>();
  const templates = h("datalist", { id: "template-names" });
  let list: Sandbox[] = [];

  const query = () => {
    const q: string[] = [];
    if (stateSel.value) q.push(`state=${enc(stateSel.value)}`);
    for (const part of metaFilter.value.split(",")) {
      const p = part.trim();
      if (!p) continue;
      const i = p.indexOf("=");
      if (i > 0) q.push(`metadata.${enc(p.slice(0, i).trim())}=${enc(p.slice(i + 1).trim())}`);
    }
    return q.length ? `?${q.join("&")}` : "";
  };

  const actions = {
    kill: async (id: string) => {
      if (!confirm(`Kill sandbox ${id}?`)) return;
      try {
        await api("DELETE", `/v1/sandboxes/${enc(id)}`);
        status.replaceChildren(notice("ok", `Killed ${id}.`));
        refresh();
      } catch (e) {
        status.replaceChildren(notice("error", (e as Error).message));
      }
    },
    extend: async (id: string) => {
      try {
        await api("POST", `/v1/sandboxes/${enc(id)}/timeout`, { extend: 300 });
        status.replaceChildren(notice("ok", `Extended ${id} by 5 minutes.`));
        refresh();
      } catch (e) {
        status.replaceChildren(notice("error", (e as Error).message));
      }
    },
  };

  const draw = () => {
    const tpl = tplFilter.value.trim();
    const shown = tpl ? list.filter((s) => s.template === tpl) : list;
    const t0 = performance.now();
    renderRows(body, shown, sparks, actions);
    const ms = performance.now() - t0;
    t.dataset.renderMs = ms.toFixed(1);
    // For the bench: when the first full list was on the page, from navigation start.
    if (list.length && !performance.getEntriesByName("sandboxes-rendered").length) performance.mark("sandboxes-rendered");
    count.textContent = `${shown.length} sandbox${shown.length === 1 ? "" : "es"}`;
  };

  // One refresh at a time: a refresh asked for while one runs (a create, a filter change)
  // runs right after it, with the filters as they are then, so an older answer never
  // overwrites a newer one and there is only ever one timer.
  let timer = 0;
  let running = false;
  let again = false;
  let polls = 0;
  const refresh = async () => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    window.clearTimeout(timer);
    try {
      const all: Sandbox[] = [];
      let after = "";
      for (let page = 0; page < 10; page++) {
        const q = query();
        const sep = q ? "&" : "?";
        const r = await get<{ sandboxes: Sandbox[]; next: string | null }>(
          `/v1/sandboxes${q}${after ? `${sep}after=${enc(after)}` : ""}`,
        );
        all.push(...r.sandboxes);
        if (!r.next) break;
        after = r.next;
      }
      list = all;
      draw();
      await loadSparks();
      if (!stopped) draw();
      t.dataset.polls = String(++polls);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) status.replaceChildren(notice("error", (e as Error).message));
    }
    running = false;
    if (stopped) return;
    if (again) {
      again = false;
      refresh();
    } else timer = window.setTimeout(refresh, REFRESH_MS);
  };

  const loadSparks = async () => {
    const running = list.filter((s) => s.state === "running").slice(0, SPARK_ROWS);
    await Promise.all(
      running.map(async (s) => {
        try {
          const st = await get(`/v1/sandboxes/${enc(s.id)}/stats?history=true`);
          const hist = st.history ?? [];
          sparks.set(s.id, {
            cpu: cpuSeries(hist).cores.slice(-30),
            mem: hist.map((x: { memory_bytes: number }) => x.memory_bytes).slice(-30),
          });
        } catch {
          // stopped meanwhile
        }
      }),
    );
  };

  for (const el of [stateSel, metaFilter]) el.addEventListener("change", refresh);
  tplFilter.addEventListener("input", draw);

  clear(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Sandboxes"), count),
    createForm(ctx, templates, (id) => {
      status.replaceChildren(notice("ok", `Created ${id}.`));
      refresh();
    }),
    h(
      "div",
      { class: "filters", role: "search" },
      field("State", stateSel),
      field("Template", tplFilter),
      field("Metadata", metaFilter, "key=value, comma-separated"),
    ),
    status,
    h("div", { class: "scroll" }, t),
    templates,
  );
  get("/v1/templates")
    .then((r) => {
      clear(templates, ["base", ...r.templates.map((x: { name: string }) => x.name)].map((n) => h("option", { value: n })));
    })
    .catch(() => {});
  refresh();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}

function createForm(_ctx: Ctx, templates: HTMLDataListElement, created: (id: string) => void): HTMLElement {
  const tpl = h("input", { id: "create-template", name: "template", value: "base", list: templates.id });
  const cpus = h("input", { id: "create-cpus", type: "number", step: "0.25", min: "0.25", placeholder: "default" });
  const memory = h("input", { id: "create-memory", placeholder: "default, e.g. 512M" });
  const disk = h("input", { id: "create-disk", placeholder: "default, e.g. 2G" });
  const timeout = h("input", { id: "create-timeout", type: "number", min: "1", placeholder: "default (seconds)" });
  const netMode = h(
    "select",
    { id: "create-network" },
    h("option", { value: "none" }, "none"),
    h("option", { value: "all" }, "all (internet)"),
    h("option", { value: "allow" }, "allow list"),
  );
  const allow = h("input", { id: "create-allow", placeholder: "example.com, *.pypi.org" });
  const env = h("textarea", { id: "create-env", rows: "2", placeholder: "KEY=value" });
  const meta = h("textarea", { id: "create-metadata", rows: "2", placeholder: "owner=me" });
  const status = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary" }, "Create");
  const form = h(
    "form",
    { class: "grid-form" },
    field("Template", tpl),
    field("CPUs", cpus),
    field("Memory", memory),
    field("Disk", disk),
    field("Timeout (s)", timeout),
    field("Network", netMode),
    field("Allowed hosts", allow, "for the allow list"),
    field("Environment", env, "KEY=value per line"),
    field("Metadata", meta, "key=value per line"),
    h("div", { class: "form-actions" }, submit, status),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    status.replaceChildren();
    try {
      const body: Record<string, unknown> = { template: tpl.value.trim() || "base" };
      if (cpus.value) body.cpus = Number(cpus.value);
      if (memory.value.trim()) body.memory = memory.value.trim();
      if (disk.value.trim()) body.disk = disk.value.trim();
      if (timeout.value) body.timeout = Number(timeout.value);
      const e2 = pairs(env.value);
      if (Object.keys(e2).length) body.env = e2;
      const m = pairs(meta.value);
      if (Object.keys(m).length) body.metadata = m;
      if (netMode.value !== "none") {
        body.network = {
          mode: netMode.value,
          allow: netMode.value === "allow" ? allow.value.split(",").map((x) => x.trim()).filter(Boolean) : [],
        };
      }
      submit.disabled = true;
      submit.textContent = "Creating…";
      const s = await api<{ id: string }>("POST", "/v1/sandboxes", body);
      created(s.id);
    } catch (err) {
      status.replaceChildren(notice("error", (err as Error).message));
    } finally {
      submit.disabled = false;
      submit.textContent = "Create";
    }
  });
  return h("details", { class: "card create" }, h("summary", {}, "New sandbox"), form);
}

export { bytes };
