//! Request-context helpers shared by the agent's Connect services.

use std::time::Duration;

use connectrpc::{ConnectError, RequestContext};

use crate::users::{self, User};

/// A header parsed as an unsigned integer.
pub(crate) fn header_u64(ctx: &RequestContext, name: &str) -> Option<u64> {
    ctx.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// The keepalive period the E2B SDK asks for on streams (`Keepalive-Ping-Interval`, seconds).
pub(crate) fn keepalive(ctx: &RequestContext) -> Option<Duration> {
    header_u64(ctx, "keepalive-ping-interval")
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// The user an RPC acts as (see [`users::from_headers`]); unknown users are unauthenticated.
pub(crate) fn user_of(ctx: &RequestContext) -> Result<User, ConnectError> {
    users::from_headers(ctx.headers()).map_err(|e| ConnectError::unauthenticated(e.to_string()))
}
