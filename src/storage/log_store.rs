//! The durable Raft log store: openraft's `RaftLogStorage` on sled.
//!
//! Layout (see the [module docs](super) for the whole database):
//!
//! * tree `raft_log`: key = log index as big-endian `u64`, value = [`encode`]d `C::Entry`;
//! * tree `raft_meta`: `vote` (`Vote`), `committed` (`LogId`, absent = `None`) and
//!   `last_purged` (`LogId`, absent = `None`).
//!
//! Guarantees (openraft `storage/v2.rs`):
//!
//! * `append` applies the entries as one atomic sled batch (readable when it returns), flushes,
//!   and only then calls `LogFlushed::log_io_completed(Ok(()))`. openraft 0.9 waits for the
//!   callback inline, so calling it after the flush costs no pipelining.
//! * `save_vote`, `truncate` and `purge` are durable when they return. `purge` persists
//!   `last_purged` (and flushes) before deleting anything.
//! * `save_committed` is *not* flushed by itself: losing it only makes a restarted node re-apply
//!   less, and the next flushed write (an append or a vote) makes it durable, in order.
//! * Every write takes one async mutex for its whole duration (including the flush), so writes
//!   from any clone are serialized and a later write is never durable before an earlier one.
//! * Structural changes of the log tree (append batches, truncate, purge) and range reads are
//!   mutually exclusive (a short synchronous `RwLock`), so a reader never observes a
//!   half-applied purge or truncate (a hole, or old and new entries mixed).
//! * Reads check that each stored entry's index matches its key and never skip a value that
//!   fails to decode: every such failure is an `openraft::StorageError`.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, LogId, LogState, OptionalSend, RaftLogId, RaftLogReader, RaftTypeConfig,
    StorageIOError, Vote,
};

use super::{decode, encode, flush, StorageError};

/// `limited_get_log_entries` stops adding entries once the batch would exceed this many encoded
/// bytes (it always returns at least one entry for a non-empty range that has entries).
pub const MAX_READ_BATCH_BYTES: usize = 4 * 1024 * 1024;

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

type RaftError<C> = openraft::StorageError<<C as RaftTypeConfig>::NodeId>;
type NodeLogId<C> = LogId<<C as RaftTypeConfig>::NodeId>;

/// The Raft log, vote and committed pointer of one node, stored in sled.
///
/// Cloning is cheap and clones share the same trees and write lock; the log reader handed to
/// openraft's replication tasks is such a clone.
pub struct LogStore<C: RaftTypeConfig> {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// Serializes all writes, held across the flush.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Readers (shared) vs. structural changes of `log` (exclusive); never held across `.await`.
    view_lock: Arc<RwLock<()>>,
    _config: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            log: self.log.clone(),
            meta: self.meta.clone(),
            write_lock: Arc::clone(&self.write_lock),
            view_lock: Arc::clone(&self.view_lock),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Opens the log store on `db` (trees `raft_log` and `raft_meta`).
    ///
    /// Decodes the stored metadata once so corruption is reported at startup, and finishes a
    /// purge that a crash interrupted (entries at or below `last_purged` are removed).
    pub fn new(db: sled::Db) -> Result<Self, StorageError> {
        let store = Self {
            log: db.open_tree(LOG_TREE)?,
            meta: db.open_tree(META_TREE)?,
            db,
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            view_lock: Arc::new(RwLock::new(())),
            _config: PhantomData,
        };
        store.read_meta::<Vote<C::NodeId>>(KEY_VOTE)?;
        store.read_meta::<NodeLogId<C>>(KEY_COMMITTED)?;
        if let Some(last_purged) = store.read_meta::<NodeLogId<C>>(KEY_LAST_PURGED)? {
            let removed = store.remove_up_to(last_purged.index)?;
            if removed > 0 {
                tracing::warn!(
                    removed,
                    last_purged = %last_purged,
                    "finished an interrupted log purge"
                );
                store.db.flush()?;
            }
        }
        Ok(store)
    }

    /// The underlying database handle.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.meta.get(key)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Applies `batch` to the log tree, excluding concurrent range reads.
    fn apply_log_batch(&self, batch: sled::Batch) -> Result<(), StorageError> {
        let _view = self
            .view_lock
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.log.apply_batch(batch)?;
        Ok(())
    }

    /// Removes all entries with index `<= index` in one atomic batch; returns how many.
    fn remove_up_to(&self, index: u64) -> Result<usize, StorageError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for key in self.log.range(..=index.to_be_bytes()).keys() {
            batch.remove(key?);
            removed += 1;
        }
        if removed > 0 {
            self.apply_log_batch(batch)?;
        }
        Ok(removed)
    }

    /// Removes all entries with index `>= index`, last first, in one atomic batch.
    fn remove_from(&self, index: u64) -> Result<usize, StorageError> {
        let keys = self
            .log
            .range(index.to_be_bytes()..)
            .keys()
            .collect::<Result<Vec<_>, _>>()?;
        let removed = keys.len();
        if removed > 0 {
            // The batch is atomic (also across a crash); removing from the end backwards
            // additionally keeps every intermediate state hole-free.
            let mut batch = sled::Batch::default();
            for key in keys.into_iter().rev() {
                batch.remove(key);
            }
            self.apply_log_batch(batch)?;
        }
        Ok(removed)
    }

    /// Reads entries with index in `[start, end)` (`end = None`: unbounded), stopping before
    /// `max_bytes` of encoded data once at least one entry was read.
    fn read_range(
        &self,
        start: u64,
        end: Option<u64>,
        max_bytes: Option<usize>,
    ) -> Result<Vec<C::Entry>, StorageError> {
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let raw = {
            let _view = self
                .view_lock
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let iter = match end {
                Some(end) => self.log.range(start.to_be_bytes()..end.to_be_bytes()),
                None => self.log.range(start.to_be_bytes()..),
            };
            let mut raw = Vec::new();
            let mut bytes = 0usize;
            for item in iter {
                let (key, value) = item?;
                if let Some(max) = max_bytes {
                    if !raw.is_empty() && bytes.saturating_add(value.len()) > max {
                        break;
                    }
                }
                bytes = bytes.saturating_add(value.len());
                raw.push((key, value));
            }
            raw
        };
        raw.iter()
            .map(|(key, value)| decode_entry::<C>(key, value))
            .collect()
    }

    fn last_entry_log_id(&self) -> Result<Option<NodeLogId<C>>, StorageError> {
        match self.log.last()? {
            Some((key, value)) => Ok(Some(decode_entry::<C>(&key, &value)?.get_log_id().clone())),
            None => Ok(None),
        }
    }
}

/// Decodes a stored entry and checks that it sits under its own index.
fn decode_entry<C: RaftTypeConfig>(key: &[u8], value: &[u8]) -> Result<C::Entry, StorageError> {
    let index = key_to_index(key)?;
    let entry: C::Entry = decode(value)?;
    let entry_index = entry.get_log_id().index;
    if entry_index != index {
        return Err(StorageError::Corrupt(format!(
            "log entry stored under index {index} has index {entry_index}"
        )));
    }
    Ok(entry)
}

fn key_to_index(key: &[u8]) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StorageError::Corrupt(format!("log key of {} bytes, expected 8", key.len()))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Converts a range of indexes to `[start, end)` with `end = None` for unbounded; `None` if the
/// range is empty.
fn index_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        // `..=u64::MAX` is unbounded.
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end <= start => None,
        _ => Some((start, end)),
    }
}

fn read_logs_err<C: RaftTypeConfig>(e: &StorageError) -> RaftError<C> {
    StorageIOError::read_logs(AnyError::new(e)).into()
}

fn write_logs_err<C: RaftTypeConfig>(e: &StorageError) -> RaftError<C> {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, RaftError<C>> {
        let Some((start, end)) = index_bounds(&range) else {
            return Ok(Vec::new());
        };
        self.read_range(start, end, None)
            .map_err(|e| read_logs_err::<C>(&e))
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<C::Entry>, RaftError<C>> {
        self.read_range(start, Some(end), Some(MAX_READ_BATCH_BYTES))
            .map_err(|e| read_logs_err::<C>(&e))
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, RaftError<C>> {
        let last_purged_log_id = self
            .read_meta::<NodeLogId<C>>(KEY_LAST_PURGED)
            .map_err(|e| read_logs_err::<C>(&e))?;
        let last_entry = self
            .last_entry_log_id()
            .map_err(|e| read_logs_err::<C>(&e))?;
        // Normally the last entry, or `last_purged` if there is none. The max also covers a
        // purge beyond the last entry that a crash interrupted before its deletions (`new`
        // finishes those, but a `last_log_id` below `last_purged` must never be reported).
        let last_log_id = std::cmp::max(last_entry, last_purged_log_id.clone());
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), RaftError<C>> {
        let write_vote = |e: &StorageError| -> RaftError<C> {
            StorageIOError::write_vote(AnyError::new(e)).into()
        };
        let bytes = encode(vote).map_err(|e| write_vote(&e))?;
        let _write = self.write_lock.lock().await;
        self.meta
            .insert(KEY_VOTE, bytes)
            .map_err(|e| write_vote(&e.into()))?;
        flush(&self.db).await.map_err(|e| write_vote(&e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, RaftError<C>> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<NodeLogId<C>>,
    ) -> Result<(), RaftError<C>> {
        let write =
            |e: &StorageError| -> RaftError<C> { StorageIOError::write(AnyError::new(e)).into() };
        let _write = self.write_lock.lock().await;
        match committed {
            Some(log_id) => {
                let bytes = encode(&log_id).map_err(|e| write(&e))?;
                self.meta
                    .insert(KEY_COMMITTED, bytes)
                    .map_err(|e| write(&e.into()))?;
            }
            None => {
                self.meta
                    .remove(KEY_COMMITTED)
                    .map_err(|e| write(&e.into()))?;
            }
        }
        // Not flushed here on purpose (see the module docs): the next flushed write persists it.
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<NodeLogId<C>>, RaftError<C>> {
        self.read_meta(KEY_COMMITTED)
            .map_err(|e| StorageIOError::read(AnyError::new(&e)).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), RaftError<C>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Encode outside the lock; reject a batch that would leave a hole.
        let mut batch = sled::Batch::default();
        let mut prev: Option<NodeLogId<C>> = None;
        for entry in entries {
            let log_id = entry.get_log_id().clone();
            if let Some(prev) = &prev {
                if prev.index.checked_add(1) != Some(log_id.index) {
                    let msg =
                        format!("non-consecutive entries in one append: {prev} then {log_id}");
                    return Err(
                        StorageIOError::write_log_entry(log_id, AnyError::error(msg)).into(),
                    );
                }
            }
            let bytes = encode(&entry)
                .map_err(|e| StorageIOError::write_log_entry(log_id.clone(), AnyError::new(&e)))?;
            batch.insert(&log_id.index.to_be_bytes(), bytes);
            prev = Some(log_id);
        }

        let _write = self.write_lock.lock().await;
        if prev.is_some() {
            self.apply_log_batch(batch)
                .map_err(|e| write_logs_err::<C>(&e))?;
        }
        // The entries are readable now; report them persisted only once they are on disk.
        match flush(&self.db).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_logs_err::<C>(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: NodeLogId<C>) -> Result<(), RaftError<C>> {
        let _write = self.write_lock.lock().await;
        let removed = self
            .remove_from(log_id.index)
            .map_err(|e| write_logs_err::<C>(&e))?;
        tracing::debug!(since = %log_id, removed, "truncated raft log");
        flush(&self.db).await.map_err(|e| write_logs_err::<C>(&e))
    }

    async fn purge(&mut self, log_id: NodeLogId<C>) -> Result<(), RaftError<C>> {
        let _write = self.write_lock.lock().await;
        let current = self
            .read_meta::<NodeLogId<C>>(KEY_LAST_PURGED)
            .map_err(|e| write_logs_err::<C>(&e))?;
        // `last_purged` only moves forward; persist it before deleting anything.
        if current.is_none_or(|current| current < log_id) {
            let bytes = encode(&log_id).map_err(|e| write_logs_err::<C>(&e))?;
            self.meta
                .insert(KEY_LAST_PURGED, bytes)
                .map_err(|e| write_logs_err::<C>(&e.into()))?;
            flush(&self.db).await.map_err(|e| write_logs_err::<C>(&e))?;
        }
        let removed = self
            .remove_up_to(log_id.index)
            .map_err(|e| write_logs_err::<C>(&e))?;
        tracing::debug!(upto = %log_id, removed, "purged raft log");
        flush(&self.db).await.map_err(|e| write_logs_err::<C>(&e))
    }
}
