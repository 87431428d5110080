//! The control node's side of the agent protocol (see [`super::protocol`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::protocol::{
    BlockDeviceOwner, ClusterView, ReportAccepted, ReportedState, StateReport, HEARTBEAT_DEDUP,
    MAX_WAIT_SECONDS,
};
use crate::api::error::ApiError;
use crate::api::handlers::now_micros;
use crate::api::ApiContext;
use crate::model::{AgentReport, Command, Micros, Outcome, State as Replica};
use crate::server::Peer;
use crate::tls::PeerIdentity;

type Ctx = State<Arc<ApiContext>>;

pub fn router(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/agent/v1/state", post(report_state))
        .route("/agent/v1/cluster", get(cluster_view))
        .route("/agent/v1/blockdevice-owner", post(blockdevice_owner))
        .fallback(crate::api::handlers::route_not_found)
        .method_not_allowed_fallback(crate::api::handlers::method_not_allowed)
        .layer(axum::middleware::map_response(crate::api::json_errors))
        .layer(axum::middleware::from_fn(crate::api::read_whole_body))
        .with_state(ctx)
}

fn node_of(peer: &Peer) -> Result<Uuid, ApiError> {
    match peer.identity {
        PeerIdentity::Node(uuid) => Ok(uuid),
        // The TLS configuration admits only node certificates on this port.
        _ => Err(ApiError::BadRequest(
            "Only node certificates may use the agent port.".into(),
        )),
    }
}

/// Whether the report would change nothing that the cluster does not already know
/// recently enough.
fn redundant(
    state: &Replica,
    node: Uuid,
    host: &str,
    era: Uuid,
    report: &AgentReport,
    now: Micros,
) -> bool {
    if state.cluster.eras.get(&node) != Some(&era) {
        return false;
    }
    let Some(known) = state.cluster.nodes.get(&node) else {
        return false;
    };
    let fresh = |seen: Micros| now - seen < HEARTBEAT_DEDUP.as_micros() as Micros;
    known.host == host
        && match report {
            AgentReport::Datasets(d) => {
                fresh(known.datasets_seen) && (d.is_none() || d.as_ref() == known.datasets.as_ref())
            }
            AgentReport::Containers(c) => {
                fresh(known.containers_seen)
                    && (c.is_none() || c.as_ref() == known.containers.as_ref())
            }
        }
}

async fn report_state(
    State(ctx): Ctx,
    Extension(peer): Extension<Peer>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let node = node_of(&peer)?;
    let StateReport { era, state } = crate::api::input::json_body(&bytes)?;
    let report = match state {
        ReportedState::Datasets(d) => AgentReport::Datasets(d),
        ReportedState::Containers(c) => AgentReport::Containers(c),
    };
    let host = peer.addr.ip().to_canonical().to_string();
    let now = now_micros();
    {
        let replica = ctx.consensus.state.read();
        if redundant(&replica, node, &host, era, &report, now) {
            let applied = ctx.consensus.state.applied().index;
            return Ok(Json(ReportAccepted { applied }).into_response());
        }
    }
    let command = Command::ReportState {
        node,
        host,
        era,
        report,
        now,
    };
    ctx.consensus.write(command, ctx.leader_wait).await?;
    let applied = ctx.consensus.state.applied().index;
    Ok(Json(ReportAccepted { applied }).into_response())
}

#[derive(Debug, Deserialize)]
struct PollParams {
    after: Option<u64>,
    wait: Option<u64>,
}

async fn cluster_view(
    State(ctx): Ctx,
    Extension(peer): Extension<Peer>,
    params: Result<Query<PollParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let node_uuid = node_of(&peer)?;
    // Answered in the API's error format, not axum's plain-text rejection.
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wait = Duration::from_secs(params.wait.unwrap_or(30).min(MAX_WAIT_SECONDS));
    let mut applied = ctx.consensus.state.subscribe();
    if let Some(after) = params.after {
        let newer = |a: &crate::raft::state_machine::Applied| a.config.max(a.cluster) > after;
        // Timing out is a normal answer: the agent gets the current view.
        let _ = tokio::time::timeout(wait, applied.wait_for(newer)).await;
    }
    let view = {
        let replica = ctx.consensus.state.read();
        ClusterView {
            generation: replica.config.version.max(replica.cluster.version),
            node_uuid,
            now: now_micros(),
            configuration: replica.config.clone(),
            state: replica.cluster.clone(),
        }
    };
    Ok(Json(view).into_response())
}

async fn blockdevice_owner(State(ctx): Ctx, bytes: Bytes) -> Result<Response, ApiError> {
    let BlockDeviceOwner {
        dataset_id,
        blockdevice_id,
    } = crate::api::input::json_body(&bytes)?;
    let command = Command::SetBlockDeviceOwner {
        dataset_id,
        blockdevice_id,
    };
    match ctx.consensus.write(command, ctx.leader_wait).await? {
        Outcome::Rejected(rejection) => Err(ApiError::Rejected(rejection)),
        _ => Ok((StatusCode::OK, Json(json!({}))).into_response()),
    }
}
