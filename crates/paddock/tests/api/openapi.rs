//! What every client sees first: health, the OpenAPI document against the router's routes,
//! and the request id on every response.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn health_and_openapi_are_open_and_the_document_covers_every_route() {
    let s = Server::start(&[]);
    let (st, v) = call(s.http.get(format!("{}/v1/health", s.url))).await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (st, doc) = call(s.http.get(format!("{}/v1/openapi.json", s.url))).await;
    assert_eq!(st, StatusCode::OK);
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .expect("ops")
                .keys()
                .map(move |m| (p.clone(), m.to_uppercase()))
        })
        .collect();
    let routes = routes_in_source();
    assert!(
        routes.len() >= 13,
        "found only {} routes in the source",
        routes.len()
    );
    let missing: Vec<_> = routes.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&routes).collect();
    assert!(
        stale.is_empty(),
        "openapi.json documents routes that do not exist: {stale:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_carries_a_request_id() {
    let s = Server::start(&[]);
    let id_of = |r: &reqwest::Response| {
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // A well-formed id from the client comes back as is, on success and on errors.
    for (path, auth) in [
        ("/v1/sandboxes", true),
        ("/v1/sandboxes", false),
        ("/v1/nope", true),
    ] {
        let rb = if auth {
            s.req(Method::GET, path)
        } else {
            s.http.get(format!("{}{path}", s.url))
        };
        let r = rb
            .header("x-request-id", "abc123")
            .send()
            .await
            .expect("request");
        assert_eq!(id_of(&r).as_deref(), Some("abc123"), "{path} (auth {auth})");
    }
    // Without one, or with a malformed one, the server makes one: 32 hex digits, new each time.
    let mut seen = BTreeSet::new();
    for sent in [None, Some("has space"), Some("x".repeat(129).as_str())] {
        let mut rb = s.http.get(format!("{}/v1/health", s.url));
        if let Some(v) = sent {
            rb = rb.header("x-request-id", v);
        }
        let r = rb.send().await.expect("request");
        let id = id_of(&r).expect("a generated x-request-id");
        assert_eq!(id.len(), 32, "{id:?}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
        assert!(seen.insert(id), "generated ids repeat");
    }
}

/// Every `.route("PATH", get(..).post(..))` in the server's source, as (path, METHOD).
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../paddock-server/src");
    // Every source file of the server (modules split into directories included) except
    // `e2b/`, whose routes are E2B's wire, documented in docs/e2b.md rather than here.
    let mut files = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(src)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("server src dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "e2b") {
                    continue;
                }
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut out = BTreeSet::new();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap_or_default();
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".route(") {
            // rustfmt may put the path on the next line.
            rest = rest[i + 7..].trim_start();
            let Some(r) = rest.strip_prefix('"') else {
                continue;
            };
            rest = r;
            let end = rest.find('"').expect("route path end");
            let path = rest[..end].to_owned();
            // The method list runs to the closing parenthesis of `.route(`.
            let mut depth = 1;
            let mut j = end;
            for (k, c) in rest[end..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            j = end + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let methods = &rest[end..j];
            for m in ["get", "post", "put", "delete", "patch"] {
                // `post(handler)`, or `post_service(svc)` for a tower service (`/mcp`).
                if methods.contains(&format!("{m}(")) || methods.contains(&format!("{m}_service("))
                {
                    out.insert((path.clone(), m.to_uppercase()));
                }
            }
        }
    }
    out
}
