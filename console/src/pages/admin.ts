import { api, enc, get } from "../api";
import { bytes, clear, duration, field, h, notice, table, time } from "../dom";
import type { Ctx } from "../ctx";

// Admin pages: keys, the audit trail, the live event stream, server status. A user key
// gets none of them (the server answers their routes with 403 as well). The nodes page is
// `nodes.ts` (operators see it too).
export function adminPage(ctx: Ctx, which: string): () => void {
  const { main, me } = ctx;
  if (!me.admin) {
    clear(
      main,
      h("h1", {}, "Admin"),
      h("p", { class: "notice error", role: "alert", id: "admin-forbidden" }, "These pages need an admin key. You are logged in with a key of another role."),
    );
    return () => {};
  }
  switch (which) {
    case "keys":
      return keysPage(main);
    case "audit":
      return auditPage(main);
    case "events":
      return eventsPage(main);
    default:
      return statusPage(main);
  }
}

function keysPage(main: HTMLElement): () => void {
  const status = h("div", { "aria-live": "polite" });
  const shown = h("div", { id: "new-key" });
  const list = h("div", { class: "scroll" });
  const load = async () => {
    try {
      const r = await get("/v1/keys");
      const { table: t, body } = table(["Name", "Id", "Role", "Tenant", "Prefix", "Created", "Expires", "Revoked", ""]);
      for (const k of r.keys) {
        body.append(
          h(
            "tr",
            { "data-key": k.id },
            h("td", {}, k.name),
            h("td", { class: "mono small" }, k.id),
            h("td", {}, k.role),
            h("td", {}, k.tenant),
            h("td", { class: "mono" }, k.prefix),
            h("td", {}, time(k.created_at)),
            h("td", {}, time(k.expires_at)),
            h("td", {}, time(k.revoked_at)),
            h("td", { class: "actions" }, k.revoked_at ? null : h("button", { class: "danger", onclick: () => revoke(k.id, k.name) }, "Revoke")),
          ),
        );
      }
      clear(list, t);
    } catch (e) {
      clear(list, notice("error", (e as Error).message));
    }
  };
  const revoke = async (id: string, name: string) => {
    if (!confirm(`Revoke key ${name}? Clients using it stop working at once.`)) return;
    try {
      await api("DELETE", `/v1/keys/${enc(id)}`);
      status.replaceChildren(notice("ok", `Revoked ${name}.`));
      load();
    } catch (e) {
      status.replaceChildren(notice("error", (e as Error).message));
    }
  };
  const name = h("input", { id: "key-name", required: true });
  const role = h(
    "select",
    { id: "key-role" },
    ...["developer", "viewer", "operator", "admin"].map((r) => h("option", { value: r }, r)),
  );
  const tenant = h("input", { id: "key-tenant", placeholder: "new tenant named after the key" });
  const max = h("input", { id: "key-max", type: "number", min: "0", placeholder: "server default" });
  const expires = h("input", { id: "key-expires", type: "number", min: "1", placeholder: "never (seconds)" });
  const form = h(
    "form",
    { class: "grid-form" },
    field("Name", name),
    field("Role", role),
    field("Tenant", tenant),
    field("Max sandboxes", max),
    field("Expires in (s)", expires),
    h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Create key")),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const body: Record<string, unknown> = { name: name.value.trim(), role: role.value };
      if (tenant.value.trim()) body.tenant = tenant.value.trim();
      if (max.value) body.max_sandboxes = Number(max.value);
      if (expires.value) body.expires_in = Number(expires.value);
      const k = await api("POST", "/v1/keys", body);
      clear(
        shown,
        h(
          "div",
          { class: "card secret", role: "status" },
          h("strong", {}, `Key ${k.name} created. It is shown once: copy it now.`),
          h("code", { class: "mono", id: "new-key-secret" }, k.key),
          h("button", { onclick: () => navigator.clipboard?.writeText(k.key) }, "Copy"),
          h("button", { onclick: () => shown.replaceChildren() }, "Done"),
        ),
      );
      form.reset();
      load();
    } catch (err) {
      status.replaceChildren(notice("error", (err as Error).message));
    }
  });
  clear(main, h("h1", {}, "API keys"), h("details", { class: "card" }, h("summary", {}, "New key"), form), shown, status, list);
  load();
  return () => shown.replaceChildren();
}

function auditPage(main: HTMLElement): () => void {
  const sandbox = h("input", { id: "audit-sandbox", placeholder: "sandbox id" });
  const actor = h("input", { id: "audit-actor", placeholder: "key id" });
  const tenant = h("input", { id: "audit-tenant", placeholder: "tenant" });
  const list = h("div", { class: "scroll" });
  const more = h("button", { hidden: true }, "Older");
  const { table: t, body } = table(["Time", "Actor", "Tenant", "Action", "Sandbox", "Outcome", "Detail"]);
  let before: number | null = null;
  const load = async (reset: boolean) => {
    if (reset) {
      before = null;
      body.replaceChildren();
    }
    const q = [`limit=100`];
    if (sandbox.value.trim()) q.push(`sandbox_id=${enc(sandbox.value.trim())}`);
    if (actor.value.trim()) q.push(`actor=${enc(actor.value.trim())}`);
    if (tenant.value.trim()) q.push(`tenant=${enc(tenant.value.trim())}`);
    if (before !== null) q.push(`before=${before}`);
    try {
      const r = await get(`/v1/audit?${q.join("&")}`);
      for (const a of r.entries) {
        body.append(
          h(
            "tr",
            {},
            h("td", {}, time(a.at)),
            h("td", { class: "mono small" }, a.actor ?? "–"),
            h("td", {}, a.tenant ?? "–"),
            h("td", {}, a.action),
            h("td", { class: "mono small" }, a.sandbox_id ? h("a", { href: `#/sandboxes/${enc(a.sandbox_id)}` }, a.sandbox_id) : "–"),
            h("td", {}, a.outcome),
            h("td", { class: "small" }, a.detail ?? ""),
          ),
        );
      }
      before = r.entries.length ? r.entries[r.entries.length - 1].id : before;
      more.hidden = r.entries.length < 100;
      clear(list, t);
    } catch (e) {
      clear(list, notice("error", (e as Error).message));
    }
  };
  more.addEventListener("click", () => load(false));
  const form = h("form", { class: "filters", role: "search" }, field("Sandbox", sandbox), field("Actor", actor), field("Tenant", tenant), h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load(true);
  });
  clear(main, h("h1", {}, "Audit trail"), form, list, more);
  load(true);
  return () => {};
}

function eventsPage(main: HTMLElement): () => void {
  const state = h("p", { class: "muted", "aria-live": "polite" }, "Connecting…");
  const { table: t, body } = table(["Seq", "Time", "Kind", "Sandbox", "Data"]);
  // EventSource sends the cookie (same origin) and Accept: text/event-stream.
  const es = new EventSource("/v1/events");
  es.onopen = () => (state.textContent = "Live.");
  es.onerror = () => (state.textContent = "Reconnecting…");
  const add = (m: MessageEvent) => {
    let e;
    try {
      e = JSON.parse(m.data);
    } catch {
      return;
    }
    body.prepend(
      h(
        "tr",
        {},
        h("td", {}, String(e.seq)),
        h("td", {}, time(e.at)),
        h("td", {}, e.kind),
        h("td", { class: "mono small" }, e.sandbox_id ? h("a", { href: `#/sandboxes/${enc(e.sandbox_id)}` }, e.sandbox_id) : "–"),
        h("td", { class: "mono small" }, JSON.stringify(e.data ?? {})),
      ),
    );
    while (body.rows.length > 500) body.deleteRow(-1);
  };
  es.onmessage = add;
  // The server names each event by its kind; listen to the ones Paddock emits.
  const kinds = [
    "created", "ready", "failed", "killed", "expired", "timeout", "shutdown", "died", "lost", "adopted", "oom",
    "network_changed", "timeout_changed", "timeout_warning", "paused", "resumed", "start_exited", "snapshot",
    "budget_warning", "budget_exceeded", "node.ready", "node.draining", "node.dead", "template.fetched", "lagged",
  ];
  for (const k of kinds) es.addEventListener(k, add as EventListener);
  clear(
    main,
    h("h1", {}, "Live events"),
    h("p", { class: "muted" }, "Events from the moment this page opened, newest first (the last 500). Earlier ones are on each sandbox's page and in the audit trail."),
    state,
    h("div", { class: "scroll" }, t),
  );
  return () => es.close();
}

function statusPage(main: HTMLElement): () => void {
  const out = h("div", {});
  let timer = 0;
  let stopped = false;
  const load = async () => {
    try {
      const s = await get("/v1/status");
      const l = s.load ?? {};
      const card = (title: string, rows: [string, string][]) =>
        h("section", { class: "card" }, h("h2", {}, title), h("dl", { class: "info" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
      clear(
        out,
        h(
          "div",
          { class: "cards" },
          card("Server", [
            ["Version", s.version],
            ["Up", duration(s.uptime_secs)],
            ["Runtime", s.runtime],
            ["Domain", s.domain],
            ["Running sandboxes", String(s.sandboxes_running)],
          ]),
          card("Host", [
            ["Load", (l.load_avg ?? []).map((x: number) => x.toFixed(2)).join(" ")],
            ["CPUs", String(l.cpus ?? "–")],
            ["Memory available", `${bytes(l.memory_available_bytes)} of ${bytes(l.memory_total_bytes)}`],
            ["Disk free", `${bytes(l.disk_free_bytes)} of ${bytes(l.disk_total_bytes)}`],
            ["Sandboxes use", `${(l.sandbox_cpu_cores ?? 0).toFixed(2)} cores, ${bytes(l.sandbox_memory_bytes)}`],
          ]),
          card(
            "Limits",
            Object.entries(s.limits ?? {}).map(([k, v]) => [k.replace(/_/g, " "), String(v)] as [string, string]),
          ),
        ),
      );
    } catch (e) {
      clear(out, notice("error", (e as Error).message));
    }
    if (!stopped) timer = window.setTimeout(load, 5000);
  };
  clear(main, h("h1", {}, "Server status"), out, h("p", { class: "muted" }, h("a", { href: "#/admin/nodes" }, "Nodes"), ": the fleet's nodes, or this single host."));
  load();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}
