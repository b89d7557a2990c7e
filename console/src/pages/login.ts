import { api, ApiError, Me } from "../api";
import { h, notice } from "../dom";

// Log in with an API key. The key goes to POST /v1/session once and is dropped: the
// session lives in an HttpOnly cookie, and nothing is written to localStorage or sessionStorage.
export function loginPage(main: HTMLElement, done: (m: Me) => void): () => void {
  const key = h("input", {
    type: "password",
    id: "api-key",
    name: "api_key",
    autocomplete: "off",
    required: true,
    placeholder: "pdk_…",
    spellcheck: "false",
  });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card login" },
    h("h1", {}, "Paddock"),
    h("p", {}, "Log in with an API key. The key is exchanged for a session cookie and is not kept in the browser."),
    h("label", { class: "field" }, h("span", {}, "API key"), key),
    h("button", { type: "submit", class: "primary" }, "Log in"),
    status,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    status.replaceChildren();
    try {
      const me = await api<Me>("POST", "/v1/session", { api_key: key.value.trim() });
      key.value = "";
      done(me);
    } catch (err) {
      status.replaceChildren(notice("error", err instanceof ApiError ? err.message : String(err)));
    }
  });
  main.replaceChildren(form);
  key.focus();
  return () => {};
}
