//! The OpenAPI document served at `/v1/openapi.json`, assembled in Rust at first use.
//!
//! Converted modules describe their routes in code: each handler carries a
//! `#[utoipa::path]` with its summary and description as doc comments, and its request and
//! response bodies are `Serialize`/`Deserialize` + `ToSchema` wire types, listed in
//! [`Typed`]. The core modules not converted yet (sandboxes, keys, health, events, logs)
//! keep the hand-written `openapi-fragments/core.json`, which also holds the document's
//! info, tags, security schemes and shared components; [`document`] merges the typed paths
//! and schemas into it: a path's operations are added to it, a typed schema replaces one of
//! the same name. A fragment is deleted when its module is converted
//! (`openapi-fragments/README.md`).
//!
//! Tests: the document is valid OpenAPI 3 and every `$ref` resolves (here), it documents
//! exactly the routes of `roles::ROUTES` (`roles.rs`) and of the router
//! (`crates/paddock/tests/api/openapi.rs`), and it is what `/v1/openapi.json` serves
//! (`tests/router.rs`).

use std::sync::LazyLock;

use serde_json::Value;
use utoipa::OpenApi;

/// The base of the document: info, tags, security schemes, shared components and the paths
/// of the core routes not converted yet.
const BASE: &str = include_str!("../openapi-fragments/core.json");

/// The routes and schemas described in code.
#[derive(OpenApi)]
#[openapi(
    paths(
        // Ops modules (alerts, code, cost, fleet, mcp, pools, rollouts, secrets, session,
        // tests, volumes).
        crate::api::mcp::mcp,
        crate::api::session::login,
        crate::api::session::whoami,
        crate::api::session::logout,
        crate::api::tests::tests,
        crate::api::volumes::create,
        crate::api::volumes::list,
        crate::api::volumes::get_one,
        crate::api::volumes::delete,
        crate::api::pools::list,
        crate::api::pools::get_one,
        crate::api::pools::set,
        crate::api::pools::remove,
        crate::api::secrets::list,
        crate::api::secrets::create,
        crate::api::secrets::info,
        crate::api::secrets::update,
        crate::api::secrets::destroy,
        crate::api::secrets::rotate,
        crate::api::cost::report,
        crate::api::cost::get_prices,
        crate::api::cost::put_prices,
        crate::api::cost::list_budgets,
        crate::api::cost::set_budget,
        crate::fleet::control::list_nodes,
        crate::fleet::control::get_node,
        crate::fleet::control::drain,
        crate::fleet::control::undrain,
        crate::api::code::run,
        crate::api::code::list_contexts,
        crate::api::code::create_context,
        crate::api::code::delete_context,
        crate::api::code::restart_context,
        crate::api::code::interrupt_context,
        crate::api::rollouts::create,
        crate::api::rollouts::list,
        crate::api::rollouts::get_one,
        crate::api::rollouts::cancel,
        crate::api::alerts::list_firings,
        crate::api::alerts::list_rules,
        crate::api::alerts::create_rule,
        crate::api::alerts::get_rule,
        crate::api::alerts::delete_rule,
        crate::api::alerts::test_rule,
        // Core modules.
        crate::api::network::get_network,
        crate::api::network::put_network,
        crate::api::pause::pause,
        crate::api::pause::resume,
        crate::api::ports::list,
        crate::api::ports::get_one,
        crate::api::ports::make_public,
        crate::api::ports::make_private,
        crate::api::snapshots::create,
        crate::api::snapshots::fork,
        crate::api::snapshots::list,
        crate::api::snapshots::get_one,
        crate::api::snapshots::delete,
        crate::api::services::list,
        crate::api::services::create,
        crate::api::services::get_one,
        crate::api::services::delete,
        crate::api::services::start,
        crate::api::services::stop,
        crate::api::services::restart,
        crate::api::services::logs,
        crate::api::templates::list,
        crate::api::templates::get_one,
        crate::api::templates::delete,
        crate::api::templates::build,
        crate::api::templates::bootstrap,
        crate::api::templates::pull,
        crate::api::templates::import,
        crate::api::templates::build_log,
        crate::api::templates::layers,
        crate::api::templates::prune,
        crate::api::exec::run::exec,
        crate::api::exec::processes::list,
        crate::api::exec::processes::output,
        crate::api::exec::processes::stdin,
        crate::api::exec::processes::close_stdin,
        crate::api::exec::processes::signal,
        crate::api::exec::pty::pty,
        crate::api::files::download,
        crate::api::files::upload,
        crate::api::files::remove,
        crate::api::files::list,
        crate::api::files::stat,
        crate::api::files::mkdir,
        crate::api::files::mv,
        crate::api::files::archive_get,
        crate::api::files::archive_put,
    ),
    components(schemas(
        // Every error answer's body (its code enum is `ApiError::CODES`).
        crate::error::ErrorBody,
        // Ops modules.
        crate::api::session::Session,
        crate::api::tests::TestReportView,
        crate::api::volumes::VolumeView,
        crate::api::volumes::VolumeList,
        crate::api::pools::PoolView,
        crate::api::pools::PoolList,
        crate::api::secrets::SecretView,
        crate::api::secrets::SecretList,
        crate::cost::GroupBy,
        crate::cost::Prices,
        crate::cost::UsageReport,
        crate::cost::UsageGroup,
        crate::cost::UsageTotals,
        crate::cost::budgets::BudgetList,
        crate::cost::budgets::BudgetView,
        crate::cost::budgets::SetBudget,
        crate::cost::budgets::TenantBudget,
        crate::fleet::control::NodeList,
        crate::fleet::control::NodeView,
        crate::api::rollouts::RolloutList,
        crate::rollouts::view::RolloutView,
        crate::rollouts::view::TargetView,
        crate::rollouts::view::Progress,
        crate::api::alerts::AlertList,
        crate::api::alerts::FiringView,
        crate::api::alerts::RuleList,
        crate::api::alerts::RuleView,
        crate::api::alerts::TestDelivery,
        // Core modules.
        crate::api::network::NetworkPolicyBody,
        crate::api::network::NetworkState,
        crate::api::ports::PortList,
        crate::api::ports::PortView,
        crate::api::snapshots::Forked,
        crate::api::services::ServiceList,
        crate::api::services::ServiceLogs,
        crate::api::services::ServiceView,
        crate::api::template_view::LayerList,
        crate::api::template_view::Pruned,
        crate::api::template_view::TemplateList,
        crate::api::template_view::TemplateView,
        paddock_templates::BuildEvent,
        crate::api::snapshots::SnapshotList,
        crate::api::snapshots::SnapshotView,
        crate::api::sandbox_view::SandboxView,
        crate::api::exec::wire::ExecBody,
        crate::api::exec::wire::ExecResult,
        crate::api::exec::wire::Started,
        crate::api::exec::wire::ProcessEvent,
        crate::api::exec::wire::ProcessList,
        crate::api::exec::wire::SignalBody,
        crate::api::files::EntryView,
        crate::api::files::EntryList,
        crate::api::files::Written,
        crate::api::files::Extracted,
        crate::api::files::MkdirBody,
        crate::api::files::MoveBody,
    ))
)]
pub struct Typed;

/// The whole document.
pub fn document() -> &'static Value {
    static DOC: LazyLock<Value> = LazyLock::new(build);
    &DOC
}

/// The whole document as JSON text, as served.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> =
        LazyLock::new(|| serde_json::to_string_pretty(document()).unwrap_or_default());
    &JSON
}

fn build() -> Value {
    // The fragments are compiled in and checked by this module's tests, so a parse failure
    // is a build defect, not a runtime condition.
    let mut doc: Value = serde_json::from_str(BASE).expect("openapi-fragments/core.json");
    let mut typed = serde_json::to_value(Typed::openapi()).expect("the typed document");
    shared_errors(&mut typed);
    // The code's schemas replace a fragment's of the same name (`Sandbox`).
    if let Some(schemas) = typed
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (k, v) in schemas {
            doc["components"]["schemas"][k] = v.clone();
        }
    }
    merge(&mut doc, &typed);
    doc
}

/// A typed route's error statuses (4xx and 5xx without a body of their own) answer the
/// shared `Error` schema, `{"code", "message"}`, each with the route's own wording of when
/// (the `responses` rows of its `#[utoipa::path]`).
fn shared_errors(typed: &mut Value) {
    let Some(paths) = typed.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for op in item.values_mut() {
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            for (code, r) in responses.iter_mut() {
                if (code.starts_with('4') || code.starts_with('5')) && r.get("content").is_none() {
                    r["content"] = serde_json::json!({
                        "application/json": { "schema": { "$ref": "#/components/schemas/Error" } }
                    });
                }
            }
        }
    }
}

/// Adds `frag`'s paths (operation by operation) and its schemas (a name already present
/// stays) to `doc`. A fragment is a document or only its `paths` object.
fn merge(doc: &mut Value, frag: &Value) {
    let paths = frag.get("paths").unwrap_or(frag);
    if let Some(paths) = paths.as_object() {
        for (p, ops) in paths {
            let item = &mut doc["paths"][p];
            if !item.is_object() {
                *item = Value::Object(serde_json::Map::new());
            }
            if let (Some(item), Some(ops)) = (item.as_object_mut(), ops.as_object()) {
                for (m, op) in ops {
                    item.insert(m.clone(), op.clone());
                }
            }
        }
    }
    if let Some(schemas) = frag
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        let into = &mut doc["components"]["schemas"];
        if !into.is_object() {
            *into = Value::Object(serde_json::Map::new());
        }
        if let Some(into) = into.as_object_mut() {
            for (k, v) in schemas {
                into.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// The parts of OpenAPI 3.1 every tool relies on: the version, `info`, path items whose
    /// keys are methods (or the item's own fields), operations with responses and status
    /// codes, path parameters named in their path, unique operation ids, and every `$ref`
    /// resolving inside the document.
    #[test]
    fn the_document_is_valid_openapi_3() {
        let doc = document();
        let version = doc["openapi"].as_str().expect("openapi");
        assert!(version.starts_with("3."), "{version}");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() > 50, "only {} paths", paths.len());
        let mut ids = BTreeSet::new();
        for (p, item) in paths {
            assert!(p.starts_with('/'), "{p}");
            for (m, op) in item.as_object().expect("path item") {
                if ["parameters", "summary", "description", "servers"].contains(&m.as_str()) {
                    continue;
                }
                assert!(METHODS.contains(&m.as_str()), "{p}: {m} is not a method");
                let responses = op["responses"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{m} {p}: no responses"));
                assert!(!responses.is_empty(), "{m} {p}: no responses");
                for code in responses.keys() {
                    assert!(
                        code == "default"
                            || (code.len() == 3 && code.parse::<u16>().is_ok())
                            || code.ends_with("XX"),
                        "{m} {p}: response {code}"
                    );
                }
                if let Some(id) = op["operationId"].as_str() {
                    assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
                }
                for param in op["parameters"].as_array().into_iter().flatten() {
                    if param["in"] == "path" {
                        let name = param["name"].as_str().expect("parameter name");
                        assert!(
                            p.contains(&format!("{{{name}}}")),
                            "{m} {p}: path parameter {name}"
                        );
                    }
                }
            }
        }
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let ptr = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external $ref {r}"));
            assert!(doc.pointer(ptr).is_some(), "$ref {r} resolves to nothing");
        }
    }

    /// The typed routes are in the document as the code describes them.
    #[test]
    fn typed_routes_come_from_the_code() {
        let doc = document();
        let put = &doc["paths"]["/v1/sandboxes/{id}/network"]["put"];
        assert_eq!(put["operationId"], "put_network");
        assert_eq!(put["summary"], "Change a running sandbox's network policy");
        assert!(
            put["description"]
                .as_str()
                .unwrap_or("")
                .contains("pins the addresses")
        );
        let policy = &doc["components"]["schemas"]["NetworkPolicy"];
        assert_eq!(policy["required"], serde_json::json!(["mode"]));
        assert_eq!(policy["properties"]["allow"]["maxItems"], 256);
        // Errors have the shared schema and the route's wording; the sandbox schema is the
        // code's.
        assert_eq!(
            put["responses"]["409"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert!(
            put["responses"]["409"]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty() && d != "An error"),
            "{}",
            put["responses"]["409"]
        );
        // Every code an error can carry is in the schema's enum.
        let codes = &doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"];
        assert_eq!(codes, &serde_json::json!(crate::error::ApiError::CODES));
        let resume = &doc["paths"]["/v1/sandboxes/{id}/resume"]["post"];
        assert_eq!(
            resume["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Sandbox"
        );
        let sandbox = &doc["components"]["schemas"]["Sandbox"];
        assert!(
            sandbox["properties"]["paused_mode"]["description"]
                .as_str()
                .unwrap_or("")
                .contains("null unless paused")
        );
        assert!(
            sandbox["properties"]["stop_reason"]
                .to_string()
                .contains("shutdown")
        );
    }

    /// The ops routes converted from fragments (`wireops`) are the code's, closed enums
    /// included.
    #[test]
    fn ops_routes_come_from_the_code() {
        let doc = document();
        let schema = |name: &str| &doc["components"]["schemas"][name];
        let post = &doc["paths"]["/v1/session"]["post"];
        assert_eq!(post["operationId"], "login");
        assert_eq!(post["security"], serde_json::json!([{}]));
        assert!(post["responses"]["201"]["headers"]["Set-Cookie"].is_object());
        assert_eq!(
            schema("Session")["properties"]["role"]["enum"],
            serde_json::json!(["viewer", "developer", "operator", "admin"])
        );
        assert_eq!(
            schema("TestReport")["properties"]["outcome"]["enum"],
            serde_json::json!(["passed", "failed", "error", "timed_out"])
        );
        assert_eq!(
            schema("RunTests")["properties"]["framework"]["oneOf"][1]["enum"],
            serde_json::json!(["pytest", "jest", "vitest", "go", "cargo", "node"])
        );
        assert_eq!(
            schema("CreateVolume")["properties"]["size"]["oneOf"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(
            doc["paths"]["/v1/volumes/{name}"]["get"]["responses"]["200"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/Volume"
        );
        assert_eq!(
            schema("Node")["properties"]["state"]["enum"],
            serde_json::json!(["ready", "draining", "dead"])
        );
        assert_eq!(
            schema("UsageReport")["properties"]["by"]["enum"],
            serde_json::json!(["sandbox", "key", "tenant", "template"])
        );
        assert_eq!(
            doc["paths"]["/v1/usage/prices"]["put"]["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/Prices"
        );
        assert_eq!(
            schema("Rollout")["properties"]["state"]["enum"],
            serde_json::json!(["running", "succeeded", "failed", "cancelled", "interrupted"])
        );
        assert!(schema("RolloutTarget").to_string().contains("rolled_back"));
        let created = &doc["paths"]["/v1/rollouts"]["post"]["responses"]["200"]["content"];
        assert_eq!(
            created["application/x-ndjson"]["schema"]["$ref"],
            "#/components/schemas/RolloutProgress"
        );
        let run = &doc["paths"]["/v1/sandboxes/{id}/code"]["post"]["responses"]["200"];
        assert!(
            run["content"]["application/x-ndjson"]["schema"]
                .to_string()
                .contains("CodeEvent")
        );
        let mcp = &doc["paths"]["/mcp"]["post"];
        assert!(mcp["responses"]["202"].get("content").is_none());
        assert_eq!(
            schema("JsonRpcRequest")["properties"]["jsonrpc"]["enum"],
            serde_json::json!(["2.0"])
        );
    }

    /// The exec, process and file routes (the fragment `exec-files.json` before) are the
    /// code's: typed bodies, the stream lines as one closed union, binary bodies as binary.
    #[test]
    fn exec_and_file_routes_come_from_the_code() {
        let doc = document();
        let schema = |name: &str| &doc["components"]["schemas"][name];
        let exec = &doc["paths"]["/v1/sandboxes/{id}/exec"]["post"];
        assert_eq!(exec["operationId"], "exec");
        assert_eq!(exec["summary"], "Run a command");
        let ok = &exec["responses"]["200"]["content"];
        assert_eq!(
            ok["application/json"]["schema"]["$ref"],
            "#/components/schemas/ExecResult"
        );
        assert_eq!(
            ok["text/event-stream"]["schema"]["$ref"],
            "#/components/schemas/ProcessEvent"
        );
        let too_large = &exec["responses"]["413"];
        assert_eq!(
            too_large["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        assert_eq!(too_large["description"], "`stdin` over 1 MiB");
        let req = schema("ExecRequest");
        assert_eq!(req["additionalProperties"], false);
        assert_eq!(req["properties"]["stdin"]["maxLength"], 1_048_576);
        assert_eq!(req["properties"]["timeout"]["maximum"], 86_400);
        let result = schema("ExecResult");
        assert!(result["required"].to_string().contains("\"stdout\""));
        assert!(result["properties"]["error"]["type"] == "string");
        let kinds: Vec<_> = schema("ProcessEvent")["oneOf"]
            .as_array()
            .expect("oneOf")
            .iter()
            .map(|v| v.to_string())
            .collect();
        for k in [
            "start",
            "stdout",
            "stderr",
            "pty",
            "keepalive",
            "end",
            "exit",
            "error",
        ] {
            assert!(
                kinds.iter().any(|v| v.contains(&format!("[\"{k}\"]"))),
                "{k}"
            );
        }
        assert_eq!(
            schema("SignalRequest")["properties"]["signal"]["enum"],
            serde_json::json!(["SIGTERM", "SIGKILL"])
        );
        assert_eq!(
            schema("EntryType")["enum"],
            serde_json::json!(["file", "dir", "symlink", "other"])
        );
        let files = &doc["paths"]["/v1/sandboxes/{id}/files"];
        assert_eq!(
            files["put"]["requestBody"]["content"]["application/octet-stream"]["schema"]["format"],
            "binary"
        );
        assert_eq!(
            files["get"]["responses"]["200"]["content"]["application/octet-stream"]["schema"]["format"],
            "binary"
        );
        let archive = &doc["paths"]["/v1/sandboxes/{id}/archive"]["put"];
        assert_eq!(
            archive["requestBody"]["content"]
                .as_object()
                .map(|c| c.keys().cloned().collect::<Vec<_>>()),
            Some(vec![
                "application/gzip".to_owned(),
                "application/x-tar".to_owned(),
                "application/zstd".to_owned()
            ])
        );
        let list = &doc["paths"]["/v1/sandboxes/{id}/fs/list"]["get"];
        assert!(list["parameters"].to_string().contains("\"depth\""));
        assert_eq!(
            doc["paths"]["/v1/sandboxes/{id}/pty"]["get"]["responses"]["101"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/ProcessEvent"
        );
    }
}
