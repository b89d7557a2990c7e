//! `GET /files` and `POST /files` (placeholder until implemented).

/// Routes for `/files`.
pub fn router() -> axum::Router {
    axum::Router::new()
}
