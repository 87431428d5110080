//! Request handlers: shape checks, command construction, outcome rendering.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::schema::{self, BodySchema};
use super::{input, render, ApiContext, FLOCKER_VERSION};
use crate::model::{Command, Micros, Outcome, Precondition, Rejection};

type Ctx = State<Arc<ApiContext>>;
type ApiResult = Result<Response, ApiError>;

pub const IF_MATCHES: &str = "x-if-configuration-matches";
pub const TAG_HEADER: &str = "x-configuration-tag";

/// Wall-clock now, for commands (leases) and for rendering relative expiry times.
pub fn now_micros() -> Micros {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    Micros::try_from(since.as_micros()).expect("the clock is before the year 294,000")
}

/// The `X-If-Configuration-Matches` header: the precondition, and the first raw value
/// for the 412 body.
struct Conditional {
    precondition: Precondition,
    first_raw: Option<String>,
}

impl Conditional {
    /// For endpoints that ignore `X-If-Configuration-Matches` (containers, leases).
    const NONE: Conditional = Conditional {
        precondition: Precondition::None,
        first_raw: None,
    };

    fn from_headers(ctx: &ApiContext, headers: &HeaderMap) -> Self {
        let raw: Vec<String> = headers
            .get_all(IF_MATCHES)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if raw.is_empty() {
            return Conditional {
                precondition: Precondition::None,
                first_raw: None,
            };
        }
        let versions = raw.iter().filter_map(|tag| ctx.tags.parse(tag)).collect();
        Conditional {
            precondition: Precondition::AnyOf(versions),
            first_raw: raw.into_iter().next(),
        }
    }

    fn failed(&self, ctx: &ApiContext, current: u64) -> ApiError {
        ApiError::PreconditionFailed {
            required: self.first_raw.clone().unwrap_or_default(),
            current: ctx.tags.render(current),
        }
    }
}

impl ApiContext {
    async fn propose(&self, command: Command) -> Result<Outcome, ApiError> {
        Ok(self.consensus.write(command, self.leader_wait).await?)
    }

    /// Wait until the local replica reflects every write acknowledged before now.
    async fn linearize(&self) -> Result<(), ApiError> {
        Ok(self.consensus.read_barrier(self.leader_wait).await?)
    }

    /// Configuration reads are linearizable unless the client asks for a stale read.
    ///
    /// Debug builds only: `FLOCKER_UNSAFE_STALE_READS=1` (read once) makes every read
    /// skip the read index and serve the local copy, a deliberate bug that the
    /// fault-injection suite (`jepsen/`, `--inject-bug stale-reads`) must catch.
    async fn read_barrier(&self, query: &Option<String>) -> Result<(), ApiError> {
        static UNSAFE_STALE_READS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let unsafe_stale_reads = cfg!(debug_assertions)
            && *UNSAFE_STALE_READS.get_or_init(|| {
                let on = std::env::var("FLOCKER_UNSAFE_STALE_READS").is_ok_and(|v| v == "1");
                if on {
                    tracing::warn!("FLOCKER_UNSAFE_STALE_READS=1: reads skip the read index");
                }
                on
            });
        let stale = unsafe_stale_reads
            || query
                .as_deref()
                .is_some_and(|q| q.split('&').any(|p| p == "consistency=stale"));
        if stale {
            Ok(())
        } else {
            self.linearize().await
        }
    }

    /// Flocker checks the tag before it even decodes the body: a request that is both
    /// malformed and conditional on a stale tag gets 412, not 400.
    async fn reject_malformed(&self, conditional: &Conditional, error: ApiError) -> ApiError {
        if conditional.first_raw.is_some() && self.linearize().await.is_ok() {
            let current = self.consensus.state.read().config.version;
            if !conditional.precondition.holds(current) {
                return conditional.failed(self, current);
            }
        }
        error
    }

    async fn body(
        &self,
        bytes: &Bytes,
        schema: BodySchema,
        conditional: &Conditional,
    ) -> Result<Value, ApiError> {
        let checked = schema::parse_body(bytes)
            .map_err(|()| ApiError::Undecodable)
            .and_then(|body| match schema::validate(schema, &body) {
                Ok(()) => Ok(body),
                Err(errors) => Err(ApiError::Schema(errors)),
            });
        match checked {
            Ok(body) => Ok(body),
            Err(error) => Err(self.reject_malformed(conditional, error).await),
        }
    }

    fn rejected(&self, rejection: Rejection, conditional: Option<&Conditional>) -> ApiError {
        match (rejection, conditional) {
            (Rejection::TagMismatch { current }, Some(conditional)) => {
                conditional.failed(self, current)
            }
            (rejection, _) => ApiError::Rejected(rejection),
        }
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn unexpected(outcome: Outcome) -> ApiError {
    // Each command has one success outcome; anything else is a bug, reported as 503 so
    // the client retries rather than trusting a wrong answer.
    ApiError::Consensus(crate::raft::node::ConsensusError::Stopped(format!(
        "unexpected outcome {outcome:?}"
    )))
}

pub async fn version() -> Response {
    json_response(StatusCode::OK, json!({ "flocker": FLOCKER_VERSION }))
}

pub async fn list_datasets(
    State(ctx): Ctx,
    method: Method,
    RawQuery(query): RawQuery,
) -> ApiResult {
    ctx.read_barrier(&query).await?;
    let version = ctx.consensus.state.applied().config;
    // HEAD is the cheap way to learn the tag: no need to render a body nobody reads.
    let (version, body) = if method == Method::HEAD {
        (version, Bytes::from_static(b"[]"))
    } else {
        ctx.rendered_datasets()
    };
    let mut response = (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    let tag = HeaderValue::from_str(&ctx.tags.render(version)).expect("hex is a valid header");
    response.headers_mut().insert(TAG_HEADER, tag);
    Ok(response)
}

impl ApiContext {
    /// The dataset list as JSON and the configuration version it shows, rendered at most
    /// once per version.
    fn rendered_datasets(&self) -> (u64, Bytes) {
        let state = self.consensus.state.read();
        let version = state.config.version;
        let mut cache = self
            .datasets_cache
            .lock()
            .expect("render cache lock poisoned");
        if let Some((cached, body)) = cache.as_ref() {
            if *cached == version {
                return (version, body.clone());
            }
        }
        let body = Bytes::from(render::dataset_list(&state.config.datasets));
        *cache = Some((version, body.clone()));
        (version, body)
    }
}

/// Run a conditional dataset command and render its dataset.
async fn dataset_command(
    ctx: &ApiContext,
    conditional: &Conditional,
    command: Command,
    status: StatusCode,
) -> ApiResult {
    match ctx.propose(command).await? {
        Outcome::Dataset(dataset) => Ok(json_response(status, render::dataset(&dataset))),
        Outcome::Rejected(rejection) => Err(ctx.rejected(rejection, Some(conditional))),
        other => Err(unexpected(other)),
    }
}

pub async fn create_dataset(State(ctx): Ctx, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    let conditional = Conditional::from_headers(&ctx, &headers);
    let body = ctx
        .body(&bytes, BodySchema::DatasetCreate, &conditional)
        .await?;
    let dataset = match input::dataset_create(&body, Uuid::new_v4()) {
        Ok(dataset) => dataset,
        Err(e) => return Err(ctx.reject_malformed(&conditional, e).await),
    };
    let command = Command::CreateDataset {
        precondition: conditional.precondition.clone(),
        dataset,
    };
    dataset_command(&ctx, &conditional, command, StatusCode::CREATED).await
}

pub async fn update_dataset(
    State(ctx): Ctx,
    Path(dataset_id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> ApiResult {
    let conditional = Conditional::from_headers(&ctx, &headers);
    let body = ctx
        .body(&bytes, BodySchema::DatasetUpdate, &conditional)
        .await?;
    let primary = match input::dataset_update(&body) {
        Ok(primary) => primary,
        Err(e) => return Err(ctx.reject_malformed(&conditional, e).await),
    };
    let command = Command::MoveDataset {
        precondition: conditional.precondition.clone(),
        dataset_id,
        primary,
    };
    dataset_command(&ctx, &conditional, command, StatusCode::OK).await
}

pub async fn delete_dataset(
    State(ctx): Ctx,
    Path(dataset_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let conditional = Conditional::from_headers(&ctx, &headers);
    let command = Command::DeleteDataset {
        precondition: conditional.precondition.clone(),
        dataset_id,
    };
    dataset_command(&ctx, &conditional, command, StatusCode::OK).await
}

pub async fn state_datasets(State(ctx): Ctx) -> Response {
    let list = render::state_datasets(&ctx.consensus.state.read().cluster);
    json_response(StatusCode::OK, Value::Array(list))
}

pub async fn list_containers(State(ctx): Ctx, RawQuery(query): RawQuery) -> ApiResult {
    ctx.read_barrier(&query).await?;
    let list: Vec<Value> = ctx
        .consensus
        .state
        .read()
        .config
        .containers
        .values()
        .map(|c| Value::Object(render::container(c)))
        .collect();
    Ok(json_response(StatusCode::OK, Value::Array(list)))
}

async fn container_command(ctx: &ApiContext, command: Command, status: StatusCode) -> ApiResult {
    match ctx.propose(command).await? {
        Outcome::Container(c) => Ok(json_response(status, Value::Object(render::container(&c)))),
        Outcome::ContainerDeleted => Ok(json_response(status, Value::Null)),
        Outcome::Rejected(rejection) => Err(ctx.rejected(rejection, None)),
        other => Err(unexpected(other)),
    }
}

pub async fn create_container(State(ctx): Ctx, bytes: Bytes) -> ApiResult {
    let body = ctx
        .body(&bytes, BodySchema::ContainerCreate, &Conditional::NONE)
        .await?;
    let container = input::container_create(&body)?;
    container_command(
        &ctx,
        Command::CreateContainer { container },
        StatusCode::CREATED,
    )
    .await
}

pub async fn move_container(State(ctx): Ctx, Path(name): Path<String>, bytes: Bytes) -> ApiResult {
    let body = ctx
        .body(&bytes, BodySchema::ContainerUpdate, &Conditional::NONE)
        .await?;
    let node_uuid = input::container_move(&body)?;
    container_command(
        &ctx,
        Command::MoveContainer { name, node_uuid },
        StatusCode::OK,
    )
    .await
}

pub async fn delete_container(State(ctx): Ctx, Path(name): Path<String>) -> ApiResult {
    container_command(&ctx, Command::DeleteContainer { name }, StatusCode::OK).await
}

pub async fn state_containers(State(ctx): Ctx) -> Response {
    let list = render::state_containers(&ctx.consensus.state.read().cluster);
    json_response(StatusCode::OK, Value::Array(list))
}

pub async fn state_nodes(State(ctx): Ctx) -> Response {
    let list = render::state_nodes(&ctx.consensus.state.read().cluster);
    json_response(StatusCode::OK, Value::Array(list))
}

pub async fn node_by_era(State(ctx): Ctx, Path(era): Path<String>) -> Response {
    // Flocker answered 500 to an era that is not a UUID; no node has such an era.
    let node = Uuid::parse_str(&era)
        .ok()
        .and_then(|era| ctx.consensus.state.read().cluster.node_by_era(era));
    match node {
        Some(uuid) => json_response(StatusCode::OK, render::node_uuid(uuid)),
        None => json_response(
            StatusCode::NOT_FOUND,
            json!({"description": "No node found with given era."}),
        ),
    }
}

pub async fn list_leases(State(ctx): Ctx, RawQuery(query): RawQuery) -> ApiResult {
    ctx.read_barrier(&query).await?;
    let now = now_micros();
    let list: Vec<Value> = ctx
        .consensus
        .state
        .read()
        .config
        .leases
        .values()
        .map(|l| render::lease(l, now))
        .collect();
    Ok(json_response(StatusCode::OK, Value::Array(list)))
}

pub async fn acquire_lease(State(ctx): Ctx, bytes: Bytes) -> ApiResult {
    let body = ctx
        .body(&bytes, BodySchema::Lease, &Conditional::NONE)
        .await?;
    let (dataset_id, node_uuid, duration) = input::lease(&body)?;
    let command = Command::AcquireLease {
        dataset_id,
        node_uuid,
        expiration: duration.map(|d| now_micros() + d),
    };
    match ctx.propose(command).await? {
        Outcome::LeaseAcquired { created, .. } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = json!({
                "dataset_id": dataset_id.to_string(),
                "node_uuid": node_uuid.to_string(),
                "expires": duration.map(render::seconds),
            });
            Ok(json_response(status, body))
        }
        Outcome::Rejected(rejection) => Err(ctx.rejected(rejection, None)),
        other => Err(unexpected(other)),
    }
}

pub async fn release_lease(State(ctx): Ctx, Path(dataset_id): Path<String>) -> ApiResult {
    // Flocker answered 500 to a path that is not a UUID; no lease has such an id.
    let Ok(dataset_id) = Uuid::parse_str(&dataset_id) else {
        return Err(ApiError::Rejected(Rejection::LeaseNotFound));
    };
    match ctx.propose(Command::ReleaseLease { dataset_id }).await? {
        Outcome::LeaseReleased(lease) => Ok(json_response(
            StatusCode::OK,
            render::lease(&lease, now_micros()),
        )),
        Outcome::Rejected(rejection) => Err(ctx.rejected(rejection, None)),
        other => Err(unexpected(other)),
    }
}

pub async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
