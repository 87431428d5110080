//! The admin interface (under `/admin/v1`, outside Flocker's `/v1` space), on the API port
//! with the same client certificates: cluster status and membership changes.
//!
//! - `GET /admin/v1/status`: this node's view (leader, term, log, commit and applied
//!   indexes, membership; on the leader, each member's replicated index).
//! - `POST /admin/v1/members` `{"id": 4, "raft_addr": "host:port", "api_addr": "host:port"}`:
//!   add a control node as a learner; it receives the log (or a snapshot) at once.
//! - `PUT /admin/v1/voters` `{"voters": [1, 2, 4]}`: make exactly these nodes the voters
//!   (each must already be a member; joint consensus makes the change safe).
//! - `DELETE /admin/v1/members/<id>`: remove a node (voter or learner).
//!
//! Membership changes run on the leader; any node forwards them there.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::ApiContext;
use crate::raft::node::AdminRequest;
use crate::raft::{ControlNode, NodeId};

type Ctx = State<Arc<ApiContext>>;

pub fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/admin/v1/status", get(status))
        .route("/admin/v1/members", post(add_member))
        .route("/admin/v1/members/{id}", delete(remove_member))
        .route("/admin/v1/voters", put(set_voters))
}

/// This node's Raft status as JSON.
pub fn status_json(ctx: &ApiContext) -> Value {
    let metrics = ctx.consensus.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    let nodes: serde_json::Map<String, Value> = membership
        .nodes()
        .map(|(id, node)| {
            (
                id.to_string(),
                json!({"raft_addr": node.raft_addr, "api_addr": node.api_addr}),
            )
        })
        .collect();
    let replication = metrics.replication.as_ref().map(|r| {
        r.iter()
            .map(|(id, matched)| (id.to_string(), json!(matched.map(|l| l.index))))
            .collect::<serde_json::Map<String, Value>>()
    });
    let applied = ctx.consensus.state.applied();
    json!({
        "id": metrics.id,
        "state": format!("{:?}", metrics.state),
        "leader": metrics.current_leader,
        "term": metrics.current_term,
        "last_log_index": metrics.last_log_index,
        "applied_index": metrics.last_applied.map(|l| l.index),
        "snapshot_index": metrics.snapshot.map(|l| l.index),
        "purged_index": metrics.purged.map(|l| l.index),
        "voters": voters,
        "learners": learners,
        "nodes": nodes,
        "replication": replication,
        "configuration_tag": ctx.tags.render(applied.config),
        "healthy": metrics.running_state.is_ok(),
    })
}

async fn status(State(ctx): Ctx) -> Response {
    (StatusCode::OK, Json(status_json(&ctx))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    id: NodeId,
    raft_addr: String,
    api_addr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Voters {
    voters: BTreeSet<NodeId>,
}

async fn run(ctx: &ApiContext, request: AdminRequest) -> Result<Response, ApiError> {
    // Adding a learner waits for it to catch up; allow more than a write's wait.
    let wait = ctx.leader_wait.max(std::time::Duration::from_secs(30));
    match ctx.consensus.admin(request, wait).await {
        Ok(()) => Ok((StatusCode::OK, Json(status_json(ctx))).into_response()),
        Err(crate::raft::node::ConsensusError::Invalid(why)) => Err(ApiError::Conflict(why)),
        Err(e) => Err(e.into()),
    }
}

async fn add_member(State(ctx): Ctx, bytes: Bytes) -> Result<Response, ApiError> {
    let NewMember {
        id,
        raft_addr,
        api_addr,
    } = crate::api::input::json_body(&bytes)?;
    if id == 0 || raft_addr.is_empty() {
        return Err(ApiError::BadRequest(
            "\"id\" must be positive and \"raft_addr\" non-empty.".into(),
        ));
    }
    run(
        &ctx,
        AdminRequest::AddLearner {
            id,
            node: ControlNode {
                raft_addr,
                api_addr,
            },
        },
    )
    .await
}

async fn set_voters(State(ctx): Ctx, bytes: Bytes) -> Result<Response, ApiError> {
    let Voters { voters } = crate::api::input::json_body(&bytes)?;
    if voters.is_empty() {
        return Err(ApiError::BadRequest(
            "\"voters\" must name at least one node.".into(),
        ));
    }
    run(&ctx, AdminRequest::SetVoters { voters }).await
}

async fn remove_member(State(ctx): Ctx, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: NodeId = id
        .parse()
        .map_err(|_| ApiError::BadRequest("The member id must be a number.".into()))?;
    run(&ctx, AdminRequest::Remove { id }).await
}
