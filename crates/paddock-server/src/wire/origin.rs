//! Where clients reach this server, for the URLs the API answers (REST ports, E2B sandbox
//! domains): the configured public URL, or the Host the client used when that names no
//! usable address.

use axum::http::{HeaderMap, header};

use paddock_service::state::AppState;

/// Where clients reach this server: the scheme, the authority for path URLs, and the port to
/// append to host URLs (None for the scheme's default). The configured public URL wins
/// unless it names no usable address (port 0 or an unspecified address, as with
/// `--listen 0.0.0.0:7070`); then the Host the client used is the best guess.
pub fn base(state: &AppState, headers: &HeaderMap) -> (String, String, Option<u16>) {
    let public = state.cfg.public_url.trim_end_matches('/');
    let (scheme, authority) = public.split_once("://").unwrap_or(("http", public));
    let authority = authority.split('/').next().unwrap_or(authority);
    let (host, port) = split_authority(authority);
    let unusable = port == Some(0)
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
    let authority = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h) if unusable && !h.is_empty() && h.bytes().all(authority_byte) => h.to_owned(),
        _ => authority.to_owned(),
    };
    let (_, port) = split_authority(&authority);
    let default = if scheme == "https" { 443 } else { 80 };
    (scheme.to_owned(), authority, port.filter(|p| *p != default))
}

/// The port to append to `{port}-{id}.{domain}` URLs (None: the scheme's default).
pub fn url_port(state: &AppState, headers: &HeaderMap) -> Option<u16> {
    base(state, headers).2
}

fn authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
}

/// `host[:port]`, `[v6][:port]`.
fn split_authority(a: &str) -> (&str, Option<u16>) {
    match a.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()),
        _ => (a, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(split_authority("a.b:70"), ("a.b", Some(70)));
        assert_eq!(split_authority("a.b"), ("a.b", None));
        assert_eq!(split_authority("[::1]:8"), ("[::1]", Some(8)));
        assert_eq!(split_authority("[::1]"), ("[::1]", None));
    }
}
