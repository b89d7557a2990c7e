import { api, enc, get, ndjson, raw } from "../api";
import { bytes, clear, field, h, notice, table, time } from "../dom";
import type { Ctx } from "../ctx";

// Templates: the list with layers and sizes; for admins build (a build file, progress as
// NDJSON), pull (an OCI image) and delete.
export function templatesPage(ctx: Ctx): () => void {
  const { main, me } = ctx;
  const status = h("div", { "aria-live": "polite" });
  const list = h("div", { class: "scroll" });
  const log = h("pre", { class: "log", id: "template-log", hidden: true, "aria-live": "polite" });

  const load = async () => {
    try {
      const [t, l] = await Promise.all([
        get("/v1/templates"),
        get("/v1/layers").catch(() => ({ layers: [] })),
      ]);
      const size = new Map<string, number>(l.layers.map((x: { id: string; bytes: number }) => [x.id, x.bytes]));
      const { table: tb, body } = table(["Name", "Source", "Layers", "Size", "Sandboxes", "Created", ""]);
      for (const x of t.templates) {
        const total = (x.layers as string[]).reduce((a, id) => a + (size.get(id) ?? 0), 0);
        body.append(
          h(
            "tr",
            { "data-template": x.name },
            // Through a fleet's control plane: the nodes holding it (any node runs it).
            h("td", {}, x.name, Array.isArray(x.nodes) ? h("div", { class: "small muted" }, `on ${x.nodes.join(", ")}`) : null),
            h("td", { class: "small" }, typeof x.source === "string" ? x.source : JSON.stringify(x.source ?? "")),
            h("td", { title: (x.layers as string[]).join("\n") }, String(x.layers.length)),
            h("td", {}, size.size ? bytes(total) : "–"),
            h("td", {}, String(x.running_sandboxes ?? 0)),
            h("td", {}, time(x.created_at)),
            h(
              "td",
              { class: "actions" },
              me.admin && x.name !== "base" ? h("button", { class: "danger", onclick: () => del(x.name) }, "Delete") : null,
            ),
          ),
        );
      }
      clear(list, tb);
    } catch (e) {
      clear(list, notice("error", (e as Error).message));
    }
  };
  const del = async (name: string) => {
    if (!confirm(`Delete template ${name}?`)) return;
    try {
      await api("DELETE", `/v1/templates/${enc(name)}`);
      status.replaceChildren(notice("ok", `Deleted ${name}.`));
      load();
    } catch (e) {
      status.replaceChildren(notice("error", (e as Error).message));
    }
  };
  const stream = async (what: string, name: string, init: RequestInit) => {
    log.hidden = false;
    log.textContent = `${what} ${name}…\n`;
    try {
      const r = await raw("POST", `/v1/templates/${enc(name)}/${what}`, init);
      let failed = "";
      await ndjson(r, (v) => {
        log.textContent += progressLine(v);
        log.scrollTop = log.scrollHeight;
        if (v.event === "error") failed = v.message;
      });
      status.replaceChildren(failed ? notice("error", `${what} of ${name} failed: ${failed}`) : notice("ok", `${what} of ${name} finished.`));
    } catch (e) {
      status.replaceChildren(notice("error", (e as Error).message));
    }
    load();
  };

  const forms: HTMLElement[] = [];
  if (me.admin) {
    const bName = h("input", { id: "build-name", required: true, placeholder: "my-template" });
    const bFile = h("textarea", { id: "build-file", rows: "6", required: true, placeholder: "FROM base\nRUN echo hello > /hello" });
    const build = h("form", { class: "grid-form" }, field("Name", bName), field("Build file", bFile), h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Build")));
    build.addEventListener("submit", (e) => {
      e.preventDefault();
      stream("build", bName.value.trim(), { body: bFile.value, headers: { "Content-Type": "text/plain" } });
    });
    const pName = h("input", { id: "pull-name", required: true, placeholder: "alpine" });
    const pImage = h("input", { id: "pull-image", required: true, placeholder: "docker.io/library/alpine:3" });
    const pInsecure = h("input", { type: "checkbox", id: "pull-insecure" });
    const pull = h(
      "form",
      { class: "grid-form" },
      field("Name", pName),
      field("Image", pImage),
      field("Plain HTTP (loopback registries)", pInsecure),
      h("div", { class: "form-actions" }, h("button", { type: "submit", class: "primary" }, "Pull")),
    );
    pull.addEventListener("submit", (e) => {
      e.preventDefault();
      stream("pull", pName.value.trim(), {
        body: JSON.stringify({ image: pImage.value.trim(), insecure: pInsecure.checked }),
        headers: { "Content-Type": "application/json" },
      });
    });
    forms.push(h("details", { class: "card" }, h("summary", {}, "Build from a build file"), build));
    forms.push(h("details", { class: "card" }, h("summary", {}, "Pull an image"), pull));
  }
  clear(main, h("div", { class: "page-head" }, h("h1", {}, "Templates")), forms, status, log, list);
  load();
  return () => {};
}

/** One build or pull event (NDJSON, `event` tagged) as a line of the progress log. */
function progressLine(v: any): string {
  switch (v.event) {
    case "step":
      return `[${v.step}/${v.of}] ${v.instruction}${v.cached ? " (cached)" : ""}\n`;
    case "output":
      return String(v.text ?? "");
    case "error":
      return `error${v.step != null ? ` in step ${v.step}` : ""}: ${v.message}\n`;
    case "done":
      return `done: ${v.template}, ${v.layers} layers, ${v.steps} steps (${v.cached_steps} cached) in ${Number(v.seconds).toFixed(1)} s\n`;
    default:
      return `${JSON.stringify(v)}\n`;
  }
}
