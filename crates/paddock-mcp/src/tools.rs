//! The tools: each one a short sequence of REST calls through the [`Backend`], its answer
//! reshaped for a model and capped ([`crate::limits`]). A failed call becomes a tool error
//! (`isError: true`) carrying the API's `code` and `message`.

use std::sync::Arc;

use base64::Engine as _;
use http::Method;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Extensions, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use serde_json::{Value, json};

use crate::backend::{self, ApiRequest, ApiResponse, Backend, query, segment};
use crate::code;
use crate::limits::{
    JSON_ANSWER_CAP, LIST_FILES_CAP, LIST_SANDBOXES_CAP, OUTPUT_CAP, READ_FILE_CAP,
    RUN_CODE_STREAM_CAP, RUN_CODE_TIMEOUT_SECS, WRITE_FILE_CAP,
};
use crate::params::*;

/// What a tool answers: its result, or a tool error already shaped as one.
type ToolResult = Result<CallToolResult, ErrorData>;

/// The MCP server: Paddock's tools over a [`Backend`].
#[derive(Clone)]
pub struct PaddockTools {
    backend: Arc<dyn Backend>,
    tool_router: ToolRouter<PaddockTools>,
}

impl std::fmt::Debug for PaddockTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaddockTools").finish_non_exhaustive()
    }
}

/// Instructions the client may show the model once.
const INSTRUCTIONS: &str = "Paddock runs isolated Linux sandboxes. Typical use: create_sandbox, \
then run_command / write_file / read_file / list_files (or run_code in a `code-interpreter` \
sandbox), get_url to reach a server started inside, and kill_sandbox when done. Sandboxes are \
destroyed when their timeout ends.";

impl PaddockTools {
    pub fn new(backend: Arc<dyn Backend>) -> PaddockTools {
        PaddockTools {
            backend,
            tool_router: Self::tool_router(),
        }
    }

    /// Sends one request for the MCP caller in `ext`; a transport failure or a non-2xx
    /// answer is the tool error to return.
    async fn api(
        &self,
        ext: &Extensions,
        req: ApiRequest,
        cap: usize,
    ) -> Result<ApiResponse, CallToolResult> {
        let caller = ext.get::<http::request::Parts>();
        let resp = backend::call(self.backend.as_ref(), caller, req, cap)
            .await
            .map_err(|e| tool_error("unavailable", &e.to_string(), None))?;
        if resp.is_success() {
            Ok(resp)
        } else {
            Err(api_error(&resp))
        }
    }

    /// [`Self::api`] for a JSON answer.
    async fn api_json(&self, ext: &Extensions, req: ApiRequest) -> Result<Value, CallToolResult> {
        let resp = self.api(ext, req, JSON_ANSWER_CAP).await?;
        if resp.status == 204 {
            return Ok(Value::Null);
        }
        parse_json(&resp)
    }
}

/// Runs a tool body written with `?` on `Result<_, CallToolResult>`.
fn done(r: Result<CallToolResult, CallToolResult>) -> ToolResult {
    Ok(r.unwrap_or_else(|e| e))
}

#[tool_router]
impl PaddockTools {
    #[tool(name = "create_sandbox", description = CREATE_SANDBOX)]
    async fn create_sandbox(
        &self,
        Parameters(p): Parameters<CreateSandbox>,
        ext: Extensions,
    ) -> ToolResult {
        done(
            async {
                let mut body = json!({});
                if let Some(t) = &p.template {
                    body["template"] = json!(t);
                }
                if let Some(t) = p.timeout {
                    body["timeout"] = json!(t);
                }
                match (p.network, &p.allow) {
                    (Some(m), allow) => {
                        body["network"] = json!({"mode": m.as_str()});
                        if let Some(a) = allow {
                            body["network"]["allow"] = json!(a);
                        }
                    }
                    (None, Some(a)) => body["network"] = json!({"mode": "allow", "allow": a}),
                    (None, None) => {}
                }
                let v = self
                    .api_json(
                        &ext,
                        ApiRequest::new(Method::POST, "/v1/sandboxes".into()).json(&body),
                    )
                    .await?;
                Ok(structured(json!({
                    "sandbox_id": v["id"],
                    "template": v["template"],
                    "state": v["state"],
                    "expires_at": v["expires_at"],
                    "network": v["network"],
                    "user": v["user"],
                })))
            }
            .await,
        )
    }

    #[tool(name = "list_sandboxes", description = LIST_SANDBOXES, annotations(read_only_hint = true))]
    async fn list_sandboxes(
        &self,
        Parameters(p): Parameters<ListSandboxes>,
        ext: Extensions,
    ) -> ToolResult {
        done(
            async {
                let limit = LIST_SANDBOXES_CAP.to_string();
                let mut q = vec![("limit", limit.as_str())];
                if p.include_stopped {
                    q.push(("state", "all"));
                }
                let v = self
                    .api_json(
                        &ext,
                        ApiRequest::new(Method::GET, format!("/v1/sandboxes{}", query(&q))),
                    )
                    .await?;
                let items: Vec<Value> = v["sandboxes"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| {
                        json!({
                            "sandbox_id": s["id"],
                            "template": s["template"],
                            "state": s["state"],
                            "created_at": s["created_at"],
                            "expires_at": s["expires_at"],
                            "metadata": s["metadata"],
                        })
                    })
                    .collect();
                Ok(structured(json!({
                    "sandboxes": items,
                    "more": !v["next"].is_null(),
                })))
            }
            .await,
        )
    }

    #[tool(name = "kill_sandbox", description = KILL_SANDBOX, annotations(destructive_hint = true, idempotent_hint = true))]
    async fn kill_sandbox(
        &self,
        Parameters(p): Parameters<SandboxOnly>,
        ext: Extensions,
    ) -> ToolResult {
        done(
            async {
                self.api_json(
                    &ext,
                    ApiRequest::new(
                        Method::DELETE,
                        format!("/v1/sandboxes/{}", segment(&p.sandbox_id)),
                    ),
                )
                .await?;
                Ok(structured(
                    json!({"sandbox_id": p.sandbox_id, "killed": true}),
                ))
            }
            .await,
        )
    }

    #[tool(name = "run_command", description = RUN_COMMAND)]
    async fn run_command(
        &self,
        Parameters(p): Parameters<RunCommand>,
        ext: Extensions,
    ) -> ToolResult {
        done(
            async {
                let mut body = json!({"command": p.command, "max_output": OUTPUT_CAP});
                if let Some(c) = &p.cwd {
                    body["cwd"] = json!(c);
                }
                if let Some(t) = p.timeout {
                    body["timeout"] = json!(t);
                }
                let v = self
                    .api_json(
                        &ext,
                        ApiRequest::new(
                            Method::POST,
                            format!("/v1/sandboxes/{}/exec", segment(&p.sandbox_id)),
                        )
                        .json(&body),
                    )
                    .await?;
                let mut out = json!({
                    "stdout": stream_text(&v, "stdout"),
                    "stderr": stream_text(&v, "stderr"),
                    "exit_code": v["exit_code"],
                    "timed_out": v["timed_out"].as_bool().unwrap_or(false),
                    "duration_ms": v["duration_ms"],
                });
                for k in ["stdout_truncated", "stderr_truncated", "oom_killed"] {
                    if v[k].as_bool() == Some(true) {
                        out[k] = json!(true);
                    }
                }
                if let Some(e) = v["error"].as_str() {
                    out["error"] = json!(e);
                }
                Ok(structured(out))
            }
            .await,
        )
    }

    #[tool(name = "run_code", description = RUN_CODE)]
    async fn run_code(&self, Parameters(p): Parameters<RunCode>, ext: Extensions) -> ToolResult {
        done(
            async {
                let language = p.language.as_deref().unwrap_or("python");
                let path = format!("/v1/sandboxes/{}/code", segment(&p.sandbox_id));
                let req = ApiRequest::new(Method::POST, path)
                    .json(&json!({
                        "code": p.code,
                        "language": language,
                        "timeout": p.timeout.unwrap_or(RUN_CODE_TIMEOUT_SECS),
                    }))
                    .accept("application/x-ndjson");
                let resp = match self.api(&ext, req, RUN_CODE_STREAM_CAP).await {
                    Err(e) if code::is_missing_route(&e) => {
                        return Err(tool_error(
                            "not_implemented",
                            "this Paddock server has no code interpreter API (POST \
                         /v1/sandboxes/{id}/code answered 404 \"no such route\"); use \
                         run_command with `python3 -c` instead",
                            Some(404),
                        ));
                    }
                    r => r?,
                };
                Ok(code::result(&resp))
            }
            .await,
        )
    }

    #[tool(name = "write_file", description = WRITE_FILE)]
    async fn write_file(
        &self,
        Parameters(p): Parameters<WriteFile>,
        ext: Extensions,
    ) -> ToolResult {
        done(
            async {
                if p.content.len() > WRITE_FILE_CAP {
                    return Err(tool_error(
                        "invalid_request",
                        &format!(
                            "content is {} bytes; write_file takes at most {WRITE_FILE_CAP} bytes \
                         per call (write a file in parts, e.g. with run_command and `cat >>`)",
                            p.content.len()
                        ),
                        None,
                    ));
                }
                let path = format!(
                    "/v1/sandboxes/{}/files{}",
                    segment(&p.sandbox_id),
                    query(&[("path", &p.path)])
                );
                let size = p.content.len();
                let v = self
                    .api_json(
                        &ext,
                        ApiRequest::new(Method::PUT, path).raw(p.content.into_bytes().into()),
                    )
                    .await?;
                Ok(structured(json!({
                    "path": v.get("path").cloned().unwrap_or(json!(p.path)),
                    "size": v.get("size").cloned().unwrap_or(json!(size)),
                })))
            }
            .await,
        )
    }

    #[tool(name = "read_file", description = READ_FILE, annotations(read_only_hint = true))]
    async fn read_file(&self, Parameters(p): Parameters<ReadFile>, ext: Extensions) -> ToolResult {
        done(
            async {
                let path = format!(
                    "/v1/sandboxes/{}/files{}",
                    segment(&p.sandbox_id),
                    query(&[("path", &p.path)])
                );
                let resp = self
                    .api(
                        &ext,
                        ApiRequest::new(Method::GET, path).accept("application/octet-stream"),
                        READ_FILE_CAP,
                    )
                    .await?;
                let mut out = json!({
                    "path": p.path,
                    "size_read": resp.body.len(),
                    "truncated": resp.truncated,
                });
                match utf8_prefix(&resp.body, resp.truncated) {
                    Some(text) => out["content"] = json!(text),
                    None => {
                        out["content_base64"] =
                            json!(base64::engine::general_purpose::STANDARD.encode(&resp.body))
                    }
                }
                Ok(structured(out))
            }
            .await,
        )
    }

    #[tool(name = "list_files", description = LIST_FILES, annotations(read_only_hint = true))]
    async fn list_files(
        &self,
        Parameters(p): Parameters<ListFiles>,
        ext: Extensions,
    ) -> ToolResult {
        done(
            async {
                let dir = p.path.as_deref().unwrap_or(".");
                let depth = p.depth.unwrap_or(1).to_string();
                let path = format!(
                    "/v1/sandboxes/{}/fs/list{}",
                    segment(&p.sandbox_id),
                    query(&[("path", dir), ("depth", &depth)])
                );
                let v = self
                    .api_json(&ext, ApiRequest::new(Method::GET, path))
                    .await?;
                let all = v["entries"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let entries: Vec<Value> = all
                    .iter()
                    .take(LIST_FILES_CAP)
                    .map(|e| {
                        let mut o = json!({
                            "name": e["name"],
                            "path": e["path"],
                            "type": e["type"],
                            "size": e["size"],
                        });
                        if let Some(t) = e["symlink_target"].as_str() {
                            o["symlink_target"] = json!(t);
                        }
                        o
                    })
                    .collect();
                Ok(structured(json!({
                    "path": dir,
                    "entries": entries,
                    "truncated": all.len() > LIST_FILES_CAP,
                })))
            }
            .await,
        )
    }

    #[tool(name = "get_url", description = GET_URL, annotations(read_only_hint = true))]
    async fn get_url(&self, Parameters(p): Parameters<GetUrl>, ext: Extensions) -> ToolResult {
        done(
            async {
                let path = format!("/v1/sandboxes/{}/ports/{}", segment(&p.sandbox_id), p.port);
                let v = self
                    .api_json(&ext, ApiRequest::new(Method::GET, path))
                    .await?;
                let public = v["public"].as_bool().unwrap_or(false);
                let token = (!public).then(|| v["access_token"].as_str()).flatten();
                let with_token = |base: &Value| base.as_str().map(|b| port_url(b, token));
                Ok(structured(json!({
                    "url": with_token(&v["url"]),
                    "path_url": with_token(&v["path_url"]),
                    "port": p.port,
                    "public": public,
                    "listening": v["listening"],
                })))
            }
            .await,
        )
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PaddockTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("paddock", env!("CARGO_PKG_VERSION")).with_title("Paddock"),
            )
            .with_instructions(INSTRUCTIONS)
    }
}

/// `base` with `?paddock_token=TOKEN` when a token is given (as `paddock url` prints it).
fn port_url(base: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("{base}?paddock_token={}", segment(t)),
        None => base.to_owned(),
    }
}

/// A successful result: the value as structured content and as its JSON text.
pub(crate) fn structured(v: Value) -> CallToolResult {
    CallToolResult::structured(v)
}

/// A tool error: `message [code]` as text (with the HTTP status when there is one), and
/// `{code, message, status}` as structured content.
pub(crate) fn tool_error(code: &str, message: &str, status: Option<u16>) -> CallToolResult {
    let text = match status {
        Some(s) => format!("{message} [{code}, HTTP {s}]"),
        None => format!("{message} [{code}]"),
    };
    let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
    r.structured_content = Some(json!({
        "error": {"code": code, "message": message, "status": status}
    }));
    r
}

/// The tool error of a non-2xx answer: the API's `{"code","message"}`, or the status and
/// the start of the body when it is not one.
pub(crate) fn api_error(resp: &ApiResponse) -> CallToolResult {
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    match (v["code"].as_str(), v["message"].as_str()) {
        (Some(c), Some(m)) => tool_error(c, m, Some(resp.status)),
        _ => {
            let text = String::from_utf8_lossy(&resp.body);
            let text: String = text.trim().chars().take(200).collect();
            let msg = if text.is_empty() {
                format!("the server answered HTTP {}", resp.status)
            } else {
                format!("the server answered HTTP {}: {text}", resp.status)
            };
            tool_error(&format!("http_{}", resp.status), &msg, Some(resp.status))
        }
    }
}

fn parse_json(resp: &ApiResponse) -> Result<Value, CallToolResult> {
    if resp.truncated {
        return Err(tool_error(
            "internal",
            &format!("the server's answer is larger than {JSON_ANSWER_CAP} bytes"),
            None,
        ));
    }
    serde_json::from_slice(&resp.body).map_err(|e| {
        tool_error(
            "internal",
            &format!("the server's answer is not JSON: {e}"),
            None,
        )
    })
}

/// An exec result's stream as text: `stdout`, or `stdout_b64` (not UTF-8) decoded lossily.
fn stream_text(v: &Value, name: &str) -> String {
    if let Some(s) = v[name].as_str() {
        return s.to_owned();
    }
    v[format!("{name}_b64")]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// `bytes` as text if it is UTF-8; when it was cut (`cut`), an incomplete last character
/// is dropped rather than taken for binary data.
fn utf8_prefix(bytes: &[u8], cut: bool) -> Option<String> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s.to_owned()),
        Err(e) if cut && e.error_len().is_none() => std::str::from_utf8(&bytes[..e.valid_up_to()])
            .ok()
            .map(str::to_owned),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_cut_in_a_character_is_still_text() {
        let s = "héllo".as_bytes();
        assert_eq!(utf8_prefix(&s[..2], true).as_deref(), Some("h"));
        assert_eq!(utf8_prefix(&s[..2], false), None);
        assert_eq!(utf8_prefix(b"\xff\xfe", true), None);
    }

    #[test]
    fn errors_carry_the_api_message_and_code() {
        let resp = ApiResponse {
            status: 404,
            content_type: "application/json".into(),
            body: r#"{"code":"not_found","message":"sandbox x not found"}"#.into(),
            truncated: false,
        };
        let r = api_error(&resp);
        assert_eq!(r.is_error, Some(true));
        let v = r.structured_content.unwrap_or_default();
        assert_eq!(v["error"]["message"], "sandbox x not found");
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["status"], 404);
    }

    #[test]
    fn urls_carry_the_token_only_when_private() {
        assert_eq!(
            port_url("http://h/", Some("a b")),
            "http://h/?paddock_token=a%20b"
        );
        assert_eq!(port_url("http://h/", None), "http://h/");
    }
}
