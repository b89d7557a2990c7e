//! The E2B envd wire protocol: `process.Process` and `filesystem.Filesystem` Connect services.
//!
//! Message types and service traits are generated at build time from `proto/` by
//! `connectrpc-build`; the JSON mapping (lowerCamelCase, int64 as strings, enums by name)
//! comes from buffa's proto3-JSON support, which is what the E2B SDKs speak.

#![allow(unreachable_pub, missing_docs, clippy::all)] // Generated code.

connectrpc::include_generated!();
