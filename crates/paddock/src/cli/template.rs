//! `paddock template ls|show|build|pull|import|bootstrap|ready|log|rm|layers|prune`
//! (`/v1/templates`, `/v1/layers`). Making and deleting templates, reading build logs, and
//! listing or pruning layers, needs an admin key.
//!
//! `build` sends a build file (or a directory as a tar context holding it) and prints the
//! server's progress as it comes (`progress`): one line per step, a spinner with the elapsed
//! time on a terminal, the commands' output only with `--verbose` (the server keeps all of it:
//! `paddock template log NAME`); `ready python|node|go|desktop` makes the `debian` template if it is
//! missing and then builds the ready template from the file shipped in `templates/`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::api::{Api, check};
use super::format::{self, Table};
use super::{Conn, write_stdout};

mod progress;

/// The ready templates' build files, as shipped in the repository.
const READY: &[(&str, &str)] = &[
    (
        "python",
        include_str!("../../../../templates/python.Paddockfile"),
    ),
    (
        "node",
        include_str!("../../../../templates/node.Paddockfile"),
    ),
    ("go", include_str!("../../../../templates/go.Paddockfile")),
    (
        "desktop",
        include_str!("../../../../templates/desktop.Paddockfile"),
    ),
    (
        "code-interpreter",
        include_str!("../../../../templates/code-interpreter.Paddockfile"),
    ),
];

/// The ready templates built on another ready template rather than on `debian`.
const READY_PARENT: &[(&str, &str)] = &[("code-interpreter", "python")];

/// `paddock template`.
#[derive(Args, Debug)]
pub(crate) struct TemplateArgs {
    #[command(subcommand)]
    pub(crate) cmd: TemplateCmd,
}

/// The `template` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum TemplateCmd {
    /// List templates.
    Ls {
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one template: source, layers, defaults, start command and ready check.
    Show {
        name: String,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Build a template from a build file (FROM, RUN, COPY, ENV, WORKDIR, USER, EXPOSE,
    /// START, CMD, ENTRYPOINT, READY).
    Build {
        /// Name of the new template.
        name: String,
        /// A directory (the build context, holding `Paddockfile` or `Dockerfile`), or a build
        /// file without context.
        path: PathBuf,
        /// The build file's path inside the context directory.
        #[arg(long, short = 'f')]
        file: Option<String>,
        /// Print the steps' output too (the server keeps it: `paddock template log NAME`).
        #[arg(long, short = 'v')]
        verbose: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Pull an OCI image from a registry as a template (its env, workdir, user, ports become
    /// the defaults).
    Pull {
        /// Name of the new template.
        name: String,
        /// Image reference: `host[:port]/repo[:tag][@sha256:...]`.
        image: String,
        /// Registry user (with `PADDOCK_REGISTRY_PASSWORD`).
        #[arg(long)]
        username: Option<String>,
        /// Registry password.
        #[arg(long, env = "PADDOCK_REGISTRY_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Plain HTTP (a registry on loopback).
        #[arg(long)]
        insecure: bool,
        /// `os/arch` to pick from a multi-platform image.
        #[arg(long)]
        platform: Option<String>,
        /// Print the download progress per layer too.
        #[arg(long, short = 'v')]
        verbose: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Import a root filesystem (a directory, or a .tar, .tar.gz or .tar.zst) as a template.
    Import {
        /// Name of the new template.
        name: String,
        /// The directory or tarball.
        path: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make a Debian template with debootstrap on the server (release: --suite, default
    /// trixie, the current Debian stable).
    Bootstrap {
        /// Name of the template.
        #[arg(default_value = "debian")]
        name: String,
        /// The Debian release (a suite the server's debootstrap knows).
        #[arg(long, default_value = "trixie")]
        suite: String,
        /// Print debootstrap's output too.
        #[arg(long, short = 'v')]
        verbose: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make a ready template: python (a virtualenv for `user` with pip and pytest), node
    /// (npm) or go; each with build tools, git and curl, on debian (made first if missing);
    /// code-interpreter (on python); desktop (Xvfb, XFCE, x11vnc, noVNC, Chromium).
    Ready {
        #[arg(value_parser = ["python", "node", "go", "code-interpreter", "desktop"])]
        which: String,
        /// Print the steps' output too.
        #[arg(long, short = 'v')]
        verbose: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the full log of a template's last build, pull or bootstrap (kept on the
    /// server, also for failed ones).
    Log {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a template (refused while sandboxes use it).
    Rm {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the layer store: each layer's size and the templates using it.
    Layers {
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove the layers no template uses (left by replaced templates and failed builds;
    /// the next build of such a step runs it again).
    Prune {
        /// Print the server's JSON instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs a `template` subcommand.
pub(crate) async fn run(a: TemplateArgs) -> Result<i32> {
    match a.cmd {
        TemplateCmd::Ls { json, conn } => ls(&Api::new(&conn)?, json).await,
        TemplateCmd::Show { name, json, conn } => show(&Api::new(&conn)?, &name, json).await,
        TemplateCmd::Build {
            name,
            path,
            file,
            verbose,
            conn,
        } => build(&Api::new(&conn)?, &name, &path, file.as_deref(), verbose).await,
        TemplateCmd::Pull {
            name,
            image,
            username,
            password,
            insecure,
            platform,
            verbose,
            conn,
        } => {
            let mut body = serde_json::json!({ "image": image, "insecure": insecure });
            if let Some(u) = username {
                body["username"] = u.into();
            }
            if let Some(p) = password {
                body["password"] = p.into();
            }
            if let Some(p) = platform {
                body["platform"] = p.into();
            }
            let api = Api::new(&conn)?;
            let url = api.url(&["v1", "templates", &name, "pull"]);
            let rb = api.request(Method::POST, url).json(&body);
            progress::follow(&api, rb, "pull", &name, verbose).await
        }
        TemplateCmd::Import { name, path, conn } => import(&Api::new(&conn)?, &name, &path).await,
        TemplateCmd::Bootstrap {
            name,
            suite,
            verbose,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let mut url = api.url(&["v1", "templates", &name, "bootstrap"]);
            url.query_pairs_mut().append_pair("suite", &suite);
            let rb = api.request(Method::POST, url);
            progress::follow(&api, rb, "bootstrap", &name, verbose).await
        }
        TemplateCmd::Log { name, conn } => log(&Api::new(&conn)?, &name).await,
        TemplateCmd::Ready {
            which,
            verbose,
            conn,
        } => ready(&Api::new(&conn)?, &which, verbose).await,
        TemplateCmd::Rm { name, conn } => {
            Api::new(&conn)?.delete(&["v1", "templates", &name]).await?;
            Ok(0)
        }
        TemplateCmd::Layers { json, conn } => layers(&Api::new(&conn)?, json).await,
        TemplateCmd::Prune { json, conn } => prune(&Api::new(&conn)?, json).await,
    }
}

/// `template ls`: the catalogue, as a table or JSON.
async fn ls(api: &Api, json: bool) -> Result<i32> {
    let v: Value = api.get_json(&["v1", "templates"]).await?;
    let ts = v["templates"].as_array().cloned().unwrap_or_default();
    if json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&ts)?))?;
    } else {
        let mut t = Table::new(&["NAME", "LAYERS", "USER", "RUNNING", "SOURCE"]);
        for x in &ts {
            t.row(vec![
                format::cell(&x["name"]),
                x["layers"].as_array().map_or(0, Vec::len).to_string(),
                format::cell(&x["config"]["user"]),
                format::cell(&x["running_sandboxes"]),
                format::cell(&x["source"]),
            ]);
        }
        write_stdout(&t.render())?;
    }
    Ok(0)
}

/// `template show`: one template, as `key: value` lines or JSON.
async fn show(api: &Api, name: &str, json: bool) -> Result<i32> {
    let v: Value = api.get_json(&["v1", "templates", name]).await?;
    if json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        write_stdout(&show_text(&v))?;
    }
    Ok(0)
}

/// `template import`: a root filesystem from a directory (packed here) or a tar file,
/// plain, gzip or zstd by its name.
async fn import(api: &Api, name: &str, path: &std::path::Path) -> Result<i32> {
    let url = api.url(&["v1", "templates", name, "import"]);
    let (ct, body): (&str, reqwest::Body) = if path.is_dir() {
        let tar = pack(path.to_path_buf()).await?;
        ("application/x-tar", tar.into())
    } else {
        let n = path.to_string_lossy().to_ascii_lowercase();
        let ct = if n.ends_with(".gz") || n.ends_with(".tgz") {
            "application/gzip"
        } else if n.ends_with(".zst") {
            "application/zstd"
        } else {
            "application/x-tar"
        };
        let f = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        (
            ct,
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f)),
        )
    };
    let rb = api
        .request(Method::POST, url)
        .header(reqwest::header::CONTENT_TYPE, ct)
        .body(body);
    let t: Value = api.json(rb).await.context("import failed")?;
    eprintln!(
        "paddock: imported template {} ({})",
        format::cell(&t["name"]),
        format::cell(&t["layers"][0])
    );
    Ok(0)
}

/// `template log`: the last build's log.
async fn log(api: &Api, name: &str) -> Result<i32> {
    let url = api.url(&["v1", "templates", name, "log"]);
    let resp = check(api.send(api.request(Method::GET, url)).await?).await?;
    let text = resp.bytes().await.context("reading the build log")?;
    super::write_stdout(&String::from_utf8_lossy(&text))?;
    Ok(0)
}

/// `template ready`: builds a ready template, making `debian` (debootstrap) and the ready
/// parent it builds on first when they are missing.
async fn ready(api: &Api, which: &str, verbose: bool) -> Result<i32> {
    let have: Value = api.get_json(&["v1", "templates"]).await?;
    let exists = |n: &str| {
        have["templates"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t["name"] == n))
    };
    if !exists("debian") {
        eprintln!("paddock: making the debian template first (debootstrap)");
        let url = api.url(&["v1", "templates", "debian", "bootstrap"]);
        let rb = api.request(Method::POST, url);
        let code = progress::follow(api, rb, "bootstrap", "debian", verbose).await?;
        if code != 0 {
            return Ok(code);
        }
    }
    if let Some((_, parent)) = READY_PARENT.iter().find(|(n, _)| *n == which)
        && !exists(parent)
    {
        eprintln!("paddock: making the {parent} template first");
        let code = build_ready(api, parent, verbose).await?;
        if code != 0 {
            return Ok(code);
        }
    }
    build_ready(api, which, verbose).await
}

/// Builds ready template `name` from its embedded build file.
async fn build_ready(api: &Api, name: &str, verbose: bool) -> Result<i32> {
    let text = READY
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .context("unknown ready template")?;
    let url = api.url(&["v1", "templates", name, "build"]);
    let rb = api
        .request(Method::POST, url)
        .header(reqwest::header::CONTENT_TYPE, "text/plain")
        .body(text);
    progress::follow(api, rb, "build", name, verbose).await
}

/// `template layers`: the layer store, each layer's size and the templates using it.
async fn layers(api: &Api, json: bool) -> Result<i32> {
    let v: Value = api.get_json(&["v1", "layers"]).await?;
    if json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        return Ok(0);
    }
    let mut t = Table::new(&["LAYER", "SIZE", "TEMPLATES"]);
    for l in v["layers"].as_array().into_iter().flatten() {
        let users: Vec<&str> = l["templates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        t.row(vec![
            format::cell(&l["id"]),
            format::bytes(l["bytes"].as_u64().unwrap_or(0)),
            if users.is_empty() {
                "(unused)".to_owned()
            } else {
                users.join(",")
            },
        ]);
    }
    write_stdout(&t.render())?;
    write_stdout(&format!(
        "total {}\n",
        format::bytes(v["total_bytes"].as_u64().unwrap_or(0))
    ))?;
    Ok(0)
}

/// `template prune`: removes unused layers.
async fn prune(api: &Api, json: bool) -> Result<i32> {
    let v: Value = api
        .post_json(&["v1", "layers", "prune"], &serde_json::json!({}))
        .await?;
    if json {
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        let n = v["removed"].as_array().map_or(0, Vec::len);
        write_stdout(&format!(
            "removed {n} unused layer{}, freed {}\n",
            if n == 1 { "" } else { "s" },
            format::bytes(v["freed_bytes"].as_u64().unwrap_or(0))
        ))?;
    }
    Ok(0)
}

/// `template show` as `key: value` lines.
fn show_text(v: &Value) -> String {
    let words = |a: &Value| {
        a.as_array()
            .map(|a| {
                a.iter()
                    .map(|w| serde_json::to_string(w).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let mut out = String::new();
    let mut line = |k: &str, val: String| {
        if !val.is_empty() {
            out.push_str(&format!("{k:<10} {val}\n"));
        }
    };
    line("name", format::cell(&v["name"]));
    line("source", format::cell(&v["source"]));
    line(
        "layers",
        v["layers"].as_array().map_or(0, Vec::len).to_string(),
    );
    line("users", words(&v["users"]));
    let c = &v["config"];
    line("user", c["user"].as_str().unwrap_or_default().to_owned());
    line(
        "workdir",
        c["workdir"].as_str().unwrap_or_default().to_owned(),
    );
    if let Some(env) = c["env"].as_object() {
        for (k, x) in env {
            line("env", format!("{k}={}", x.as_str().unwrap_or_default()));
        }
    }
    line("ports", words(&c["ports"]));
    let s = &v["start"];
    if s.is_object() {
        let mut t = format!("[{}]", words(&s["cmd"]));
        if let Some(u) = s["user"].as_str() {
            t.push_str(&format!(" as {u}"));
        }
        if let Some(d) = s["cwd"].as_str() {
            t.push_str(&format!(" in {d}"));
        }
        line("start", t);
    }
    let r = &v["ready"];
    if r.is_object() {
        let what = match (r["port"].as_u64(), r["cmd"].as_str()) {
            (Some(p), _) => format!("port {p}"),
            (None, Some(c)) => c.to_owned(),
            _ => String::new(),
        };
        let ms = r["timeout_ms"].as_u64().unwrap_or_default();
        line("ready", format!("{what} (timeout {} ms)", ms));
    }
    if let Some(l) = c["limits"].as_object() {
        let mut parts = Vec::new();
        if let Some(m) = l.get("memory_bytes").and_then(|x| x.as_u64()) {
            parts.push(format!("memory {} MiB", m >> 20));
        }
        if let Some(p) = l.get("pids").and_then(|x| x.as_u64()) {
            parts.push(format!("pids {p}"));
        }
        if let Some(d) = l.get("disk_bytes").and_then(|x| x.as_u64()) {
            parts.push(format!("disk {} MiB", d >> 20));
        }
        line("limits", parts.join(", "));
    }
    if v["image_cmd"].is_array() {
        line(
            "image_cmd",
            format!("[{}] (not run)", words(&v["image_cmd"])),
        );
    }
    line("running", format::cell(&v["running_sandboxes"]));
    out
}

async fn build(
    api: &Api,
    name: &str,
    path: &std::path::Path,
    file: Option<&str>,
    verbose: bool,
) -> Result<i32> {
    let mut url = api.url(&["v1", "templates", name, "build"]);
    let rb = if path.is_dir() {
        // The context goes as a tar built in memory (build contexts are source trees).
        let tar = pack(path.to_owned()).await?;
        if let Some(f) = file {
            url.query_pairs_mut().append_pair("file", f);
        }
        api.request(Method::POST, url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
            .body(tar)
    } else if path.is_file() {
        if file.is_some() {
            bail!(
                "-f names a file inside a context directory; {} is a file",
                path.display()
            );
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        api.request(Method::POST, url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(text)
    } else {
        bail!("{} is neither a directory nor a file", path.display());
    };
    progress::follow(api, rb, "build", name, verbose).await
}

/// A directory as a tar in memory (build contexts and root filesystems to import), symlinks
/// kept as links.
async fn pack(dir: PathBuf) -> Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", &dir)
            .with_context(|| format!("packing {}", dir.display()))?;
        Ok(b.into_inner()?)
    })
    .await?
}
