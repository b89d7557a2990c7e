//! End-to-end tests of the REST API: the real `paddock serve` on a free port with a fresh
//! data directory, driven over HTTP. Covers the sandbox lifecycle routes, events, keys,
//! audit, metrics, and the API rows (F) of the security battery.

#[path = "../server/mod.rs"]
mod server;

mod errors;
mod keys;
mod lifecycle;
mod observe;
mod openapi;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use server::*;

/// Asserts an error response: status, code, and no internals in the message.
fn assert_error(st: StatusCode, v: &Value, want: StatusCode, code: &str) {
    assert_eq!(st, want, "{v}");
    assert_eq!(v["code"], code, "{v}");
    let msg = v["message"].as_str().expect("message");
    for leak in ["/var/", "/work/", "/sys/", "panicked", "rusqlite", "src/"] {
        assert!(!msg.contains(leak), "error message leaks {leak:?}: {msg}");
    }
}
