//! Template builds from a Dockerfile-like file, without Docker, and the `debian` root
//! filesystem made with debootstrap: the domain behind `/v1/templates` builds and
//! bootstraps, which the HTTP crate (`paddock-server`) streams, and which benches call
//! directly. Depends on `paddock-core` and `paddock-runtime` only; knows nothing of HTTP or
//! the store.
//!
//! **Build files** (`Paddockfile`; a `Dockerfile` using only these instructions works too):
//!
//! ```text
//! FROM python                 # a template (first line; `base` or any other)
//! ENV PIP_NO_CACHE_DIR=1      # KEY=VALUE ... or KEY VALUE
//! RUN apt-get install -y git  # /bin/sh -c, as the current USER, network mode `all`
//! COPY app /srv/app           # from the build context (the tar sent with the build)
//! WORKDIR /srv/app
//! USER user
//! EXPOSE 8000
//! START python3 -m http.server 8000   # or ["exe", "arg"]; CMD/ENTRYPOINT as in Docker
//! READY --timeout 60s --port 8000     # or READY <shell command>, polled until it exits 0
//! ISOLATION gvisor            # the default backend of its sandboxes (native or gvisor)
//! LIMITS --memory 2G --pids 1024 --disk 4G   # defaults when a create names none
//! ```
//!
//! Every `RUN` and `COPY` runs in a fresh sandbox made from the layers so far and becomes one
//! layer (`Runtime::commit_layer`) keyed by the hash of its inputs: the parent key, the
//! instruction with the config it runs under, and for `COPY` the context's hash. A step whose
//! key is in the layer store is skipped, so rebuilding an unchanged file is instant and a
//! changed step rebuilds only from there. `ENV`, `WORKDIR`, `USER`, `EXPOSE`, `START`, `CMD`,
//! `ENTRYPOINT`, `READY` and `LIMITS` change the template's defaults only; a file with nothing else may
//! start `FROM base` (the template stands on base, no layer of its own). Progress goes to the caller as it happens ([`BuildEvent`]); a
//! failing step names its line, instruction, exit code and output, and leaves no template.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use paddock_core::{Limits, NetworkPolicy};
use paddock_runtime::template::{
    ReadyCheck, StartCommand, TemplateConfig, TemplateDef, TemplateLimits,
};
use paddock_runtime::{CreateSpec, ExecRequest, Runtime};
use sha2::{Digest, Sha256};

mod debootstrap;
mod start;
pub use debootstrap::{DEFAULT_SUITE, Suite, bootstrap_debian};
pub use start::show_ms;

/// The time a template is made at: milliseconds since the Unix epoch.
fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Longest a `RUN` step may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(1800);
/// Most instructions in a build file.
pub const MAX_STEPS: usize = 256;
/// Output kept per `RUN` (the tail is what an error shows).
pub const MAX_STEP_OUTPUT: usize = 1 << 20;

/// One instruction of a build file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    From(String),
    Run(String),
    Copy {
        src: String,
        dst: String,
    },
    Env(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Expose(Vec<u16>),
    /// `ISOLATION`: the default isolation backend of the template's sandboxes.
    Isolation(paddock_core::Isolation),
    /// `START`: the start command (argv).
    Start(Vec<String>),
    /// `CMD` and `ENTRYPOINT` (argv), combined as Docker does into the start command.
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    Ready(ReadyCheck),
    /// `LIMITS`: default resource limits of the template's sandboxes.
    Limits(TemplateLimits),
}

/// A parsed build file: the instructions with their line numbers.
#[derive(Debug, Clone)]
pub struct BuildFile {
    pub steps: Vec<(usize, String, Step)>,
}

/// A problem in a build file, with its line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

/// Parses a build file: comments (`#`), blank lines and `\` line continuations allowed;
/// instruction names are case-insensitive; the first instruction must be `FROM`.
pub fn parse(text: &str) -> Result<BuildFile, ParseError> {
    let mut steps = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.contains('\0') {
            // Every instruction's words end up in argv, env or paths (C strings).
            return Err(ParseError {
                line: n,
                msg: "the line contains a NUL byte".into(),
            });
        }
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if pending.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((n, String::new()));
        if let Some(cont) = line.strip_suffix('\\') {
            acc.push_str(cont);
            acc.push(' ');
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(line);
        steps.push((start, acc.trim().to_owned()));
    }
    if let Some((start, _)) = pending {
        return Err(ParseError {
            line: start,
            msg: "the file ends inside a continued line".into(),
        });
    }
    if steps.len() > MAX_STEPS {
        return Err(ParseError {
            line: steps[MAX_STEPS].0,
            msg: format!("more than {MAX_STEPS} instructions"),
        });
    }
    let mut out = Vec::new();
    for (line, text) in steps {
        let err = |msg: String| ParseError { line, msg };
        let (word, rest) = text
            .split_once(char::is_whitespace)
            .map_or((text.as_str(), ""), |(w, r)| (w, r.trim()));
        let step = match word.to_ascii_uppercase().as_str() {
            "FROM" if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
                Step::From(rest.to_owned())
            }
            "FROM" => return Err(err("FROM takes one template name".into())),
            "RUN" if !rest.is_empty() => Step::Run(rest.to_owned()),
            "COPY" | "ADD" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                if parts.len() != 2 || parts.iter().any(|p| p.starts_with("--")) {
                    return Err(err(format!("{word} takes a source and a destination")));
                }
                Step::Copy {
                    src: parts[0].to_owned(),
                    dst: parts[1].to_owned(),
                }
            }
            "ENV" => Step::Env(parse_env(rest).map_err(err)?),
            "WORKDIR" if rest.starts_with('/') => Step::Workdir(rest.to_owned()),
            "WORKDIR" => return Err(err("WORKDIR takes an absolute path".into())),
            "USER" if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
                Step::User(rest.to_owned())
            }
            "EXPOSE" => Step::Expose(
                rest.split_whitespace()
                    .map(|p| {
                        p.trim_end_matches("/tcp")
                            .parse::<u16>()
                            .ok()
                            .filter(|p| *p > 0)
                            .ok_or_else(|| err(format!("EXPOSE: {p:?} is not a TCP port")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "ISOLATION" => Step::Isolation(
                rest.parse()
                    .map_err(|e: paddock_core::UnknownIsolation| err(format!("ISOLATION: {e}")))?,
            ),
            "START" => Step::Start(start::parse_command("START", rest, false).map_err(err)?),
            "CMD" => Step::Cmd(start::parse_command("CMD", rest, true).map_err(err)?),
            "ENTRYPOINT" => {
                Step::Entrypoint(start::parse_command("ENTRYPOINT", rest, true).map_err(err)?)
            }
            "READY" => Step::Ready(start::parse_ready(rest).map_err(err)?),
            "LIMITS" => Step::Limits(start::parse_limits(rest).map_err(err)?),
            "LABEL" | "ARG" | "SHELL" | "HEALTHCHECK" | "VOLUME" | "STOPSIGNAL" | "ONBUILD" => {
                return Err(err(format!("{word} is not supported in Paddock builds")));
            }
            _ => return Err(err(format!("unknown or incomplete instruction {text:?}"))),
        };
        if out.is_empty() && !matches!(step, Step::From(_)) {
            return Err(err("the first instruction must be FROM".into()));
        }
        if !out.is_empty() && matches!(step, Step::From(_)) {
            return Err(err("only one FROM is supported".into()));
        }
        out.push((line, text, step));
    }
    if out.is_empty() {
        return Err(ParseError {
            line: 1,
            msg: "the build file has no instructions".into(),
        });
    }
    Ok(BuildFile { steps: out })
}

fn parse_env(rest: &str) -> Result<Vec<(String, String)>, String> {
    let valid = |k: &str| {
        !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !k.as_bytes()[0].is_ascii_digit()
    };
    if !rest.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or("ENV takes KEY=VALUE or KEY VALUE")?;
        if !valid(k) {
            return Err(format!("ENV: {k:?} is not a variable name"));
        }
        return Ok(vec![(k.to_owned(), v.trim().to_owned())]);
    }
    let mut out = Vec::new();
    for pair in rest.split_whitespace() {
        let (k, v) = pair.split_once('=').ok_or("ENV takes KEY=VALUE pairs")?;
        if !valid(k) {
            return Err(format!("ENV: {k:?} is not a variable name"));
        }
        out.push((k.to_owned(), v.trim_matches('"').to_owned()));
    }
    Ok(out)
}

/// What a build reports as it goes (one NDJSON line each; `BuildEvent` in the OpenAPI
/// document).
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum BuildEvent {
    Step {
        step: usize,
        of: usize,
        line: usize,
        instruction: String,
        cached: bool,
    },
    Output {
        step: usize,
        text: String,
    },
    Error {
        step: Option<usize>,
        line: Option<usize>,
        message: String,
    },
    /// The end of a successful build: `steps` instructions, of which `cached_steps` needed
    /// no work (a layer step found in the store, or an instruction that only sets
    /// defaults), `layers` layers in the template, `seconds` of wall time.
    Done {
        template: String,
        layers: usize,
        steps: usize,
        cached_steps: usize,
        seconds: f64,
    },
}

impl BuildEvent {
    /// The event as the build log's text: step headers, output as it came, the outcome.
    pub fn log_text(&self) -> String {
        match self {
            BuildEvent::Step {
                step,
                of,
                instruction,
                cached,
                ..
            } => format!(
                "[{step}/{of}] {instruction}{}\n",
                if *cached { " (cached)" } else { "" }
            ),
            BuildEvent::Output { text, .. } => text.clone(),
            BuildEvent::Error { line, message, .. } => format!(
                "error{}: {message}\n",
                line.map(|l| format!(" at line {l}")).unwrap_or_default()
            ),
            BuildEvent::Done {
                template,
                layers,
                steps,
                cached_steps,
                seconds,
            } => format!(
                "done: template {template}, {steps} steps ({cached_steps} cached), {layers} layers, {seconds:.1} s\n"
            ),
        }
    }
}

/// Builds template `name` from `file`, with `context` (a tar, may be empty) for `COPY`.
/// Events go to `tx`; the result is the template's definition.
pub async fn build(
    rt: &Arc<Runtime>,
    name: &str,
    file: &BuildFile,
    context: Option<&std::path::Path>,
    tx: &tokio::sync::mpsc::Sender<BuildEvent>,
) -> Result<TemplateDef, BuildEvent> {
    let started = std::time::Instant::now();
    let fail = |step: Option<usize>, line: Option<usize>, message: String| BuildEvent::Error {
        step,
        line,
        message,
    };
    let ctx_hash = match context {
        Some(p) => {
            let p = p.to_owned();
            tokio::task::spawn_blocking(move || -> std::io::Result<String> {
                let mut h = Sha256::new();
                std::io::copy(&mut std::fs::File::open(p)?, &mut h)?;
                Ok(hex::encode(h.finalize()))
            })
            .await
            .map_err(|e| fail(None, None, format!("hashing the context: {e}")))?
            .map_err(|e| fail(None, None, format!("hashing the context: {e}")))?
        }
        None => String::new(),
    };
    let Step::From(from) = &file.steps[0].2 else {
        return Err(fail(
            None,
            Some(file.steps[0].0),
            "the first instruction must be FROM".into(),
        ));
    };
    let base = rt.template(from).ok_or_else(|| {
        fail(
            Some(1),
            Some(file.steps[0].0),
            format!("FROM: unknown template {from:?}"),
        )
    })?;
    // A template that binds host directories (base, and templates standing on it) takes
    // only default-setting instructions: a layer on top of a bound /usr could not hold what
    // a RUN writes there.
    if !base.binds.is_empty()
        && let Some((i, (line, text, _))) = file
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| matches!(s.2, Step::Run(_) | Step::Copy { .. }))
    {
        return Err(fail(
            Some(i + 1),
            Some(*line),
            format!(
                "{text}: FROM {from} (the host's /usr, bound) takes only ENV, WORKDIR, USER, \
                 EXPOSE, ISOLATION, START, CMD, ENTRYPOINT, READY and LIMITS; for RUN and COPY build on a template \
                 with its own root filesystem, such as debian"
            ),
        ));
    }
    let mut layers = base.layer_ids.clone();
    let mut config = base.config.clone();
    let mut key = hex::encode(Sha256::digest(layers.join("\n").as_bytes()));
    // Every step reported `cached` (no work done) is counted, FROM and the default-setting
    // instructions included, so the summary agrees with the step lines.
    let mut cached_steps = 1;
    // Steps run as root until the file itself says USER; the template keeps its parent's
    // default user otherwise.
    let mut run_user: Option<String> = None;
    // Whether this file set CMD (an ENTRYPOINT resets only an inherited CMD, as in Docker).
    let mut cmd_here = false;
    let of = file.steps.len();
    let _ = tx
        .send(BuildEvent::Step {
            step: 1,
            of,
            line: file.steps[0].0,
            instruction: file.steps[0].1.clone(),
            cached: true,
        })
        .await;
    for (i, (line, text, step)) in file.steps.iter().enumerate().skip(1) {
        let n = i + 1;
        match step {
            Step::From(_) => unreachable!("parse allows one FROM, first"),
            Step::Env(pairs) => config.env.extend(pairs.iter().cloned()),
            Step::Workdir(w) => config.workdir = Some(w.clone()),
            Step::User(u) => {
                config.user = Some(u.clone());
                run_user = Some(u.clone());
            }
            Step::Expose(p) => {
                config.ports.extend(p);
                config.ports.sort_unstable();
                config.ports.dedup();
            }
            Step::Isolation(i) => config.isolation = Some(*i),
            Step::Start(argv) => config.start = Some(start_here(argv.clone(), &config)),
            Step::Cmd(argv) => {
                config.cmd = argv.clone();
                cmd_here = true;
                config.start = docker_start(&config);
            }
            Step::Entrypoint(argv) => {
                config.entrypoint = argv.clone();
                if !cmd_here {
                    config.cmd.clear();
                }
                config.start = docker_start(&config);
            }
            Step::Ready(r) => config.ready = Some(r.clone()),
            Step::Limits(l) => {
                let l = *l;
                config.limits = TemplateLimits {
                    memory_bytes: l.memory_bytes.or(config.limits.memory_bytes),
                    pids: l.pids.or(config.limits.pids),
                    disk_bytes: l.disk_bytes.or(config.limits.disk_bytes),
                };
            }
            Step::Run(_) | Step::Copy { .. } => {
                // The key covers what the step sees: its parent, the instruction, the env,
                // user and workdir it runs under, and the context for COPY.
                let mut h = Sha256::new();
                h.update(key.as_bytes());
                h.update(text.as_bytes());
                h.update(serde_json::to_vec(&config).unwrap_or_default());
                h.update(run_user.as_deref().unwrap_or("root").as_bytes());
                if matches!(step, Step::Copy { .. }) {
                    h.update(ctx_hash.as_bytes());
                }
                key = hex::encode(h.finalize());
                let id = format!("sha256:{key}");
                let cached = rt.layers_root().join(&key).is_dir();
                let _ = tx
                    .send(BuildEvent::Step {
                        step: n,
                        of,
                        line: *line,
                        instruction: text.clone(),
                        cached,
                    })
                    .await;
                if cached {
                    cached_steps += 1;
                } else {
                    let as_user = run_user.as_deref().unwrap_or("root");
                    run_step(
                        rt, n, *line, step, &layers, &config, as_user, context, &key, tx,
                    )
                    .await?;
                }
                layers.push(id);
                continue;
            }
        }
        cached_steps += 1;
        let _ = tx
            .send(BuildEvent::Step {
                step: n,
                of,
                line: *line,
                instruction: text.clone(),
                cached: true,
            })
            .await;
    }
    let def = TemplateDef {
        name: name.to_owned(),
        layers: layers.clone(),
        config,
        source: format!("build FROM {from}"),
        created_unix_ms: crate::now_unix_ms(),
    };
    let _ = tx
        .send(BuildEvent::Done {
            template: name.to_owned(),
            layers: layers.len(),
            steps: of,
            cached_steps,
            seconds: started.elapsed().as_secs_f64(),
        })
        .await;
    Ok(def)
}

/// The start command `argv` under the defaults in force where it appears (user, workdir).
fn start_here(argv: Vec<String>, config: &TemplateConfig) -> StartCommand {
    StartCommand {
        cmd: argv,
        user: config.user.clone(),
        cwd: config.workdir.clone(),
    }
}

/// The start command of `ENTRYPOINT` and `CMD` combined as Docker runs them (the entrypoint,
/// then the command as its arguments); none when both are empty.
fn docker_start(config: &TemplateConfig) -> Option<StartCommand> {
    let argv: Vec<String> = config
        .entrypoint
        .iter()
        .chain(&config.cmd)
        .cloned()
        .collect();
    (!argv.is_empty()).then(|| start_here(argv, config))
}

/// Runs one `RUN` or `COPY` in a sandbox made from `layers` and commits its changes as layer
/// `key`.
#[allow(clippy::too_many_arguments)]
async fn run_step(
    rt: &Arc<Runtime>,
    n: usize,
    line: usize,
    step: &Step,
    layers: &[String],
    config: &TemplateConfig,
    as_user: &str,
    context: Option<&std::path::Path>,
    key: &str,
    tx: &tokio::sync::mpsc::Sender<BuildEvent>,
) -> Result<(), BuildEvent> {
    let fail = |message: String| BuildEvent::Error {
        step: Some(n),
        line: Some(line),
        message,
    };
    // The layers so far, as a throwaway template the step's sandbox starts from.
    let tmp_name = format!(
        "build-{}",
        &paddock_core::SandboxId::random().as_str()[..12]
    );
    rt.add_template(TemplateDef {
        name: tmp_name.clone(),
        layers: layers.to_vec(),
        config: TemplateConfig {
            user: None,
            start: None,
            ready: None,
            ..config.clone()
        },
        source: "build step".into(),
        created_unix_ms: 0,
    })
    .map_err(|e| fail(format!("preparing the step: {e}")))?;
    let sbx = rt
        .create(CreateSpec {
            template: tmp_name.clone(),
            limits: Limits {
                memory_bytes: 2 << 30,
                disk_bytes: 16 << 30,
                pids: 4096,
                cpu_millis: 2000,
                tmp_bytes: 1 << 30,
            },
            env: BTreeMap::new(),
            user: Some("root".into()),
            id: None,
            network: NetworkPolicy::all(),
            ..CreateSpec::default()
        })
        .await;
    let sbx = match sbx {
        Ok(s) => s,
        Err(e) => {
            let _ = rt.remove_template(&tmp_name, false);
            return Err(fail(format!("starting the step's sandbox: {e}")));
        }
    };
    let result = async {
        let (argv, user) = match step {
            Step::Run(cmd) => (
                vec!["/bin/sh".to_owned(), "-c".to_owned(), cmd.clone()],
                Some(as_user.to_owned()),
            ),
            Step::Copy { src, dst } => {
                let ctx = context.ok_or_else(|| {
                    fail("COPY needs a build context, and this build has none".into())
                })?;
                let tar = tokio::fs::read(ctx)
                    .await
                    .map_err(|e| fail(format!("reading the context: {e}")))?;
                upload_context(&sbx, tar)
                    .await
                    .map_err(|e| fail(format!("unpacking the context: {e}")))?;
                let script = format!(
                    "set -e; src=/.paddock-context/{}; [ -e \"$src\" ] || {{ echo \"COPY: $src is not in the context\" >&2; exit 1; }}; \
                     case {dst} in */) mkdir -p {dst}; cp -a \"$src\" {dst};; *) mkdir -p \"$(dirname {dst})\"; \
                     if [ -d \"$src\" ]; then mkdir -p {dst}; cp -a \"$src\"/. {dst}; else cp -a \"$src\" {dst}; fi;; esac; \
                     rm -rf /.paddock-context",
                    shell_quote(src.trim_start_matches("./").trim_start_matches('/')),
                    dst = shell_quote(dst),
                );
                (
                    vec!["/bin/sh".to_owned(), "-c".to_owned(), script],
                    Some("root".to_owned()),
                )
            }
            _ => unreachable!("only RUN and COPY make layers"),
        };
        // Output goes to the caller as it comes (through a forwarding task, so a slow
        // reader never drops any); the whole text is kept for the error message.
        let (otx, mut orx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let fwd = {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(text) = orx.recv().await {
                    let _ = tx.send(BuildEvent::Output { step: n, text }).await;
                }
            })
        };
        let r = sbx
            .exec_with(
                ExecRequest {
                    argv,
                    user,
                    cwd: config.workdir.clone(),
                    timeout: Some(RUN_TIMEOUT),
                    max_output: Some(MAX_STEP_OUTPUT),
                    ..Default::default()
                },
                |_, b| {
                    let _ = otx.send(String::from_utf8_lossy(b).into_owned());
                },
            )
            .await
            .map_err(|e| fail(format!("running the step: {e}")));
        drop(otx);
        let _ = fwd.await;
        let r = r?;
        let mut text = String::from_utf8_lossy(&r.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&r.stderr));
        if r.exit_code != Some(0) {
            let tail: String = text
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(fail(format!(
                "the step failed ({}{}){}",
                r.status,
                if r.timed_out { ", timed out" } else { "" },
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(":\n{tail}")
                }
            )));
        }
        let rt2 = rt.clone();
        let (s2, k2) = (sbx.clone(), key.to_owned());
        tokio::task::spawn_blocking(move || rt2.commit_layer(&s2, &k2))
            .await
            .map_err(|e| fail(format!("saving the layer: {e}")))?
            .map_err(|e| fail(format!("saving the layer: {e}")))?;
        Ok(())
    }
    .await;
    let _ = rt.destroy(sbx.id.as_str()).await;
    let _ = rt.remove_template(&tmp_name, false);
    result
}

async fn upload_context(sbx: &paddock_runtime::Sandbox, tar: Vec<u8>) -> Result<(), String> {
    let req = http::Request::post("http://agent/archive?path=%2F.paddock-context&username=root")
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .body(http_body_util::Full::new(bytes::Bytes::from(tar)))
        .map_err(|e| e.to_string())?;
    let resp = sbx.agent_request(req).await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        use http_body_util::BodyExt as _;
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(String::from_utf8_lossy(&body).into_owned())
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Fixed template aliases: a name clients ask for that stands for a template of ours.
/// `code-interpreter-v1` is what `Sandbox.create()` of the E2B code interpreter SDKs asks for.
pub const ALIASES: &[(&str, &str)] = &[("code-interpreter-v1", "code-interpreter")];

/// The template `name` stands for: itself when `rt` has a template of that name, else its
/// alias's target (so a template built under the alias's name wins).
pub fn resolve_alias(rt: &Runtime, name: &str) -> String {
    if rt.template(name).is_some() {
        return name.to_string();
    }
    ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or_else(|| name.to_string(), |(_, t)| (*t).to_string())
}

/// The limits a sandbox of `template` (a name or an alias) gets for what its create does not
/// name: `defaults` (the server's `--memory` and friends), with the template's `LIMITS` in
/// their place.
pub fn default_limits(rt: &Runtime, defaults: &Limits, template: &str) -> Limits {
    match rt.template(&resolve_alias(rt, template)) {
        Some(t) => t.config.limits.apply(defaults),
        None => defaults.clone(),
    }
}

/// The aliases that stand for `name`.
pub fn aliases_of(name: &str) -> Vec<&'static str> {
    ALIASES
        .iter()
        .filter(|(_, t)| *t == name)
        .map(|(a, _)| *a)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_build_files() {
        let f = parse(
            "# a comment\nFROM debian\nENV A=1 B=\"two\"\nRUN apt-get update && \\\n    apt-get install -y git\nCOPY app /srv/app\nWORKDIR /srv/app\nUSER user\nEXPOSE 8000 9000/tcp\n",
        )
        .unwrap();
        let steps: Vec<&Step> = f.steps.iter().map(|s| &s.2).collect();
        assert_eq!(
            steps,
            vec![
                &Step::From("debian".into()),
                &Step::Env(vec![("A".into(), "1".into()), ("B".into(), "two".into())]),
                &Step::Run("apt-get update &&      apt-get install -y git".into()),
                &Step::Copy {
                    src: "app".into(),
                    dst: "/srv/app".into()
                },
                &Step::Workdir("/srv/app".into()),
                &Step::User("user".into()),
                &Step::Expose(vec![8000, 9000]),
            ]
        );
        assert_eq!(f.steps[2].0, 4, "a continued line reports its first line");
    }

    #[test]
    fn bad_build_files_say_where() {
        for (text, line, needle) in [
            ("RUN true", 1, "first instruction must be FROM"),
            ("FROM a\nFROM b", 2, "only one FROM"),
            ("FROM a\nSHELL x", 2, "not supported"),
            ("FROM a\nREADY --port 99999", 2, "not a TCP port"),
            ("FROM a\nREADY --timeout -1 true", 2, "not a duration"),
            ("FROM a\nSTART", 2, "needs a command"),
            ("FROM a\nSTART [\"x\", 2]", 2, "exec form"),
            ("FROM a\nFROBNICATE", 2, "unknown"),
            ("FROM a\nEXPOSE http", 2, "not a TCP port"),
            ("FROM a\nWORKDIR rel", 2, "absolute"),
            ("FROM a\nENV 1X=2", 2, "not a variable name"),
            ("FROM a\nRUN a \\", 2, "ends inside"),
            ("", 1, "no instructions"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.msg.contains(needle), "{text}: {e}");
        }
    }
}
