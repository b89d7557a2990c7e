import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import { enc } from "../api";
import { h, notice } from "../dom";
import type { Sandbox } from "./sandboxes";

// A shell on a PTY over the WebSocket route GET /v1/sandboxes/{id}/pty. The session cookie
// authenticates it (the browser sends it with the upgrade; the server checks the Origin).
// Output arrives as binary frames; input and resizes go as JSON text frames.
export function terminalPanel(panel: HTMLElement, s: Sandbox): () => void {
  if (s.state !== "running") {
    panel.replaceChildren(notice("info", "The sandbox is not running."));
    return () => {};
  }
  const box = h("div", { class: "term", id: "terminal" });
  const state = h("p", { class: "muted", "aria-live": "polite" }, "Connecting…");
  panel.replaceChildren(box, state);
  const term = new Terminal({ cursorBlink: true, fontSize: 14, fontFamily: "ui-monospace, Menlo, Consolas, monospace", scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  try {
    fit.fit();
  } catch {
    // not laid out yet
  }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/v1/sandboxes/${enc(s.id)}/pty?cols=${term.cols}&rows=${term.rows}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    state.textContent = "Connected. Closing this page ends the shell.";
    term.focus();
  };
  ws.onmessage = (m) => {
    if (typeof m.data === "string") {
      try {
        const v = JSON.parse(m.data);
        if (v.type === "exit") state.textContent = `The shell exited (${v.exit_code ?? v.status ?? "done"}).`;
        else if (v.type === "error") state.textContent = `Error: ${v.message}`;
      } catch {
        term.write(m.data);
      }
    } else {
      term.write(new Uint8Array(m.data as ArrayBuffer));
    }
  };
  ws.onclose = () => {
    if (!state.textContent?.startsWith("The shell exited")) state.textContent = "Disconnected.";
  };
  const send = (v: unknown) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(v));
  term.onData((data) => send({ type: "input", data }));
  term.onResize(({ cols, rows }) => send({ type: "resize", cols, rows }));
  const onResize = () => {
    try {
      fit.fit();
    } catch {
      // hidden
    }
  };
  window.addEventListener("resize", onResize);
  return () => {
    window.removeEventListener("resize", onResize);
    ws.close();
    term.dispose();
  };
}
