//! Failure behaviour of a 3-node cluster of real `flocker-control` processes: SIGKILL of
//! the leader under write load, SIGSTOP/SIGCONT, a minority that must refuse service,
//! killing every node, and catching up through a snapshot after log compaction.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flocker::client::Client;
use flocker::cluster_config::ClusterFile;
use flocker::local_cluster::LocalCluster;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

fn cluster(dir: &Path, extra: &[&str]) -> LocalCluster {
    let file = ClusterFile::parse(
        "[[control]]\nid = 1\n[[control]]\nid = 2\n[[control]]\nid = 3\n[agents]\nnodes = 0\n",
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_flocker-control"))
        .parent()
        .unwrap();
    let mut c = LocalCluster::prepare(dir, file, bin).unwrap();
    c.control_args = extra.iter().map(|s| s.to_string()).collect();
    c.start_all_controls().unwrap();
    c
}

async fn create(client: &Client) -> Option<String> {
    let body = json!({"primary": Uuid::new_v4().to_string()});
    let r = client
        .post("/v1/configuration/datasets", &body)
        .await
        .ok()?;
    (r.status == StatusCode::CREATED).then(|| r.body["dataset_id"].as_str().unwrap().to_owned())
}

async fn ids_on(client: &Client) -> BTreeSet<String> {
    let (list, _) = client.datasets().await.unwrap();
    list.iter()
        .map(|d| d["dataset_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An acknowledged create: when it was sent, when it was acknowledged, the dataset id.
type Acked = (Instant, Instant, String);

/// What the writers share with the test: when to stop, and what they have seen.
#[derive(Default)]
struct Progress {
    stop: bool,
    acknowledged: usize,
    /// Set by the test when it kills the leader.
    killed_at: Option<Instant>,
    /// A write sent after `killed_at` was acknowledged.
    acked_after_kill: bool,
}

/// Writers on every node until `stop`; returns every acknowledged create.
fn spawn_writers(
    c: &LocalCluster,
    progress: Arc<Mutex<Progress>>,
) -> Vec<tokio::task::JoinHandle<Vec<Acked>>> {
    let mut tasks = Vec::new();
    for i in 0..6 {
        let client = c.client(c.ids()[i % 3]).unwrap();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            while !progress.lock().unwrap().stop {
                let sent = Instant::now();
                if let Some(id) = create(&client).await {
                    let mut p = progress.lock().unwrap();
                    p.acknowledged += 1;
                    p.acked_after_kill |= p.killed_at.is_some_and(|k| sent > k);
                    acked.push((sent, Instant::now(), id));
                }
            }
            acked
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_under_load_loses_nothing() {
    // Property: SIGKILL of the leader under write load: a new leader serves writes, no
    // acknowledged write is lost, and the killed node restarts and catches up.
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cluster(tmp.path(), &["--leader-wait", "3"]);
    let leader = c.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let writers = spawn_writers(&c, progress.clone());
    wait_until(
        "writes under way before the kill",
        Duration::from_secs(20),
        || async { progress.lock().unwrap().acknowledged >= 50 },
    )
    .await;
    let killed_at = Instant::now();
    c.kill(leader).unwrap();
    progress.lock().unwrap().killed_at = Some(killed_at);
    let survivors: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    wait_until(
        "a write sent after the kill to succeed",
        Duration::from_secs(20),
        || async { progress.lock().unwrap().acked_after_kill },
    )
    .await;
    progress.lock().unwrap().stop = true;
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    // Writes sent after the kill: the first acknowledgement among them measures the
    // write unavailability.
    let after: Vec<_> = acked
        .iter()
        .filter(|(sent, _, _)| *sent > killed_at)
        .collect();
    assert!(!after.is_empty(), "no write sent after the kill succeeded");
    let first = after.iter().map(|(_, done, _)| *done).min().unwrap();
    eprintln!(
        "kill -> first acknowledged write sent after it: {:?}",
        first - killed_at
    );
    let ids: BTreeSet<String> = acked.into_iter().map(|(_, _, id)| id).collect();
    for id in &survivors {
        let present = ids_on(&c.client(*id).unwrap()).await;
        assert!(
            ids.is_subset(&present),
            "node {id} lost acknowledged writes"
        );
    }
    // The killed node restarts and catches up.
    c.start_control(leader).unwrap();
    let restarted = c.client(leader).unwrap();
    wait_until(
        "the restarted node to serve reads",
        Duration::from_secs(20),
        || async {
            restarted
                .get("/v1/configuration/datasets")
                .await
                .is_ok_and(|r| r.status == StatusCode::OK)
        },
    )
    .await;
    assert!(ids.is_subset(&ids_on(&restarted).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_replaced_and_catches_up() {
    // Property: a SIGSTOPped leader is replaced; after SIGCONT it follows the new leader
    // and has every write made while it was stopped.
    let tmp = tempfile::tempdir().unwrap();
    let c = cluster(tmp.path(), &["--leader-wait", "3"]);
    let leader = c.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    c.signal(leader, libc::SIGSTOP).unwrap();
    let other = c
        .client(c.ids().into_iter().find(|id| *id != leader).unwrap())
        .unwrap();
    let mut written = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while written.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "no progress without the paused leader"
        );
        if let Some(id) = create(&other).await {
            written.push(id);
        }
    }
    c.signal(leader, libc::SIGCONT).unwrap();
    let old = c.client(leader).unwrap();
    wait_until(
        "the old leader to catch up",
        Duration::from_secs(20),
        || async {
            let Ok(reply) = old.get("/v1/configuration/datasets").await else {
                return false;
            };
            let present: BTreeSet<String> = reply.body.as_array().map_or_else(BTreeSet::new, |l| {
                l.iter()
                    .filter_map(|d| d["dataset_id"].as_str().map(str::to_owned))
                    .collect()
            });
            written.iter().all(|id| present.contains(id))
        },
    )
    .await;
    let status = old.get("/admin/v1/status").await.unwrap().body;
    assert_ne!(
        status["leader"],
        json!(leader),
        "the paused node must have stepped down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_refuses_writes_and_stale_reads() {
    // Property: a node cut off from the majority answers 503 to writes and to
    // linearizable reads within the bounded wait, never a stale configuration; a stale
    // read is available on request; after healing everything converges.
    let tmp = tempfile::tempdir().unwrap();
    let c = cluster(tmp.path(), &["--leader-wait", "2"]);
    let leader = c.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    let lonely = c.client(leader).unwrap();
    create(&lonely).await.expect("a write before the isolation");
    for id in &others {
        c.signal(*id, libc::SIGSTOP).unwrap();
    }
    let began = Instant::now();
    let r = lonely
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": Uuid::new_v4().to_string()}),
        )
        .await
        .unwrap();
    assert!(
        r.status == StatusCode::SERVICE_UNAVAILABLE || r.status == StatusCode::GATEWAY_TIMEOUT,
        "minority write answered {}",
        r.status
    );
    assert!(r.description().is_some());
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "the wait must be bounded"
    );
    let r = lonely.get("/v1/configuration/datasets").await.unwrap();
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a minority must not serve a linearizable read"
    );
    let r = lonely
        .get("/v1/configuration/datasets?consistency=stale")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "stale reads stay available");
    for id in &others {
        c.signal(*id, libc::SIGCONT).unwrap();
    }
    wait_until(
        "the cluster to accept writes again",
        Duration::from_secs(20),
        || async { create(&lonely).await.is_some() },
    )
    .await;
    let expected = ids_on(&lonely).await;
    for id in c.ids() {
        let client = c.client(id).unwrap();
        wait_until(
            "every node to converge",
            Duration::from_secs(20),
            || async {
                client
                    .datasets()
                    .await
                    .is_ok_and(|(list, _)| list.len() == expected.len())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_node_loses_nothing() {
    // Property: after SIGKILL of all nodes and a restart, every acknowledged write is
    // there and the configuration tag is unchanged.
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cluster(tmp.path(), &[]);
    c.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let mut acked = BTreeSet::new();
    for i in 0..30 {
        let client = c.client(c.ids()[i % 3]).unwrap();
        acked.insert(create(&client).await.expect("a write on a healthy cluster"));
    }
    let (_, tag) = c.client(1).unwrap().datasets().await.unwrap();
    for id in c.ids() {
        c.kill(id).unwrap();
    }
    c.start_all_controls().unwrap();
    c.wait_for_leader(Duration::from_secs(30)).await.unwrap();
    for id in c.ids() {
        let client = c.client(id).unwrap();
        let (list, after) = client.datasets().await.unwrap();
        let present: BTreeSet<String> = list
            .iter()
            .map(|d| d["dataset_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(present, acked, "node {id}");
        assert_eq!(after, tag, "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_through_compaction_catches_up_by_snapshot() {
    // Property: with the log compacted while a node was down, the node is brought up to
    // date by a snapshot install and then serves everything.
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cluster(tmp.path(), &["--snapshot-every", "20"]);
    let leader = c.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let down = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.kill(down).unwrap();
    let client = c.client(leader).unwrap();
    let mut acked = BTreeSet::new();
    for _ in 0..120 {
        acked.insert(create(&client).await.expect("writes with a majority up"));
    }
    let status = client.get("/admin/v1/status").await.unwrap().body;
    assert!(
        status["purged_index"].as_u64().is_some(),
        "the leader compacted its log: {status}"
    );
    c.start_control(down).unwrap();
    let back = c.client(down).unwrap();
    wait_until(
        "the restarted node to install a snapshot",
        Duration::from_secs(30),
        || async {
            back.get("/admin/v1/status").await.is_ok_and(|r| {
                r.body["snapshot_index"].as_u64().is_some()
                    && r.body["applied_index"].as_u64() >= status["applied_index"].as_u64()
            })
        },
    )
    .await;
    let present = ids_on(&back).await;
    assert!(acked.is_subset(&present));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_online_and_another_leaves_through_the_cli() {
    // Property: a fourth control node started with --join is added as a learner and
    // promoted to voter with `flocker-cluster add`/`voters`, then serves linearizable
    // reads of everything written before; a removed node leaves the membership.
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let c = cluster(tmp.path(), &[]);
    c.wait_for_leader(Duration::from_secs(20)).await.unwrap();
    let before = create(&c.client(1).unwrap()).await.expect("a write");

    let bin = Path::new(env!("CARGO_BIN_EXE_flocker-control"));
    let mut joiner = std::process::Command::new(bin)
        .args(["--node-id", "4", "--join"])
        .arg("--data-path")
        .arg(tmp.path().join("control-4"))
        .arg("--certificates-directory")
        .arg(c.certs())
        .args(["--port", "tcp:0:interface=127.0.0.1"])
        .args(["--agent-port", "tcp:0:interface=127.0.0.1"])
        .args(["--peer-port", "tcp:0:interface=127.0.0.1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    std::io::BufReader::new(joiner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _guard = Reap(joiner);
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let (api, peer) = (field("api"), field("peer"));

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flocker-cluster"))
            .args(args)
            .arg("--dir")
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let status = cli(&["add", "--id", "4", "--raft-addr", &peer, "--api-addr", &api]);
    assert_eq!(status["learners"], json!([4]));
    let status = cli(&["voters", "1,2,3,4"]);
    assert_eq!(status["voters"], json!([1, 2, 3, 4]));

    let fourth = Client::new(&format!("https://{api}"), &c.admin_tls()).unwrap();
    let present = ids_on(&fourth).await;
    assert!(
        present.contains(&before),
        "the new member serves what was written before"
    );
    let after = create(&fourth)
        .await
        .expect("a write through the new member");
    assert!(ids_on(&c.client(2).unwrap()).await.contains(&after));

    let status = cli(&["remove", "3"]);
    assert_eq!(status["voters"], json!([1, 2, 4]));
}
