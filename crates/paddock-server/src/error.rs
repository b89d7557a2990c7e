//! The API's one error type: every failure a client can see, with its HTTP status and a
//! stable `code`. Internal details (paths, database errors, agent messages that could name
//! host paths) are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use paddock_runtime::RuntimeError;
use paddock_store::StoreError;

/// An error answered to an API client as `{"code": "...", "message": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request`: the request is malformed or a field is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 400 `invalid_json`: the body is not valid JSON for this route.
    #[error("{0}")]
    InvalidJson(String),
    /// 401 `unauthorized`: no key, a malformed key, or a revoked or expired one.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403 `forbidden`: the key's role may not do this (the message names the role needed).
    #[error("{0}")]
    Forbidden(String),
    /// 403 `csrf`: a cookie-authenticated request without the session's CSRF token, or from
    /// another origin (`session`).
    #[error("{0}")]
    Csrf(&'static str),
    /// 404 `not_found`: the thing does not exist or belongs to another tenant (the two are
    /// indistinguishable on purpose).
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 `conflict`: the state does not allow this (e.g. the sandbox is stopped).
    #[error("{0}")]
    Conflict(String),
    /// 409 `no_interpreter`: nothing answers on the code interpreter's port; the message
    /// names the template to create the sandbox from.
    #[error("{0}")]
    NoInterpreter(String),
    /// 422 `no_match`: a selector matches nothing (a rollout's); nothing was changed.
    #[error("{0}")]
    NoMatch(String),
    /// 413 `payload_too_large`.
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 415 `unsupported_media_type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 `start_failed`: the template's start command failed or its ready check did not
    /// pass in time; the message says which, with the end of the start command's output.
    #[error("{0}")]
    StartFailed(String),
    /// 422 `template_unusable`: the sandbox's setup refused its template (a directory or
    /// file it makes, such as `/opt/paddock`, is a symlink or of the wrong kind); the
    /// message names the path inside the sandbox, never a host path.
    #[error("{0}")]
    TemplateUnusable(String),
    /// 429 `rate_limited` (with `Retry-After`).
    #[error("too many requests; retry after {0} s")]
    RateLimited(u64),
    /// 429 `quota_exceeded`: the key already runs its maximum number of sandboxes.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 501 `not_implemented`: a feature Paddock does not have (yet).
    #[error("{0}")]
    NotImplemented(String),
    /// 502 `agent_error`: the sandbox's agent failed in a way the client cannot fix.
    #[error("{0}")]
    Agent(String),
    /// 502 `registry_error`: an image registry failed or refused (unreachable, 401, unknown
    /// tag, digest mismatch).
    #[error("{0}")]
    Registry(String),
    /// 502 `template_fetch_failed`: a fleet node could not copy a template from any peer
    /// holding it (unreachable, or a layer that does not match its digest).
    #[error("{0}")]
    TemplateFetch(String),
    /// 503 `unavailable`: the host cannot take more sandboxes or is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// 503 `no_capacity`: no node of the fleet can take the sandbox; the message names
    /// what was short (`fleet::placement`).
    #[error("{0}")]
    NoCapacity(String),
    /// 503 `store_unavailable`: the database cannot be reached (PostgreSQL down or
    /// restarting, its connections exhausted past the pool's wait); retry, it recovers by
    /// itself (`docs/database.md`). The detail is logged only.
    #[error("the database is unavailable; retry shortly")]
    StoreUnavailable(String),
    /// 507 `insufficient_storage`: the sandbox's disk limit is reached.
    #[error("{0}")]
    InsufficientStorage(String),
    /// 500 `internal`: a bug or a host failure; the detail is logged only.
    #[error("internal error")]
    Internal(String),
}

/// The body of every error answer (the OpenAPI schema `Error`): the fields in the order
/// `json!` sorted them, so the bytes are as they always were.
#[derive(Debug, serde::Serialize)]
pub struct ErrorBody {
    /// One of [`ApiError::CODES`].
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

// Written by hand rather than derived: the `code` enum is [`ApiError::CODES`], the one list
// the tests check against every variant, which a derive cannot take.
impl utoipa::PartialSchema for ErrorBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(ApiError::CODES.iter().copied()))
                    .description(Some(
                        "A stable code: clients branch on it, not on the status or the message",
                    )),
            )
            .required("code")
            .property(
                "message",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "What went wrong, for a person; never names host paths",
                    )),
            )
            .required("message")
            .property(
                "request_id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "Only on 500 (internal): the request's id, also in the x-request-id \
                     response header; it names the request in the server's log.",
                    )),
            )
            .into()
    }
}

impl utoipa::ToSchema for ErrorBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "Error".into()
    }
}

impl ApiError {
    /// Every stable `code` an error answer can carry, in the order of the variants
    /// (`docs/api.md` lists them with their statuses).
    pub const CODES: &'static [&'static str] = &[
        "invalid_request",
        "invalid_json",
        "unauthorized",
        "forbidden",
        "csrf",
        "not_found",
        "method_not_allowed",
        "conflict",
        "no_interpreter",
        "payload_too_large",
        "unsupported_media_type",
        "start_failed",
        "no_match",
        "template_unusable",
        "rate_limited",
        "quota_exceeded",
        "not_implemented",
        "agent_error",
        "registry_error",
        "template_fetch_failed",
        "unavailable",
        "no_capacity",
        "store_unavailable",
        "insufficient_storage",
        "internal",
    ];

    /// The status and the stable code of this error.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Csrf(_) => (StatusCode::FORBIDDEN, "csrf"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            NoInterpreter(_) => (StatusCode::CONFLICT, "no_interpreter"),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            StartFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "start_failed"),
            NoMatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "no_match"),
            TemplateUnusable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "template_unusable"),
            RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            Agent(_) => (StatusCode::BAD_GATEWAY, "agent_error"),
            Registry(_) => (StatusCode::BAD_GATEWAY, "registry_error"),
            TemplateFetch(_) => (StatusCode::BAD_GATEWAY, "template_fetch_failed"),
            Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            NoCapacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_capacity"),
            StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            InsufficientStorage(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The not-found error of a sandbox id (also used for other tenants' sandboxes).
    pub fn sandbox_not_found(id: &str) -> ApiError {
        // The id is echoed only if it looks like an id, so odd input never reaches a body.
        if id.parse::<paddock_core::SandboxId>().is_ok() {
            ApiError::NotFound(format!("sandbox {id} not found"))
        } else {
            ApiError::NotFound("sandbox not found".into())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        if let ApiError::StoreUnavailable(detail) = &self {
            tracing::warn!(%detail, "database unavailable");
        }
        let body = ErrorBody {
            code,
            message: self.to_string(),
            // A 500 names its request, so the logged detail can be found; nothing else of
            // it is sent.
            request_id: match &self {
                ApiError::Internal(_) => crate::request_id::current(),
                _ => None,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let ApiError::RateLimited(secs) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let ApiError::StoreUnavailable(_) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::from(paddock_service::Error::from_store(&e))
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        ApiError::from(paddock_service::Error::from_runtime(&e))
    }
}

/// A domain error as the edge answers it: each variant to the variant of the same name,
/// store and runtime errors through the conversions above.
impl From<paddock_service::Error> for ApiError {
    fn from(e: paddock_service::Error) -> Self {
        use paddock_service::Error as E;
        match e {
            E::BadRequest(m) => ApiError::BadRequest(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Conflict(m) => ApiError::Conflict(m),
            E::NoMatch(m) => ApiError::NoMatch(m),
            E::PayloadTooLarge(n) => ApiError::PayloadTooLarge(n),
            E::StartFailed(m) => ApiError::StartFailed(m),
            E::TemplateUnusable(m) => ApiError::TemplateUnusable(m),
            E::RateLimited(s) => ApiError::RateLimited(s),
            E::QuotaExceeded(m) => ApiError::QuotaExceeded(m),
            E::Unavailable(m) => ApiError::Unavailable(m),
            E::NoCapacity(m) => ApiError::NoCapacity(m),
            E::Agent(m) => ApiError::Agent(m),
            E::Registry(m) => ApiError::Registry(m),
            E::InsufficientStorage(m) => ApiError::InsufficientStorage(m),
            E::StoreUnavailable(m) => ApiError::StoreUnavailable(m),
            E::Internal(m) => ApiError::Internal(m),
            E::Store(e) => ApiError::from(e),
            E::Runtime(e) => ApiError::from(e),
        }
    }
}

/// An edge error's code for the audit (`AppState::audited` takes either kind of result).
impl paddock_service::error::Coded for ApiError {
    fn code(&self) -> &'static str {
        self.status_code().1
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

/// The error for an in-sandbox operation on a paused sandbox.
pub fn paused_error(id: &str) -> ApiError {
    ApiError::from(paddock_service::error::paused_error(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of every variant. The match below has no wildcard, so a new variant does
    /// not compile until it is added here too.
    fn one_of_each() -> Vec<ApiError> {
        use ApiError::*;
        let all = vec![
            BadRequest(String::new()),
            InvalidJson(String::new()),
            Unauthorized(""),
            Forbidden(String::new()),
            Csrf(""),
            NotFound(String::new()),
            MethodNotAllowed,
            Conflict(String::new()),
            NoInterpreter(String::new()),
            PayloadTooLarge(1),
            UnsupportedMediaType(String::new()),
            StartFailed(String::new()),
            NoMatch(String::new()),
            TemplateUnusable(String::new()),
            RateLimited(1),
            QuotaExceeded(String::new()),
            NotImplemented(String::new()),
            Agent(String::new()),
            Registry(String::new()),
            TemplateFetch(String::new()),
            Unavailable(String::new()),
            NoCapacity(String::new()),
            StoreUnavailable(String::new()),
            InsufficientStorage(String::new()),
            Internal(String::new()),
        ];
        for e in &all {
            match e {
                BadRequest(_)
                | InvalidJson(_)
                | Unauthorized(_)
                | Forbidden(_)
                | Csrf(_)
                | NotFound(_)
                | MethodNotAllowed
                | Conflict(_)
                | NoInterpreter(_)
                | PayloadTooLarge(_)
                | UnsupportedMediaType(_)
                | StartFailed(_)
                | NoMatch(_)
                | TemplateUnusable(_)
                | RateLimited(_)
                | QuotaExceeded(_)
                | NotImplemented(_)
                | Agent(_)
                | Registry(_)
                | TemplateFetch(_)
                | Unavailable(_)
                | NoCapacity(_)
                | StoreUnavailable(_)
                | InsufficientStorage(_)
                | Internal(_) => {}
            }
        }
        all
    }

    #[test]
    fn codes_lists_every_code_an_error_can_carry_once() {
        let codes: Vec<&str> = one_of_each().iter().map(|e| e.status_code().1).collect();
        assert_eq!(codes, ApiError::CODES);
        let unique: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len(), "a code used by two variants");
    }

    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../../../docs/api.md");
        for e in one_of_each() {
            let (status, code) = e.status_code();
            assert!(
                doc.contains(&format!("| {} | `{code}` |", status.as_u16())),
                "docs/api.md lacks error code {code} ({status})"
            );
        }
    }

    #[test]
    fn the_error_body_serialises_as_before() {
        let b = ErrorBody {
            code: "not_found",
            message: "sandbox x not found".into(),
            request_id: None,
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"code":"not_found","message":"sandbox x not found"}"#
        );
        let b = ErrorBody {
            code: "internal",
            message: "internal error".into(),
            request_id: Some("r1".into()),
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"code":"internal","message":"internal error","request_id":"r1"}"#
        );
    }

    /// Every domain error reaches a client as the edge error of the same name, with the
    /// same status, code and message; the audit records the same code. The match has no
    /// wildcard, so a new variant of the service's error does not compile until it is
    /// mapped here too.
    #[test]
    fn every_service_error_is_answered_as_the_edge_error_of_its_name() {
        use paddock_service::Error as E;
        use paddock_service::error::Coded as _;
        let all = vec![
            E::BadRequest("bad".into()),
            E::NotFound("gone".into()),
            E::Conflict("busy".into()),
            E::NoMatch("nothing".into()),
            E::PayloadTooLarge(7),
            E::StartFailed("start".into()),
            E::TemplateUnusable("refused".into()),
            E::RateLimited(3),
            E::QuotaExceeded("quota".into()),
            E::Unavailable("full".into()),
            E::NoCapacity("no node".into()),
            E::Agent("agent".into()),
            E::Registry("registry".into()),
            E::InsufficientStorage("disk".into()),
            E::StoreUnavailable("pg down".into()),
            E::Internal("/var/lib/paddock/x".into()),
            E::Store(StoreError::Conflict("key k".into())),
            E::Runtime(RuntimeError::Exhausted),
        ];
        for e in all {
            use StatusCode as S;
            let want: (StatusCode, &str, &str) = match &e {
                E::BadRequest(_) => (S::BAD_REQUEST, "invalid_request", "bad"),
                E::NotFound(_) => (S::NOT_FOUND, "not_found", "gone"),
                E::Conflict(_) => (S::CONFLICT, "conflict", "busy"),
                E::NoMatch(_) => (S::UNPROCESSABLE_ENTITY, "no_match", "nothing"),
                E::PayloadTooLarge(_) => (
                    S::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is larger than the limit of 7 bytes",
                ),
                E::StartFailed(_) => (S::UNPROCESSABLE_ENTITY, "start_failed", "start"),
                E::TemplateUnusable(_) => (S::UNPROCESSABLE_ENTITY, "template_unusable", "refused"),
                E::RateLimited(_) => (
                    S::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests; retry after 3 s",
                ),
                E::QuotaExceeded(_) => (S::TOO_MANY_REQUESTS, "quota_exceeded", "quota"),
                E::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", "full"),
                E::NoCapacity(_) => (S::SERVICE_UNAVAILABLE, "no_capacity", "no node"),
                E::Agent(_) => (S::BAD_GATEWAY, "agent_error", "agent"),
                E::Registry(_) => (S::BAD_GATEWAY, "registry_error", "registry"),
                E::InsufficientStorage(_) => {
                    (S::INSUFFICIENT_STORAGE, "insufficient_storage", "disk")
                }
                E::StoreUnavailable(_) => (
                    S::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database is unavailable; retry shortly",
                ),
                E::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "internal error"),
                E::Store(_) => (S::CONFLICT, "conflict", "already exists: key k"),
                E::Runtime(_) => (
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "this host cannot start more sandboxes",
                ),
            };
            let (code, message) = (e.code(), e.message());
            let api = ApiError::from(e);
            let (status, api_code) = api.status_code();
            assert_eq!((status, api_code, api.to_string().as_str()), want);
            assert_eq!(
                (code, message.as_str()),
                (want.1, want.2),
                "the service's own view"
            );
        }
    }

    /// A store or runtime error inside a domain error is answered exactly as it is on its
    /// own, and the service's code for it (the audit's) is the edge's.
    #[test]
    fn wrapped_store_and_runtime_errors_keep_their_answers() {
        use paddock_service::error::Coded as _;
        let runtime = || {
            vec![
                RuntimeError::Exhausted,
                RuntimeError::NotFound {
                    id: "abcdefghij0123456789".into(),
                },
                RuntimeError::TemplateUnusable {
                    template: "evil".into(),
                    reason: "a symlink".into(),
                },
                RuntimeError::Setup {
                    id: "abc".into(),
                    failure: paddock_runtime::SetupFailure::Reported {
                        message: "mounting /var/lib/paddock/x: EPERM".into(),
                    },
                },
            ]
        };
        for (a, b) in runtime().into_iter().zip(runtime()) {
            let direct = ApiError::from(a);
            let wrapped = paddock_service::Error::from(b);
            assert_eq!(wrapped.code(), direct.status_code().1);
            assert_eq!(wrapped.message(), direct.to_string());
            let via = ApiError::from(wrapped);
            assert_eq!(via.status_code(), direct.status_code());
            assert_eq!(via.to_string(), direct.to_string());
        }
        let store = || {
            vec![
                StoreError::Conflict("k".into()),
                StoreError::Unavailable("down".into()),
            ]
        };
        for (a, b) in store().into_iter().zip(store()) {
            let direct = ApiError::from(a);
            let wrapped = paddock_service::Error::from(b);
            assert_eq!(wrapped.code(), direct.status_code().1);
            assert_eq!(wrapped.message(), direct.to_string());
            let via = ApiError::from(wrapped);
            assert_eq!(via.status_code(), direct.status_code());
            assert_eq!(via.to_string(), direct.to_string());
        }
    }

    #[test]
    fn a_refused_template_is_a_422_naming_the_path_in_the_sandbox() {
        let e = ApiError::from(RuntimeError::TemplateUnusable {
            template: "evil".into(),
            reason: "the template's /opt/paddock is a symlink".into(),
        });
        assert_eq!(
            e.status_code(),
            (StatusCode::UNPROCESSABLE_ENTITY, "template_unusable")
        );
        assert_eq!(
            e.to_string(),
            "template evil cannot be used: the template's /opt/paddock is a symlink"
        );
        let internal = ApiError::from(RuntimeError::Setup {
            id: "abc".into(),
            failure: paddock_runtime::SetupFailure::Reported {
                message: "mounting /var/lib/paddock/x: EPERM".into(),
            },
        });
        assert_eq!(internal.status_code().1, "internal");
        assert_eq!(internal.to_string(), "internal error");
    }
}
