//! The map and the repository agree: `ARCHITECTURE.md` names every crate, every source
//! module (file or directory under `crates/*/src`), every bench and every integration test
//! file; and no document or comment points outside the repository. Fast, no root.
//!
//! "Named" means: a crate has a `### \`crates/<name>\`` section; a module's name (its file
//! stem, or its directory for `mod.rs`) is a word inside a backticked span of its crate's
//! section; a bench or a test file (`tests/<name>.rs` or `tests/<dir>/`) is a word inside a
//! backticked span anywhere in the document.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Every word (`[A-Za-z0-9_-]+`, also split at `-` and `_`-free forms kept whole) inside a
/// backticked span of `text`.
fn backticked_words(text: &str) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    for (i, span) in text.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        for w in span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
            if !w.is_empty() {
                words.insert(w.to_owned());
            }
        }
    }
    words
}

/// The section of `### \`crates/<name>\`` ... up to the next `### ` or `## `.
fn section<'a>(doc: &'a str, krate: &str) -> Option<&'a str> {
    let head = format!("### `crates/{krate}`");
    let start = doc.find(&head)?;
    let rest = &doc[start + head.len()..];
    let end = rest
        .find("\n### ")
        .into_iter()
        .chain(rest.find("\n## "))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "target" || name == "node_modules" || name.starts_with('.') || name == "dist" {
            continue;
        }
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn crates(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn architecture_md_names_every_crate_module_bench_and_test() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let all_words = backticked_words(&doc);
    let mut missing = Vec::new();
    for krate in crates(&root) {
        let Some(sec) = section(&doc, &krate) else {
            missing.push(format!(
                "crate {krate}: no \"### `crates/{krate}`\" section"
            ));
            continue;
        };
        let words = backticked_words(sec);
        let src = root.join("crates").join(&krate).join("src");
        let mut files = Vec::new();
        files_under(&src, &mut files);
        for f in files {
            if f.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = f.strip_prefix(&src).expect("under src");
            let stem = f.file_stem().expect("stem").to_string_lossy().into_owned();
            // The crate roots are the crate; a `mod.rs` is its directory.
            let name = match stem.as_str() {
                "lib" | "main" if rel.parent() == Some(Path::new("")) => continue,
                "mod" => match rel.parent().and_then(Path::file_name) {
                    Some(d) => d.to_string_lossy().into_owned(),
                    None => continue,
                },
                _ => stem,
            };
            if !words.contains(&name) {
                missing.push(format!(
                    "module crates/{krate}/src/{} (`{name}`) is not named in the {krate} section",
                    rel.display()
                ));
            }
        }
    }
    let paddock = root.join("crates/paddock");
    for (dir, what) in [("benches", "bench"), ("tests", "test")] {
        for e in std::fs::read_dir(paddock.join(dir)).expect(dir).flatten() {
            let p = e.path();
            let name = if p.is_dir() {
                e.file_name().to_string_lossy().into_owned()
            } else if p.extension().is_some_and(|x| x == "rs") {
                p.file_stem().expect("stem").to_string_lossy().into_owned()
            } else {
                continue;
            };
            // A name with a dot (`e2b-2.31`) is looked for as written.
            let named = all_words.contains(&name) || (name.contains('.') && doc.contains(&name));
            if !named {
                missing.push(format!("{what} crates/paddock/{dir}/{name} is not named"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md is missing {} name(s):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

/// Places outside the repository that documents and comments must never point to (spelled
/// in pieces, so this file does not name them itself).
const OUTSIDE: &[&str] = &[
    concat!("..", "/shared"),
    concat!("/work", "/shared"),
    concat!("/work", "/briefs"),
    concat!("..", "/briefs"),
];

#[test]
fn no_document_or_comment_points_outside_the_repository() {
    let root = root();
    let mut files = Vec::new();
    files_under(&root, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(
            ext,
            "md" | "rs" | "toml" | "ts" | "mjs" | "py" | "sh" | "json" | "yml"
        ) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let rel = f.strip_prefix(&root).expect("in root").to_path_buf();
        // This file names the patterns it looks for.
        if rel == Path::new("crates/paddock/tests/architecture.rs") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if let Some(p) = OUTSIDE.iter().find(|p| line.contains(**p)) {
                bad.push(format!("{}:{}: {p}", rel.display(), n + 1));
            }
            // Relative Markdown links must resolve inside the repository.
            if ext == "md" {
                for link in line.split("](").skip(1) {
                    let target = link.split([')', '#', ' ']).next().unwrap_or("");
                    if target.is_empty() || target.contains("://") || target.starts_with('#') {
                        continue;
                    }
                    let base = f.parent().expect("parent");
                    let joined = normalize(&base.join(target));
                    if !joined.starts_with(&root) {
                        bad.push(format!("{}:{}: link {target}", rel.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} pointer(s) outside the repository:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// `a/b/../c` → `a/c`, without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The one place of each crate where `unsafe` is allowed: the `sys` modules of the agent and
/// the runtime (each `lib.rs` allows the `unsafe_code` lint on `mod sys` only). The gVisor
/// compatibility preload (`gvisor-compat/compat.rs`) is not a module of any crate: it is
/// built on its own as a C-ABI shared library whose every export is `unsafe extern "C"`.
const UNSAFE_ALLOWED: &[&str] = &[
    "crates/paddock-agent/src/sys/",
    "crates/paddock-runtime/src/sys/",
    "crates/paddock-runtime/gvisor-compat/compat.rs",
];

/// Where `unsafe` appears as code in `line` (not in a comment or a string with a dash after
/// it, such as a CSP's `'unsafe-inline'`): an `unsafe` block, fn, impl, trait, extern or
/// attribute, or an `allow`/`expect` of the `unsafe_code` lint.
fn unsafe_code_in(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    let mut rest = code;
    while let Some(i) = rest.find("unsafe") {
        let before = rest[..i].chars().next_back();
        let after = &rest[i + "unsafe".len()..];
        let word_start = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if word_start
            && (after.starts_with(" {")
                || after.starts_with(" fn")
                || after.starts_with(" impl")
                || after.starts_with(" trait")
                || after.starts_with(" extern")
                || after.starts_with('(')
                || after.starts_with("_code"))
        {
            return true;
        }
        rest = after;
    }
    false
}

#[test]
fn unsafe_code_lives_only_in_the_sys_modules() {
    let root = root();
    let mut files = Vec::new();
    files_under(&root.join("crates"), &mut files);
    let mut bad = Vec::new();
    for f in files {
        if f.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = f.strip_prefix(&root).expect("in root");
        let rel_s = rel.to_string_lossy();
        if UNSAFE_ALLOWED.iter().any(|p| rel_s.starts_with(p))
            || rel == Path::new("crates/paddock/tests/architecture.rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("source file");
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            // Forbidding or denying it is always fine.
            if !unsafe_code_in(line)
                || line.contains("forbid(unsafe_code)")
                || line.contains("deny(unsafe_code)")
            {
                continue;
            }
            // The one allowance per crate: `#[allow(unsafe_code, ...)]` on `mod sys;` in the
            // agent's and the runtime's lib.rs.
            let is_root = rel == Path::new("crates/paddock-agent/src/lib.rs")
                || rel == Path::new("crates/paddock-runtime/src/lib.rs");
            let on_sys = lines[n..].iter().take(6).any(|l| l.trim() == "mod sys;");
            if is_root && line.contains("allow(") && on_sys {
                continue;
            }
            if is_root && line.trim_start().starts_with("unsafe_code,") && on_sys {
                continue;
            }
            bad.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
        }
    }
    assert!(
        bad.is_empty(),
        "`unsafe` outside the sys modules (move it behind a safe function in the crate's \
         `sys` module, with a SAFETY note):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_unsafe_finder_sees_code_and_not_prose() {
    assert!(unsafe_code_in("    let r = unsafe { libc::close(3) };"));
    assert!(unsafe_code_in("pub unsafe fn f() {}"));
    assert!(unsafe_code_in("#![allow(unsafe_code)]"));
    assert!(unsafe_code_in("#[unsafe(no_mangle)]"));
    assert!(!unsafe_code_in("// SAFETY: this unsafe { } is fine"));
    assert!(!unsafe_code_in("style-src 'self' 'unsafe-inline';"));
    assert!(!unsafe_code_in("/// no `unsafe` here"));
}

/// Every dependency's version is declared once, in the workspace's
/// `[workspace.dependencies]`: a crate's manifest only says `workspace = true` (with the
/// features it adds), so two crates can never drift to different versions of one library.
#[test]
fn every_dependency_version_comes_from_the_workspace() {
    let root = root();
    let mut bad = Vec::new();
    for krate in crates(&root) {
        let manifest = root.join("crates").join(&krate).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("Cargo.toml");
        let mut section = String::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            let is_dep = section.ends_with("dependencies]")
                && line.split('=').next().is_some_and(|k| {
                    let k = k.trim();
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                });
            if is_dep
                && line.contains('=')
                && !line.contains("workspace = true")
                && !line.contains(".workspace")
            {
                bad.push(format!("crates/{krate}/Cargo.toml:{}: {line}", n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "dependencies declared outside [workspace.dependencies]:\n{}",
        bad.join("\n")
    );
}

/// The files of `paddock-server` that may import the REST routes (`crate::api`): the crate
/// root, the router (`app`) and the OpenAPI document's assembly. Domain modules, the E2B
/// API and the middlewares take what they share with the routes from modules below both
/// (`wire`, `sandbox_spec`, `code`, `auth::keys`, `templates::gate`).
const MAY_IMPORT_API: [&str; 3] = ["lib.rs", "app.rs", "openapi.rs"];

#[test]
fn only_the_edge_of_paddock_server_imports_its_routes() {
    let src = root().join("crates/paddock-server/src");
    let mut files = Vec::new();
    files_under(&src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        if rel.starts_with("api")
            || MAY_IMPORT_API.iter().any(|m| rel == Path::new(m))
            || f.extension().is_none_or(|e| e != "rs")
        {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("crate::api::") || code.contains("crate::api;") {
                bad.push(format!("src/{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "paddock-server modules outside api/ import crate::api (move what they share below \
         both, see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}

/// The files of `paddock-server` import each other as a tree: no file reaches itself again
/// through `crate::` paths (outside its unit tests). What the routes share with the rest
/// comes from modules below both. A path names the deepest module file it reaches, as
/// written (through a re-export it names the re-exporting file: import the leaf directly).
#[test]
fn paddock_server_modules_import_each_other_as_a_tree() {
    assert_files_form_a_tree("paddock-server");
}

/// The same for `paddock-service`: what the state holds of a domain comes from a leaf below
/// it (ARCHITECTURE.md, `state`), and the domain services sit above the state.
#[test]
fn paddock_service_modules_import_each_other_as_a_tree() {
    assert_files_form_a_tree("paddock-service");
}

/// The domain crate knows no HTTP server: none of these in its manifest (`reqwest`, the
/// outbound client of webhook and alert delivery, is allowed; so is `utoipa` when optional,
/// behind the `openapi` feature that only the edge turns on: it describes the wire types for
/// the edge's document and serves nothing).
#[test]
fn paddock_service_depends_on_no_http_server_crate() {
    const HTTP: [&str; 9] = [
        "paddock-server",
        "axum",
        "axum-server",
        "hyper",
        "hyper-util",
        "tower",
        "tower-http",
        "utoipa",
        "headers",
    ];
    let manifest = root().join("crates/paddock-service/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("Cargo.toml");
    let mut section = String::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if !section.ends_with("dependencies]") {
            continue;
        }
        let name = line.split(['=', '.']).next().unwrap_or("").trim();
        if name == "utoipa" && line.contains("optional = true") {
            continue;
        }
        if HTTP.contains(&name) {
            bad.push(line.to_owned());
        }
    }
    assert!(
        bad.is_empty(),
        "crates/paddock-service depends on HTTP server crates (the edge is paddock-server):\n{}",
        bad.join("\n")
    );
}

fn assert_files_form_a_tree(krate: &str) {
    use std::collections::BTreeMap;
    let src = root().join("crates").join(krate).join("src");
    let mut files = Vec::new();
    files_under(&src, &mut files);
    // Module path (`a::b`) → file (relative to src).
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        if f.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let mut parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
            parts.pop();
        }
        modules.insert(parts.join("::"), rel.display().to_string());
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in modules.values() {
        let text = std::fs::read_to_string(src.join(file)).expect("source file");
        let text = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or("");
        let out = edges.entry(file.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let path: Vec<&str> = code[i + "crate::".len()..]
                    .split("::")
                    .map(|s| {
                        let end = s
                            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .unwrap_or(s.len());
                        &s[..end]
                    })
                    .take_while(|s| !s.is_empty())
                    .collect();
                let target = (1..=path.len())
                    .rev()
                    .find_map(|n| modules.get(&path[..n].join("::")));
                if let Some(t) = target.filter(|t| *t != file) {
                    out.insert(t.clone());
                }
            }
        }
    }
    // A depth-first walk; a file met again on the current path closes a circle.
    fn walk(
        f: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == f) {
            circles.push(format!("{} -> {f}", path[i..].join(" -> ")));
            return;
        }
        if !done.insert(f.to_owned()) {
            return;
        }
        path.push(f.to_owned());
        for t in edges.get(f).into_iter().flatten() {
            walk(t, edges, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for f in edges.keys() {
        walk(f, &edges, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(
        circles.is_empty(),
        "{krate} files import each other in a circle (move what both need below them):\n{}",
        circles.join("\n")
    );
}
