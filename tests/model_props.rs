//! Property tests of the pure state machine `flocker::model::apply`.
//!
//! Random command sequences over small pools of ids, names, ports and nodes (so that
//! collisions, "in use" and "held" cases are frequent) run in lockstep through the crate's
//! `apply` and through [`Reference`], an independent model written from FLOCKER-SPEC
//! sections 3 and 5 and the agent protocol documentation: plain `Vec`s and linear scans,
//! no secondary indexes, and "the configuration changed" decided by comparing the whole
//! configuration before and after the command. After every step the two must agree on the
//! outcome (including the rejection kind), on the configuration and cluster state, and on
//! the versions the configuration tag is derived from.
//!
//! Where this project deliberately improves on Flocker (FLOCKER-SPEC section 15), the
//! reference follows the improvement: moving or deleting a dataset that a container mounts
//! is a 409 "in use" (Flocker crashed), duplicate external ports inside one request
//! collide, and link aliases are compared lower-cased, as they are stored.

use std::collections::BTreeMap;

use flocker::model::{
    self, AgentReport, Command, Container, ContainerState, Dataset, DatasetAgentState, Lease, Link,
    ManifestationState, Micros, NodeState, NonManifestDataset, Outcome, Port, Precondition,
    Rejection, RestartPolicy, State, TagFormat, Volume,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Pools

const NODES: usize = 3;
const CONTAINER_NAMES: [&str; 4] = ["web", "db", "cache", "Web"];
const EXTERNAL_PORTS: [u16; 3] = [80, 443, 8080];
const ALIASES: [&str; 3] = ["db", "web", "cache"];
const MOUNTPOINTS: [&str; 2] = ["/data", "/var/lib/db"];
const HOSTS: [&str; 2] = ["127.0.0.1", "10.0.0.2"];
const DEVICES: [&str; 2] = ["blockdevice-a", "blockdevice-b"];

fn node(i: usize) -> Uuid {
    Uuid::from_u128(0x4e00_0000_0000_4000_8000_0000_0000_0000 + i as u128)
}

fn dataset_uuid(i: usize) -> Uuid {
    Uuid::from_u128(0xda7a_0000_0000_4000_8000_0000_0000_00d0 + i as u128)
}

/// Ids a dataset can be created with: lower-case, as the API hands them to apply.
const CREATABLE_IDS: usize = 4;

/// Ids used to address datasets: the creatable ones, the upper-case form of the first (the
/// API passes path values as sent, so it names no dataset), and one never created.
fn dataset_ref(i: usize) -> String {
    match i {
        i if i < CREATABLE_IDS => dataset_uuid(i).to_string(),
        CREATABLE_IDS => dataset_uuid(0).to_string().to_uppercase(),
        _ => dataset_uuid(99).to_string(),
    }
}

fn era(node: usize, i: usize) -> Uuid {
    Uuid::from_u128(0xe7a0_0000_0000_4000_8000_0000_0000_0000 + (node * 16 + i) as u128)
}

fn dataset_report(variant: usize) -> DatasetAgentState {
    let id = dataset_uuid(variant % CREATABLE_IDS).to_string();
    match variant {
        0 => DatasetAgentState::default(),
        1 => DatasetAgentState {
            manifestations: vec![ManifestationState {
                dataset_id: id.clone(),
                path: format!("/flocker/{id}"),
                maximum_size: Some(67_108_864),
            }],
            nonmanifest: vec![],
            devices: [(id, "/dev/loop0".to_owned())].into(),
        },
        _ => DatasetAgentState {
            manifestations: vec![],
            nonmanifest: vec![NonManifestDataset {
                dataset_id: id,
                maximum_size: None,
            }],
            devices: BTreeMap::new(),
        },
    }
}

fn sample_container(name: &str, node_uuid: Uuid) -> Container {
    Container {
        name: name.to_owned(),
        node_uuid,
        image: "busybox:latest".to_owned(),
        ports: vec![],
        links: vec![],
        environment: BTreeMap::new(),
        restart_policy: RestartPolicy::Never,
        command_line: None,
        cpu_shares: None,
        memory_limit: None,
        swappiness: 0,
        volume: None,
    }
}

fn containers_report(variant: usize, node_uuid: Uuid) -> Vec<ContainerState> {
    match variant {
        0 => vec![],
        v => vec![ContainerState {
            container: sample_container("reported", node_uuid),
            running: v == 1,
        }],
    }
}

// ---------------------------------------------------------------------------
// Symbolic operations: pool indexes, resolved into commands against the current state.

/// The `X-If-Configuration-Matches` precondition, resolved when the command is built.
#[derive(Debug, Clone)]
enum Pre {
    None,
    Current,
    /// A version the configuration had earlier (or, before there is one, a version it
    /// never had).
    Stale(usize),
    /// Header values that name no version of this cluster.
    Garbage,
    /// Several header values, one of them current.
    StaleOrCurrent(usize),
}

#[derive(Debug, Clone)]
enum Part {
    Datasets(Option<usize>),
    Containers(Option<usize>),
}

#[derive(Debug, Clone)]
enum Op {
    CreateDataset {
        pre: Pre,
        id: usize,
        primary: usize,
        maximum_size: Option<u64>,
        metadata: Option<usize>,
    },
    MoveDataset {
        pre: Pre,
        id: usize,
        primary: Option<usize>,
    },
    DeleteDataset {
        pre: Pre,
        id: usize,
    },
    /// Move or delete the dataset mounted by a container (the first dataset when that
    /// container does not exist or mounts nothing): the "in use" cases.
    TouchMountedDataset {
        pre: Pre,
        name: usize,
        delete: bool,
        primary: usize,
    },
    CreateContainer {
        name: usize,
        node: usize,
        /// (internal, external port index), in request order.
        ports: Vec<(u16, usize)>,
        /// (alias index, local port, remote port), in request order.
        links: Vec<(usize, u16, u16)>,
        /// (dataset reference index, mountpoint index).
        volume: Option<(usize, usize)>,
        /// Put the container on the node of its volume's dataset, when that exists.
        follow_dataset: bool,
        policy: usize,
    },
    MoveContainer {
        name: usize,
        node: usize,
    },
    DeleteContainer {
        name: usize,
    },
    AcquireLease {
        dataset: usize,
        node: usize,
        /// Relative to the test clock; negative means already expired.
        expires_in: Option<Micros>,
    },
    ReleaseLease {
        dataset: usize,
    },
    ExpireLeases {
        advance: Micros,
    },
    SetOwner {
        dataset: usize,
        device: usize,
    },
    Report {
        node: usize,
        era: usize,
        host: usize,
        part: Part,
        advance: Micros,
    },
    ExpireState {
        advance: Micros,
        timeout: Micros,
    },
}

/// Node indexes, biased to the first node so that containers and their datasets often
/// meet on one node.
fn node_index() -> impl Strategy<Value = usize> {
    prop_oneof![2 => Just(0), 1 => 0..NODES]
}

/// Dataset reference indexes, biased to the first two ids.
fn dataset_index() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 0..2usize, 1 => 0..CREATABLE_IDS + 2]
}

fn pre() -> impl Strategy<Value = Pre> {
    prop_oneof![
        4 => Just(Pre::None),
        2 => Just(Pre::Current),
        2 => any::<usize>().prop_map(Pre::Stale),
        1 => Just(Pre::Garbage),
        1 => any::<usize>().prop_map(Pre::StaleOrCurrent),
    ]
}

fn dataset_ops() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (
            pre(),
            0..CREATABLE_IDS,
            node_index(),
            prop::option::of(prop_oneof![Just(67_108_864u64), Just(1u64 << 40)]),
            prop::option::of(0..2usize),
        )
            .prop_map(
                |(pre, id, primary, maximum_size, metadata)| Op::CreateDataset {
                    pre,
                    id,
                    primary,
                    maximum_size,
                    metadata,
                }
            ),
        1 => (pre(), dataset_index(), prop::option::of(0..NODES))
            .prop_map(|(pre, id, primary)| Op::MoveDataset { pre, id, primary }),
        1 => (pre(), dataset_index()).prop_map(|(pre, id)| Op::DeleteDataset { pre, id }),
        1 => (pre(), 0..CONTAINER_NAMES.len(), any::<bool>(), 0..NODES).prop_map(
            |(pre, name, delete, primary)| Op::TouchMountedDataset {
                pre,
                name,
                delete,
                primary
            }
        ),
    ]
}

fn container_ops() -> impl Strategy<Value = Op> {
    let create = (
        0..CONTAINER_NAMES.len(),
        node_index(),
        prop::collection::vec((1u16..3, 0..EXTERNAL_PORTS.len()), 0..3),
        prop::collection::vec((0..ALIASES.len(), 1u16..4, 1u16..3), 0..3),
        prop::option::of((dataset_index(), 0..MOUNTPOINTS.len())),
        any::<bool>(),
        0..3usize,
    )
        .prop_map(
            |(name, node, ports, links, volume, follow_dataset, policy)| Op::CreateContainer {
                name,
                node,
                ports,
                links,
                volume,
                follow_dataset,
                policy,
            },
        );
    prop_oneof![
        3 => create,
        1 => (0..CONTAINER_NAMES.len(), node_index())
            .prop_map(|(name, node)| Op::MoveContainer { name, node }),
        1 => (0..CONTAINER_NAMES.len()).prop_map(|name| Op::DeleteContainer { name }),
    ]
}

fn lease_ops() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..NODES, prop::option::of(-2i64..8))
            .prop_map(|(dataset, node, expires_in)| Op::AcquireLease {
                dataset,
                node,
                expires_in,
            }),
        1 => (0..3usize).prop_map(|dataset| Op::ReleaseLease { dataset }),
        2 => (0i64..4).prop_map(|advance| Op::ExpireLeases { advance }),
        1 => (0..3usize, 0..DEVICES.len())
            .prop_map(|(dataset, device)| Op::SetOwner { dataset, device }),
    ]
}

fn state_ops() -> impl Strategy<Value = Op> {
    let part = prop_oneof![
        prop::option::of(0..3usize).prop_map(Part::Datasets),
        prop::option::of(0..3usize).prop_map(Part::Containers),
    ];
    prop_oneof![
        3 => (0..NODES, 0..2usize, 0..HOSTS.len(), part, 0i64..3).prop_map(
            |(node, era, host, part, advance)| Op::Report {
                node,
                era,
                host,
                part,
                advance,
            }
        ),
        1 => (0i64..4, 1i64..6)
            .prop_map(|(advance, timeout)| Op::ExpireState { advance, timeout }),
    ]
}

/// A sequence of operations, each with the number of log entries (blank entries,
/// membership changes) that precede it.
fn sequence(max: usize) -> impl Strategy<Value = Vec<(Op, u64)>> {
    let op = prop_oneof![
        4 => dataset_ops(),
        4 => container_ops(),
        3 => lease_ops(),
        2 => state_ops(),
    ];
    prop::collection::vec((op, 0u64..3), 1..max)
}

// ---------------------------------------------------------------------------
// The reference model

#[derive(Debug, Clone, PartialEq)]
struct RefNode {
    uuid: Uuid,
    host: String,
    datasets: Option<DatasetAgentState>,
    containers: Option<Vec<ContainerState>>,
    datasets_seen: Micros,
    containers_seen: Micros,
}

/// What the configuration is, without its version.
#[derive(Debug, Clone, PartialEq)]
struct ConfigView {
    datasets: Vec<Dataset>,
    containers: Vec<Container>,
    leases: Vec<Lease>,
    owners: Vec<(Uuid, String)>,
}

/// What `/v1/state/*` and agents can see of the cluster state (report ages excluded).
type ClusterView = (
    Vec<(
        Uuid,
        String,
        Option<DatasetAgentState>,
        Option<Vec<ContainerState>>,
    )>,
    Vec<(Uuid, Uuid)>,
);

#[derive(Debug, Clone, Default)]
struct Reference {
    /// In creation order; looked up by exact id.
    datasets: Vec<Dataset>,
    containers: Vec<Container>,
    leases: Vec<Lease>,
    owners: Vec<(Uuid, String)>,
    /// Index of the last command that changed the configuration.
    version: u64,
    nodes: Vec<RefNode>,
    eras: Vec<(Uuid, Uuid)>,
    cluster_version: u64,
}

impl Reference {
    fn config_view(&self) -> ConfigView {
        let mut view = ConfigView {
            datasets: self.datasets.clone(),
            containers: self.containers.clone(),
            leases: self.leases.clone(),
            owners: self.owners.clone(),
        };
        view.datasets
            .sort_by(|a, b| a.dataset_id.cmp(&b.dataset_id));
        view.containers.sort_by(|a, b| a.name.cmp(&b.name));
        view.leases.sort_by_key(|l| l.dataset_id);
        view.owners.sort();
        view
    }

    fn cluster_view(&self) -> ClusterView {
        let mut nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| {
                (
                    n.uuid,
                    n.host.clone(),
                    n.datasets.clone(),
                    n.containers.clone(),
                )
            })
            .collect();
        nodes.sort_by_key(|n| n.0);
        let mut eras = self.eras.clone();
        eras.sort();
        (nodes, eras)
    }

    fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        let config = self.config_view();
        let cluster = self.cluster_view();
        let outcome = match self.step(command) {
            Ok(outcome) => outcome,
            Err(rejection) => Outcome::Rejected(rejection),
        };
        if self.config_view() != config {
            self.version = index;
        }
        if self.cluster_view() != cluster {
            self.cluster_version = index;
        }
        outcome
    }

    fn holds(&self, precondition: &Precondition) -> Result<(), Rejection> {
        match precondition {
            Precondition::None => Ok(()),
            Precondition::AnyOf(versions) if versions.contains(&self.version) => Ok(()),
            Precondition::AnyOf(_) => Err(Rejection::TagMismatch {
                current: self.version,
            }),
        }
    }

    fn mounted(&self, dataset_id: &str) -> bool {
        self.containers.iter().any(|c| {
            c.volume
                .as_ref()
                .is_some_and(|v| v.dataset_id == dataset_id)
        })
    }

    fn step(&mut self, command: &Command) -> Result<Outcome, Rejection> {
        match command {
            Command::CreateDataset {
                precondition,
                dataset,
            } => {
                self.holds(precondition)?;
                // Deleted datasets keep their id forever.
                if self
                    .datasets
                    .iter()
                    .any(|d| d.dataset_id == dataset.dataset_id)
                {
                    return Err(Rejection::DatasetIdInUse);
                }
                self.datasets.push(dataset.clone());
                Ok(Outcome::Dataset(dataset.clone()))
            }
            Command::MoveDataset {
                precondition,
                dataset_id,
                primary,
            } => {
                self.holds(precondition)?;
                let mounted = self.mounted(dataset_id);
                let dataset = self
                    .datasets
                    .iter_mut()
                    .find(|d| d.dataset_id == *dataset_id)
                    .ok_or(Rejection::DatasetNotFound)?;
                if dataset.deleted {
                    return Err(Rejection::DatasetDeleted);
                }
                if let Some(primary) = primary {
                    if *primary != dataset.primary {
                        // A mounted dataset moves only with its container.
                        if mounted {
                            return Err(Rejection::DatasetInUse);
                        }
                        dataset.primary = *primary;
                    }
                }
                Ok(Outcome::Dataset(dataset.clone()))
            }
            Command::DeleteDataset {
                precondition,
                dataset_id,
            } => {
                self.holds(precondition)?;
                let mounted = self.mounted(dataset_id);
                let dataset = self
                    .datasets
                    .iter_mut()
                    .find(|d| d.dataset_id == *dataset_id)
                    .ok_or(Rejection::DatasetNotFound)?;
                if !dataset.deleted {
                    if mounted {
                        return Err(Rejection::DatasetInUse);
                    }
                    dataset.deleted = true;
                }
                Ok(Outcome::Dataset(dataset.clone()))
            }
            Command::CreateContainer { container } => self.create_container(container),
            Command::MoveContainer { name, node_uuid } => {
                let container = self
                    .containers
                    .iter_mut()
                    .find(|c| c.name == *name)
                    .ok_or(Rejection::ContainerNotFound)?;
                if container.node_uuid != *node_uuid {
                    container.node_uuid = *node_uuid;
                    if let Some(volume) = &container.volume {
                        for dataset in &mut self.datasets {
                            if dataset.dataset_id == volume.dataset_id {
                                dataset.primary = *node_uuid;
                            }
                        }
                    }
                }
                Ok(Outcome::Container(container.clone()))
            }
            Command::DeleteContainer { name } => {
                let at = self
                    .containers
                    .iter()
                    .position(|c| c.name == *name)
                    .ok_or(Rejection::ContainerNotFound)?;
                self.containers.remove(at);
                Ok(Outcome::ContainerDeleted)
            }
            Command::AcquireLease {
                dataset_id,
                node_uuid,
                expiration,
            } => {
                let existing = self.leases.iter().position(|l| l.dataset_id == *dataset_id);
                if let Some(at) = existing {
                    // Even an expired lease blocks other nodes until it is swept.
                    if self.leases[at].node_uuid != *node_uuid {
                        return Err(Rejection::LeaseHeld);
                    }
                    self.leases.remove(at);
                }
                let lease = Lease {
                    dataset_id: *dataset_id,
                    node_uuid: *node_uuid,
                    expiration: *expiration,
                };
                self.leases.push(lease.clone());
                Ok(Outcome::LeaseAcquired {
                    lease,
                    created: existing.is_none(),
                })
            }
            Command::ReleaseLease { dataset_id } => {
                let at = self
                    .leases
                    .iter()
                    .position(|l| l.dataset_id == *dataset_id)
                    .ok_or(Rejection::LeaseNotFound)?;
                Ok(Outcome::LeaseReleased(self.leases.remove(at)))
            }
            Command::ExpireLeases { now } => {
                // Strictly earlier than now.
                self.leases
                    .retain(|l| !matches!(l.expiration, Some(at) if at < *now));
                Ok(Outcome::Done)
            }
            Command::SetBlockDeviceOwner {
                dataset_id,
                blockdevice_id,
            } => {
                match self.owners.iter().find(|(d, _)| d == dataset_id) {
                    Some((_, owner)) if owner == blockdevice_id => {}
                    Some(_) => return Err(Rejection::BlockDeviceAlreadyOwned),
                    None => self.owners.push((*dataset_id, blockdevice_id.clone())),
                }
                Ok(Outcome::Done)
            }
            Command::ReportState {
                node,
                host,
                era,
                report,
                now,
            } => {
                self.report(*node, host, *era, report, *now);
                Ok(Outcome::Done)
            }
            Command::ExpireState { now, timeout } => {
                self.expire_state(now - timeout);
                Ok(Outcome::Done)
            }
        }
    }

    /// Section 3.4 (8): name, then volume, then ports, then links in request order.
    fn create_container(&mut self, container: &Container) -> Result<Outcome, Rejection> {
        if self.containers.iter().any(|c| c.name == container.name) {
            return Err(Rejection::ContainerNameExists);
        }
        if let Some(volume) = &container.volume {
            let dataset = self
                .datasets
                .iter()
                .find(|d| d.dataset_id == volume.dataset_id && !d.deleted)
                .ok_or(Rejection::DatasetNotFound)?;
            if dataset.primary != container.node_uuid {
                return Err(Rejection::DatasetOnOtherNode);
            }
            if self.mounted(&volume.dataset_id) {
                return Err(Rejection::DatasetInUse);
            }
        }
        let mut requested = Vec::new();
        for port in &container.ports {
            let taken = self
                .containers
                .iter()
                .any(|c| c.ports.iter().any(|p| p.external == port.external));
            if taken || requested.contains(&port.external) {
                return Err(Rejection::ExternalPortInUse);
            }
            requested.push(port.external);
        }
        let mut aliases = Vec::new();
        let mut local_ports = Vec::new();
        for link in &container.links {
            let alias = link.alias.to_lowercase();
            if aliases.contains(&alias) {
                return Err(Rejection::LinkAliasesNotUnique);
            }
            aliases.push(alias);
            if local_ports.contains(&link.local_port) {
                return Err(Rejection::LinkLocalPortsNotUnique);
            }
            local_ports.push(link.local_port);
        }
        let mut stored = container.clone();
        stored.links.sort_by(|a, b| {
            (&a.alias, a.local_port, a.remote_port).cmp(&(&b.alias, b.local_port, b.remote_port))
        });
        self.containers.push(stored.clone());
        Ok(Outcome::Container(stored))
    }

    /// A report from a node's agent: a new era discards what the node said before; a
    /// heartbeat (no state) only refreshes the part's age.
    fn report(&mut self, node: Uuid, host: &str, era: Uuid, report: &AgentReport, now: Micros) {
        match self.eras.iter_mut().find(|(n, _)| *n == node) {
            Some((_, known)) if *known == era => {}
            Some((_, known)) => {
                *known = era;
                self.nodes.retain(|n| n.uuid != node);
            }
            None => self.eras.push((node, era)),
        }
        if !self.nodes.iter().any(|n| n.uuid == node) {
            self.nodes.push(RefNode {
                uuid: node,
                host: host.to_owned(),
                datasets: None,
                containers: None,
                datasets_seen: now,
                containers_seen: now,
            });
        }
        let entry = self
            .nodes
            .iter_mut()
            .find(|n| n.uuid == node)
            .expect("just inserted");
        entry.host = host.to_owned();
        match report {
            AgentReport::Datasets(state) => {
                entry.datasets_seen = now;
                if state.is_some() {
                    entry.datasets = state.clone();
                }
            }
            AgentReport::Containers(state) => {
                entry.containers_seen = now;
                if state.is_some() {
                    entry.containers = state.clone();
                }
            }
        }
    }

    /// Parts not refreshed since `cutoff` become unknown; a node with nothing known and no
    /// recent word disappears. Eras stay.
    fn expire_state(&mut self, cutoff: Micros) {
        for node in &mut self.nodes {
            if node.datasets_seen < cutoff {
                node.datasets = None;
            }
            if node.containers_seen < cutoff {
                node.containers = None;
            }
        }
        self.nodes.retain(|n| {
            n.datasets.is_some()
                || n.containers.is_some()
                || n.datasets_seen >= cutoff
                || n.containers_seen >= cutoff
        });
    }
}

// ---------------------------------------------------------------------------
// The lockstep run

struct Run {
    reference: Reference,
    state: State,
    index: u64,
    clock: Micros,
    /// Every configuration version seen, in order, with the configuration it named.
    versions: Vec<(u64, ConfigView)>,
    /// The commands applied, with their indexes (for replays).
    log: Vec<(u64, Command)>,
}

impl Run {
    fn new() -> Run {
        let reference = Reference::default();
        let view = reference.config_view();
        Run {
            reference,
            state: State::default(),
            index: 1,
            clock: 1_000,
            versions: vec![(0, view)],
            log: Vec::new(),
        }
    }

    fn precondition(&self, pre: &Pre) -> Precondition {
        let current = self.reference.version;
        let earlier: Vec<u64> = self
            .versions
            .iter()
            .map(|(v, _)| *v)
            .filter(|v| *v != current)
            .collect();
        let stale = |pick: usize| {
            if earlier.is_empty() {
                u64::MAX
            } else {
                earlier[pick % earlier.len()]
            }
        };
        match pre {
            Pre::None => Precondition::None,
            Pre::Current => Precondition::AnyOf(vec![current]),
            Pre::Stale(pick) => Precondition::AnyOf(vec![stale(*pick)]),
            Pre::Garbage => Precondition::AnyOf(vec![]),
            Pre::StaleOrCurrent(pick) => Precondition::AnyOf(vec![stale(*pick), current]),
        }
    }

    fn command(&mut self, op: &Op) -> Command {
        match op {
            Op::CreateDataset {
                pre,
                id,
                primary,
                maximum_size,
                metadata,
            } => Command::CreateDataset {
                precondition: self.precondition(pre),
                dataset: Dataset {
                    dataset_id: dataset_ref(*id),
                    primary: node(*primary),
                    deleted: false,
                    maximum_size: *maximum_size,
                    metadata: metadata
                        .map(|m| [("name".to_owned(), format!("volume-{m}"))].into())
                        .unwrap_or_default(),
                },
            },
            Op::MoveDataset { pre, id, primary } => Command::MoveDataset {
                precondition: self.precondition(pre),
                dataset_id: dataset_ref(*id),
                primary: primary.map(node),
            },
            Op::DeleteDataset { pre, id } => Command::DeleteDataset {
                precondition: self.precondition(pre),
                dataset_id: dataset_ref(*id),
            },
            Op::TouchMountedDataset {
                pre,
                name,
                delete,
                primary,
            } => {
                let dataset_id = self
                    .reference
                    .containers
                    .iter()
                    .find(|c| c.name == CONTAINER_NAMES[*name])
                    .and_then(|c| Some(c.volume.as_ref()?.dataset_id.clone()))
                    .unwrap_or_else(|| dataset_ref(0));
                let precondition = self.precondition(pre);
                if *delete {
                    Command::DeleteDataset {
                        precondition,
                        dataset_id,
                    }
                } else {
                    Command::MoveDataset {
                        precondition,
                        dataset_id,
                        primary: Some(node(*primary)),
                    }
                }
            }
            Op::CreateContainer {
                name,
                node: on,
                ports,
                links,
                volume,
                follow_dataset,
                policy,
            } => {
                let mut on = node(*on);
                if let (Some((dataset, _)), true) = (volume, follow_dataset) {
                    let id = dataset_ref(*dataset);
                    if let Some(d) = self.reference.datasets.iter().find(|d| d.dataset_id == id) {
                        on = d.primary;
                    }
                }
                let mut container = sample_container(CONTAINER_NAMES[*name], on);
                // The API sorts ports; links stay in request order for the checks.
                container.ports = ports
                    .iter()
                    .map(|(internal, external)| Port {
                        internal: *internal,
                        external: EXTERNAL_PORTS[*external],
                    })
                    .collect();
                container.ports.sort_by_key(|p| (p.external, p.internal));
                container.links = links
                    .iter()
                    .map(|(alias, local_port, remote_port)| Link {
                        alias: ALIASES[*alias].to_owned(),
                        local_port: *local_port,
                        remote_port: *remote_port,
                    })
                    .collect();
                container.volume = volume.map(|(dataset, mountpoint)| Volume {
                    dataset_id: dataset_ref(dataset),
                    mountpoint: MOUNTPOINTS[mountpoint].to_owned(),
                });
                container.restart_policy = match policy {
                    0 => RestartPolicy::Never,
                    1 => RestartPolicy::Always,
                    _ => RestartPolicy::OnFailure {
                        maximum_retry_count: Some(3),
                    },
                };
                container.environment = [("NAME".to_owned(), container.name.clone())].into();
                Command::CreateContainer { container }
            }
            Op::MoveContainer { name, node: to } => Command::MoveContainer {
                name: CONTAINER_NAMES[*name].to_owned(),
                node_uuid: node(*to),
            },
            Op::DeleteContainer { name } => Command::DeleteContainer {
                name: CONTAINER_NAMES[*name].to_owned(),
            },
            Op::AcquireLease {
                dataset,
                node: holder,
                expires_in,
            } => Command::AcquireLease {
                dataset_id: dataset_uuid(*dataset),
                node_uuid: node(*holder),
                expiration: expires_in.map(|e| self.clock + e),
            },
            Op::ReleaseLease { dataset } => Command::ReleaseLease {
                dataset_id: dataset_uuid(*dataset),
            },
            Op::ExpireLeases { advance } => {
                self.clock += advance;
                Command::ExpireLeases { now: self.clock }
            }
            Op::SetOwner { dataset, device } => Command::SetBlockDeviceOwner {
                dataset_id: dataset_uuid(*dataset),
                blockdevice_id: DEVICES[*device].to_owned(),
            },
            Op::Report {
                node: reporter,
                era: boot,
                host,
                part,
                advance,
            } => {
                self.clock += advance;
                let report = match part {
                    Part::Datasets(v) => AgentReport::Datasets(v.map(dataset_report)),
                    Part::Containers(v) => {
                        AgentReport::Containers(v.map(|v| containers_report(v, node(*reporter))))
                    }
                };
                Command::ReportState {
                    node: node(*reporter),
                    host: HOSTS[*host].to_owned(),
                    era: era(*reporter, *boot),
                    report,
                    now: self.clock,
                }
            }
            Op::ExpireState { advance, timeout } => {
                self.clock += advance;
                Command::ExpireState {
                    now: self.clock,
                    timeout: *timeout,
                }
            }
        }
    }

    fn step(&mut self, op: &Op, gap: u64) -> Result<(), TestCaseError> {
        self.index += 1 + gap;
        let index = self.index;
        let command = self.command(op);
        let expected = self.reference.apply(index, &command);
        let config_before = self.state.config.version;
        let actual = model::apply(&mut self.state, index, &command);
        prop_assert_eq!(&actual, &expected, "outcome of {:?} at {}", command, index);
        self.log.push((index, command));
        self.check_agrees()?;
        self.check_versions(index, config_before)
    }

    fn check_agrees(&self) -> Result<(), TestCaseError> {
        let config = &self.state.config;
        let view = self.reference.config_view();
        let datasets: Vec<Dataset> = config.datasets.values().cloned().collect();
        prop_assert_eq!(&datasets, &view.datasets);
        for (id, dataset) in &config.datasets {
            prop_assert_eq!(id, &dataset.dataset_id);
        }
        let containers: Vec<Container> = config.containers.values().cloned().collect();
        prop_assert_eq!(&containers, &view.containers);
        let leases: Vec<Lease> = config.leases.values().cloned().collect();
        prop_assert_eq!(&leases, &view.leases);
        let owners: Vec<(Uuid, String)> = config
            .blockdevice_owners
            .iter()
            .map(|(d, o)| (*d, o.clone()))
            .collect();
        prop_assert_eq!(&owners, &view.owners);

        // The crate's indexes say what a scan of the containers says.
        let volume_users: BTreeMap<String, String> = view
            .containers
            .iter()
            .filter_map(|c| Some((c.volume.as_ref()?.dataset_id.clone(), c.name.clone())))
            .collect();
        prop_assert_eq!(&config.volume_users, &volume_users);
        let external_ports: BTreeMap<u16, String> = view
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().map(|p| (p.external, c.name.clone())))
            .collect();
        prop_assert_eq!(&config.external_ports, &external_ports);

        let cluster = &self.state.cluster;
        let mut nodes: Vec<RefNode> = cluster
            .nodes
            .iter()
            .map(|(uuid, n): (&Uuid, &NodeState)| RefNode {
                uuid: *uuid,
                host: n.host.clone(),
                datasets: n.datasets.clone(),
                containers: n.containers.clone(),
                datasets_seen: n.datasets_seen,
                containers_seen: n.containers_seen,
            })
            .collect();
        let mut expected_nodes = self.reference.nodes.clone();
        expected_nodes.sort_by_key(|n| n.uuid);
        nodes.sort_by_key(|n| n.uuid);
        prop_assert_eq!(nodes, expected_nodes);
        let eras: Vec<(Uuid, Uuid)> = cluster.eras.iter().map(|(n, e)| (*n, *e)).collect();
        prop_assert_eq!(eras, self.reference.cluster_view().1);
        for (node, era) in &cluster.eras {
            prop_assert_eq!(cluster.node_by_era(*era), Some(*node));
        }
        prop_assert_eq!(cluster.version, self.reference.cluster_version);
        Ok(())
    }

    /// The version moves to this index exactly when the configuration changed, and a
    /// version never names two different configurations.
    fn check_versions(&mut self, index: u64, before: u64) -> Result<(), TestCaseError> {
        let version = self.state.config.version;
        prop_assert_eq!(version, self.reference.version);
        let view = self.reference.config_view();
        let (last, last_view) = self.versions.last().expect("starts with version 0");
        if version == before {
            prop_assert_eq!(&view, last_view, "configuration changed, version kept");
        } else {
            prop_assert_eq!(version, index);
            prop_assert!(version > *last, "version {} after {}", version, last);
            prop_assert!(&view != last_view, "version moved, configuration kept");
            self.versions.push((version, view));
        }
        Ok(())
    }
}

fn run(ops: &[(Op, u64)]) -> Result<Run, TestCaseError> {
    let mut run = Run::new();
    for (op, gap) in ops {
        run.step(op, *gap)?;
    }
    Ok(run)
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    // apply agrees with the reference model after every command: same outcome (and
    // rejection kind), same configuration and cluster state, and a configuration version
    // that moves to the command's index exactly when the configuration changed.
    #[test]
    fn apply_agrees_with_the_reference_model(ops in sequence(80)) {
        let run = run(&ops)?;
        // Every version the configuration went through is the index of one of the
        // commands, the last of them the current version.
        let indexes: std::collections::BTreeSet<u64> = run.log.iter().map(|(i, _)| *i).collect();
        for (version, _) in &run.versions[1..] {
            prop_assert!(indexes.contains(version), "version {} is no command's index", version);
        }
        prop_assert_eq!(run.state.config.version, run.versions.last().unwrap().0);
    }

    // Replaying the same log from scratch yields the identical state and outcomes.
    #[test]
    fn apply_is_deterministic(ops in sequence(60)) {
        let first = run(&ops)?;
        let mut again = State::default();
        let mut third = State::default();
        for (index, command) in &first.log {
            let a = model::apply(&mut again, *index, command);
            let b = model::apply(&mut third, *index, command);
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(&again, &first.state);
        prop_assert_eq!(&third, &first.state);
    }

    // The storage encoding (format byte + bincode) round-trips every state the machine
    // reaches and every command it applies.
    #[test]
    fn state_and_commands_round_trip_through_storage(ops in sequence(60)) {
        let mut state = State::default();
        let first = run(&ops)?;
        for (index, command) in &first.log {
            let bytes = flocker::storage::encode(command).expect("commands encode");
            let decoded: Command = flocker::storage::decode(&bytes).expect("commands decode");
            prop_assert_eq!(&decoded, command);
            let outcome = model::apply(&mut state, *index, command);
            let bytes = flocker::storage::encode(&outcome).expect("outcomes encode");
            let decoded: Outcome = flocker::storage::decode(&bytes).expect("outcomes decode");
            prop_assert_eq!(decoded, outcome);
            let bytes = flocker::storage::encode(&state).expect("states encode");
            let decoded: State = flocker::storage::decode(&bytes).expect("states decode");
            prop_assert_eq!(&decoded, &state);
        }
    }

    // Distinct configuration versions render distinct tags, each of which parses back to
    // its version in its own cluster and to nothing in another cluster.
    #[test]
    fn tags_of_distinct_versions_are_distinct(
        cluster in any::<u128>(),
        other in any::<u128>(),
        a in any::<u64>(),
        b in any::<u64>(),
    ) {
        let tags = TagFormat::new(Uuid::from_u128(cluster));
        let (ta, tb) = (tags.render(a), tags.render(b));
        prop_assert_eq!(ta == tb, a == b);
        prop_assert_eq!(ta.len(), 32);
        prop_assert!(ta.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')), "{}", ta);
        prop_assert_eq!(tags.parse(&ta), Some(a));
        prop_assert_eq!(tags.parse(&tb), Some(b));
        let foreign = TagFormat::new(Uuid::from_u128(other));
        if foreign != tags {
            prop_assert_eq!(foreign.parse(&ta), None);
        }
    }

    // Every version a run goes through renders a tag no other version of the run has.
    #[test]
    fn tags_along_a_run_never_repeat(ops in sequence(80)) {
        let run = run(&ops)?;
        let tags = TagFormat::new(Uuid::from_u128(7));
        let rendered: std::collections::BTreeSet<String> =
            run.versions.iter().map(|(v, _)| tags.render(*v)).collect();
        prop_assert_eq!(rendered.len(), run.versions.len());
    }
}

// A configuration that returns to an earlier content (A-B-A) gets a new tag, and a
// rejected or no-op write keeps the tag.
#[test]
fn a_b_a_configuration_gets_a_new_tag() {
    let tags = TagFormat::new(Uuid::from_u128(42));
    let mut state = State::default();
    let acquire = Command::AcquireLease {
        dataset_id: dataset_uuid(0),
        node_uuid: node(0),
        expiration: None,
    };
    let release = Command::ReleaseLease {
        dataset_id: dataset_uuid(0),
    };
    let start = tags.render(state.config.version);
    assert!(matches!(
        model::apply(&mut state, 2, &acquire),
        Outcome::LeaseAcquired { created: true, .. }
    ));
    let held = tags.render(state.config.version);
    // Renewing with identical terms changes nothing.
    assert!(matches!(
        model::apply(&mut state, 3, &acquire),
        Outcome::LeaseAcquired { created: false, .. }
    ));
    assert_eq!(tags.render(state.config.version), held);
    assert!(matches!(
        model::apply(&mut state, 4, &release),
        Outcome::LeaseReleased(_)
    ));
    let released = tags.render(state.config.version);
    assert_eq!(state.config.leases.len(), 0);
    assert_ne!(released, start, "same content as at the start, new tag");
    assert_ne!(released, held);
    assert_eq!(
        model::apply(&mut state, 5, &release),
        Outcome::Rejected(Rejection::LeaseNotFound)
    );
    assert_eq!(tags.render(state.config.version), released);
}
