//! Tests of the sled Raft log store (`flocker::storage`): openraft's storage test suite,
//! durability across reopen and simulated crashes, corruption handling and concurrency.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flocker::storage::log_store::MAX_READ_BATCH_BYTES;
use flocker::storage::{decode, encode, flush, open_db, LogStore, SnapshotStore, StorageError};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine, Snapshot};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, LogState, Membership,
    RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Test type config and a minimal state machine (in memory; snapshots go to `SnapshotStore`).
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    key: String,
    value: String,
}

openraft::declare_raft_types!(
    pub TestConfig:
        D = Put,
        R = (),
        NodeId = u64,
        Node = BasicNode,
);

type C = TestConfig;
type RaftStorageError = openraft::StorageError<u64>;

#[derive(Default)]
struct SmState {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    data: BTreeMap<String, String>,
    snapshot_seq: u64,
}

#[derive(Clone)]
struct TestStateMachine {
    state: Arc<tokio::sync::Mutex<SmState>>,
    snapshots: SnapshotStore,
}

struct TestSnapshotBuilder {
    meta: SnapshotMeta<u64, BasicNode>,
    data: BTreeMap<String, String>,
    snapshots: SnapshotStore,
}

fn sm_err(e: &StorageError) -> RaftStorageError {
    StorageIOError::write_state_machine(AnyError::new(e)).into()
}

impl RaftSnapshotBuilder<C> for TestSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, RaftStorageError> {
        let data = encode(&self.data).map_err(|e| sm_err(&e))?;
        let meta_bytes = encode(&self.meta).map_err(|e| sm_err(&e))?;
        self.snapshots
            .save(meta_bytes, data.clone())
            .await
            .map_err(|e| sm_err(&e))?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<C> for TestStateMachine {
    type SnapshotBuilder = TestSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), RaftStorageError> {
        let state = self.state.lock().await;
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry<C>> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.state.lock().await;
        let mut replies = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(put) => {
                    state.data.insert(put.key, put.value);
                }
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let mut state = self.state.lock().await;
        state.snapshot_seq += 1;
        let snapshot_id = match state.last_applied {
            Some(log_id) => format!(
                "{}-{}-{}",
                log_id.leader_id, log_id.index, state.snapshot_seq
            ),
            None => format!("--{}", state.snapshot_seq),
        };
        TestSnapshotBuilder {
            meta: SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id,
            },
            data: state.data.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let bytes = snapshot.into_inner();
        let data: BTreeMap<String, String> = decode(&bytes).map_err(|e| sm_err(&e))?;
        let meta_bytes = encode(meta).map_err(|e| sm_err(&e))?;
        let mut state = self.state.lock().await;
        self.snapshots
            .save(meta_bytes, bytes)
            .await
            .map_err(|e| sm_err(&e))?;
        state.data = data;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, RaftStorageError> {
        let read_err = |e: &StorageError| -> RaftStorageError {
            StorageIOError::read_snapshot(None, AnyError::new(e)).into()
        };
        let Some((meta_bytes, data)) = self.snapshots.load().map_err(|e| read_err(&e))? else {
            return Ok(None);
        };
        let meta: SnapshotMeta<u64, BasicNode> = decode(&meta_bytes).map_err(|e| read_err(&e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Every `build` gets a fresh sled directory, kept alive by the returned `TempDir` guard.
struct SledBuilder;

impl StoreBuilder<C, LogStore<C>, TestStateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore<C>, TestStateMachine), RaftStorageError> {
        let io = |e: &(dyn std::error::Error + 'static)| -> RaftStorageError {
            StorageIOError::write(AnyError::from_dyn(e, None)).into()
        };
        let dir = tempfile::tempdir().map_err(|e| io(&e))?;
        let db = open_db(dir.path()).map_err(|e| io(&e))?;
        let snapshots = SnapshotStore::new(&db).map_err(|e| io(&e))?;
        let log = LogStore::new(db).map_err(|e| io(&e))?;
        let sm = TestStateMachine {
            state: Arc::new(tokio::sync::Mutex::new(SmState::default())),
            snapshots,
        };
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A mix of blank, normal and membership entries for `[from, to]`.
fn entries(term: u64, from: u64, to: u64) -> Vec<Entry<C>> {
    (from..=to)
        .map(|i| {
            let payload = match i % 5 {
                0 => EntryPayload::Blank,
                1 => {
                    EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], None))
                }
                _ => EntryPayload::Normal(Put {
                    key: format!("k{i}"),
                    value: format!("value of {i} in term {term}"),
                }),
            };
            Entry {
                log_id: log_id(term, i),
                payload,
            }
        })
        .collect()
}

fn big_entry(term: u64, index: u64, size: usize) -> Entry<C> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Put {
            key: format!("big{index}"),
            value: "x".repeat(size),
        }),
    }
}

/// Opens the db in `dir`, retrying while a just-dropped handle still holds sled's file lock.
async fn reopen(dir: &Path) -> (sled::Db, LogStore<C>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open_db(dir) {
            Ok(db) => {
                let store = LogStore::<C>::new(db.clone()).expect("open log store");
                return (db, store);
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen {}: {e}", dir.display()),
        }
    }
}

/// Copies the files of a live sled directory: what a process crash right now would leave.
fn crash_copy(src: &Path) -> TempDir {
    fn copy_dir(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).expect("mkdir");
        for item in std::fs::read_dir(src).expect("read_dir") {
            let item = item.expect("dir entry");
            let target = dst.join(item.file_name());
            if item.file_type().expect("file type").is_dir() {
                copy_dir(&item.path(), &target);
            } else {
                std::fs::copy(item.path(), &target).expect("copy");
            }
        }
    }
    let dst = tempfile::tempdir().expect("tempdir");
    copy_dir(src, dst.path());
    dst
}

async fn all_entries(store: &mut LogStore<C>) -> Vec<Entry<C>> {
    store.try_get_log_entries(..).await.expect("read log")
}

// ---------------------------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn state_survives_reopen_through_purge_and_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let written = entries(3, 1, 20);
    let vote = Vote::new_committed(3, 1);

    {
        let (_db, mut store) = reopen(dir.path()).await;
        assert_eq!(store.read_vote().await.unwrap(), None);
        assert_eq!(store.read_committed().await.unwrap(), None);
        assert_eq!(
            store.get_log_state().await.unwrap(),
            LogState {
                last_purged_log_id: None,
                last_log_id: None
            }
        );
        store.blocking_append(written[..5].to_vec()).await.unwrap();
        store.blocking_append(written[5..].to_vec()).await.unwrap();
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(log_id(3, 15))).await.unwrap();
    }

    {
        let (_db, mut store) = reopen(dir.path()).await;
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 15)));
        assert_eq!(all_entries(&mut store).await, written);
        assert_eq!(
            store.try_get_log_entries(4..=6).await.unwrap(),
            written[3..6].to_vec()
        );
        assert_eq!(
            store.get_log_state().await.unwrap(),
            LogState {
                last_purged_log_id: None,
                last_log_id: Some(log_id(3, 20))
            }
        );
        store.purge(log_id(3, 8)).await.unwrap();
    }

    {
        let (_db, mut store) = reopen(dir.path()).await;
        assert_eq!(
            store.get_log_state().await.unwrap(),
            LogState {
                last_purged_log_id: Some(log_id(3, 8)),
                last_log_id: Some(log_id(3, 20))
            }
        );
        assert_eq!(all_entries(&mut store).await, written[8..].to_vec());
        assert!(store.try_get_log_entries(0..=8).await.unwrap().is_empty());
        store.truncate(log_id(3, 15)).await.unwrap();
    }

    let replacement = entries(4, 15, 17);
    {
        let (_db, mut store) = reopen(dir.path()).await;
        assert_eq!(all_entries(&mut store).await, written[8..14].to_vec());
        assert!(store.try_get_log_entries(15..).await.unwrap().is_empty());
        assert_eq!(
            store.get_log_state().await.unwrap(),
            LogState {
                last_purged_log_id: Some(log_id(3, 8)),
                last_log_id: Some(log_id(3, 14))
            }
        );
        // Vote and committed are untouched by purge and truncate.
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 15)));
        store.blocking_append(replacement.clone()).await.unwrap();
        store.save_committed(None).await.unwrap();
    }

    {
        let (_db, mut store) = reopen(dir.path()).await;
        let mut expected = written[8..14].to_vec();
        expected.extend(replacement);
        assert_eq!(all_entries(&mut store).await, expected);
        assert_eq!(store.read_committed().await.unwrap(), None);
        // Purging everything leaves last_log_id = last_purged.
        store.purge(log_id(4, 17)).await.unwrap();
    }

    let (_db, mut store) = reopen(dir.path()).await;
    assert!(all_entries(&mut store).await.is_empty());
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: Some(log_id(4, 17)),
            last_log_id: Some(log_id(4, 17))
        }
    );
}

/// Without a clean shutdown (sled flushes when the last handle drops), only what was flushed
/// survives: copy the live directory right after each operation returns and open the copy.
#[tokio::test]
async fn flushed_writes_survive_a_simulated_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut store) = reopen(dir.path()).await;
    let written = entries(2, 1, 30);

    store.save_committed(Some(log_id(2, 3))).await.unwrap();
    // The callback fires only after the flush; at that point a crash must keep the entries,
    // and the committed pointer written before them.
    store.blocking_append(written.clone()).await.unwrap();
    {
        let copy = crash_copy(dir.path());
        let (_db2, mut crashed) = reopen(copy.path()).await;
        assert_eq!(all_entries(&mut crashed).await, written);
        assert_eq!(crashed.read_committed().await.unwrap(), Some(log_id(2, 3)));
    }

    let vote = Vote::new(5, 2);
    store.save_vote(&vote).await.unwrap();
    {
        let copy = crash_copy(dir.path());
        let (_db2, mut crashed) = reopen(copy.path()).await;
        assert_eq!(crashed.read_vote().await.unwrap(), Some(vote));
    }

    store.purge(log_id(2, 10)).await.unwrap();
    store.truncate(log_id(2, 25)).await.unwrap();
    {
        let copy = crash_copy(dir.path());
        let (_db2, mut crashed) = reopen(copy.path()).await;
        assert_eq!(all_entries(&mut crashed).await, written[10..24].to_vec());
        assert_eq!(
            crashed.get_log_state().await.unwrap(),
            LogState {
                last_purged_log_id: Some(log_id(2, 10)),
                last_log_id: Some(log_id(2, 24))
            }
        );
    }
}

/// Reopening finishes a purge whose deletions were lost: entries at or below `last_purged`
/// are removed, and `last_log_id` is never below `last_purged`.
#[tokio::test]
async fn reopen_finishes_an_interrupted_purge() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (db, mut store) = reopen(dir.path()).await;
        store.blocking_append(entries(1, 1, 10)).await.unwrap();
        // Simulate a crash between persisting last_purged and deleting the entries.
        let meta = db.open_tree("raft_meta").unwrap();
        meta.insert("last_purged", encode(&log_id(1, 12)).unwrap())
            .unwrap();
        flush(&db).await.unwrap();
        assert_eq!(
            store.get_log_state().await.unwrap(),
            LogState {
                last_purged_log_id: Some(log_id(1, 12)),
                last_log_id: Some(log_id(1, 12))
            }
        );
    }
    let (_db, mut store) = reopen(dir.path()).await;
    assert!(all_entries(&mut store).await.is_empty());
    assert_eq!(
        store.get_log_state().await.unwrap(),
        LogState {
            last_purged_log_id: Some(log_id(1, 12)),
            last_log_id: Some(log_id(1, 12))
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Reads: batch limit, corruption, encoding
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn limited_get_caps_batches_but_never_returns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut store) = reopen(dir.path()).await;
    let mib = 1024 * 1024;
    // 1..=10: 1 MiB each; 11: larger than the whole limit; 12: small.
    let mut written: Vec<Entry<C>> = (1..=10).map(|i| big_entry(1, i, mib)).collect();
    written.push(big_entry(1, 11, MAX_READ_BATCH_BYTES + mib));
    written.push(big_entry(1, 12, 10));
    store.blocking_append(written.clone()).await.unwrap();

    let first = store.limited_get_log_entries(1, 13).await.unwrap();
    assert!(!first.is_empty() && first.len() < 10, "got {}", first.len());
    assert_eq!(first, written[..first.len()].to_vec());

    // An entry bigger than the limit still comes back, alone.
    let huge = store.limited_get_log_entries(11, 13).await.unwrap();
    assert_eq!(huge, written[10..11].to_vec());

    // Paging through with the limit yields the whole range exactly once.
    let mut paged = Vec::new();
    let mut next = 1;
    while next < 13 {
        let batch = store.limited_get_log_entries(next, 13).await.unwrap();
        assert!(!batch.is_empty());
        next = batch.last().unwrap().log_id.index + 1;
        paged.extend(batch);
    }
    assert_eq!(paged, written);

    assert!(store
        .limited_get_log_entries(5, 5)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .limited_get_log_entries(13, 20)
        .await
        .unwrap()
        .is_empty());
    // Unbounded-style ranges do not overflow.
    assert_eq!(
        store.try_get_log_entries(12..=u64::MAX).await.unwrap(),
        written[11..].to_vec()
    );
    assert!(store
        .try_get_log_entries((
            std::ops::Bound::Excluded(u64::MAX),
            std::ops::Bound::Unbounded
        ))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn corrupt_entries_are_errors_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut store) = reopen(dir.path()).await;
    store.blocking_append(entries(1, 1, 5)).await.unwrap();
    let log = db.open_tree("raft_log").unwrap();

    // Garbage value.
    log.insert(3u64.to_be_bytes(), &b"\x01\xff\xff\xff"[..])
        .unwrap();
    assert!(store.try_get_log_entries(1..=5).await.is_err());
    assert!(store.limited_get_log_entries(3, 4).await.is_err());

    // A valid entry under the wrong index.
    log.insert(3u64.to_be_bytes(), encode(&entries(1, 4, 4)[0]).unwrap())
        .unwrap();
    assert!(store.try_get_log_entries(3..4).await.is_err());

    // Unknown format version of the last entry breaks get_log_state.
    let mut bytes = encode(&entries(1, 5, 5)[0]).unwrap();
    bytes[0] = 2;
    log.insert(5u64.to_be_bytes(), bytes).unwrap();
    assert!(store.get_log_state().await.is_err());

    // A corrupt vote is reported on read and when opening.
    let meta = db.open_tree("raft_meta").unwrap();
    meta.insert("vote", &b"\x01"[..]).unwrap();
    assert!(store.read_vote().await.is_err());
    assert!(LogStore::<C>::new(db.clone()).is_err());
}

#[test]
fn encoding_is_versioned_and_strict() {
    let value = (7u64, "seven".to_owned());
    let bytes = encode(&value).unwrap();
    assert_eq!(bytes[0], 1);
    assert_eq!(decode::<(u64, String)>(&bytes).unwrap(), value);

    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        decode::<(u64, String)>(&trailing),
        Err(StorageError::TrailingBytes { trailing: 1 })
    ));

    let mut version = bytes.clone();
    version[0] = 9;
    assert!(matches!(
        decode::<(u64, String)>(&version),
        Err(StorageError::UnsupportedFormat { found: 9 })
    ));

    assert!(matches!(decode::<u64>(&[]), Err(StorageError::EmptyValue)));
    assert!(matches!(
        decode::<(u64, String)>(&bytes[..bytes.len() - 1]),
        Err(StorageError::Decode(_))
    ));
}

#[tokio::test]
async fn snapshot_store_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_db(dir.path()).unwrap();
        let snapshots = SnapshotStore::new(&db).unwrap();
        assert_eq!(snapshots.load().unwrap(), None);
        snapshots
            .save(b"m1".to_vec(), b"d1".to_vec())
            .await
            .unwrap();
        snapshots
            .save(b"m2".to_vec(), vec![7; 3 * 1024 * 1024])
            .await
            .unwrap();
        let copy = crash_copy(dir.path());
        let db2 = open_db(copy.path()).unwrap();
        assert_eq!(
            SnapshotStore::new(&db2).unwrap().load().unwrap(),
            Some((b"m2".to_vec(), vec![7; 3 * 1024 * 1024]))
        );
    }
    let (db, _store) = reopen(dir.path()).await;
    assert_eq!(
        SnapshotStore::new(&db).unwrap().load().unwrap(),
        Some((b"m2".to_vec(), vec![7; 3 * 1024 * 1024]))
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

/// Many appends (with purges, truncates and votes mixed in, from clones) interleaved with reads
/// from other tasks: no deadlock, and no reader ever sees a hole or a mix of old and new
/// entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_and_reads_interleave_without_deadlock() {
    const APPENDS: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let (_db, store) = reopen(dir.path()).await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let writer = {
        let mut store = store.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut term = 1;
            let mut next = 1;
            for round in 0..APPENDS {
                let batch = entries(term, next, next + (round % 3));
                next += batch.len() as u64;
                let started = Instant::now();
                store.blocking_append(batch).await.unwrap();
                latencies.push(started.elapsed());
                if round % 50 == 49 {
                    // A new term overwrites the last few entries.
                    term += 1;
                    next -= 3;
                    store.truncate(log_id(term - 1, next)).await.unwrap();
                }
                if round % 80 == 79 {
                    let upto = next - 20;
                    let at = store.try_get_log_entries(upto..=upto).await.unwrap();
                    store.purge(at[0].log_id).await.unwrap();
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            latencies
        })
    };

    let voter = {
        let mut store = store.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut term = 1;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                store.save_vote(&Vote::new(term, 1)).await.unwrap();
                term += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            term
        })
    };

    let mut readers = Vec::new();
    for limited in [false, true] {
        let mut reader = store.clone().get_log_reader().await;
        let done = Arc::clone(&done);
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let got = if limited {
                    reader.limited_get_log_entries(0, u64::MAX).await.unwrap()
                } else {
                    reader.try_get_log_entries(..).await.unwrap()
                };
                for pair in got.windows(2) {
                    assert_eq!(pair[0].log_id.index + 1, pair[1].log_id.index, "hole");
                    assert!(pair[0].log_id <= pair[1].log_id, "mixed terms");
                }
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        }));
    }

    let all = async {
        let latencies = writer.await.unwrap();
        let votes = voter.await.unwrap();
        let mut reads = Vec::new();
        for r in readers {
            reads.push(r.await.unwrap());
        }
        (latencies, votes, reads)
    };
    let (mut latencies, votes, reads) = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("appends and reads deadlocked");

    latencies.sort();
    let total: Duration = latencies.iter().sum();
    eprintln!(
        "append+flush over {} appends: mean {:?}, p50 {:?}, p99 {:?}, max {:?}; {} votes saved; reads {:?}",
        latencies.len(),
        total / latencies.len() as u32,
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1],
        votes - 1,
        reads
    );
    assert!(reads.iter().all(|&r| r > 0));

    let mut store = store;
    let state = store.get_log_state().await.unwrap();
    let got = all_entries(&mut store).await;
    assert_eq!(state.last_log_id, got.last().map(|e| e.log_id));
    assert_eq!(
        state.last_purged_log_id.map(|l| l.index + 1),
        got.first().map(|e| e.log_id.index)
    );
}
