//! Durable storage for the Raft node, on one sled database per process.
//!
//! # What is stored where
//!
//! One [`sled::Db`] (opened with [`open_db`]) holds several trees:
//!
//! | tree        | key                              | value                                   | owner |
//! |-------------|----------------------------------|-----------------------------------------|-------|
//! | `raft_log`  | log index, `u64` big-endian      | [`encode`]d `C::Entry`                  | [`log_store::LogStore`] |
//! | `raft_meta` | `vote`, `committed`, `last_purged` | [`encode`]d `Vote` / `Option<LogId>` / `LogId` | [`log_store::LogStore`] |
//! | `snapshot`  | `meta`, `data`                   | opaque bytes chosen by the state machine | [`SnapshotStore`] |
//!
//! Big-endian keys make sled's byte order equal to index order, so range scans and
//! `Tree::last()` work directly on log indexes. Every value written through [`encode`] starts
//! with a format-version byte ([`FORMAT_VERSION`]) so that a later change of encoding can be
//! detected instead of silently misread.
//!
//! # Durability rules, and why
//!
//! sled buffers writes in memory and only a flush (`fsync`) makes them crash-safe; a flush makes
//! *all* earlier writes of the whole `Db` durable, in order. Raft's safety depends on some writes
//! being durable before the node acts on them, so:
//!
//! * `append` flushes before it reports the entries as persisted through openraft's
//!   `LogFlushed` callback: a node must not acknowledge entries to a leader that it could lose in
//!   a crash, or a committed entry could vanish from a quorum.
//! * `save_vote` flushes before returning: a node that forgets its vote can vote twice in one
//!   term and two leaders can be elected.
//! * `truncate` and `purge` flush before returning, and `purge` makes `last_purged` durable
//!   *before* deleting anything, so after a crash the log state never claims entries that are
//!   gone without a matching `last_purged`.
//! * All log-store writes are serialized behind one async mutex and each write is complete
//!   (and, where required, flushed) before the next starts, so a later write can never become
//!   durable before an earlier one.
//! * [`SnapshotStore::save`] writes metadata and data in one atomic batch and then flushes, so a
//!   crash leaves either the old snapshot or the new one, never a mix.
//!
//! Flushes always go through [`flush`], which runs the blocking `Db::flush` on tokio's blocking
//! pool. sled 0.34's `flush_async()` deadlocks when called concurrently (sled #1241, #1308,
//! #1357) and must never be used.

pub mod log_store;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use log_store::LogStore;

/// The leading byte of every value written by [`encode`].
pub const FORMAT_VERSION: u8 = 1;

/// sled's page-cache budget.
///
/// sled's default is 1 GiB, and it is only a soft limit (resident memory has been seen well above
/// it). The control service keeps small values: the Raft log tail that replication reads and a
/// compact state machine, so 64 MiB keeps the hot part of the log and all metadata cached while
/// bounding memory on the small (2 core) machines this runs on.
pub const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

const SNAPSHOT_TREE: &str = "snapshot";
const SNAPSHOT_META_KEY: &[u8] = b"meta";
const SNAPSHOT_DATA_KEY: &[u8] = b"data";

/// Errors of the storage layer (opening, flushing, encoding and the snapshot store).
///
/// The Raft trait implementations convert these into [`openraft::StorageError`].
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The data directory could not be created.
    #[error("cannot create storage directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// sled reported an error.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A value could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// A stored value could not be decoded.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A stored value is empty, so it has no format-version byte.
    #[error("decode: empty value (no format-version byte)")]
    EmptyValue,
    /// A stored value has an unknown format version.
    #[error("decode: unsupported format version {found} (this build reads {FORMAT_VERSION})")]
    UnsupportedFormat { found: u8 },
    /// A stored value has bytes after the decoded value.
    #[error("decode: {trailing} trailing bytes after the value")]
    TrailingBytes { trailing: usize },
    /// The blocking flush task panicked or was cancelled.
    #[error("flush task failed: {0}")]
    FlushTask(#[from] tokio::task::JoinError),
    /// Stored data contradicts itself.
    #[error("corrupt storage: {0}")]
    Corrupt(String),
}

/// Opens (creating if needed) the process's sled database in `dir`.
///
/// Open it once per process and share the handle (it is cheap to clone); opening the same
/// directory twice while a handle is alive fails with a lock error.
pub fn open_db(dir: &Path) -> Result<sled::Db, StorageError> {
    std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_CAPACITY_BYTES)
        .open()?;
    Ok(db)
}

/// Makes every earlier write to `db` durable (fsync).
///
/// Runs the blocking `Db::flush` on tokio's blocking pool; never use sled's `flush_async`, which
/// deadlocks under concurrency.
pub async fn flush(db: &sled::Db) -> Result<(), StorageError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.flush()).await??;
    Ok(())
}

/// Encodes `value` as [`FORMAT_VERSION`] followed by bincode (standard config).
///
/// Fails only if the value's `Serialize` implementation is not representable in bincode (for
/// example serde's `flatten`, or a sequence without a known length).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![FORMAT_VERSION];
    let body = bincode::serde::encode_to_vec(value, bincode::config::standard())?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a value written by [`encode`], rejecting unknown versions and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    let (&version, body) = bytes.split_first().ok_or(StorageError::EmptyValue)?;
    if version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedFormat { found: version });
    }
    let (value, consumed) = bincode::serde::decode_from_slice(body, bincode::config::standard())?;
    if consumed != body.len() {
        return Err(StorageError::TrailingBytes {
            trailing: body.len() - consumed,
        });
    }
    Ok(value)
}

/// A stored snapshot as `(meta_bytes, data)`.
pub type SnapshotBytes = (Vec<u8>, Vec<u8>);

/// The single current snapshot, as opaque metadata and data bytes.
///
/// The state machine layer decides what the bytes mean; this store only guarantees that both
/// are replaced together atomically and durably.
#[derive(Clone)]
pub struct SnapshotStore {
    db: sled::Db,
    tree: sled::Tree,
}

impl SnapshotStore {
    /// Opens the `snapshot` tree of `db`.
    pub fn new(db: &sled::Db) -> Result<Self, StorageError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree(SNAPSHOT_TREE)?,
        })
    }

    /// Replaces the stored snapshot with `(meta_bytes, data)` in one atomic batch, then flushes.
    ///
    /// When this returns `Ok`, the new snapshot survives a crash.
    pub async fn save(&self, meta_bytes: Vec<u8>, data: Vec<u8>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_META_KEY, meta_bytes);
        batch.insert(SNAPSHOT_DATA_KEY, data);
        self.tree.apply_batch(batch)?;
        flush(&self.db).await
    }

    /// Returns the stored `(meta_bytes, data)`, or `None` if no snapshot was ever saved.
    pub fn load(&self) -> Result<Option<SnapshotBytes>, StorageError> {
        // Read both keys in one (read-only) transaction so a concurrent `save` cannot be seen
        // half-applied.
        let read: sled::transaction::TransactionResult<_, ()> = self
            .tree
            .transaction(|tx| Ok((tx.get(SNAPSHOT_META_KEY)?, tx.get(SNAPSHOT_DATA_KEY)?)));
        let (meta, data) = read.map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => StorageError::Sled(e),
            sled::transaction::TransactionError::Abort(()) => {
                StorageError::Corrupt("snapshot read transaction aborted".to_owned())
            }
        })?;
        match (meta, data) {
            (Some(meta), Some(data)) => Ok(Some((meta.to_vec(), data.to_vec()))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(StorageError::Corrupt(
                "snapshot metadata present without snapshot data".to_owned(),
            )),
            (None, Some(_)) => Err(StorageError::Corrupt(
                "snapshot data present without snapshot metadata".to_owned(),
            )),
        }
    }
}
