//! The web console's built assets (`console/dist`), embedded at compile time by
//! `build.rs` (which runs `npm ci` and `npm run build` when they are missing or stale).
//!
//! [`asset`] answers a request path with the file's bytes and the headers to send: a
//! content type by extension, `immutable` caching for Vite's content-hashed `assets/`, and
//! `no-cache` for `index.html`, so a new server version is picked up at the next load.
//! Serving and routing are the server's (`paddock-server::console`).

use include_dir::{Dir, include_dir};

static DIST: Dir<'static> = include_dir!("$PADDOCK_CONSOLE_DIST");

/// One embedded file and how to serve it.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

/// Cache policy of content-hashed files: their name changes whenever their bytes do.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache policy of everything else (`index.html`, icons): revalidate each time.
pub const NO_CACHE: &str = "no-cache";

/// The asset at a request path (`/`, `/index.html`, `/assets/index-3f2a.js`), or `None`.
/// Paths with `..`, empty segments or a backslash are never looked up.
pub fn asset(path: &str) -> Option<Asset> {
    let rel = path.strip_prefix('/')?;
    let rel = if rel.is_empty() { "index.html" } else { rel };
    if rel
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
        || rel.contains('\\')
    {
        return None;
    }
    let file = DIST.get_file(rel)?;
    let cache_control = if rel.starts_with("assets/") {
        IMMUTABLE
    } else {
        NO_CACHE
    };
    Some(Asset {
        bytes: file.contents(),
        content_type: content_type(rel),
        cache_control,
    })
}

/// Every embedded file's path (for the bundle-size bench and tests).
pub fn files() -> Vec<(&'static str, usize)> {
    let mut out = Vec::new();
    walk(&DIST, &mut out);
    out
}

fn walk(d: &'static Dir<'static>, out: &mut Vec<(&'static str, usize)>) {
    for f in d.files() {
        if let Some(p) = f.path().to_str() {
            out.push((p, f.contents().len()));
        }
    }
    for sub in d.dirs() {
        walk(sub, out);
    }
}

/// The content type of a file name by its extension.
pub fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_hashed_assets_are_embedded_with_their_cache_policy() {
        let index = asset("/").expect("index.html");
        assert_eq!(index.content_type, "text/html; charset=utf-8");
        assert_eq!(index.cache_control, NO_CACHE);
        let js = files()
            .into_iter()
            .find(|(p, _)| p.starts_with("assets/") && p.ends_with(".js"))
            .expect("a bundled script");
        let a = asset(&format!("/{}", js.0)).expect("the script");
        assert_eq!(a.cache_control, IMMUTABLE);
        assert!(a.content_type.starts_with("text/javascript"));
    }

    #[test]
    fn odd_paths_are_not_looked_up() {
        for p in [
            "",
            "index.html",
            "/../index.html",
            "/assets//x.js",
            "/./index.html",
            "/a\\b",
        ] {
            assert!(asset(p).is_none(), "{p}");
        }
        assert!(asset("/missing.js").is_none());
    }
}
