//! The only module that imports openraft: the type configuration, the state machine
//! adapter around [`crate::model`], the peer network, and the node's Raft handle.
//!
//! Everything above this module sees a replica as "propose a [`Command`], get an
//! [`Outcome`]" and "read the applied [`State`](crate::model::State)".

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::model::{Command, Outcome};

pub mod network;
pub mod node;
pub mod peer_server;
pub mod read_index;
pub mod state_machine;

/// How a control node is reached by its peers and by clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlNode {
    /// `host:port` of the peer (Raft) listener.
    pub raft_addr: String,
    /// `host:port` of the REST API listener.
    pub api_addr: String,
}

impl std::fmt::Display for ControlNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

/// Raft node ids of control nodes (not to be confused with the UUIDs of agent nodes).
pub type NodeId = u64;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = ControlNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
