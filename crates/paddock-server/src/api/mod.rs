//! The REST API under `/v1`: one module per group of routes, the JSON extractor
//! ([`json::Json`], from [`crate::wire`]). The router that assembles them with
//! the E2B API, the proxy and the console is [`crate::app`]; the wire helpers every edge
//! shares (timestamps, events, queries, small bodies) are [`crate::wire`].
//!
//! Wire types live here and in the route modules; the store and runtime types are converted
//! at this edge. Every route but `/v1/health` and `/v1/openapi.json` needs an API key.

pub mod admin;
pub mod alerts;
pub mod code;
pub mod cost;
pub mod events;
pub mod exec;
pub mod files;
pub mod mcp;
pub mod network;
pub mod pause;
pub mod pools;
pub mod ports;
pub mod rollouts;
pub mod sandbox_view;
pub mod sandboxes;
pub mod secrets;
pub mod services;
pub mod session;
pub mod snapshots;
pub mod system;
pub mod template_view;
pub mod templates;
pub mod tests;
pub mod volumes;

pub use crate::wire::json::{self, Json};
