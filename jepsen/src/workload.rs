//! Workloads: concurrent clients on the host, each sending one request at a time to a
//! random node, recording every invocation and completion.
//!
//! Outcome rules, shared by all workloads:
//!
//! - the TCP or TLS connection could not be made: `fail` (nothing was sent);
//! - 503: `fail` (the API promises the request was not applied);
//! - 504, any other 5xx, a timeout, a connection lost after sending: `info` (unknown);
//! - a 4xx is an answer: what it means depends on the operation.
//!
//! A client whose operation ended in `info` continues under a new process number.
//!
//! Every 2 s the clients are briefly held back until no request is in flight (if that
//! happens within 200 ms): these quiescent points let the checker cut a failing history
//! into windows that can be checked on their own.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flocker::client::{Client, ClientError, Reply};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::RwLock;
use tokio::time::Instant;

use crate::checker::register::PRECONDITION_FAILED;
use crate::checker::set::to_ranges;
use crate::cluster::Endpoints;
use crate::history::{Kind, Note, Process, Recorder};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// The configuration tag as a compare-and-set register (linearizability).
    Register,
    /// Unique dataset creates (nothing acknowledged lost, nothing failed present).
    Set,
    /// Lease acquire/renew/release by fake nodes (never two holders at once).
    Leases,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Leases => "leases",
        }
    }
}

/// Datasets are created with this primary: a node UUID no agent has (the control
/// service does not require the primary to exist).
const PRIMARY: &str = "5a1e0000-0000-4000-8000-000000000001";
const MAXIMUM_SIZE: u64 = 67_108_864;
/// How many lease datasets the leases workload uses.
pub const LEASE_KEYS: u64 = 3;

/// What every client shares.
pub struct Ctx {
    pub workload: Workload,
    pub recorder: Arc<Recorder>,
    pub endpoints: Endpoints,
    pub timeout: Duration,
    pub seed: u64,
    pub concurrency: usize,
    /// 8 hex digits unique to the run, the start of every UUID the suite makes.
    pub prefix: String,
    next_element: AtomicU64,
    gate: RwLock<()>,
}

impl Ctx {
    pub fn new(
        workload: Workload,
        recorder: Arc<Recorder>,
        endpoints: Endpoints,
        timeout: Duration,
        seed: u64,
        concurrency: usize,
    ) -> Self {
        let prefix = format!("{:08x}", (seed as u32) ^ rand::random::<u32>());
        Ctx {
            workload,
            recorder,
            endpoints,
            timeout,
            seed,
            concurrency,
            prefix,
            next_element: AtomicU64::new(0),
            gate: RwLock::new(()),
        }
    }

    fn invoke(&self, process: u64, f: &str, value: Value, slot: usize) {
        self.recorder.record(Note {
            kind: Kind::Invoke,
            process: Process::Client(process),
            f: f.into(),
            value,
            node: Some(Endpoints::name(slot)),
            error: None,
        });
    }

    fn complete(&self, process: u64, f: &str, slot: usize, outcome: Outcome) -> Kind {
        let kind = outcome.kind;
        self.recorder.record(Note {
            kind,
            process: Process::Client(process),
            f: f.into(),
            value: outcome.value,
            node: Some(Endpoints::name(slot)),
            error: outcome.error,
        });
        kind
    }

    fn uuid(&self, class: &str, n: u64) -> String {
        format!("{}-0000-4000-{class}-{n:012x}", self.prefix)
    }

    /// The number in a UUID made by [`Ctx::uuid`] with `class`.
    fn number(&self, class: &str, uuid: &str) -> Option<u64> {
        let rest = uuid.strip_prefix(&format!("{}-0000-4000-{class}-", self.prefix))?;
        u64::from_str_radix(rest, 16).ok()
    }
}

/// How an operation ended.
struct Outcome {
    kind: Kind,
    value: Value,
    error: Option<String>,
}

impl Outcome {
    fn ok(value: Value) -> Self {
        Outcome {
            kind: Kind::Ok,
            value,
            error: None,
        }
    }
    fn fail(value: Value, error: impl Into<String>) -> Self {
        Outcome {
            kind: Kind::Fail,
            value,
            error: Some(error.into()),
        }
    }
    fn info(value: Value, error: impl Into<String>) -> Self {
        Outcome {
            kind: Kind::Info,
            value,
            error: Some(error.into()),
        }
    }
}

/// The outcome of a transport error.
fn transport(e: &ClientError, value: Value) -> Outcome {
    match e {
        ClientError::Http(http) if http.is_connect() => {
            Outcome::fail(value, format!("connect: {}", root_cause(http)))
        }
        ClientError::Http(http) if http.is_timeout() => Outcome::info(value, "timeout"),
        ClientError::Http(http) => Outcome::info(value, format!("network: {}", root_cause(http))),
        other => Outcome::info(value, other.to_string()),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The error of a 503 in the history (followed by the response's description).
pub const UNAVAILABLE: &str = "unavailable";

/// The outcome of a 5xx, or `None` for other statuses.
fn unavailable(reply: &Reply, value: &Value) -> Option<Outcome> {
    match reply.status {
        StatusCode::SERVICE_UNAVAILABLE => Some(Outcome::fail(
            value.clone(),
            format!("{UNAVAILABLE}: {}", reply.description().unwrap_or("")),
        )),
        StatusCode::GATEWAY_TIMEOUT => Some(Outcome::info(
            value.clone(),
            format!("indeterminate: {}", reply.description().unwrap_or("")),
        )),
        s if s.is_server_error() => Some(Outcome::info(
            value.clone(),
            format!(
                "status {}: {}",
                s.as_u16(),
                reply.description().unwrap_or("")
            ),
        )),
        _ => None,
    }
}

fn other_status(reply: &Reply, value: Value) -> Outcome {
    Outcome::fail(
        value,
        format!(
            "status {}: {}",
            reply.status.as_u16(),
            reply.description().unwrap_or("")
        ),
    )
}

/// The state one client keeps between its operations.
#[derive(Default)]
struct ClientState {
    /// Register: the last tag this client read.
    tag: Option<String>,
    /// Leases: the keys this client (a fake node) believes it holds.
    holding: BTreeSet<u64>,
}

/// Run `ctx.concurrency` clients and the quiescence ticker until `until`.
pub async fn run(ctx: Arc<Ctx>, until: Instant) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..ctx.concurrency {
        let ctx = ctx.clone();
        tasks.spawn(async move { client_loop(ctx, w, until).await });
    }
    let ticker = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if Instant::now() >= until {
                    return;
                }
                if let Ok(all_idle) =
                    tokio::time::timeout(Duration::from_millis(200), ctx.gate.write()).await
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    drop(all_idle);
                }
            }
        })
    };
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            tracing::error!("client task: {e}");
        }
    }
    ticker.abort();
}

fn clients(ctx: &Ctx) -> Vec<Client> {
    ctx.endpoints
        .slots()
        .map(|s| {
            ctx.endpoints
                .client(s, ctx.timeout)
                .expect("the suite's own certificates load")
        })
        .collect()
}

async fn client_loop(ctx: Arc<Ctx>, w: usize, until: Instant) {
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed.wrapping_mul(0x9e37_79b9) ^ (w as u64 + 1));
    let clients = clients(&ctx);
    let mut process = w as u64;
    let mut state = ClientState::default();
    while Instant::now() < until {
        let slot = rng.gen_range(1..=clients.len());
        let client = &clients[slot - 1];
        let pass = ctx.gate.read().await;
        let kind = match ctx.workload {
            Workload::Register => {
                register_op(&ctx, client, slot, process, &mut rng, &mut state).await
            }
            Workload::Set => set_op(&ctx, client, slot, process, &mut rng).await,
            Workload::Leases => {
                lease_op(&ctx, client, slot, process, w as u64, &mut rng, &mut state).await
            }
        };
        drop(pass);
        if kind == Kind::Info {
            process += ctx.concurrency as u64;
        }
        if kind != Kind::Ok {
            // Do not hammer a node that is down.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(5..50))).await;
        }
    }
}

// ---------------------------------------------------------------------------- register

async fn read_tag(ctx: &Ctx, client: &Client, slot: usize, process: u64) -> (Kind, Option<String>) {
    ctx.invoke(process, "read", Value::Null, slot);
    let outcome = match client
        .request(Method::HEAD, "/v1/configuration/datasets", &[], None)
        .await
    {
        Err(e) => transport(&e, Value::Null),
        Ok(reply) => match (reply.status, reply.header("x-configuration-tag")) {
            (StatusCode::OK, Some(tag)) => Outcome::ok(json!(tag)),
            _ => unavailable(&reply, &Value::Null)
                .unwrap_or_else(|| other_status(&reply, Value::Null)),
        },
    };
    let tag = outcome.value.as_str().map(str::to_owned);
    (ctx.complete(process, "read", slot, outcome), tag)
}

/// The current tag in a 412 body: "Tag doesn't match. Required: X, current: Y".
fn current_tag(reply: &Reply) -> Option<String> {
    let text = reply.description()?;
    let current = text.rsplit_once("current: ")?.1.trim();
    (current.len() == 32 && current.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| current.to_owned())
}

async fn register_op(
    ctx: &Ctx,
    client: &Client,
    slot: usize,
    process: u64,
    rng: &mut ChaCha8Rng,
    state: &mut ClientState,
) -> Kind {
    let base = match &state.tag {
        Some(tag) if rng.gen_bool(0.5) => tag.clone(),
        _ => {
            let (kind, tag) = read_tag(ctx, client, slot, process).await;
            if tag.is_some() {
                state.tag = tag;
            }
            return kind;
        }
    };
    let value = json!({"base": base});
    ctx.invoke(process, "cas", value.clone(), slot);
    let body = json!({
        "primary": PRIMARY,
        "maximum_size": MAXIMUM_SIZE,
        "metadata": {"writer": format!("p{process}"), "base": base},
    });
    let outcome = match client
        .post_if("/v1/configuration/datasets", &base, &body)
        .await
    {
        Err(e) => transport(&e, value),
        Ok(reply) => match reply.status {
            StatusCode::CREATED => Outcome::ok(value),
            StatusCode::PRECONDITION_FAILED => {
                let current = current_tag(&reply);
                Outcome::fail(
                    json!({"base": base, "current": current}),
                    PRECONDITION_FAILED,
                )
            }
            _ => unavailable(&reply, &value).unwrap_or_else(|| other_status(&reply, value)),
        },
    };
    // After a 412 the current tag is known; after anything else, read again.
    match (outcome.kind, outcome.value["current"].as_str()) {
        (Kind::Fail, Some(current)) => state.tag = Some(current.to_owned()),
        // Not applied (503, refused connection, 4xx): the tag may still be current.
        (Kind::Fail, None) if outcome.error.as_deref() != Some(PRECONDITION_FAILED) => {}
        _ => state.tag = None,
    }
    ctx.complete(process, "cas", slot, outcome)
}

// --------------------------------------------------------------------------------- set

/// The set elements (ours) in a dataset list, as ranges.
fn elements(ctx: &Ctx, list: &Value) -> Value {
    let set: BTreeSet<u64> = list
        .as_array()
        .map(|datasets| {
            datasets
                .iter()
                .filter_map(|d| d["dataset_id"].as_str())
                .filter_map(|id| ctx.number("8000", id))
                .collect()
        })
        .unwrap_or_default();
    to_ranges(set)
}

async fn read_set(ctx: &Ctx, client: &Client, slot: usize, process: u64, f: &str) -> Kind {
    ctx.invoke(process, f, Value::Null, slot);
    let outcome = match client.get("/v1/configuration/datasets").await {
        Err(e) => transport(&e, Value::Null),
        Ok(reply) if reply.status == StatusCode::OK && reply.body.is_array() => {
            Outcome::ok(elements(ctx, &reply.body))
        }
        Ok(reply) => {
            unavailable(&reply, &Value::Null).unwrap_or_else(|| other_status(&reply, Value::Null))
        }
    };
    ctx.complete(process, f, slot, outcome)
}

async fn set_op(
    ctx: &Ctx,
    client: &Client,
    slot: usize,
    process: u64,
    rng: &mut ChaCha8Rng,
) -> Kind {
    if rng.gen_bool(0.1) {
        return read_set(ctx, client, slot, process, "read").await;
    }
    let element = ctx.next_element.fetch_add(1, Ordering::Relaxed);
    let value = json!(element);
    ctx.invoke(process, "add", value.clone(), slot);
    let body = json!({
        "primary": PRIMARY,
        "dataset_id": ctx.uuid("8000", element),
        "maximum_size": MAXIMUM_SIZE,
        "metadata": {"jepsen": "set"},
    });
    let outcome = match client.post("/v1/configuration/datasets", &body).await {
        Err(e) => transport(&e, value),
        Ok(reply) => match reply.status {
            StatusCode::CREATED => Outcome::ok(value),
            // The id is unique to this request: "in use" means it was applied already
            // (twice?), so the outcome is not a plain failure.
            StatusCode::CONFLICT => Outcome::info(value, "conflict: dataset id in use"),
            _ => unavailable(&reply, &value).unwrap_or_else(|| other_status(&reply, value)),
        },
    };
    ctx.complete(process, "add", slot, outcome)
}

// ------------------------------------------------------------------------------ leases

async fn lease_op(
    ctx: &Ctx,
    client: &Client,
    slot: usize,
    process: u64,
    node: u64,
    rng: &mut ChaCha8Rng,
    state: &mut ClientState,
) -> Kind {
    let key = rng.gen_range(0..LEASE_KEYS);
    let holding = state.holding.contains(&key);
    let roll: f64 = rng.gen();
    if (holding && roll < 0.4) || (!holding && roll < 0.6) {
        acquire(ctx, client, slot, process, node, key, state).await
    } else if holding && roll < 0.8 {
        release(ctx, client, slot, process, node, key, state).await
    } else {
        read_lease(ctx, client, slot, process, key).await
    }
}

async fn acquire(
    ctx: &Ctx,
    client: &Client,
    slot: usize,
    process: u64,
    node: u64,
    key: u64,
    state: &mut ClientState,
) -> Kind {
    let value = json!({"key": key, "node": node});
    ctx.invoke(process, "acquire", value.clone(), slot);
    let body = json!({
        "dataset_id": ctx.uuid("a000", key),
        "node_uuid": ctx.uuid("9000", node),
        "expires": null,
    });
    let outcome = match client.post("/v1/configuration/leases", &body).await {
        Err(e) => transport(&e, value),
        Ok(reply) => match reply.status {
            StatusCode::CREATED => Outcome::ok(json!({"created": true})),
            StatusCode::OK => Outcome::ok(json!({"created": false})),
            StatusCode::CONFLICT => Outcome::fail(Value::Null, "held"),
            _ => unavailable(&reply, &value).unwrap_or_else(|| other_status(&reply, value)),
        },
    };
    if outcome.kind == Kind::Ok {
        state.holding.insert(key);
    } else if outcome.kind == Kind::Info {
        state.holding.remove(&key);
    }
    ctx.complete(process, "acquire", slot, outcome)
}

/// A holder in a response: our node number, or the raw UUID of a stranger.
fn holder_of(ctx: &Ctx, uuid: Option<&str>) -> Value {
    match uuid {
        None => Value::Null,
        Some(u) => ctx.number("9000", u).map_or_else(|| json!(u), |n| json!(n)),
    }
}

async fn release(
    ctx: &Ctx,
    client: &Client,
    slot: usize,
    process: u64,
    node: u64,
    key: u64,
    state: &mut ClientState,
) -> Kind {
    let value = json!({"key": key, "node": node});
    ctx.invoke(process, "release", value.clone(), slot);
    let path = format!("/v1/configuration/leases/{}", ctx.uuid("a000", key));
    let outcome = match client.delete(&path).await {
        Err(e) => transport(&e, value),
        Ok(reply) => match reply.status {
            StatusCode::OK => {
                Outcome::ok(json!({"holder": holder_of(ctx, reply.body["node_uuid"].as_str())}))
            }
            StatusCode::NOT_FOUND => Outcome::fail(Value::Null, "not-found"),
            _ => unavailable(&reply, &value).unwrap_or_else(|| other_status(&reply, value)),
        },
    };
    state.holding.remove(&key);
    ctx.complete(process, "release", slot, outcome)
}

async fn read_lease(ctx: &Ctx, client: &Client, slot: usize, process: u64, key: u64) -> Kind {
    let value = json!({"key": key});
    ctx.invoke(process, "read", value.clone(), slot);
    let id = ctx.uuid("a000", key);
    let outcome = match client.get("/v1/configuration/leases").await {
        Err(e) => transport(&e, value),
        Ok(reply) if reply.status == StatusCode::OK && reply.body.is_array() => {
            let held = reply
                .body
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["dataset_id"].as_str() == Some(id.as_str()))
                .and_then(|l| l["node_uuid"].as_str());
            Outcome::ok(json!({"holder": holder_of(ctx, held)}))
        }
        Ok(reply) => unavailable(&reply, &value).unwrap_or_else(|| other_status(&reply, value)),
    };
    ctx.complete(process, "read", slot, outcome)
}

// ------------------------------------------------------------------------- final reads

/// After the heal: read from every node (retrying each until it answers or `timeout`),
/// so the checkers see the converged state. Returns how many nodes answered.
pub async fn final_reads(ctx: &Ctx, timeout: Duration) -> usize {
    let clients = clients(ctx);
    let mut answered = 0;
    for slot in ctx.endpoints.slots() {
        let client = &clients[slot - 1];
        let process = 1_000_000 + slot as u64 * 1000;
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let p = process + attempt;
            let ok = match ctx.workload {
                Workload::Register => read_tag(ctx, client, slot, p).await.0 == Kind::Ok,
                Workload::Set => read_set(ctx, client, slot, p, "final-read").await == Kind::Ok,
                Workload::Leases => {
                    let mut all = true;
                    for key in 0..LEASE_KEYS {
                        all &= read_lease(ctx, client, slot, p, key).await == Kind::Ok;
                    }
                    all
                }
            };
            if ok {
                answered += 1;
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    answered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            headers: Default::default(),
            raw: body.to_string().into(),
            body,
        }
    }

    fn ctx() -> Ctx {
        let layout = crate::netns::Layout {
            run_id: "1".into(),
            subnet: [10, 231, 1],
            slots: 3,
        };
        let tls = flocker::tls::TlsFiles::in_dir(std::path::Path::new("/nonexistent"), "x");
        Ctx::new(
            Workload::Set,
            Arc::new(Recorder::new(std::time::Instant::now(), None).unwrap()),
            Endpoints { layout, tls },
            Duration::from_secs(1),
            7,
            2,
        )
    }

    #[test]
    fn the_current_tag_is_read_from_a_412() {
        let tag = "0123456789abcdef0000000000000042";
        let body =
            json!({"description": format!("Tag doesn't match. Required: x, current: {tag}")});
        assert_eq!(
            current_tag(&reply(StatusCode::PRECONDITION_FAILED, body)).as_deref(),
            Some(tag)
        );
        let odd = json!({"description": "Tag doesn't match. Required: x, current: nope"});
        assert_eq!(
            current_tag(&reply(StatusCode::PRECONDITION_FAILED, odd)),
            None
        );
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let v = json!(1);
        let o = unavailable(&reply(StatusCode::SERVICE_UNAVAILABLE, json!({})), &v).unwrap();
        assert_eq!(o.kind, Kind::Fail);
        let o = unavailable(&reply(StatusCode::GATEWAY_TIMEOUT, json!({})), &v).unwrap();
        assert_eq!(o.kind, Kind::Info);
        let o = unavailable(&reply(StatusCode::INTERNAL_SERVER_ERROR, json!({})), &v).unwrap();
        assert_eq!(o.kind, Kind::Info);
        assert!(unavailable(&reply(StatusCode::CONFLICT, json!({})), &v).is_none());
    }

    #[test]
    fn uuids_encode_numbers_and_only_ours_count() {
        let ctx = ctx();
        let id = ctx.uuid("8000", 300);
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert_eq!(ctx.number("8000", &id), Some(300));
        assert_eq!(ctx.number("9000", &id), None);
        let list = json!([
            {"dataset_id": ctx.uuid("8000", 1)},
            {"dataset_id": ctx.uuid("8000", 2)},
            {"dataset_id": ctx.uuid("8000", 5)},
            {"dataset_id": "5a1e0000-0000-4000-8000-000000000001"},
        ]);
        assert_eq!(elements(&ctx, &list), json!([[1, 2], [5, 5]]));
        assert_eq!(holder_of(&ctx, Some(&ctx.uuid("9000", 3))), json!(3));
        assert_eq!(holder_of(&ctx, None), Value::Null);
    }
}
