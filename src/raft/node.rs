//! One control node's Raft: opening storage, bootstrap, writes from any node (forwarded to
//! the leader), linearizable reads on any node (read index), membership changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::network::{
    PeerError, PeerHttp, PeerNetwork, WireError, PATH_ADMIN, PATH_READ_INDEX, PATH_WRITE,
};
use super::read_index::ReadIndexBatcher;
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
        // A follower starts an election after election_max (openraft's leader lease) plus
        // its own random election timeout without a heartbeat: 0.8-1.0 s here, so a new
        // leader is in place about a second after the old one dies, while a follower still
        // tolerates 7 missed heartbeats before disturbing a live leader. The heartbeat is
        // also openraft's AppendEntries timeout, so it must cover a loaded TLS round trip
        // plus an fsync (RAFT-NOTES section 6 measured 100/500/1000 at 1.6-1.9 s).
        RaftSettings {
            id,
            data_dir,
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 500,
            snapshot_every: 5000,
        }
    }
}

/// Why a write or read could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsensusError {
    /// No leader could be reached within the wait; nothing was applied.
    #[error("no leader is available: {0}")]
    Unavailable(String),
    /// Another node leads (this node does not forward this kind of request).
    #[error("control node {0} is the leader")]
    NotLeader(NodeId, ControlNode),
    /// The write was proposed but its fate is unknown (leadership changed, or the deadline
    /// passed while it was in flight). It may still be applied.
    #[error("the outcome of the request is unknown: {0}")]
    Indeterminate(String),
    /// The node's Raft stopped (storage failure or shutdown).
    #[error("the control node's consensus has stopped: {0}")]
    Stopped(String),
    /// A request that can never succeed as sent (bad membership change and the like).
    #[error("{0}")]
    Invalid(String),
}

impl From<ConsensusError> for WireError {
    fn from(e: ConsensusError) -> Self {
        match e {
            ConsensusError::Unavailable(s) => WireError::Unavailable(s),
            ConsensusError::NotLeader(id, node) => WireError::NotLeader(Some((id, node))),
            ConsensusError::Indeterminate(s) => WireError::Indeterminate(s),
            ConsensusError::Stopped(s) => WireError::Stopped(s),
            ConsensusError::Invalid(s) => WireError::Invalid(s),
        }
    }
}

/// Membership and status requests, served by the leader (forwarded there if needed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    AddLearner {
        id: NodeId,
        node: ControlNode,
    },
    /// Make exactly these nodes the voters (two-phase joint consensus inside openraft).
    SetVoters {
        voters: BTreeSet<NodeId>,
    },
    /// Remove a node entirely (voter or learner).
    Remove {
        id: NodeId,
    },
}

pub struct Consensus {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateMachine,
    pub peers: PeerHttp,
    reads: ReadIndexBatcher,
    db: sled::Db,
}

impl Consensus {
    pub async fn open(settings: &RaftSettings, peers: PeerHttp) -> anyhow::Result<Arc<Self>> {
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
            ..Default::default()
        }
        .validate()?;
        let network = PeerNetwork {
            http: peers.clone(),
        };
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
            peers,
            reads: ReadIndexBatcher::default(),
            db,
        }))
    }

    /// Form the cluster with `members`, exactly once: only on fresh storage, and only if no
    /// other member already belongs to a cluster (a node whose data was wiped must be
    /// re-added, never re-bootstrap). Returns whether this call initialized it.
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

    /// Propose `command` and return its outcome once applied, on whichever node leads:
    /// a follower forwards to the leader and relays its answer. Waits up to `wait` for a
    /// leader; a request whose delivery is uncertain is `Indeterminate`.
    pub async fn write(&self, command: Command, wait: Duration) -> Result<Outcome, ConsensusError> {
        let deadline = Instant::now() + wait;
        loop {
            let leader = match self.write_local(command.clone(), deadline).await {
                Err(ConsensusError::NotLeader(id, node)) => (id, node),
                other => return other,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let reply: Result<Result<Outcome, WireError>, PeerError> = self
                .peers
                .call(
                    leader.0,
                    &leader.1.raft_addr,
                    PATH_WRITE,
                    &(command.clone(), remaining),
                    remaining + Duration::from_millis(500),
                )
                .await;
            let not_applied = match reply {
                Ok(Ok(outcome)) => return Ok(outcome),
                // The leader moved or is gone: nothing was applied, so retrying is safe.
                Ok(Err(WireError::NotLeader(_))) => "the leader changed".to_owned(),
                Err(PeerError::Unreachable(e) | PeerError::Refused(e)) => e,
                Ok(Err(e)) => return Err(from_wire(e)),
                Err(e @ (PeerError::Network(_) | PeerError::Timeout)) => {
                    return Err(ConsensusError::Indeterminate(e.to_string()))
                }
            };
            if Instant::now() >= deadline {
                return Err(ConsensusError::Unavailable(not_applied));
            }
            self.wait_for_leader_change(leader.0, deadline).await;
        }
    }

    /// Propose on this node only; `NotLeader` names the leader when another node leads.
    pub async fn write_local(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<Outcome, ConsensusError> {
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
                    return Err(ConsensusError::Invalid(e.to_string()))
                }
                // Raft stopped while the write may already be in the log (a leader removed
                // from the membership stops with its writes committed): unknown, not failed.
                Ok(Err(RaftError::Fatal(fatal))) => {
                    return Err(ConsensusError::Indeterminate(format!(
                        "the control node's consensus stopped: {fatal}"
                    )))
                }
                Err(_elapsed) => {
                    return Err(ConsensusError::Indeterminate(
                        "not committed before the deadline".into(),
                    ))
                }
            }
        }
    }

    /// Wait until this node's state machine reflects every write committed before the call:
    /// obtain a read index (Raft paper section 8: the leader confirms its leadership with a
    /// heartbeat round and serves at or after its commit index; a follower asks the leader
    /// for it), then wait until the local replica has applied it.
    pub async fn read_barrier(self: &Arc<Self>, wait: Duration) -> Result<(), ConsensusError> {
        let deadline = Instant::now() + wait;
        loop {
            let me = self.clone();
            let round = self.reads.read_index(move || {
                let me = me.clone();
                async move { me.fetch_read_index(Duration::from_secs(2)).await }
            });
            let index = match tokio::time::timeout_at(deadline, round).await {
                Ok(Ok(index)) => index,
                Ok(Err(ConsensusError::Unavailable(e))) => {
                    if Instant::now() >= deadline {
                        return Err(ConsensusError::Unavailable(e));
                    }
                    self.wait_for_leader(deadline).await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ConsensusError::Unavailable(format!(
                        "no read index within {} ms",
                        wait.as_millis()
                    )))
                }
            };
            let mut applied = self.state.subscribe();
            return match tokio::time::timeout_at(deadline, applied.wait_for(|a| a.index >= index))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(ConsensusError::Stopped("state machine closed".into())),
                Err(_) => Err(ConsensusError::Unavailable(
                    "this replica is too far behind the leader".into(),
                )),
            };
        }
    }

    /// One read-index round: local if leader, else asked of the leader.
    async fn fetch_read_index(&self, budget: Duration) -> Result<u64, ConsensusError> {
        match self.local_read_index(budget).await {
            Err(ConsensusError::NotLeader(id, node)) => {
                let reply: Result<Result<u64, WireError>, PeerError> = self
                    .peers
                    .call(
                        id,
                        &node.raft_addr,
                        PATH_READ_INDEX,
                        &budget,
                        budget + Duration::from_millis(500),
                    )
                    .await;
                match reply {
                    Ok(Ok(index)) => Ok(index),
                    Ok(Err(e)) => Err(match from_wire(e) {
                        ConsensusError::NotLeader(..) => {
                            ConsensusError::Unavailable("leadership is changing".into())
                        }
                        other => other,
                    }),
                    Err(e) => Err(ConsensusError::Unavailable(e.to_string())),
                }
            }
            other => other,
        }
    }

    /// The read index if this node is the leader (one heartbeat round to a quorum).
    pub async fn local_read_index(&self, budget: Duration) -> Result<u64, ConsensusError> {
        match tokio::time::timeout(budget, self.raft.get_read_log_id()).await {
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                match (forward.leader_id, forward.leader_node) {
                    (Some(id), Some(node)) if id != self.id => {
                        Err(ConsensusError::NotLeader(id, node))
                    }
                    _ => Err(ConsensusError::Unavailable("no leader is known".into())),
                }
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Err(ConsensusError::Unavailable(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(fatal))) => Err(ConsensusError::Stopped(fatal.to_string())),
            Err(_) => Err(ConsensusError::Unavailable(
                "leadership not confirmed in time".into(),
            )),
        }
    }

    /// A reads-coalesced local read index, for followers asking this (leader) node.
    pub async fn serve_read_index(
        self: &Arc<Self>,
        budget: Duration,
    ) -> Result<u64, ConsensusError> {
        let me = self.clone();
        self.reads
            .read_index(move || {
                let me = me.clone();
                async move { me.local_read_index(budget).await }
            })
            .await
    }

    /// Run a membership change on the leader (forwarded there if needed).
    pub async fn admin(&self, request: AdminRequest, wait: Duration) -> Result<(), ConsensusError> {
        let deadline = Instant::now() + wait;
        match self.admin_local(request.clone()).await {
            Err(ConsensusError::NotLeader(id, node)) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let reply: Result<Result<(), WireError>, PeerError> = self
                    .peers
                    .call(
                        id,
                        &node.raft_addr,
                        PATH_ADMIN,
                        &request,
                        remaining.max(Duration::from_secs(1)),
                    )
                    .await;
                match reply {
                    Ok(result) => result.map_err(from_wire),
                    Err(PeerError::Unreachable(e)) => Err(ConsensusError::Unavailable(e)),
                    Err(e) => Err(ConsensusError::Indeterminate(e.to_string())),
                }
            }
            other => other,
        }
    }

    pub async fn admin_local(&self, request: AdminRequest) -> Result<(), ConsensusError> {
        let result = match request {
            AdminRequest::AddLearner { id, node } => {
                self.raft.add_learner(id, node, true).await.map(|_| ())
            }
            AdminRequest::SetVoters { voters } => {
                self.raft.change_membership(voters, false).await.map(|_| ())
            }
            AdminRequest::Remove { id } => {
                let membership = self.raft.metrics().borrow().membership_config.clone();
                let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
                let change = if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(ConsensusError::Invalid(
                            "cannot remove the last voter".into(),
                        ));
                    }
                    // Not retained as a learner: the node leaves the cluster entirely.
                    ChangeMembers::RemoveVoters([id].into())
                } else {
                    ChangeMembers::RemoveNodes([id].into())
                };
                self.raft.change_membership(change, false).await.map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                match (forward.leader_id, forward.leader_node) {
                    (Some(id), Some(node)) if id != self.id => {
                        Err(ConsensusError::NotLeader(id, node))
                    }
                    _ => Err(ConsensusError::Unavailable("no leader is known".into())),
                }
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(ConsensusError::Invalid(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(ConsensusError::Stopped(f.to_string())),
        }
    }

    /// Wait until some node is known as leader, or the deadline.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<(), ConsensusError> {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(leader) = m.current_leader {
                    if leader != self.id || m.state.is_leader() {
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

    /// Wait until the known leader is not `old` (or the deadline), polling the metrics.
    async fn wait_for_leader_change(&self, old: NodeId, deadline: Instant) {
        let mut metrics = self.raft.metrics();
        let step = Instant::now() + Duration::from_millis(200);
        loop {
            if metrics
                .borrow_and_update()
                .current_leader
                .is_some_and(|l| l != old)
            {
                return;
            }
            let until = step.min(deadline);
            if tokio::time::timeout_at(until, metrics.changed())
                .await
                .is_err()
            {
                // Even if nothing changed, retry: the old leader may be back.
                return;
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

pub fn from_wire(e: WireError) -> ConsensusError {
    match e {
        WireError::NotLeader(Some((id, node))) => ConsensusError::NotLeader(id, node),
        WireError::NotLeader(None) => ConsensusError::Unavailable("no leader is known".into()),
        WireError::Unavailable(s) => ConsensusError::Unavailable(s),
        WireError::Indeterminate(s) => ConsensusError::Indeterminate(s),
        WireError::Stopped(s) => ConsensusError::Stopped(s),
        WireError::Invalid(s) => ConsensusError::Invalid(s),
    }
}
