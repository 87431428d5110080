//! One control node's Raft: opening storage, bootstrap, writes and linearizable reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{Config, RaftNetworkFactory, SnapshotPolicy};
use tokio::time::Instant;

use super::state_machine::StateMachine;
use super::{ControlNode, NodeId, Raft, TypeConfig};
use crate::model::{Command, Outcome};
use crate::storage::{self, LogStore, SnapshotStore};

/// Tunables of one control node's Raft.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot (and purge the log behind it) every this many entries.
    pub snapshot_every: u64,
}

impl RaftSettings {
    pub fn new(id: NodeId, data_dir: PathBuf) -> Self {
        // Timings measured on this kind of 2-core machine (RAFT-NOTES section 6): failover
        // of about 1.6-1.9 s without spurious elections under load.
        RaftSettings {
            id,
            data_dir,
            heartbeat_ms: 100,
            election_min_ms: 500,
            election_max_ms: 1000,
            snapshot_every: 5000,
        }
    }
}

/// Why a write or read could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// No leader could be reached within the wait; nothing was applied.
    #[error("no leader is available: {0}")]
    Unavailable(String),
    /// Another node leads; the caller may forward to it.
    #[error("control node {0} is the leader")]
    NotLeader(NodeId, ControlNode),
    /// The write was proposed but its fate is unknown (leadership changed, or the deadline
    /// passed while it was in flight). It may still be applied.
    #[error("the outcome of the request is unknown: {0}")]
    Indeterminate(String),
    /// The node's Raft stopped (storage failure or shutdown).
    #[error("the control node's consensus has stopped: {0}")]
    Stopped(String),
}

pub struct Consensus {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateMachine,
    db: sled::Db,
}

impl Consensus {
    pub async fn open<N>(settings: &RaftSettings, network: N) -> anyhow::Result<Arc<Self>>
    where
        N: RaftNetworkFactory<TypeConfig>,
    {
        let db = storage::open_db(&settings.data_dir.join("raft.sled"))?;
        let log_store = LogStore::<TypeConfig>::new(db.clone())?;
        let state = StateMachine::open(SnapshotStore::new(&db)?)?;
        let config = Config {
            cluster_name: "flocker".into(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_min_ms,
            election_timeout_max: settings.election_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
            max_in_snapshot_log_to_keep: settings.snapshot_every.min(1000),
            replication_lag_threshold: settings.snapshot_every.saturating_mul(2),
            // A whole snapshot travels in one request (see network.rs); allow it time.
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()?;
        let raft = Raft::new(
            settings.id,
            Arc::new(config),
            network,
            log_store,
            state.clone(),
        )
        .await?;
        Ok(Arc::new(Consensus {
            id: settings.id,
            raft,
            state,
            db,
        }))
    }

    /// Form the cluster with `members`, exactly once: only on fresh storage. Returns whether
    /// this call initialized it.
    pub async fn initialize_if_fresh(
        &self,
        members: BTreeMap<NodeId, ControlNode>,
    ) -> anyhow::Result<bool> {
        if self.raft.is_initialized().await? {
            return Ok(false);
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Propose `command` and return its outcome once applied, waiting up to `wait` for a
    /// leader to exist.
    pub async fn write(&self, command: Command, wait: Duration) -> Result<Outcome, ConsensusError> {
        let deadline = Instant::now() + wait;
        loop {
            let attempt =
                tokio::time::timeout_at(deadline, self.raft.client_write(command.clone()));
            match attempt.await {
                Ok(Ok(response)) => return Ok(response.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                    if let (Some(id), Some(node)) = (forward.leader_id, forward.leader_node) {
                        if id != self.id {
                            return Err(ConsensusError::NotLeader(id, node));
                        }
                    }
                    self.wait_for_leader(deadline).await?;
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                    return Err(ConsensusError::Unavailable(e.to_string()))
                }
                Ok(Err(RaftError::Fatal(fatal))) => {
                    return Err(ConsensusError::Stopped(fatal.to_string()))
                }
                Err(_elapsed) => {
                    return Err(ConsensusError::Indeterminate(format!(
                        "no commit within {} ms",
                        wait.as_millis()
                    )))
                }
            }
        }
    }

    /// Wait until this node's state machine reflects every write committed before the call
    /// (Raft paper section 8: the leader confirms its leadership with a heartbeat round,
    /// then serves at or after its commit index).
    pub async fn read_barrier(&self, wait: Duration) -> Result<(), ConsensusError> {
        let deadline = Instant::now() + wait;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.raft.ensure_linearizable());
            match attempt.await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                    if let (Some(id), Some(node)) = (forward.leader_id, forward.leader_node) {
                        if id != self.id {
                            return Err(ConsensusError::NotLeader(id, node));
                        }
                    }
                    self.wait_for_leader(deadline).await?;
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                    if Instant::now() >= deadline {
                        return Err(ConsensusError::Unavailable(e.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(RaftError::Fatal(fatal))) => {
                    return Err(ConsensusError::Stopped(fatal.to_string()))
                }
                Err(_elapsed) => {
                    return Err(ConsensusError::Unavailable(format!(
                        "leadership not confirmed within {} ms",
                        wait.as_millis()
                    )))
                }
            }
        }
    }

    /// Wait until some node is known as leader, or the deadline.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<(), ConsensusError> {
        let mut metrics = self.raft.metrics();
        let start_term = metrics.borrow().current_term;
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.current_leader.is_some() && m.current_term >= start_term {
                    // Let the loop retry; a leader that is us will accept.
                    if m.current_leader != Some(self.id) || m.state.is_leader() {
                        return Ok(());
                    }
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(ConsensusError::Stopped("raft shut down".into())),
                Err(_) => {
                    return Err(ConsensusError::Unavailable(
                        "no leader was elected in time".into(),
                    ))
                }
            }
        }
    }

    /// The current leader, if known locally.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state.is_leader()
    }

    /// Stop Raft and flush storage.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        if let Err(e) = storage::flush(&self.db).await {
            tracing::warn!("final flush: {e}");
        }
    }
}
