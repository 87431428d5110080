//! The Flocker v1 REST API (port 4523), served by every control node.
//!
//! Life of a write (see also `src/lib.rs`): the handler checks the body's shape (JSON
//! schema, then [`input`]), builds a [`Command`](crate::model::Command) with every id and
//! timestamp already chosen, and proposes it; the state machine decides, and the
//! [`Outcome`](crate::model::Outcome) becomes the response. Configuration reads pass a
//! read barrier first, so they are linearizable; `?consistency=stale` skips it.

pub mod admin;
pub mod error;
pub mod handlers;
pub mod input;
pub mod render;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::model::TagFormat;
use crate::raft::node::Consensus;

/// The version reported by `GET /v1/version`: the Flocker API level this implements.
pub const FLOCKER_VERSION: &str = "1.15.0";

/// Largest accepted request body. A maximal valid container (4096 arguments of 4096
/// characters) fits.
pub const MAX_BODY_BYTES: usize = 24 * 1024 * 1024;

/// What the handlers share.
pub struct ApiContext {
    pub consensus: Arc<Consensus>,
    pub tags: TagFormat,
    /// How long a request waits for a leader before answering 503.
    pub leader_wait: Duration,
    /// The last rendered `GET /v1/configuration/datasets` body and the configuration
    /// version it shows: reads between two writes are served without re-rendering.
    pub datasets_cache: std::sync::Mutex<Option<(u64, bytes::Bytes)>>,
}

impl ApiContext {
    pub fn new(consensus: Arc<Consensus>, tags: TagFormat, leader_wait: Duration) -> Self {
        ApiContext {
            consensus,
            tags,
            leader_wait,
            datasets_cache: std::sync::Mutex::new(None),
        }
    }
}

pub fn router(ctx: Arc<ApiContext>) -> Router {
    use handlers::*;
    Router::new()
        .route("/v1/version", get(version))
        .route(
            "/v1/configuration/datasets",
            get(list_datasets).post(create_dataset),
        )
        .route(
            "/v1/configuration/datasets/{dataset_id}",
            post(update_dataset).delete(delete_dataset),
        )
        .route("/v1/state/datasets", get(state_datasets))
        .route(
            "/v1/configuration/containers",
            get(list_containers).post(create_container),
        )
        .route(
            "/v1/configuration/containers/{name}",
            post(move_container).delete(delete_container),
        )
        .route("/v1/state/containers", get(state_containers))
        .route("/v1/state/nodes", get(state_nodes))
        .route("/v1/state/nodes/by_era/{era}", get(node_by_era))
        .route(
            "/v1/configuration/leases",
            get(list_leases).post(acquire_lease),
        )
        .route(
            "/v1/configuration/leases/{dataset_id}",
            axum::routing::delete(release_lease),
        )
        .merge(admin::routes())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(read_whole_body))
        .with_state(ctx)
}

/// Read every request body before routing, whatever the method: Flocker ignores the bodies
/// of GET and DELETE, and a server that answers without reading them makes HTTP/1.1
/// clients that are still sending see a broken connection. Over the limit: a JSON 413.
pub async fn read_whole_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Err(_) => error::ApiError::TooLarge.into_response(),
    }
}

/// Give every error Flocker's JSON shape, also those produced by the framework itself
/// (a path segment that is not UTF-8, a body over the limit): `{"description": ...}`.
pub async fn json_errors(response: axum::response::Response) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let description = String::from_utf8_lossy(&text).trim().to_owned();
    let mut converted = (
        status,
        axum::Json(serde_json::json!({ "description": description })),
    )
        .into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}
