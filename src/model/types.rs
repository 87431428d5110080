//! The configuration (desired state) and the cluster state (what agents report).
//!
//! The configuration is kept flat, keyed the way the API looks things up, rather than in
//! Flocker's nested `Deployment -> Node -> manifestations/applications` shape: every API
//! lookup and collision check is then a map lookup, and a write touches one entry instead
//! of rewriting the whole document (the original rewrote and re-hashed everything on every
//! change). Secondary indexes (`volume_users`, `external_ports`) are maintained by
//! [`apply`](super::apply()) next to the maps they index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Microseconds since the UNIX epoch. Times enter the state machine only inside commands,
/// chosen by the proposing node: apply never reads a clock.
pub type Micros = i64;

/// A dataset in the configuration: Flocker's primary manifestation of a `Dataset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Lower-case canonical UUID text; the key of [`Configuration::datasets`].
    pub dataset_id: String,
    /// The node holding the primary manifestation.
    pub primary: Uuid,
    pub deleted: bool,
    pub maximum_size: Option<u64>,
    pub metadata: BTreeMap<String, String>,
}

/// A container port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Port {
    pub internal: u16,
    pub external: u16,
}

/// A Docker-style link, exposed to the container as environment variables.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link {
    /// Lower-cased, alphanumeric.
    pub alias: String,
    pub local_port: u16,
    pub remote_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    Never,
    Always,
    OnFailure { maximum_retry_count: Option<u64> },
}

/// A dataset mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub dataset_id: String,
    /// Normalised absolute path inside the container.
    pub mountpoint: String,
}

/// A container (Flocker "application") in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub node_uuid: Uuid,
    /// `repository:tag`, the tag defaulting to `latest`.
    pub image: String,
    /// Sorted by (external, internal).
    pub ports: Vec<Port>,
    /// Sorted by (alias, local_port, remote_port) once applied; in request order inside
    /// a `CreateContainer` command, because the uniqueness checks follow request order.
    pub links: Vec<Link>,
    pub environment: BTreeMap<String, String>,
    pub restart_policy: RestartPolicy,
    pub command_line: Option<Vec<String>>,
    pub cpu_shares: Option<u64>,
    pub memory_limit: Option<u64>,
    /// Accepted and stored, never returned (as in Flocker).
    pub swappiness: u8,
    pub volume: Option<Volume>,
}

/// A lease on a dataset, held by a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub dataset_id: Uuid,
    pub node_uuid: Uuid,
    /// Absolute expiry instant, or `None` for a lease that never expires.
    pub expiration: Option<Micros>,
}

impl Lease {
    /// Whether the lease's expiration is strictly before `now` (what the sweeper removes).
    pub fn expired(&self, now: Micros) -> bool {
        self.expiration.is_some_and(|at| at < now)
    }
}

/// The desired configuration of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    pub datasets: BTreeMap<String, Dataset>,
    pub containers: BTreeMap<String, Container>,
    pub leases: BTreeMap<Uuid, Lease>,
    /// The dataset agents' ownership registry: dataset -> backend volume id. An entry is
    /// never changed to a different value.
    pub blockdevice_owners: BTreeMap<Uuid, String>,
    /// Index: dataset id -> name of the container that mounts it.
    pub volume_users: BTreeMap<String, String>,
    /// Index: external port -> name of the container that publishes it.
    pub external_ports: BTreeMap<u16, String>,
    /// Log index of the last command that changed the configuration (0 before any). The
    /// configuration tag is derived from it, so a tag is never reused.
    pub version: u64,
}

/// A dataset manifest (mounted) on a node, as its dataset agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestationState {
    pub dataset_id: String,
    pub path: String,
    pub maximum_size: Option<u64>,
}

/// A dataset that exists in the storage backend but is mounted nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonManifestDataset {
    pub dataset_id: String,
    pub maximum_size: Option<u64>,
}

/// What a dataset agent reports about its node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetAgentState {
    pub manifestations: Vec<ManifestationState>,
    pub nonmanifest: Vec<NonManifestDataset>,
    /// dataset id -> block device path.
    pub devices: BTreeMap<String, String>,
}

/// A container as the container agent found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub container: Container,
    pub running: bool,
}

/// One agent's part of a node's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentKind {
    Dataset,
    Container,
}

/// The state of one node, merged from its agents' reports. `None` means "unknown": that
/// agent has not reported, or its report expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The IP address the node's agents connect from.
    pub host: String,
    pub datasets: Option<DatasetAgentState>,
    pub containers: Option<Vec<ContainerState>>,
    /// Leader-stamped time of the dataset agent's last report or heartbeat.
    pub datasets_seen: Micros,
    pub containers_seen: Micros,
}

impl NodeState {
    /// The dataset agent's report is older than `cutoff`.
    pub fn datasets_expired(&self, cutoff: Micros) -> bool {
        self.datasets.is_some() && self.datasets_seen < cutoff
    }

    /// The container agent's report is older than `cutoff`.
    pub fn containers_expired(&self, cutoff: Micros) -> bool {
        self.containers.is_some() && self.containers_seen < cutoff
    }

    /// Neither agent has reported or heartbeated since `cutoff`.
    pub fn silent_since(&self, cutoff: Micros) -> bool {
        self.datasets_seen.max(self.containers_seen) < cutoff
    }
}

/// The actual state of the cluster. Replicated like the configuration (so every control
/// node answers `/v1/state/*` from the same history) but never part of the tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub nodes: BTreeMap<Uuid, NodeState>,
    /// node -> era (its current boot id). Replaced, never expired.
    pub eras: BTreeMap<Uuid, Uuid>,
    /// Log index of the last command that changed the cluster state (not heartbeats).
    pub version: u64,
}

impl ClusterState {
    /// Whether an expiry with this cutoff would drop a report or a node: the leader
    /// proposes `ExpireState` only then.
    pub fn has_stale_reports(&self, cutoff: Micros) -> bool {
        self.nodes.values().any(|n| {
            n.datasets_expired(cutoff) || n.containers_expired(cutoff) || n.silent_since(cutoff)
        })
    }

    /// The node whose current era is `era`.
    pub fn node_by_era(&self, era: Uuid) -> Option<Uuid> {
        self.eras
            .iter()
            .find_map(|(node, e)| (*e == era).then_some(*node))
    }
}

/// Everything the state machine holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub config: Configuration,
    pub cluster: ClusterState,
}
