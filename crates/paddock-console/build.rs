//! Builds the web console (`console/` at the workspace root) when its output is missing or
//! older than its sources, so `cargo build` on a fresh checkout gives a binary with a working
//! console. Needs Node.js 20 or later and npm (README.md); fails with a message naming them
//! when they are missing.
//!
//! Reruns only when the sources, `index.html`, the package files or the build configuration
//! change, so ordinary Rust builds never touch npm.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// What the console's build reads; `dist/` is stale when any of it is newer.
const INPUTS: [&str; 6] = [
    "src",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let console = manifest.join("../../console");
    let console = console.canonicalize().unwrap_or(console);
    for i in INPUTS {
        println!("cargo:rerun-if-changed={}", console.join(i).display());
    }
    println!("cargo:rerun-if-env-changed=PADDOCK_CONSOLE_NPM");
    let dist_index = console.join("dist/index.html");
    let newest_input = INPUTS.iter().filter_map(|i| newest(&console.join(i))).max();
    let built = mtime(&dist_index);
    let stale = match (built, newest_input) {
        (None, _) => true,
        (Some(b), Some(i)) => i > b,
        (Some(_), None) => false,
    };
    if stale {
        build(&console);
    }
    println!(
        "cargo:rustc-env=PADDOCK_CONSOLE_DIST={}",
        console.join("dist").display()
    );
}

/// `npm ci` (when `node_modules` is missing or older than the lock file), then `npm run build`.
fn build(console: &Path) {
    let npm = std::env::var("PADDOCK_CONSOLE_NPM").unwrap_or_else(|_| "npm".into());
    let installed = mtime(&console.join("node_modules/.package-lock.json"));
    let lock = mtime(&console.join("package-lock.json"));
    if installed.is_none() || lock > installed {
        run(console, &npm, &["ci", "--no-audit", "--no-fund"]);
    }
    run(console, &npm, &["run", "build"]);
}

fn run(dir: &Path, npm: &str, args: &[&str]) {
    let out = Command::new(npm).args(args).current_dir(dir).output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "\n\nbuilding the web console needs Node.js 20 or later and npm: `{npm}` was not \
             found.\nInstall them (Debian: `apt-get install nodejs npm`) and build again; \
             see README.md.\n\n"
        ),
        Err(e) => panic!(
            "running `{npm} {}` in {}: {e}",
            args.join(" "),
            dir.display()
        ),
        Ok(o) if !o.status.success() => panic!(
            "\n\n`{npm} {}` in {} failed ({}); building the web console needs Node.js 20 or \
             later, npm and the npm registry (README.md).\n--- stdout\n{}\n--- stderr\n{}\n",
            args.join(" "),
            dir.display(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        ),
        Ok(_) => {}
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The newest modification time of a file or of anything under a directory.
fn newest(p: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(p).ok()?;
    let mut t = meta.modified().ok();
    if meta.is_dir() {
        for e in std::fs::read_dir(p).ok()?.flatten() {
            t = t.max(newest(&e.path()));
        }
    }
    t
}
