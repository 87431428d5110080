//! The agent protocol: how convergence agents and control nodes talk (port 4524).
//!
//! Flocker used AMP with pushed full documents and diffs, hashed with a generation hash
//! that Python agents recomputed. We write our own agents, so the protocol is ours: plain
//! HTTPS/1.1 with JSON bodies, on the same TLS stack as the API. What it keeps from
//! Flocker is the behaviour: prompt notification of changes, merging of partial reports,
//! expiry of silent agents, and eras.
//!
//! # Transport and identity
//!
//! Mutual TLS. The agent presents its node certificate (CN `node-<uuid>`, issued by
//! `flocker-ca create-node-certificate`); the control node refuses any other certificate
//! during the handshake. **The node UUID is taken from the certificate**: an agent can
//! only ever report about its own node (Flocker trusted whatever UUID the agent sent).
//! The agent verifies the control node against `cluster.crt` with the name
//! `control-service`. Agents may connect to any control node; reports are replicated
//! through Raft, so every control node answers from the same state.
//!
//! # Endpoints
//!
//! `POST /agent/v1/state`: report this node's state. Body ([`StateReport`]):
//!
//! ```json
//! {"era": "<boot id uuid>", "kind": "datasets", "state": { ...DatasetAgentState... }}
//! {"era": "<boot id uuid>", "kind": "containers", "state": [ ...ContainerState... ]}
//! {"era": "<boot id uuid>", "kind": "datasets", "state": null}
//! ```
//!
//! `state: null` is a heartbeat: "still here, nothing changed". The node's `host` (shown
//! by `/v1/state/nodes`) is the IP address the agent connects from. A report whose era
//! differs from the era recorded for the node first discards what the node reported
//! before (it rebooted). The answer, `200 {"applied": <index>}`, comes once the report is
//! committed, so an agent never believes in a report the cluster lost. Reports identical
//! to what the cluster already holds are not proposed again (at most one heartbeat per
//! [`HEARTBEAT_DEDUP`] is).
//!
//! Agents send a report when what they observe changes, and a heartbeat at least every
//! [`HEARTBEAT_INTERVAL`] otherwise. A part (datasets or containers) that is neither
//! reported nor heartbeated for the control service's state expiry (default 120 s, as in
//! Flocker; `flocker-control --state-expiry`) is dropped by the leader, with a command
//! stamped with its own clock; a node with nothing left disappears from
//! `/v1/state/nodes`. Eras never expire.
//!
//! `GET /agent/v1/cluster?after=<generation>&wait=<seconds>`: long poll for the desired
//! configuration and the cluster state ([`ClusterView`]). The answer comes as soon as the
//! control node's replica has a generation greater than `after` (immediately when `after`
//! is absent or older), or after `wait` seconds (default 30, at most 60) with the current
//! view. The generation is the log index of the latest change to either the
//! configuration or the cluster state, so it only grows; heartbeats do not move it. An
//! agent loops: poll, converge, report.
//!
//! `POST /agent/v1/blockdevice-owner`: `{"dataset_id": <uuid>, "blockdevice_id": <text>}`
//! registers the backend volume that holds a dataset (first writer wins). `200 {}` when
//! recorded or already recorded with the same id; `409 {"description": ...}` when another
//! volume owns the dataset.
//!
//! Errors use the API's format: `{"description": ...}` with 400 for malformed bodies, 503
//! while there is no leader (retry, possibly on another control node).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{ClusterState, Configuration, ContainerState, DatasetAgentState, Micros};

/// Agents send a heartbeat at least this often.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// A control node proposes at most one heartbeat per node part in this interval.
pub const HEARTBEAT_DEDUP: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest long poll a control node holds.
pub const MAX_WAIT_SECONDS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "state", rename_all = "lowercase")]
pub enum ReportedState {
    Datasets(Option<DatasetAgentState>),
    Containers(Option<Vec<ContainerState>>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReport {
    pub era: Uuid,
    #[serde(flatten)]
    pub state: ReportedState,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportAccepted {
    pub applied: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    pub generation: u64,
    /// The UUID of the node the asking agent's certificate names.
    pub node_uuid: Uuid,
    /// The control node's clock when it answered (for lease expiry arithmetic).
    pub now: Micros,
    pub configuration: Configuration,
    pub state: ClusterState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDeviceOwner {
    pub dataset_id: Uuid,
    pub blockdevice_id: String,
}
