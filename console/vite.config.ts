import { defineConfig } from "vite";

// The console is served by `paddock serve` from the bytes embedded at compile time
// (crates/paddock-console). Content-hashed file names under assets/ let the server mark
// them immutable; index.html is served no-cache.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    sourcemap: false,
    target: "es2022",
    // Small enough to inline would mean data: URLs; keep every asset a file of our own.
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 600,
  },
  server: {
    // `npm run dev` against a local `paddock serve` (see README.md).
    proxy: { "/v1": { target: "http://127.0.0.1:7070", ws: true } },
  },
});
