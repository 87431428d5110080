//! Commands (what goes into the Raft log) and their outcomes (what apply returns).
//!
//! A command carries every input apply needs: generated ids, the proposer's clock reading,
//! the parsed `X-If-Configuration-Matches` precondition. Outcomes are replicated results:
//! a [`Rejection`] is decided identically on every replica and becomes a 4xx at the API.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::types::{
    AgentKind, Container, ContainerState, Dataset, DatasetAgentState, Lease, Micros,
};

/// The `X-If-Configuration-Matches` precondition of a dataset write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    /// No header: no check.
    None,
    /// The header values, reduced to the configuration versions they name. The write
    /// proceeds iff the current version is one of them. Values that are not tags of this
    /// cluster are dropped, so an empty list never matches.
    AnyOf(Vec<u64>),
}

impl Precondition {
    pub fn holds(&self, version: u64) -> bool {
        match self {
            Precondition::None => true,
            Precondition::AnyOf(versions) => versions.contains(&version),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a dataset; its id (given or generated) is already lower-case.
    CreateDataset {
        precondition: Precondition,
        dataset: Dataset,
    },
    /// Move a dataset's primary (or just check it exists, when `primary` is `None`).
    MoveDataset {
        precondition: Precondition,
        dataset_id: String,
        primary: Option<Uuid>,
    },
    DeleteDataset {
        precondition: Precondition,
        dataset_id: String,
    },
    CreateContainer {
        container: Container,
    },
    MoveContainer {
        name: String,
        node_uuid: Uuid,
    },
    DeleteContainer {
        name: String,
    },
    /// Acquire or renew a lease; `expiration` is absolute, computed by the proposer.
    AcquireLease {
        dataset_id: Uuid,
        node_uuid: Uuid,
        expiration: Option<Micros>,
    },
    ReleaseLease {
        dataset_id: Uuid,
    },
    /// Remove every lease whose expiration is strictly before `now` (the leader's clock).
    ExpireLeases {
        now: Micros,
    },
    /// A dataset agent registers the backend volume that holds a dataset.
    SetBlockDeviceOwner {
        dataset_id: Uuid,
        blockdevice_id: String,
    },
    /// An agent's report about its own node. `state: None` is a heartbeat: it only
    /// refreshes the report's age.
    ReportState {
        node: Uuid,
        host: String,
        era: Uuid,
        report: AgentReport,
        now: Micros,
    },
    /// Forget every agent report older than `now - timeout` (the leader's clock).
    ExpireState {
        now: Micros,
        timeout: Micros,
    },
}

/// The part of a node's state one agent owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentReport {
    Datasets(Option<DatasetAgentState>),
    Containers(Option<Vec<ContainerState>>),
}

impl AgentReport {
    pub fn kind(&self) -> AgentKind {
        match self {
            AgentReport::Datasets(_) => AgentKind::Dataset,
            AgentReport::Containers(_) => AgentKind::Container,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Dataset(Dataset),
    Container(Container),
    ContainerDeleted,
    /// A lease acquired (`created`) or renewed.
    LeaseAcquired {
        lease: Lease,
        created: bool,
    },
    LeaseReleased(Lease),
    /// A command with no interesting result (state reports, sweeps, membership entries).
    Done,
    Rejected(Rejection),
}

/// A domain rejection: the same on every replica, never a storage failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// `X-If-Configuration-Matches` did not match; carries the current version.
    TagMismatch {
        current: u64,
    },
    DatasetIdInUse,
    DatasetNotFound,
    DatasetDeleted,
    DatasetOnOtherNode,
    DatasetInUse,
    ContainerNameExists,
    ContainerNotFound,
    ExternalPortInUse,
    LinkAliasesNotUnique,
    LinkLocalPortsNotUnique,
    LeaseNotFound,
    LeaseHeld,
    BlockDeviceAlreadyOwned,
}

impl Rejection {
    /// Flocker's `description` text for this rejection (byte for byte where Flocker had
    /// one). `TagMismatch` is rendered by the API, which knows the raw header value.
    pub fn description(&self) -> &'static str {
        match self {
            Rejection::TagMismatch { .. } => "Tag doesn't match.",
            Rejection::DatasetIdInUse => "The provided dataset_id is already in use.",
            Rejection::DatasetNotFound => "Dataset not found.",
            Rejection::DatasetDeleted => "The dataset has been deleted.",
            Rejection::DatasetOnOtherNode => "The dataset is on another node.",
            Rejection::DatasetInUse => "The dataset is being used by another container.",
            Rejection::ContainerNameExists => "The container name already exists.",
            Rejection::ContainerNotFound => "Container not found.",
            Rejection::ExternalPortInUse => "A specified external port is already in use.",
            Rejection::LinkAliasesNotUnique => "Link aliases must be unique.",
            Rejection::LinkLocalPortsNotUnique => {
                "The local ports in a container's links must be unique."
            }
            Rejection::LeaseNotFound => "Lease not found.",
            Rejection::LeaseHeld => "Lease already held.",
            Rejection::BlockDeviceAlreadyOwned => {
                "The dataset is already owned by another block device."
            }
        }
    }
}
