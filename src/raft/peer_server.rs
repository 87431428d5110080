//! The receiving side of the peer transport (see [`super::network`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::network::{
    snapshot_of, SnapshotRequest, WireError, PATH_ADMIN, PATH_APPEND, PATH_READ_INDEX,
    PATH_SNAPSHOT, PATH_VOTE, PATH_WRITE, TARGET_HEADER,
};
use super::node::{AdminRequest, Consensus};
use super::{NodeId, TypeConfig};
use crate::model::Command;
use crate::storage;

/// Largest peer message (a whole snapshot travels in one).
pub const MAX_PEER_MESSAGE: usize = 1 << 30;

type Ctx = State<Arc<Consensus>>;

pub fn router(consensus: Arc<Consensus>) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_WRITE, post(write))
        .route(PATH_READ_INDEX, post(read_index))
        .route(PATH_ADMIN, post(admin))
        .layer(DefaultBodyLimit::max(MAX_PEER_MESSAGE))
        .with_state(consensus)
}

/// Refuse a request meant for another node id, and decode its body.
#[allow(clippy::result_large_err)] // The error is the response itself, built once.
fn accept<T: DeserializeOwned>(
    id: NodeId,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Response> {
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<NodeId>().ok());
    if target != Some(id) {
        let text = format!("this is control node {id}, not {target:?}");
        return Err((StatusCode::MISDIRECTED_REQUEST, text).into_response());
    }
    storage::decode(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())
}

fn reply<T: Serialize>(value: &T) -> Response {
    match storage::encode(value) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append(State(c): Ctx, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<AppendEntriesRequest<TypeConfig>>(c.id, &headers, &body) {
        Ok(request) => reply(&c.raft.append_entries(request).await),
        Err(refusal) => refusal,
    }
}

async fn vote(State(c): Ctx, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<VoteRequest<NodeId>>(c.id, &headers, &body) {
        Ok(request) => reply(&c.raft.vote(request).await),
        Err(refusal) => refusal,
    }
}

async fn snapshot(State(c): Ctx, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<SnapshotRequest>(c.id, &headers, &body) {
        Ok((vote, meta, data)) => reply(
            &c.raft
                .install_full_snapshot(vote, snapshot_of(meta, data))
                .await,
        ),
        Err(refusal) => refusal,
    }
}

/// A write forwarded by a follower: applied here if this node leads, never forwarded on.
async fn write(State(c): Ctx, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<(Command, Duration)>(c.id, &headers, &body) {
        Ok((command, budget)) => {
            let deadline = tokio::time::Instant::now() + budget.min(Duration::from_secs(60));
            let result = c
                .write_local(command, deadline)
                .await
                .map_err(WireError::from);
            reply(&result)
        }
        Err(refusal) => refusal,
    }
}

async fn read_index(State(c): Ctx, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<Duration>(c.id, &headers, &body) {
        Ok(budget) => {
            let result = c
                .serve_read_index(budget.min(Duration::from_secs(10)))
                .await
                .map_err(WireError::from);
            reply(&result)
        }
        Err(refusal) => refusal,
    }
}

async fn admin(State(c): Ctx, headers: HeaderMap, body: Bytes) -> Response {
    match accept::<AdminRequest>(c.id, &headers, &body) {
        Ok(request) => reply(&c.admin_local(request).await.map_err(WireError::from)),
        Err(refusal) => refusal,
    }
}
