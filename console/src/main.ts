// The console's shell: the session, the navigation and a hash router. Pages live in
// src/pages; each returns a cleanup function that stops its timers and sockets.

import "./style.css";
import { api, ApiError, get, Me, setCsrf, whenUnauthorized } from "./api";
import { clear, h } from "./dom";
import type { Cleanup, Ctx } from "./ctx";
import { loginPage } from "./pages/login";
import { sandboxesPage } from "./pages/sandboxes";
import { detailPage } from "./pages/detail";
import { templatesPage } from "./pages/templates";
import { adminPage } from "./pages/admin";
import { nodesPage } from "./pages/nodes";


let me: Me | null = null;
let cleanup: Cleanup | null = null;
const app = document.getElementById("app")!;

async function loadSession(): Promise<void> {
  try {
    me = await get<Me>("/v1/session");
    setCsrf(me.csrf_token);
  } catch {
    me = null;
  }
}

export function loggedIn(m: Me): void {
  me = m;
  setCsrf(m.csrf_token);
  location.hash = "#/sandboxes";
  render();
}

async function logout(): Promise<void> {
  try {
    await api("DELETE", "/v1/session");
  } catch {
    // the session may already be gone
  }
  me = null;
  setCsrf("");
  location.hash = "#/login";
  render();
}

whenUnauthorized(() => {
  if (me) {
    me = null;
    location.hash = "#/login";
    render();
  }
});

function nav(route: string): HTMLElement {
  const link = (href: string, label: string, active: boolean) =>
    h("a", { href, "aria-current": active ? "page" : null }, label);
  const admin = me!.admin;
  const operator = admin || me!.role === "operator";
  return h(
    "header",
    { class: "top" },
    h("button", { class: "skip", onclick: () => document.getElementById("main")?.focus() }, "Skip to content"),
    h("a", { class: "brand", href: "#/sandboxes" }, "Paddock"),
    h(
      "nav",
      { "aria-label": "Main" },
      link("#/sandboxes", "Sandboxes", route.startsWith("sandboxes")),
      link("#/templates", "Templates", route.startsWith("templates")),
      admin ? link("#/admin/keys", "Keys", route === "admin/keys") : null,
      admin ? link("#/admin/audit", "Audit", route === "admin/audit") : null,
      admin ? link("#/admin/events", "Events", route === "admin/events") : null,
      operator ? link("#/admin/nodes", "Nodes", route === "admin/nodes") : null,
      admin ? link("#/admin/status", "Status", route === "admin/status") : null,
    ),
    h(
      "div",
      { class: "who" },
      h("span", { class: "who-name", title: `key ${me!.key_id}` }, me!.name),
      h("span", { class: "badge" }, me!.role),
      h("span", { class: "who-tenant" }, `tenant ${me!.tenant}`),
      h("button", { class: "link", onclick: logout }, "Log out"),
    ),
  );
}

function render(): void {
  cleanup?.();
  cleanup = null;
  const route = location.hash.replace(/^#\/?/, "") || "sandboxes";
  if (!me) {
    const main = h("main", { id: "main", tabindex: "-1", class: "login-main" });
    clear(app, main);
    cleanup = loginPage(main, loggedIn);
    return;
  }
  if (route === "login") {
    location.hash = "#/sandboxes";
    return;
  }
  const main = h("main", { id: "main", tabindex: "-1" });
  clear(app, nav(route), main);
  const ctx: Ctx = { me, main };
  const parts = route.split("/");
  try {
    if (parts[0] === "sandboxes" && parts[1]) cleanup = detailPage(ctx, decodeURIComponent(parts[1]), parts[2] ?? "overview");
    else if (parts[0] === "sandboxes") cleanup = sandboxesPage(ctx);
    else if (parts[0] === "templates") cleanup = templatesPage(ctx);
    else if (parts[0] === "admin" && parts[1] === "nodes") cleanup = nodesPage(ctx);
    else if (parts[0] === "admin") cleanup = adminPage(ctx, parts[1] ?? "status");
    else clear(main, h("h1", {}, "Not found"), h("p", {}, "No such page."));
  } catch (e) {
    clear(main, h("p", { class: "notice error" }, String(e instanceof ApiError ? e.message : e)));
  }
}

window.addEventListener("hashchange", render);
loadSession().then(render);
