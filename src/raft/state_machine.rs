//! The openraft state machine around [`crate::model::apply()`].
//!
//! Durability choice: the state machine is held in memory and made durable through
//! snapshots (openraft's "persistent snapshot" option). `apply` does no I/O; the Raft log
//! (flushed before any entry is acknowledged) plus the last snapshot always reconstruct
//! it: at start-up the snapshot is loaded, and openraft re-applies the committed log after
//! it (the log store persists `committed`). Every snapshot is flushed to sled before it is
//! reported, and the log is purged only behind a snapshot, so nothing is ever lost.
//!
//! Readers take the lock only for the time of a lookup; [`StateMachine::subscribe`]
//! publishes the applied versions so agents and waiters learn about changes without
//! polling.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;

use super::{ControlNode, LogId, NodeId, TypeConfig};
use crate::model::{self, Outcome, State};
use crate::storage::{self, SnapshotStore};

/// What has been applied so far; published after every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Index of the last applied entry.
    pub index: u64,
    /// Configuration version (the tag's index).
    pub config: u64,
    /// Cluster state version.
    pub cluster: u64,
}

struct Replica {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, ControlNode>,
}

struct Shared {
    replica: RwLock<Replica>,
    snapshots: SnapshotStore,
    applied: watch::Sender<Applied>,
    snapshot_seq: AtomicU64,
}

/// Cheap to clone; all clones share one replica.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

/// A read view of the applied state.
pub struct ReadView<'a> {
    guard: RwLockReadGuard<'a, Replica>,
}

impl std::ops::Deref for ReadView<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard.state
    }
}

impl StateMachine {
    /// Open the state machine, restoring it from the last durable snapshot.
    #[allow(clippy::result_large_err)] // openraft's error type; only at start-up.
    pub fn open(snapshots: SnapshotStore) -> Result<Self, StorageError<NodeId>> {
        let (replica, seq) = match snapshots
            .load()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
        {
            Some((meta_bytes, data)) => {
                let meta: SnapshotMeta<NodeId, ControlNode> = storage::decode(&meta_bytes)
                    .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                let state: State =
                    storage::decode(&data).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                let replica = Replica {
                    state,
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership,
                };
                (replica, meta.last_log_id.map_or(0, |l| l.index))
            }
            None => (
                Replica {
                    state: State::default(),
                    last_applied: None,
                    membership: StoredMembership::default(),
                },
                0,
            ),
        };
        let applied = watch::Sender::new(applied_of(&replica));
        Ok(StateMachine {
            shared: Arc::new(Shared {
                replica: RwLock::new(replica),
                snapshots,
                applied,
                snapshot_seq: AtomicU64::new(seq),
            }),
        })
    }

    pub fn read(&self) -> ReadView<'_> {
        ReadView {
            guard: self
                .shared
                .replica
                .read()
                .expect("state machine lock poisoned"),
        }
    }

    pub fn applied(&self) -> Applied {
        *self.shared.applied.borrow()
    }

    /// Changes to [`Applied`], for long polls and waits.
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.shared.applied.subscribe()
    }
}

fn applied_of(replica: &Replica) -> Applied {
    Applied {
        index: replica.last_applied.map_or(0, |l| l.index),
        config: replica.state.config.version,
        cluster: replica.state.cluster.version,
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, ControlNode>), StorageError<NodeId>> {
        let replica = self
            .shared
            .replica
            .read()
            .expect("state machine lock poisoned");
        Ok((replica.last_applied, replica.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        let applied = {
            let mut replica = self
                .shared
                .replica
                .write()
                .expect("state machine lock poisoned");
            for entry in entries {
                let outcome = match &entry.payload {
                    EntryPayload::Blank => Outcome::Done,
                    EntryPayload::Normal(command) => {
                        model::apply(&mut replica.state, entry.log_id.index, command)
                    }
                    EntryPayload::Membership(membership) => {
                        replica.membership =
                            StoredMembership::new(Some(entry.log_id), membership.clone());
                        Outcome::Done
                    }
                };
                replica.last_applied = Some(entry.log_id);
                outcomes.push(outcome);
            }
            applied_of(&replica)
        };
        self.shared.applied.send_replace(applied);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ControlNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        let state: State = storage::decode(&data)
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?;
        // Durable first: if we crash after this, start-up loads the new snapshot.
        self.shared
            .snapshots
            .save(
                storage::encode(meta)
                    .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?,
                data,
            )
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        let applied = {
            let mut replica = self
                .shared
                .replica
                .write()
                .expect("state machine lock poisoned");
            *replica = Replica {
                state,
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            applied_of(&replica)
        };
        self.shared.applied.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let Some((meta_bytes, data)) = self
            .shared
            .snapshots
            .load()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
        else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, ControlNode> =
            storage::decode(&meta_bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // build_snapshot runs concurrently with later applies: encode under the read lock so
        // the bytes, the log id and the membership describe one point in time.
        let (data, last_log_id, last_membership) = {
            let replica = self
                .shared
                .replica
                .read()
                .expect("state machine lock poisoned");
            (
                storage::encode(&replica.state)
                    .map_err(|e| StorageIOError::write_snapshot(None, &e))?,
                replica.last_applied,
                replica.membership.clone(),
            )
        };
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = format!("{}-{}", last_log_id.map_or(0, |l| l.index), seq);
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let meta_bytes = storage::encode(&meta)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.shared
            .snapshots
            .save(meta_bytes, data.clone())
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
