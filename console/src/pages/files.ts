import { api, enc, get, upload } from "../api";
import { bytes, clear, h, notice, table, time } from "../dom";
import type { Sandbox } from "./sandboxes";

interface Entry {
  name: string;
  path: string;
  type: string;
  size: number;
  modified_at: string | null;
}

// A file browser on /v1/sandboxes/{id}/fs/list and /files: list, open directories,
// download (a plain link: the cookie authenticates the GET), upload with progress, delete.
export function filesPanel(panel: HTMLElement, s: Sandbox): () => void {
  if (s.state !== "running") {
    panel.replaceChildren(notice("info", "The sandbox is not running."));
    return () => {};
  }
  const home = s.user === "root" ? "/root" : s.user ? `/home/${s.user}` : "/";
  const pathIn = h("input", { id: "files-path", value: home, "aria-label": "Directory" });
  const status = h("div", { "aria-live": "polite", id: "files-status" });
  const fileIn = h("input", { type: "file", id: "files-upload", multiple: true });
  const progress = h("progress", { max: "100", value: "0", hidden: true, id: "files-progress" });
  const list = h("div", { class: "scroll" });
  const base = `/v1/sandboxes/${enc(s.id)}`;
  const join = (dir: string, name: string) => `${dir.replace(/\/+$/, "")}/${name}`;

  const load = async () => {
    const dir = pathIn.value.trim() || "/";
    try {
      const r = await get<{ entries: Entry[] }>(`${base}/fs/list?path=${enc(dir)}`);
      const entries = r.entries.sort((a, b) => (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) || a.name.localeCompare(b.name));
      const { table: t, body } = table(["Name", "Size", "Modified", ""], "files");
      if (dir !== "/") {
        const up = dir.replace(/\/+$/, "").replace(/\/[^/]*$/, "") || "/";
        body.append(h("tr", {}, h("td", {}, h("button", { class: "link", onclick: () => go(up) }, "..")), h("td"), h("td"), h("td")));
      }
      for (const e of entries) {
        const name =
          e.type === "dir"
            ? h("button", { class: "link", onclick: () => go(e.path) }, `${e.name}/`)
            : h("a", { href: `${base}/files?path=${enc(e.path)}`, download: e.name }, e.name);
        body.append(
          h(
            "tr",
            { "data-name": e.name },
            h("td", {}, name),
            h("td", {}, e.type === "dir" ? "–" : bytes(e.size)),
            h("td", {}, time(e.modified_at)),
            h("td", { class: "actions" }, h("button", { class: "danger", onclick: () => remove(e) }, "Delete")),
          ),
        );
      }
      clear(list, t);
    } catch (e) {
      clear(list, notice("error", (e as Error).message));
    }
  };
  const go = (p: string) => {
    pathIn.value = p;
    load();
  };
  const remove = async (e: Entry) => {
    if (!confirm(`Delete ${e.path}?`)) return;
    try {
      await api("DELETE", `${base}/files?path=${enc(e.path)}`);
      status.replaceChildren(notice("ok", `Deleted ${e.path}.`));
      load();
    } catch (err) {
      status.replaceChildren(notice("error", (err as Error).message));
    }
  };
  fileIn.addEventListener("change", async () => {
    const dir = pathIn.value.trim() || "/";
    for (const f of Array.from(fileIn.files ?? [])) {
      progress.hidden = false;
      progress.value = 0;
      try {
        await upload(`${base}/files?path=${enc(join(dir, f.name))}`, f, (done, total) => {
          progress.value = total ? Math.round((done / total) * 100) : 100;
        });
        status.replaceChildren(notice("ok", `Uploaded ${f.name} (${bytes(f.size)}).`));
      } catch (err) {
        status.replaceChildren(notice("error", `${f.name}: ${(err as Error).message}`));
      }
    }
    progress.hidden = true;
    fileIn.value = "";
    load();
  });
  pathIn.addEventListener("keydown", (e) => {
    if (e.key === "Enter") load();
  });
  clear(
    panel,
    h(
      "div",
      { class: "toolbar" },
      pathIn,
      h("button", { onclick: load }, "Open"),
      h("label", { class: "button" }, "Upload…", fileIn),
      progress,
    ),
    status,
    list,
  );
  load();
  return () => {};
}
