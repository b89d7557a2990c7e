import { get, enc } from "../api";
import { h } from "../dom";
import type { Sandbox } from "./sandboxes";

/** The noVNC port of a desktop sandbox (template `desktop`, E2B's desktop SDKs' stream). */
export const NOVNC_PORT = 6080;

/** The live view's URL: noVNC's page through the port proxy, host-routed (its own origin:
 * a path-routed page would share the console's), with the access token when the port is
 * private. */
export function viewUrl(p: { url: string; public: boolean; access_token?: string }): string {
  const url = `${p.url}vnc.html?autoconnect=true&resize=scale`;
  return p.public || !p.access_token ? url : `${url}&paddock_token=${encodeURIComponent(p.access_token)}`;
}

/** Appends the live view of a running sandbox to `panel` when something listens on port
 * 6080 (started by `paddock desktop ID` or an SDK's `stream.start()`); nothing otherwise. */
export async function desktopView(panel: HTMLElement, s: Sandbox): Promise<void> {
  if (s.state !== "running") return;
  let p: any;
  try {
    p = await get(`/v1/sandboxes/${enc(s.id)}/ports/${NOVNC_PORT}`);
  } catch {
    return;
  }
  if (!p.listening || !p.url) return;
  const src = viewUrl(p);
  panel.append(
    h(
      "section",
      { class: "desktop", id: "desktop" },
      h("h2", {}, "Desktop"),
      h("p", { class: "muted" }, h("a", { href: src, target: "_blank", rel: "noopener noreferrer" }, "Open the live view in a new tab")),
      h("iframe", { id: "desktop-view", src, title: `Live view of ${s.id}`, class: "desktop-view" }),
    ),
  );
}
