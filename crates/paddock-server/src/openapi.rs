//! The OpenAPI document served at `/v1/openapi.json`, generated from the code at first use
//! (there is no checked-in `openapi.json`, no hand-kept fragment and no merge script).
//!
//! Every route is described where it is handled: a `#[utoipa::path]` on the handler, its
//! summary and description as the handler's doc comment, its request and response bodies
//! `Serialize`/`Deserialize` + `ToSchema` wire types. [`Typed`] lists them all and holds the
//! document's own parts: `info` (title, version, the description every client reads first),
//! `servers`, the default `security` and, through [`SecuritySchemes`], the three schemes
//! (`bearer`, `apiKey`, `sessionCookie`). A typed route's error statuses are given the shared
//! `Error` schema ([`shared_errors`]).
//!
//! A new route: a `#[utoipa::path]` on its handler, `ToSchema` on its bodies, both listed in
//! [`Typed`], and its row in `roles::ROUTES`.
//!
//! Tests: the document is valid OpenAPI 3 and every `$ref` resolves (here), it documents
//! exactly the routes of `roles::ROUTES` (`roles.rs`) and of the router
//! (`crates/paddock/tests/api/openapi.rs`), and it is what `/v1/openapi.json` serves
//! (`tests/router.rs`).

use std::sync::LazyLock;

use serde_json::Value;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

/// What every client reads first: authentication, errors, tenancy, roles and JSON bodies.
const DESCRIPTION: &str = "Paddock's native REST API. Every route except /v1/health and /v1/openapi.json needs an API key, sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Errors are JSON `{\"code\", \"message\"}` with a stable code. A sandbox of another tenant answers 404 exactly like a missing one. Every key has a role (viewer, developer, operator, admin); each route needs the lowest role docs/roles.md gives it, and a key below it gets 403 `forbidden`. A developer sees only the sandboxes its own key created (others answer 404). A JSON request body is one JSON object (`Content-Type: application/json`; an array, string, number, boolean or null at the top is 400 `invalid_json`, as are unknown fields and duplicate keys) of at most `limits.max_json_body_bytes` of `GET /v1/status` (1 MiB by default), larger is 413 `payload_too_large`.";

/// The security schemes: a bearer key, the `X-API-Key` header, and the console's session
/// cookie.
pub struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        c.add_security_scheme(
            "sessionCookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "paddock_session",
                "The web console's session (POST /v1/session); non-GET requests also need X-CSRF-Token",
            ))),
        );
    }
}

/// The routes and schemas described in code.
#[derive(OpenApi)]
#[openapi(
    info(title = "Paddock API", version = "0.1.0", description = DESCRIPTION),
    servers((url = "http://127.0.0.1:7070")),
    security(("bearer" = []), ("apiKey" = []), ("sessionCookie" = [])),
    modifiers(&SecuritySchemes),
    paths(
        // Core: system, sandboxes, events, keys and audit.
        crate::api::system::health,
        serve,
        crate::api::system::status,
        crate::api::system::metrics,
        crate::api::sandboxes::create,
        crate::api::sandboxes::list,
        crate::api::sandboxes::get_one,
        crate::api::sandboxes::delete,
        crate::api::sandboxes::timeout,
        crate::api::sandboxes::stats,
        crate::api::sandboxes::logs,
        crate::api::events::events,
        crate::api::admin::list_keys,
        crate::api::admin::create_key,
        crate::api::admin::revoke_key,
        crate::api::admin::audit,
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
        paddock_service::cost::GroupBy,
        paddock_service::cost::Prices,
        paddock_service::cost::UsageReport,
        paddock_service::cost::UsageGroup,
        paddock_service::cost::UsageTotals,
        paddock_service::cost::budgets::BudgetList,
        paddock_service::cost::budgets::BudgetView,
        crate::api::cost::SetBudget,
        paddock_service::cost::budgets::TenantBudget,
        crate::fleet::control::NodeList,
        crate::fleet::control::NodeView,
        crate::api::rollouts::RolloutList,
        paddock_service::rollouts::view::RolloutView,
        paddock_service::rollouts::view::TargetView,
        paddock_service::rollouts::view::Progress,
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
        crate::api::system::Health,
        crate::api::system::StatusView,
        crate::api::sandboxes::CreateBody,
        crate::api::sandboxes::SandboxList,
        crate::api::sandboxes::TimeoutBody,
        crate::api::sandboxes::StatsView,
        crate::api::sandboxes::LogsView,
        crate::api::sandboxes::ExecRecordView,
        crate::wire::EventView,
        crate::api::events::EventList,
        crate::api::admin::CreateKeyBody,
        crate::api::admin::KeyView,
        crate::api::admin::KeyList,
        crate::api::admin::AuditView,
        crate::api::admin::AuditList,
    ))
)]
pub struct Typed;

/// The whole document.
pub fn document() -> &'static Value {
    static DOC: LazyLock<Value> = LazyLock::new(build);
    &DOC
}

/// This document
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "system",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object))
)]
pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json(),
    )
        .into_response()
}

/// The whole document as JSON text, as served.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> =
        LazyLock::new(|| serde_json::to_string_pretty(document()).unwrap_or_default());
    &JSON
}

fn build() -> Value {
    // The document is made from types checked by this module's tests, so a failure to
    // serialise it is a build defect, not a runtime condition.
    let mut doc = serde_json::to_value(Typed::openapi()).expect("the typed document");
    shared_errors(&mut doc);
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

    /// The core routes and the document's own parts (the fragment `core.json` before) are
    /// the code's.
    #[test]
    fn core_routes_and_the_documents_parts_come_from_the_code() {
        let doc = document();
        let schema = |name: &str| &doc["components"]["schemas"][name];
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "Paddock API");
        assert!(
            doc["info"]["description"]
                .as_str()
                .unwrap_or("")
                .contains("payload_too_large")
        );
        assert_eq!(doc["servers"][0]["url"], "http://127.0.0.1:7070");
        assert_eq!(
            doc["security"],
            serde_json::json!([{"bearer": []}, {"apiKey": []}, {"sessionCookie": []}])
        );
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["apiKey"]["name"], "X-API-Key");
        assert_eq!(schemes["sessionCookie"]["in"], "cookie");
        // Health and this document need no key.
        for p in ["/v1/health", "/v1/openapi.json"] {
            assert_eq!(
                doc["paths"][p]["get"]["security"],
                serde_json::json!([{}]),
                "{p}"
            );
        }
        assert!(doc["paths"]["/v1/status"]["get"].get("security").is_none());
        let create = &doc["paths"]["/v1/sandboxes"]["post"];
        assert_eq!(create["operationId"], "create_sandbox");
        assert!(
            create["description"]
                .as_str()
                .unwrap_or("")
                .contains("template_unusable")
        );
        let body = schema("CreateSandbox");
        assert_eq!(body["additionalProperties"], false);
        assert!(
            body["properties"]["on_timeout"]
                .to_string()
                .contains("pause_filesystem")
        );
        assert!(
            body["properties"]["volumes"]["items"]
                .to_string()
                .contains("VolumeMount")
        );
        assert_eq!(
            doc["paths"]["/v1/sandboxes"]["get"]["responses"]["200"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/SandboxList"
        );
        assert!(
            doc["paths"]["/v1/sandboxes"]["get"]["parameters"]
                .to_string()
                .contains("metadata.KEY")
        );
        assert!(schema("SandboxLogs")["properties"]["activity"]["items"].is_object());
        assert!(
            schema("Activity")
                .to_string()
                .contains("files.archive_extract")
        );
        assert_eq!(
            schema("ApiKey")["properties"]["role"]["enum"],
            serde_json::json!(["viewer", "developer", "operator", "admin"])
        );
        assert!(schema("CreateKey").to_string().contains("\"user\""));
        let events = &doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"];
        assert_eq!(
            events["text/event-stream"]["schema"]["$ref"],
            "#/components/schemas/Event"
        );
        assert_eq!(
            doc["paths"]["/v1/keys/{id}"]["delete"]["responses"]["403"]["content"]["application/json"]
                ["schema"]["$ref"],
            "#/components/schemas/Error"
        );
    }
}
