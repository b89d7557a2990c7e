//! Template requests a control plane sends to several nodes: the fleet-wide template list
//! (`GET /v1/templates`: every live node's list merged, each template once with the nodes
//! holding it) and a template's delete (`DELETE /v1/templates/{name}`: on every node
//! holding it).

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use paddock_store::NodeRecord;
use serde_json::{Value, json};

use super::forward::Forwarder;
use crate::error::ApiError;
use crate::wire::json_response;

/// Largest template list read from one node.
pub const MAX_LIST: usize = 32 << 20;

/// A copy of `req`'s head with an empty body, for one more node.
fn copy(req: &Request) -> Request {
    let mut r = Request::new(Body::empty());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.headers_mut() = req.headers().clone();
    if let Some(c) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        r.extensions_mut().insert(*c);
    }
    r
}

/// `GET /v1/templates` through a control plane: each live node's list (the caller's key is
/// checked by each node; the first refusal is the answer), merged by name. A template gets
/// `nodes` (the names of the nodes holding it) and `running_sandboxes` summed over them.
pub async fn list_templates(fwd: &Forwarder, live: &[&NodeRecord], req: Request) -> Response {
    let mut merged: Vec<Value> = Vec::new();
    for n in live {
        let resp = fwd.forward(&n.name, &n.address, copy(&req)).await;
        if resp.status() != StatusCode::OK {
            return resp;
        }
        let Ok(body) = axum::body::to_bytes(resp.into_body(), MAX_LIST).await else {
            return ApiError::Unavailable(format!("node {}: template list unreadable", n.name))
                .into_response();
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        for t in v["templates"].as_array().into_iter().flatten() {
            let name = t["name"].as_str().unwrap_or_default();
            if let Some(m) = merged.iter_mut().find(|m| m["name"] == name) {
                let sum = m["running_sandboxes"].as_u64().unwrap_or(0)
                    + t["running_sandboxes"].as_u64().unwrap_or(0);
                m["running_sandboxes"] = sum.into();
                if let Some(a) = m["nodes"].as_array_mut() {
                    a.push(n.name.clone().into());
                }
            } else {
                let mut t = t.clone();
                t["nodes"] = json!([n.name]);
                merged.push(t);
            }
        }
    }
    json_response(StatusCode::OK, json!({ "templates": merged }))
}

/// `DELETE /v1/templates/{name}` through a control plane: sent to every node holding it, in
/// turn; the first failure is the answer (the nodes before it have deleted theirs), else the
/// last node's 204.
pub async fn delete_template(fwd: &Forwarder, holders: &[&NodeRecord], req: Request) -> Response {
    let mut last = None;
    for n in holders {
        let resp = fwd.forward(&n.name, &n.address, copy(&req)).await;
        if !resp.status().is_success() {
            return resp;
        }
        last = Some(resp);
    }
    last.unwrap_or_else(|| ApiError::NotFound("no node holds this template".into()).into_response())
}
