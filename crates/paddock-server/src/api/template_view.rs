//! The wire forms of `/v1/templates` and `/v1/layers` (`Template`, `TemplateList`,
//! `LayerList`, `Pruned` in the OpenAPI document), built from the runtime's template field by
//! field. Builds, pulls and bootstraps stream [`paddock_templates::BuildEvent`]s.

use std::collections::BTreeMap;

use paddock_runtime::template::{ReadyCheck, StartCommand, Template, TemplateConfig};
use serde::Serialize;
use utoipa::ToSchema;

use super::sandbox_view::IsolationWire;
use crate::wire::rfc3339;
use paddock_service::state::AppState;

/// The start command, run as a background process tagged `start` when a sandbox of this
/// template starts (build file START, or CMD/ENTRYPOINT combined as in Docker). Runs as
/// `user` in `cwd` (absent: the sandbox's defaults) with the sandbox's environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StartView {
    pub cmd: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cwd: Option<String>,
}

impl From<&StartCommand> for StartView {
    fn from(s: &StartCommand) -> StartView {
        StartView {
            cmd: s.cmd.clone(),
            user: s.user.clone(),
            cwd: s.cwd.clone(),
        }
    }
}

/// The ready check a create waits for: exactly one of `cmd` (a shell command polled until it
/// exits 0) and `port` (a TCP port on the sandbox's own 127.0.0.1 that must accept a
/// connection), within `timeout_ms` (default 30000, at most 600000). On failure the create
/// answers 422 `start_failed`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadyView {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cmd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    #[schema(minimum = 1, maximum = 600000)]
    pub timeout_ms: u64,
}

impl From<&ReadyCheck> for ReadyView {
    fn from(r: &ReadyCheck) -> ReadyView {
        ReadyView {
            cmd: r.cmd.clone(),
            port: r.port,
            timeout_ms: r.timeout_ms,
        }
    }
}

/// Default limits of the template's sandboxes (build file `LIMITS`), each used when a create
/// names none; absent: the server's defaults (docs/templates.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateLimitsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub pids: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub disk_bytes: Option<u64>,
}

/// The defaults a template gives its sandboxes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateConfigView {
    /// Environment of every process, before the sandbox's own env vars
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// Ports the template's programs listen on (documentation, like `EXPOSE`)
    pub ports: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub start: Option<StartView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ready: Option<ReadyView>,
    /// The isolation of sandboxes that ask for none (build file `ISOLATION`)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(inline, nullable = false)]
    pub isolation: Option<IsolationWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub limits: Option<TemplateLimitsView>,
}

impl From<&TemplateConfig> for TemplateConfigView {
    fn from(c: &TemplateConfig) -> TemplateConfigView {
        TemplateConfigView {
            env: c.env.clone(),
            workdir: c.workdir.clone(),
            user: c.user.clone(),
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            ports: c.ports.clone(),
            start: c.start.as_ref().map(StartView::from),
            ready: c.ready.as_ref().map(ReadyView::from),
            isolation: c.isolation.map(IsolationWire::from),
            limits: (!c.limits.is_empty()).then_some(TemplateLimitsView {
                memory_bytes: c.limits.memory_bytes,
                pids: c.limits.pids,
                disk_bytes: c.limits.disk_bytes,
            }),
        }
    }
}

/// A template.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Template)]
pub struct TemplateView {
    /// The id of the key that made it (null for built-in and older templates)
    pub created_by: Option<String>,
    pub name: String,
    pub source: String,
    /// Layer ids, bottom first
    pub layers: Vec<String>,
    pub config: TemplateConfigView,
    pub start: Option<StartView>,
    pub ready: Option<ReadyView>,
    /// An image's ENTRYPOINT and CMD combined, kept as information only: never run at
    /// sandbox start (a build file `FROM` the template with START runs something).
    pub image_cmd: Option<Vec<String>>,
    /// Other names that create a sandbox from this template when no template has them
    /// (`code-interpreter-v1` for `code-interpreter`, the name E2B's code interpreter SDKs
    /// ask for).
    pub aliases: Vec<String>,
    pub users: Vec<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: serde_json::Value,
    /// Sandboxes of this template running; through a fleet's control plane, summed over the
    /// nodes holding it.
    pub running_sandboxes: usize,
    /// Only in the list through a fleet's control plane: the names of the nodes holding the
    /// template (each template is listed once, fleet-wide). Any node runs it: a node without
    /// it fetches it from one of these first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub nodes: Option<Vec<String>>,
}

impl TemplateView {
    /// The template as the API shows it; `created_by` is the catalogue's record.
    pub async fn of(state: &AppState, t: &Template) -> TemplateView {
        let in_use = state
            .runtime
            .list()
            .iter()
            .filter(|s| s.template == t.name)
            .count();
        let by = state
            .store
            .list_templates()
            .await
            .ok()
            .and_then(|v| v.into_iter().find(|r| r.name == t.name))
            .and_then(|r| r.created_by);
        let config = TemplateConfigView::from(&t.config);
        TemplateView {
            created_by: by,
            name: t.name.clone(),
            source: t.source.clone(),
            layers: t.layer_ids.clone(),
            start: config.start.clone(),
            ready: config.ready.clone(),
            config,
            image_cmd: image_cmd(t),
            aliases: paddock_templates::aliases_of(&t.name)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            users: t.users.clone(),
            created_at: if t.created_unix_ms > 0 {
                rfc3339(Some(t.created_unix_ms as i64))
            } else {
                serde_json::Value::Null
            },
            running_sandboxes: in_use,
            nodes: None,
        }
    }
}

/// An image's `ENTRYPOINT` and `CMD` combined, kept as information (never run); `None` when
/// the template has none or a build file turned them into its start command.
fn image_cmd(t: &Template) -> Option<Vec<String>> {
    let argv: Vec<String> = t
        .config
        .entrypoint
        .iter()
        .chain(&t.config.cmd)
        .cloned()
        .collect();
    let started = t.config.start.as_ref().is_some_and(|s| s.cmd == argv);
    (!argv.is_empty() && !started).then_some(argv)
}

/// Every template.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateView>,
}

/// A layer of the store.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LayerView {
    pub id: String,
    pub bytes: u64,
    /// The templates using it (none: unused, `POST /v1/layers/prune` removes it)
    pub templates: Vec<String>,
}

/// The layer store.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LayerList {
    pub layers: Vec<LayerView>,
    pub total_bytes: u64,
}

/// A layer a prune removed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RemovedLayer {
    pub id: String,
    pub bytes: u64,
}

/// What a prune removed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pruned {
    pub removed: Vec<RemovedLayer>,
    pub freed_bytes: u64,
}

/// A binary request body (a tar), for the document.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Binary(Vec<u8>);

#[cfg(test)]
mod tests {
    use paddock_runtime::template::TemplateLimits;

    use super::*;

    /// The config is shown as the runtime's own serialisation showed it (the `json!` body
    /// embedded that): absent start, ready, isolation and empty limits left out.
    #[test]
    fn a_config_serialises_as_the_runtimes() {
        let mut c = TemplateConfig {
            workdir: Some("/w".into()),
            cmd: vec!["x".into()],
            ports: vec![80],
            ..Default::default()
        };
        let same = |c: &TemplateConfig| {
            assert_eq!(
                serde_json::to_value(TemplateConfigView::from(c)).unwrap(),
                serde_json::to_value(c).unwrap()
            );
        };
        same(&c);
        c.start = Some(StartCommand {
            cmd: vec!["a".into()],
            user: None,
            cwd: Some("/".into()),
        });
        c.ready = Some(ReadyCheck {
            cmd: None,
            port: Some(8000),
            timeout_ms: 5,
        });
        c.isolation = Some(paddock_core::Isolation::Gvisor);
        c.limits = TemplateLimits {
            memory_bytes: Some(1),
            pids: None,
            disk_bytes: Some(2),
        };
        same(&c);
    }
}
