//! Durability of the real `flocker-control` binary: SIGKILL at any moment loses nothing
//! that was acknowledged, and a restart on the same data path serves the same
//! configuration under the same tag (ARCHITECTURE.md, correctness contract 4 and 7).
//!
//! Each test runs the binary on loopback port 0, reads the addresses it announces on
//! stdout, and kills it with SIGKILL by PID. A guard kills the process if a test fails.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{wait_for, Pki};
use flocker::client::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_flocker-control");
const LOOPBACK_PORT_0: &str = "tcp:0:interface=127.0.0.1";

/// Whether this build of the binary has a peer (Raft) port, which must then be bound to
/// port 0 as well.
fn has_peer_port() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let help = Command::new(BINARY).arg("--help").output().unwrap();
        String::from_utf8_lossy(&help.stdout).contains("--peer-port")
    })
}

/// A running `flocker-control` process. Dropping it kills the process.
struct ControlProcess {
    child: Option<Child>,
    api: SocketAddr,
    log: PathBuf,
}

impl ControlProcess {
    fn start(pki: &Pki, data: &Path, log: &Path, extra: &[&str]) -> ControlProcess {
        let mut command = Command::new(BINARY);
        command
            .arg("--data-path")
            .arg(data)
            .arg("--certificates-directory")
            .arg(&pki.dir)
            .args(["--port", LOOPBACK_PORT_0, "--agent-port", LOOPBACK_PORT_0])
            .args(["--leader-wait", "10"])
            .args(extra);
        if has_peer_port() {
            command.args(["--peer-port", LOOPBACK_PORT_0]);
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // The guard exists before anything can fail, so the process cannot outlive us.
        let stdout = child.stdout.take().unwrap();
        let mut process = ControlProcess {
            child: Some(child),
            api: "0.0.0.0:0".parse().unwrap(),
            log: log.to_owned(),
        };
        let (lines, line) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines() {
                let Ok(text) = text else { return };
                if lines.send(text).is_err() {
                    return;
                }
            }
        });
        let ready = line
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!(
                    "flocker-control did not announce its ports ({e}); log:\n{}",
                    process.log_text()
                )
            });
        assert!(
            ready.starts_with("flocker-control listening "),
            "unexpected first line {ready:?}"
        );
        let address = |key: &str| -> SocketAddr {
            ready
                .split_whitespace()
                .find_map(|word| word.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {ready:?}"))
                .parse()
                .unwrap()
        };
        process.api = address("api=");
        address("agent=");
        process
    }

    fn pid(&self) -> libc::pid_t {
        let child = self.child.as_ref().expect("process is running");
        libc::pid_t::try_from(child.id()).unwrap()
    }

    fn client(&self, pki: &Pki) -> Client {
        Client::new(&format!("https://{}", self.api), &pki.user()).unwrap()
    }

    /// SIGKILL the process by PID and reap it.
    fn kill(&mut self) {
        if let Err(e) = self.terminate() {
            panic!("killing flocker-control: {e}");
        }
    }

    fn terminate(&mut self) -> std::io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = libc::pid_t::try_from(child.id()).expect("PIDs fit pid_t");
        // SAFETY: kill(2) on the PID of our own child, which is not reaped yet (even if it
        // exited it is a zombie), so the PID cannot belong to another process.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        child.wait().map(|_| ())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        if let Err(e) = self.terminate() {
            eprintln!("killing flocker-control: {e}");
        }
    }
}

/// Everything a client can read back of the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
struct Config {
    datasets: BTreeMap<String, Value>,
    containers: BTreeMap<String, Value>,
    leases: BTreeMap<String, Value>,
}

fn keyed(list: &Value, key: &str) -> BTreeMap<String, Value> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| (item[key].as_str().unwrap().to_owned(), item.clone()))
        .collect()
}

/// The configuration and its tag, read after a restart (the first request may wait for
/// the node to elect itself).
async fn read_config(client: &Client) -> (Config, String) {
    let datasets = client.get("/v1/configuration/datasets").await.unwrap();
    assert_eq!(datasets.status, StatusCode::OK, "{:?}", datasets.body);
    let tag = datasets
        .header("x-configuration-tag")
        .expect("the tag header")
        .to_owned();
    let containers = client.get("/v1/configuration/containers").await.unwrap();
    let leases = client.get("/v1/configuration/leases").await.unwrap();
    assert_eq!(containers.status, StatusCode::OK);
    assert_eq!(leases.status, StatusCode::OK);
    let config = Config {
        datasets: keyed(&datasets.body, "dataset_id"),
        containers: keyed(&containers.body, "name"),
        leases: keyed(&leases.body, "dataset_id"),
    };
    (config, tag)
}

/// The configuration as the acknowledged writes left it, built from their responses.
#[derive(Default)]
struct Acknowledged {
    config: Config,
    writes: usize,
}

impl Acknowledged {
    fn expect(&mut self, reply: &flocker::client::Reply, status: StatusCode, what: &str) {
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        self.writes += 1;
    }

    /// Create a dataset; returns its id.
    async fn create_dataset(&mut self, client: &Client, body: Value, tag: Option<&str>) -> String {
        let reply = match tag {
            Some(tag) => {
                client
                    .post_if("/v1/configuration/datasets", tag, &body)
                    .await
            }
            None => client.post("/v1/configuration/datasets", &body).await,
        }
        .unwrap();
        self.expect(&reply, StatusCode::CREATED, "create dataset");
        let id = reply.body["dataset_id"].as_str().unwrap().to_owned();
        self.config.datasets.insert(id.clone(), reply.body);
        id
    }

    async fn move_dataset(&mut self, client: &Client, id: &str, primary: &str, tag: &str) {
        let path = format!("/v1/configuration/datasets/{id}");
        let reply = client
            .post_if(&path, tag, &json!({ "primary": primary }))
            .await
            .unwrap();
        self.expect(&reply, StatusCode::OK, "move dataset");
        self.config.datasets.insert(id.to_owned(), reply.body);
    }

    async fn delete_dataset(&mut self, client: &Client, id: &str) {
        let path = format!("/v1/configuration/datasets/{id}");
        let reply = client.delete(&path).await.unwrap();
        self.expect(&reply, StatusCode::OK, "delete dataset");
        self.config.datasets.insert(id.to_owned(), reply.body);
    }

    async fn create_container(&mut self, client: &Client, body: Value) {
        let reply = client
            .post("/v1/configuration/containers", &body)
            .await
            .unwrap();
        self.expect(&reply, StatusCode::CREATED, "create container");
        let name = reply.body["name"].as_str().unwrap().to_owned();
        self.config.containers.insert(name, reply.body);
    }

    async fn move_container(&mut self, client: &Client, name: &str, node: &str) {
        let path = format!("/v1/configuration/containers/{name}");
        let reply = client
            .post(&path, &json!({ "node_uuid": node }))
            .await
            .unwrap();
        self.expect(&reply, StatusCode::OK, "move container");
        // An attached dataset follows its container.
        if let Some(id) = reply.body["volumes"][0]["dataset_id"].as_str() {
            self.config.datasets.get_mut(id).unwrap()["primary"] = json!(node);
        }
        self.config.containers.insert(name.to_owned(), reply.body);
    }

    async fn delete_container(&mut self, client: &Client, name: &str) {
        let path = format!("/v1/configuration/containers/{name}");
        let reply = client.delete(&path).await.unwrap();
        self.expect(&reply, StatusCode::OK, "delete container");
        self.config.containers.remove(name);
    }

    async fn acquire_lease(&mut self, client: &Client, dataset: &str, node: &str) {
        let body = json!({"dataset_id": dataset, "node_uuid": node, "expires": null});
        let reply = client
            .post("/v1/configuration/leases", &body)
            .await
            .unwrap();
        assert!(reply.status.is_success(), "acquire lease: {}", reply.body);
        self.writes += 1;
        self.config.leases.insert(dataset.to_owned(), reply.body);
    }

    async fn release_lease(&mut self, client: &Client, dataset: &str) {
        let path = format!("/v1/configuration/leases/{dataset}");
        let reply = client.delete(&path).await.unwrap();
        self.expect(&reply, StatusCode::OK, "release lease");
        self.config.leases.remove(dataset);
    }
}

fn u() -> String {
    Uuid::new_v4().to_string()
}

/// One round of every kind of write, some conditional, some undoing earlier ones.
async fn write_round(client: &Client, acked: &mut Acknowledged, round: usize) {
    let (a, b) = (u(), u());
    let (_, tag) = client.datasets().await.unwrap();
    let chosen = u();
    acked
        .create_dataset(
            client,
            json!({"primary": a, "dataset_id": chosen, "metadata": {"round": round.to_string()}}),
            Some(&tag),
        )
        .await;
    let generated = acked
        .create_dataset(
            client,
            json!({"primary": a, "maximum_size": 67108864 * (round as u64 + 1)}),
            None,
        )
        .await;
    let mounted = u();
    acked
        .create_dataset(client, json!({"primary": a, "dataset_id": mounted}), None)
        .await;
    let (_, tag) = client.datasets().await.unwrap();
    acked.move_dataset(client, &chosen, &b, &tag).await;
    acked.delete_dataset(client, &generated).await;

    let web = format!("web{round}");
    let db = format!("db{round}");
    acked
        .create_container(
            client,
            json!({"node_uuid": a, "name": web, "image": "nginx",
                   "ports": [{"internal": 80, "external": 8000 + round}]}),
        )
        .await;
    acked
        .create_container(
            client,
            json!({"node_uuid": a, "name": db, "image": "postgres:9",
                   "volumes": [{"dataset_id": mounted, "mountpoint": "/data"}],
                   "restart_policy": {"name": "on-failure", "maximum_retry_count": 3}}),
        )
        .await;
    acked.move_container(client, &db, &b).await;
    let gone = format!("gone{round}");
    acked
        .create_container(
            client,
            json!({"node_uuid": b, "name": gone, "image": "busybox"}),
        )
        .await;
    acked.delete_container(client, &gone).await;

    acked.acquire_lease(client, &chosen, &b).await;
    acked.acquire_lease(client, &mounted, &b).await;
    acked.release_lease(client, &chosen).await;
}

// Every acknowledged write (datasets, conditional or not, containers, leases, and the
// moves and deletes among them) survives repeated SIGKILLs and restarts, and the
// configuration tag after each restart is the last one read before the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::create(&tmp.path().join("certs"), 0);
    let data = tmp.path().join("data");
    let log = tmp.path().join("control.log");
    let mut acked = Acknowledged::default();
    let mut last_tag: Option<String> = None;
    for round in 0..4 {
        let mut control = ControlProcess::start(&pki, &data, &log, &[]);
        let client = control.client(&pki);
        let (recovered, tag) = read_config(&client).await;
        assert_eq!(
            recovered, acked.config,
            "round {round}: recovered configuration"
        );
        if let Some(last) = &last_tag {
            assert_eq!(&tag, last, "round {round}: tag after restart");
        }
        write_round(&client, &mut acked, round).await;
        let (config, tag) = read_config(&client).await;
        assert_eq!(config, acked.config, "round {round}: before the kill");
        last_tag = Some(tag);
        control.kill();
    }
    assert!(acked.writes >= 4 * 13, "{} writes", acked.writes);
}

/// What the concurrent writers got acknowledged and what they tried.
#[derive(Default)]
struct Ledger {
    acked_datasets: BTreeMap<String, Value>,
    acked_containers: BTreeMap<String, Value>,
    acked_leases: BTreeMap<String, Value>,
    attempted: Vec<String>,
}

/// Writer `w`: create a dataset, a container and a lease per step until a request fails.
async fn writer(client: Client, w: usize, ledger: Arc<Mutex<Ledger>>) {
    let node = u();
    for step in 0.. {
        let id = u();
        let name = format!("w{w}s{step}");
        ledger
            .lock()
            .unwrap()
            .attempted
            .extend([id.clone(), name.clone()]);
        let body = json!({"primary": node, "dataset_id": id});
        let Ok(reply) = client.post("/v1/configuration/datasets", &body).await else {
            return;
        };
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        ledger
            .lock()
            .unwrap()
            .acked_datasets
            .insert(id.clone(), reply.body);
        let body = json!({"node_uuid": node, "name": name, "image": "busybox"});
        let Ok(reply) = client.post("/v1/configuration/containers", &body).await else {
            return;
        };
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        ledger
            .lock()
            .unwrap()
            .acked_containers
            .insert(name, reply.body);
        let body = json!({"dataset_id": id, "node_uuid": node, "expires": null});
        let Ok(reply) = client.post("/v1/configuration/leases", &body).await else {
            return;
        };
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        ledger.lock().unwrap().acked_leases.insert(id, reply.body);
    }
}

// A SIGKILL while 16 writers have requests in flight loses none of the writes that got a
// 2xx, invents none that were never sent, and the recovered configuration and its tag are
// stable across a further restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_concurrent_writes_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::create(&tmp.path().join("certs"), 0);
    let data = tmp.path().join("data");
    let log = tmp.path().join("control.log");
    let mut control = ControlProcess::start(&pki, &data, &log, &[]);
    let client = control.client(&pki);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let writers: Vec<_> = (0..16)
        .map(|w| tokio::spawn(writer(client.clone(), w, ledger.clone())))
        .collect();
    wait_for("150 acknowledged writes", Duration::from_secs(60), || {
        let ledger = ledger.clone();
        async move {
            let l = ledger.lock().unwrap();
            let acked = l.acked_datasets.len() + l.acked_containers.len() + l.acked_leases.len();
            (acked >= 150).then_some(())
        }
    })
    .await;
    let pid = control.pid();
    control.kill();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("writers stop once the node is gone")
            .expect("writer did not panic");
    }
    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();

    let mut control = ControlProcess::start(&pki, &data, &log, &[]);
    assert_ne!(control.pid(), pid);
    let client = control.client(&pki);
    let (recovered, tag) = read_config(&client).await;
    println!(
        "acknowledged before the kill: {} datasets, {} containers, {} leases; recovered: {} \
         datasets, {} containers, {} leases",
        ledger.acked_datasets.len(),
        ledger.acked_containers.len(),
        ledger.acked_leases.len(),
        recovered.datasets.len(),
        recovered.containers.len(),
        recovered.leases.len()
    );
    for (id, ack) in &ledger.acked_datasets {
        assert_eq!(
            recovered.datasets.get(id),
            Some(ack),
            "acknowledged dataset"
        );
    }
    for (name, ack) in &ledger.acked_containers {
        assert_eq!(recovered.containers.get(name), Some(ack), "acked container");
    }
    for (id, ack) in &ledger.acked_leases {
        assert_eq!(recovered.leases.get(id), Some(ack), "acknowledged lease");
    }
    let attempted: std::collections::BTreeSet<&String> = ledger.attempted.iter().collect();
    for key in recovered
        .datasets
        .keys()
        .chain(recovered.containers.keys())
        .chain(recovered.leases.keys())
    {
        assert!(attempted.contains(key), "{key} was never written");
    }
    control.kill();

    let control = ControlProcess::start(&pki, &data, &log, &[]);
    let (again, again_tag) = read_config(&control.client(&pki)).await;
    assert_eq!(again, recovered);
    assert_eq!(again_tag, tag);
}

/// The raft log's last index and the stored snapshot's last index and state, read from
/// the data directory of a stopped node.
fn inspect_storage(data: &Path) -> (u64, Option<(u64, flocker::model::State)>) {
    let db = flocker::storage::open_db(&data.join("raft.sled")).unwrap();
    let log = db.open_tree("raft_log").unwrap();
    let (key, _) = log.last().unwrap().expect("a non-empty log");
    let last_index = u64::from_be_bytes(key.as_ref().try_into().unwrap());
    let snapshot = flocker::storage::SnapshotStore::new(&db)
        .unwrap()
        .load()
        .unwrap()
        .map(|(meta, data)| {
            let meta: openraft::SnapshotMeta<u64, flocker::raft::ControlNode> =
                flocker::storage::decode(&meta).unwrap();
            let state: flocker::model::State = flocker::storage::decode(&data).unwrap();
            (meta.last_log_id.map_or(0, |l| l.index), state)
        });
    (last_index, snapshot)
}

// With a snapshot every 5 entries, a node killed after more writes than that recovers
// every acknowledged write from the snapshot plus the log entries after it, under the
// same tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_through_a_snapshot_and_log_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::create(&tmp.path().join("certs"), 0);
    let data = tmp.path().join("data");
    let log = tmp.path().join("control.log");
    let flags = ["--snapshot-every", "5"];
    let mut acked = Acknowledged::default();
    let mut last_tag: Option<String> = None;
    let mut replayed_after_snapshot = 0;
    for round in 0..4 {
        let mut control = ControlProcess::start(&pki, &data, &log, &flags);
        let client = control.client(&pki);
        let (recovered, tag) = read_config(&client).await;
        assert_eq!(
            recovered, acked.config,
            "round {round}: recovered configuration"
        );
        if let Some(last) = &last_tag {
            assert_eq!(&tag, last, "round {round}: tag after restart");
        }
        // 7 writes the first time, then 3 or 4, so the last snapshot rarely ends the log.
        for _ in 0..if round == 0 { 7 } else { 3 + round % 2 } {
            acked
                .create_dataset(&client, json!({"primary": u()}), None)
                .await;
        }
        let (config, tag) = read_config(&client).await;
        assert_eq!(config, acked.config);
        last_tag = Some(tag);
        control.kill();

        let (last_index, snapshot) = inspect_storage(&data);
        let (snapshot_index, state) = snapshot.expect("a snapshot after more than 5 entries");
        println!(
            "round {round}: log ends at {last_index}, snapshot at {snapshot_index} holds {} of \
             {} datasets",
            state.config.datasets.len(),
            acked.config.datasets.len()
        );
        assert!(snapshot_index <= last_index);
        assert!(
            !state.config.datasets.is_empty(),
            "the snapshot holds configuration"
        );
        if snapshot_index < last_index && state.config.datasets.len() < acked.config.datasets.len()
        {
            // Recovery must replay the log after this snapshot to get everything back.
            replayed_after_snapshot += 1;
        }
    }
    assert!(
        replayed_after_snapshot > 0,
        "no restart needed a log replay after its snapshot"
    );
    let control = ControlProcess::start(&pki, &data, &log, &flags);
    let (recovered, tag) = read_config(&control.client(&pki)).await;
    assert_eq!(recovered, acked.config);
    assert_eq!(Some(tag), last_tag);
}
