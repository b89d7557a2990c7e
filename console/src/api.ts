// The console's only way to the server: the documented REST API under /v1, with the
// session cookie (set by POST /v1/session, HttpOnly, never readable here) and the CSRF
// token the session gave us on every request that changes something.

export interface Me {
  key_id: string;
  name: string;
  tenant: string;
  role: string;
  admin: boolean;
  csrf_token: string;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrf = "";
let onUnauthorized: () => void = () => {};

export function setCsrf(token: string): void {
  csrf = token;
}

export function csrfToken(): string {
  return csrf;
}

export function whenUnauthorized(f: () => void): void {
  onUnauthorized = f;
}

export async function raw(method: string, path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (method !== "GET" && method !== "HEAD") headers.set("X-CSRF-Token", csrf);
  const r = await fetch(path, { ...init, method, headers, credentials: "same-origin" });
  if (!r.ok) {
    let code = "error";
    let message = `${r.status} ${r.statusText}`;
    try {
      const j = await r.json();
      code = j.code ?? code;
      message = j.message ?? message;
    } catch {
      // not JSON
    }
    if (r.status === 401 && path !== "/v1/session") onUnauthorized();
    throw new ApiError(r.status, code, message);
  }
  return r;
}

export async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = {};
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  const r = await raw(method, path, init);
  if (r.status === 204) return undefined as T;
  return (await r.json()) as T;
}

export const get = <T = any>(path: string) => api<T>("GET", path);

/** Reads an NDJSON response line by line (template build and pull progress). */
export async function ndjson(r: Response, each: (v: any) => void): Promise<void> {
  const reader = r.body!.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) {
        try {
          each(JSON.parse(line));
        } catch {
          each({ message: line });
        }
      }
    }
  }
  if (buf.trim()) each({ message: buf.trim() });
}

/** PUT a file with upload progress (fetch has no upload progress). */
export function upload(path: string, file: Blob, progress: (done: number, total: number) => void): Promise<any> {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open("PUT", path);
    x.setRequestHeader("X-CSRF-Token", csrf);
    x.setRequestHeader("Content-Type", "application/octet-stream");
    x.upload.onprogress = (e) => progress(e.loaded, e.lengthComputable ? e.total : file.size);
    x.onload = () => {
      if (x.status >= 200 && x.status < 300) {
        resolve(x.responseText ? JSON.parse(x.responseText) : null);
      } else {
        let msg = `${x.status}`;
        try {
          msg = JSON.parse(x.responseText).message ?? msg;
        } catch {
          // not JSON
        }
        reject(new ApiError(x.status, "error", msg));
      }
    };
    x.onerror = () => reject(new ApiError(0, "network", "upload failed: network error"));
    x.send(file);
  });
}

export const enc = encodeURIComponent;
