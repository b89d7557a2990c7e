// What the shell (main.ts) hands every page: the session and the element to render into,
// and the cleanup a page returns. A leaf, so pages never import the shell.

import type { Me } from "./api";

export type Cleanup = () => void;
export interface Ctx {
  me: Me;
  main: HTMLElement;
}
