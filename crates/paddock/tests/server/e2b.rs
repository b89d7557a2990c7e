//! Requests in E2B's wire format, as the SDKs send them: the control plane with the admin
//! key in `X-API-KEY`, the data plane (envd) with the sandbox's id in `E2b-Sandbox-Id` and
//! its envd access token in `X-Access-Token`, and the Connect envelope of envd's RPCs.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use super::Server;

impl Server {
    /// A request on the E2B control plane (`/sandboxes`, `/v2/sandboxes`, ...) with the admin
    /// key in `X-API-KEY`.
    pub fn e2b_api(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("X-API-KEY", &self.admin_key)
    }

    /// `POST /v2/sandboxes` with `body`; asserts 201 and returns E2B's `Sandbox` JSON.
    pub async fn e2b_create(&self, body: Value) -> Value {
        let r = self
            .e2b_api(Method::POST, "/v2/sandboxes")
            .json(&body)
            .send()
            .await
            .expect("e2b create");
        let (st, v) = (
            r.status(),
            r.json::<Value>().await.expect("e2b create json"),
        );
        assert_eq!(st, StatusCode::CREATED, "e2b create failed: {v}");
        v
    }

    /// [`Server::e2b_create`], returning the sandbox's id and envd access token.
    pub async fn e2b_sandbox(&self, body: Value) -> (String, String) {
        let v = self.e2b_create(body).await;
        (
            v["sandboxID"].as_str().expect("sandboxID").to_owned(),
            v["envdAccessToken"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// A request on the E2B data plane (envd: `/files`, `/process.Process/Start`, ...) of
    /// sandbox `id` with its access token.
    pub fn e2b_data(&self, method: Method, path: &str, id: &str, token: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .header("E2b-Sandbox-Id", id)
            .header("X-Access-Token", token)
    }

    /// `process.Process/Start` of `cmd` with `args` on the data plane, as one Connect
    /// envelope (JSON): the streaming request the SDKs send to run a command.
    pub fn e2b_process_start(
        &self,
        id: &str,
        token: &str,
        cmd: &str,
        args: &[&str],
    ) -> RequestBuilder {
        let msg = serde_json::json!({"process": {"cmd": cmd, "args": args}}).to_string();
        self.e2b_data(Method::POST, "/process.Process/Start", id, token)
            .header("Content-Type", "application/connect+json")
            .header("Connect-Protocol-Version", "1")
            .body(connect_envelope(msg.as_bytes()))
    }
}

/// One Connect streaming envelope: a flags byte (0), the length (big-endian u32), `msg`.
pub fn connect_envelope(msg: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(5 + msg.len());
    body.push(0);
    body.extend_from_slice(
        &u32::try_from(msg.len())
            .expect("message size")
            .to_be_bytes(),
    );
    body.extend_from_slice(msg);
    body
}
