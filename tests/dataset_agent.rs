//! The dataset agent end to end: a real control node in this process, agents either in
//! this process (each on its own thread and runtime) or as the built binary, and real
//! loop devices, ext4 filesystems and mounts. Plus property tests of the planner against
//! a simulated backend.
//!
//! Every test works in its own temporary directory (shared "block storage" root, one
//! mount root per agent); a guard unmounts everything mounted under it and detaches
//! every loop device bound to a file under it, even when the test fails. Agents are
//! stopped (in-process) or killed by PID (binaries) before that guard runs.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flocker::agent::dataset::backend::directory::DirectoryBackend;
use flocker::agent::dataset::backend::loopback::{loop_devices, LoopbackBackend};
use flocker::agent::dataset::backend::{
    mount_table, Backend, BackendError, ObservedVolume, VolumeState,
};
use flocker::agent::dataset::planner::Waiting;
use flocker::agent::dataset::{
    AgentConfig, AgentStatus, DatasetAgent, DirectoryConfig, LoopbackConfig, Timing, FAILPOINTS_ENV,
};
use flocker::client::Client;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

use common::{wait_for, Pki, Single};

/// Generous: two cores shared with concurrent compilations.
const PATIENCE: Duration = Duration::from_secs(90);
const SIZE: u64 = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Sandbox, agents and guards

/// A temporary directory whose mounts and loop devices are cleaned up on drop.
struct Sandbox {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap();
        Sandbox { _dir: dir, path }
    }

    /// The backend root shared by all agents (their "block storage").
    fn storage(&self) -> PathBuf {
        self.path.join("storage")
    }

    fn mount_root(&self, node: usize) -> PathBuf {
        self.path.join(format!("mnt-{node}"))
    }

    fn mount_path(&self, node: usize, dataset: &str) -> PathBuf {
        self.mount_root(node).join(dataset)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        cleanup_under(&self.path);
    }
}

fn cleanup_under(root: &Path) {
    for _ in 0..3 {
        let mut targets: Vec<PathBuf> = mount_table()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.target)
            .filter(|t| t.starts_with(root))
            .collect();
        if targets.is_empty() {
            break;
        }
        targets.sort_by_key(|t| std::cmp::Reverse(t.components().count()));
        for target in targets {
            let ok = Command::new("umount")
                .arg(&target)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&target).status();
            }
        }
    }
    for (file, devices) in loop_devices().unwrap_or_default() {
        if file.starts_with(root) {
            for device in devices {
                let _ = Command::new("losetup").arg("-d").arg(&device).status();
            }
        }
    }
}

/// Write `dir/agent.yml` plus the node's certificates for agent node `node`.
fn agent_dir(
    pki: &Pki,
    sandbox: &Sandbox,
    node: usize,
    backend: &str,
    controls: &[String],
) -> PathBuf {
    let dir = sandbox.path.join(format!("node-{node}"));
    std::fs::create_dir_all(&dir).unwrap();
    let uuid = pki.nodes[node];
    std::fs::copy(pki.dir.join("cluster.crt"), dir.join("cluster.crt")).unwrap();
    std::fs::copy(pki.dir.join(format!("{uuid}.crt")), dir.join("node.crt")).unwrap();
    std::fs::copy(pki.dir.join(format!("{uuid}.key")), dir.join("node.key")).unwrap();
    let controls: String = controls
        .iter()
        .map(|c| {
            let (host, port) = c.rsplit_once(':').unwrap();
            format!("  - hostname: \"{host}\"\n    port: {port}\n")
        })
        .collect();
    let yml = format!(
        "version: 1\ncontrol-service:\n{controls}dataset:\n  backend: {backend}\n  root_path: \"{}\"\n  mount_root: \"{}\"\nera: \"{}\"\n",
        sandbox.storage().display(),
        sandbox.mount_root(node).display(),
        Uuid::new_v4(),
    );
    let config = dir.join("agent.yml");
    std::fs::write(&config, yml).unwrap();
    config
}

fn control_address(single: &Single) -> String {
    single.control.agent_addr.to_string()
}

/// An agent running in this process, on its own thread and runtime; stopped (and
/// joined, so that no backend operation is left running) on drop.
struct InProcessAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    status: watch::Receiver<AgentStatus>,
    node: Uuid,
}

impl InProcessAgent {
    fn start(config_path: &Path) -> InProcessAgent {
        Self::start_with(config_path, |_| {})
    }

    fn start_with(config_path: &Path, tweak: impl FnOnce(&mut Timing)) -> InProcessAgent {
        let mut config = AgentConfig::load(config_path).unwrap();
        tweak(&mut config.timing);
        let agent = DatasetAgent::new(&config).unwrap();
        let status = agent.status();
        let node = agent.node();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(agent.run(async {
                    let _ = stopped.await;
                }))
                .unwrap();
        });
        InProcessAgent {
            stop: Some(stop),
            thread: Some(thread),
            status,
            node,
        }
    }

    fn status(&self) -> AgentStatus {
        self.status.borrow().clone()
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The agent binary; killed with SIGKILL (by PID) on drop.
struct ChildAgent {
    child: Child,
    log: PathBuf,
}

impl ChildAgent {
    fn spawn(config: &Path, log: &Path, failpoints: &str) -> ChildAgent {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flocker-dataset-agent"))
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info")
            .env(FAILPOINTS_ENV, failpoints)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        ChildAgent {
            child,
            log: log.to_owned(),
        }
    }

    fn log_contains(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains(text))
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- {} ---\n{log}", self.log.display());
        }
    }
}

// ---------------------------------------------------------------------------
// Observing the machine and the cluster

/// The device mounted at `path`, if any.
fn mounted_at(path: &Path) -> Option<String> {
    mount_table()
        .unwrap()
        .into_iter()
        .find(|m| m.target == path)
        .map(|m| m.source)
}

/// The volume files of a dataset under the loopback root.
fn volume_files(storage: &Path, dataset: &str) -> Vec<PathBuf> {
    let prefix = format!("flocker-{dataset}_");
    let mut dirs = vec![storage.join("unattached")];
    if let Ok(entries) = std::fs::read_dir(storage.join("attached")) {
        dirs.extend(entries.map(|e| e.unwrap().path()));
    }
    let mut files = Vec::new();
    for dir in dirs {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries {
                let entry = entry.unwrap();
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    files.push(entry.path());
                }
            }
        }
    }
    files
}

fn instance_of(storage: &Path, node: Uuid) -> String {
    std::fs::read_to_string(storage.join("instances").join(node.to_string()))
        .unwrap()
        .trim()
        .to_owned()
}

fn devices_of(files: &[PathBuf]) -> Vec<String> {
    let devices = loop_devices().unwrap();
    files
        .iter()
        .filter_map(|f| devices.get(f))
        .flatten()
        .cloned()
        .collect()
}

async fn create_dataset(client: &Client, primary: Uuid, size: Option<u64>) -> String {
    let reply = client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": primary.to_string(), "maximum_size": size}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 201, "{:?}", reply.body);
    reply.body["dataset_id"].as_str().unwrap().to_owned()
}

async fn move_dataset(client: &Client, dataset: &str, primary: Uuid) {
    let path = format!("/v1/configuration/datasets/{dataset}");
    let reply = client
        .post(&path, &json!({"primary": primary.to_string()}))
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
}

async fn delete_dataset(client: &Client, dataset: &str) {
    let path = format!("/v1/configuration/datasets/{dataset}");
    let reply = client.delete(&path).await.unwrap();
    assert_eq!(reply.status.as_u16(), 200, "{:?}", reply.body);
}

/// The entries of `/v1/state/datasets` for one dataset.
async fn state_of(client: &Client, dataset: &str) -> Vec<Value> {
    let reply = client.get("/v1/state/datasets").await.unwrap();
    reply
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["dataset_id"] == dataset)
        .cloned()
        .collect()
}

/// Wait until `/v1/state/datasets` shows the dataset manifest on `node` at `path`.
async fn wait_state_primary(client: &Client, dataset: &str, node: Uuid, path: &Path) -> Value {
    wait_for(
        "the dataset state to show primary and path",
        PATIENCE,
        || async {
            let entries = state_of(client, dataset).await;
            entries.into_iter().find(|d| {
                d["primary"] == node.to_string() && d["path"] == path.to_string_lossy().as_ref()
            })
        },
    )
    .await
}

async fn wait_mounted(path: &Path) -> String {
    wait_for(
        &format!("a mount at {}", path.display()),
        PATIENCE,
        || async { mounted_at(path) },
    )
    .await
}

fn write_file(dir: &Path, name: &str, content: &[u8]) {
    let mut file = std::fs::File::create(dir.join(name)).unwrap();
    file.write_all(content).unwrap();
    file.sync_all().unwrap();
}

/// Some bytes that are not all alike.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(uid, "0", "the loopback tests need root (losetup, mount)");
}

// ---------------------------------------------------------------------------
// End to end: loopback backend

/// A dataset created for node A is created, registered, attached, formatted and
/// mounted at A's mount path, and the cluster state shows A as its primary with that
/// path; node B does nothing with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_mounts_the_dataset_on_its_primary() {
    require_root();
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let a = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 0, "loopback", &controls));
    let b = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 1, "loopback", &controls));

    let dataset = create_dataset(&single.client, a.node, Some(SIZE)).await;
    let path = sandbox.mount_path(0, &dataset);
    let device = wait_mounted(&path).await;
    assert!(device.starts_with("/dev/loop"), "{device}");
    let state = wait_state_primary(&single.client, &dataset, a.node, &path).await;
    assert_eq!(state["maximum_size"], SIZE);

    let files = volume_files(&sandbox.storage(), &dataset);
    assert_eq!(files.len(), 1, "{files:?}");
    let instance = instance_of(&sandbox.storage(), a.node);
    assert_eq!(
        files[0].parent().unwrap(),
        sandbox.storage().join("attached").join(&instance)
    );
    assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), SIZE);
    assert_eq!(devices_of(&files), vec![device]);
    // A fresh filesystem: lost+found removed, open to every user, and writable.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o777
    );
    assert!(!path.join("lost+found").exists());
    write_file(&path, "hello", b"world");
    assert_eq!(std::fs::read(path.join("hello")).unwrap(), b"world");
    assert_eq!(mounted_at(&sandbox.mount_path(1, &dataset)), None);
    // The agent reported the device too.
    let observed = wait_for("A to report the device", PATIENCE, || async {
        a.status()
            .observed
            .filter(|o| o.devices.contains_key(&dataset))
    })
    .await;
    assert_eq!(observed.manifestations.len(), 1);
    assert!(b.status().plan.actions.is_empty());
}

/// Moving a dataset from A to B: A unmounts and detaches, B attaches and mounts the same
/// volume, and the data written on A is there on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_carries_the_data_to_the_new_primary() {
    require_root();
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let a = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 0, "loopback", &controls));
    let b = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 1, "loopback", &controls));

    let dataset = create_dataset(&single.client, a.node, Some(SIZE)).await;
    let on_a = sandbox.mount_path(0, &dataset);
    wait_mounted(&on_a).await;
    let data = pattern(1 << 20, 7);
    write_file(&on_a, "blob", &data);

    move_dataset(&single.client, &dataset, b.node).await;
    let on_b = sandbox.mount_path(1, &dataset);
    wait_mounted(&on_b).await;
    assert_eq!(
        mounted_at(&on_a),
        None,
        "A must have unmounted before B mounted"
    );
    assert!(!on_a.exists(), "A's empty mount point is removed");
    assert_eq!(std::fs::read(on_b.join("blob")).unwrap(), data);
    wait_state_primary(&single.client, &dataset, b.node, &on_b).await;
    let files = volume_files(&sandbox.storage(), &dataset);
    assert_eq!(files.len(), 1, "the same volume moved: {files:?}");
    let instance = instance_of(&sandbox.storage(), b.node);
    assert!(files[0].starts_with(sandbox.storage().join("attached").join(instance)));
}

/// A lease held by A keeps the dataset mounted on A after a move, for as long as it is
/// held, while B waits; once the lease is released, B gets the dataset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_blocks_the_move_until_released() {
    require_root();
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let a = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 0, "loopback", &controls));
    let b = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 1, "loopback", &controls));

    let dataset = create_dataset(&single.client, a.node, Some(SIZE)).await;
    let id = Uuid::parse_str(&dataset).unwrap();
    let on_a = sandbox.mount_path(0, &dataset);
    let on_b = sandbox.mount_path(1, &dataset);
    wait_mounted(&on_a).await;
    write_file(&on_a, "kept", b"leased data");
    let lease = json!({"dataset_id": dataset, "node_uuid": a.node.to_string(), "expires": null});
    let reply = single
        .client
        .post("/v1/configuration/leases", &lease)
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 201, "{:?}", reply.body);

    move_dataset(&single.client, &dataset, b.node).await;
    // Both agents have seen the move: A holds the dataset because of the lease, B waits
    // for A to let go.
    let holding = |s: &AgentStatus| s.plan.waiting.contains(&(id, Waiting::InUse));
    let waiting = |s: &AgentStatus| {
        s.plan
            .waiting
            .iter()
            .any(|(d, w)| *d == id && matches!(w, Waiting::AttachedElsewhere { .. }))
    };
    wait_for("A to hold the leased dataset", PATIENCE, || async {
        holding(&a.status()).then_some(())
    })
    .await;
    wait_for("B to wait for A", PATIENCE, || async {
        waiting(&b.status()).then_some(())
    })
    .await;
    // ... and keep doing so over several more iterations.
    let (ia, ib) = (a.status().iterations, b.status().iterations);
    wait_for("more iterations", PATIENCE, || async {
        let (sa, sb) = (a.status(), b.status());
        (sa.iterations >= ia + 2 && sb.iterations >= ib + 2).then_some(())
    })
    .await;
    assert!(holding(&a.status()) && waiting(&b.status()));
    assert!(
        mounted_at(&on_a).is_some(),
        "the lease must keep the dataset mounted on A"
    );
    assert_eq!(mounted_at(&on_b), None);
    wait_state_primary(&single.client, &dataset, a.node, &on_a).await;

    let reply = single
        .client
        .delete(&format!("/v1/configuration/leases/{dataset}"))
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 200);
    wait_mounted(&on_b).await;
    assert_eq!(mounted_at(&on_a), None);
    assert_eq!(std::fs::read(on_b.join("kept")).unwrap(), b"leased data");
    wait_state_primary(&single.client, &dataset, b.node, &on_b).await;
}

/// A dataset without a maximum size gets Flocker's default, 75 GiB, as a sparse file
/// that costs next to nothing on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_without_a_size_gets_a_sparse_75_gib_volume() {
    require_root();
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let a = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 0, "loopback", &controls));
    let dataset = create_dataset(&single.client, a.node, None).await;
    let path = sandbox.mount_path(0, &dataset);
    wait_mounted(&path).await;
    let state = wait_state_primary(&single.client, &dataset, a.node, &path).await;
    assert_eq!(state["maximum_size"], 80_530_636_800u64);
    let files = volume_files(&sandbox.storage(), &dataset);
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(&files[0]).unwrap();
    assert_eq!(metadata.len(), 80_530_636_800);
    assert!(
        metadata.blocks() * 512 < 256 << 20,
        "{} bytes allocated",
        metadata.blocks() * 512
    );
}

/// When a backend command fails (here: unmounting a busy filesystem during a move),
/// the agent reports what is true (still mounted), retries, and completes the move
/// once the command can succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_retried_and_the_truth_reported() {
    require_root();
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let a = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 0, "loopback", &controls));
    let b = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 1, "loopback", &controls));
    let dataset = create_dataset(&single.client, a.node, Some(SIZE)).await;
    let on_a = sandbox.mount_path(0, &dataset);
    let on_b = sandbox.mount_path(1, &dataset);
    wait_mounted(&on_a).await;
    // An open file keeps the filesystem busy: umount fails.
    let busy = std::fs::File::create(on_a.join("open")).unwrap();

    move_dataset(&single.client, &dataset, b.node).await;
    let unmount_failed = |s: &AgentStatus| s.errors.iter().any(|e| e.starts_with("unmount"));
    let first = wait_for("A's unmount to fail", PATIENCE, || async {
        let status = a.status();
        unmount_failed(&status).then_some(status.iterations)
    })
    .await;
    wait_for("A to retry and fail again", PATIENCE, || async {
        let status = a.status();
        (status.iterations > first && unmount_failed(&status)).then_some(())
    })
    .await;
    assert!(mounted_at(&on_a).is_some());
    assert_eq!(mounted_at(&on_b), None);
    wait_state_primary(&single.client, &dataset, a.node, &on_a).await;

    drop(busy);
    wait_mounted(&on_b).await;
    assert_eq!(mounted_at(&on_a), None);
    assert!(on_b.join("open").exists());
    assert!(b.status().errors.is_empty());
}

/// Deleting a dataset unmounts it, releases the loop device and removes the backing
/// file; the cluster state forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_unmounts_detaches_and_destroys() {
    require_root();
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let a = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 0, "loopback", &controls));

    let dataset = create_dataset(&single.client, a.node, Some(SIZE)).await;
    let path = sandbox.mount_path(0, &dataset);
    wait_mounted(&path).await;
    let files = volume_files(&sandbox.storage(), &dataset);
    assert_eq!(devices_of(&files).len(), 1);

    delete_dataset(&single.client, &dataset).await;
    wait_for("the backing file to be destroyed", PATIENCE, || async {
        volume_files(&sandbox.storage(), &dataset)
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(mounted_at(&path), None);
    assert!(devices_of(&files).is_empty(), "loop device still bound");
    let output = Command::new("losetup")
        .arg("-j")
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(
        output.stdout.is_empty(),
        "losetup -j shows {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    wait_for("the state to forget the dataset", PATIENCE, || async {
        state_of(&single.client, &dataset)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

/// Killing the agent binaries with SIGKILL at the worst moments of a move (the old
/// primary between unmount and detach, the new one between taking the volume and
/// binding its loop device) and restarting them converges, and no data is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_move_loses_no_data() {
    require_root();
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let config_a = agent_dir(&single.pki, &sandbox, 0, "loopback", &controls);
    let config_b = agent_dir(&single.pki, &sandbox, 1, "loopback", &controls);
    let (node_a, node_b) = (single.pki.nodes[0], single.pki.nodes[1]);
    let log_a = sandbox.path.join("agent-a.log");
    let log_b = sandbox.path.join("agent-b.log");
    let mut a = ChildAgent::spawn(&config_a, &log_a, "after-unmount");
    let mut b = ChildAgent::spawn(&config_b, &log_b, "loopback-attach-moved");

    let dataset = create_dataset(&single.client, node_a, Some(SIZE)).await;
    let on_a = sandbox.mount_path(0, &dataset);
    let on_b = sandbox.mount_path(1, &dataset);
    wait_mounted(&on_a).await;
    let data = pattern(4 << 20, 42);
    write_file(&on_a, "precious", &data);
    move_dataset(&single.client, &dataset, node_b).await;

    // A stops right after unmounting; kill it there.
    wait_for("A to reach its failpoint", PATIENCE, || async {
        a.log_contains("failpoint after-unmount reached")
            .then_some(())
    })
    .await;
    a.kill9();
    let storage = sandbox.storage();
    let files = volume_files(&storage, &dataset);
    assert_eq!(mounted_at(&on_a), None);
    assert_eq!(files.len(), 1);
    assert!(files[0].starts_with(storage.join("attached").join(instance_of(&storage, node_a))));
    assert_eq!(
        devices_of(&files).len(),
        1,
        "A died before releasing the device"
    );

    // Restarted, A detaches; B takes the volume and stops before binding a loop device.
    let _a = ChildAgent::spawn(&config_a, &log_a, "");
    wait_for("B to reach its failpoint", PATIENCE, || async {
        b.log_contains("failpoint loopback-attach-moved reached")
            .then_some(())
    })
    .await;
    b.kill9();
    let files = volume_files(&storage, &dataset);
    assert_eq!(files.len(), 1);
    assert!(files[0].starts_with(storage.join("attached").join(instance_of(&storage, node_b))));
    assert!(
        devices_of(&files).is_empty(),
        "B died before binding the device"
    );

    // Restarted, B binds a device, finds the filesystem and mounts it.
    let _b = ChildAgent::spawn(&config_b, &log_b, "");
    wait_mounted(&on_b).await;
    assert_eq!(std::fs::read(on_b.join("precious")).unwrap(), data);
    assert_eq!(mounted_at(&on_a), None);
    wait_state_primary(&single.client, &dataset, node_b, &on_b).await;
    assert_eq!(volume_files(&storage, &dataset).len(), 1);
}

/// With several control nodes listed, an agent whose first choices are dead or broken
/// fails over to one that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_fails_over_to_a_working_control_node() {
    require_root();
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    // Refuses connections: a port that was free a moment ago.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Accepts connections and closes them at once.
    let broken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken_addr = broken.local_addr().unwrap();
    let closer = tokio::spawn(async move {
        while let Ok((socket, _)) = broken.accept().await {
            drop(socket);
        }
    });
    let controls = [
        dead.to_string(),
        broken_addr.to_string(),
        control_address(&single),
    ];
    let a = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 0, "loopback", &controls));

    let dataset = create_dataset(&single.client, a.node, Some(SIZE)).await;
    let path = sandbox.mount_path(0, &dataset);
    wait_mounted(&path).await;
    wait_state_primary(&single.client, &dataset, a.node, &path).await;
    assert!(a.status().connected);
    closer.abort();
}

/// While no control node answers, the agent keeps what it has mounted as it is; when
/// the control node comes back, it reconnects and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_control_service_changes_nothing_locally() {
    require_root();
    let sandbox = Sandbox::new();
    let Single {
        tmp,
        pki,
        control,
        client,
    } = Single::start().await;
    let agent_addr = control.agent_addr;
    let controls = [agent_addr.to_string()];
    // A control node's graceful shutdown waits for open long polls: keep them short.
    let a = InProcessAgent::start_with(&agent_dir(&pki, &sandbox, 0, "loopback", &controls), |t| {
        t.long_poll_wait = Duration::from_secs(1)
    });
    let dataset = create_dataset(&client, a.node, Some(SIZE)).await;
    let path = sandbox.mount_path(0, &dataset);
    wait_mounted(&path).await;

    control.stop().await;
    wait_for("A to notice", PATIENCE, || async {
        (!a.status().connected).then_some(())
    })
    .await;
    let before = a.status().iterations;
    wait_for("more iterations", PATIENCE, || async {
        (a.status().iterations >= before + 3).then_some(())
    })
    .await;
    assert!(
        mounted_at(&path).is_some(),
        "nothing changes while disconnected"
    );
    assert!(a.status().plan.actions.is_empty());

    let mut settings = common::settings(&pki, &tmp.path().join("data"));
    settings.agent_listen = agent_addr;
    let control = flocker::control::start(settings).await.unwrap();
    let client = Client::new(&format!("https://{}", control.api_addr), &pki.user()).unwrap();
    wait_for("A to reconnect", PATIENCE, || async {
        a.status().connected.then_some(())
    })
    .await;
    wait_state_primary(&client, &dataset, a.node, &path).await;
    assert!(mounted_at(&path).is_some());
    drop(a);
    control.stop().await;
}

/// Two volumes for one dataset (two agents each created one, say): the ownership
/// registry decides which one holds the dataset, and the other is never used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ownership_registry_decides_between_duplicate_volumes() {
    require_root();
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let config_a = agent_dir(&single.pki, &sandbox, 0, "loopback", &controls);
    let dataset = Uuid::new_v4();
    let unattached = sandbox.storage().join("unattached");
    std::fs::create_dir_all(&unattached).unwrap();
    let first = format!("flocker-{dataset}_aaaaaaaaaaaa");
    let second = format!("flocker-{dataset}_bbbbbbbbbbbb");
    for name in [&first, &second] {
        std::fs::File::create(unattached.join(name))
            .unwrap()
            .set_len(SIZE)
            .unwrap();
    }
    // Another node registered the second volume first.
    let reply = single
        .agent_client(1)
        .post(
            "/agent/v1/blockdevice-owner",
            &json!({"dataset_id": dataset, "blockdevice_id": second}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 200);
    let a = InProcessAgent::start(&config_a);
    let reply = single
        .client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": a.node.to_string(), "dataset_id": dataset.to_string(), "maximum_size": SIZE}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 201);
    let path = sandbox.mount_path(0, &dataset.to_string());
    let device = wait_mounted(&path).await;
    let attached = sandbox
        .storage()
        .join("attached")
        .join(instance_of(&sandbox.storage(), a.node));
    assert_eq!(
        loop_devices().unwrap().get(&attached.join(&second)),
        Some(&vec![device])
    );
    assert!(
        unattached.join(&first).exists(),
        "the duplicate is left alone"
    );
    // Registering the duplicate is refused.
    let reply = single
        .agent_client(0)
        .post(
            "/agent/v1/blockdevice-owner",
            &json!({"dataset_id": dataset, "blockdevice_id": first}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 409);
}

// ---------------------------------------------------------------------------
// Backends on their own

fn only_volume(backend: &dyn Backend) -> ObservedVolume {
    let mut observation = backend.observe().unwrap();
    assert_eq!(observation.volumes.len(), 1, "{observation:?}");
    observation.volumes.remove(0)
}

/// Every loopback operation is idempotent, refuses what could lose data (detaching a
/// mounted device, destroying an attached volume, taking another instance's volume),
/// re-creates a lost loop device, and a volume moves between instances with its data.
#[test]
fn loopback_operations_are_idempotent_and_refuse_to_lose_data() {
    require_root();
    let sandbox = Sandbox::new();
    let config = |instance: &str, mounts: usize| LoopbackConfig {
        root_path: sandbox.storage(),
        compute_instance_id: Some(instance.into()),
        allocation_unit: 4096,
        mount_root: sandbox.mount_root(mounts),
    };
    let here = LoopbackBackend::new(&config("here", 0), Uuid::new_v4()).unwrap();
    let there = LoopbackBackend::new(&config("there", 1), Uuid::new_v4()).unwrap();
    let d = Uuid::new_v4();
    let v = here.create_volume(d, SIZE + 1).unwrap();
    let seen = only_volume(&here);
    assert_eq!((seen.dataset_id, seen.size), (d, SIZE + 4096));
    assert_eq!(seen.state, VolumeState::Unattached);

    here.attach(&v).unwrap();
    here.attach(&v).unwrap();
    assert!(matches!(
        only_volume(&here).state,
        VolumeState::AttachedNoFilesystem { .. }
    ));
    assert!(matches!(
        there.attach(&v),
        Err(BackendError::AttachedElsewhere { .. })
    ));
    assert_eq!(
        only_volume(&there).state,
        VolumeState::AttachedElsewhere {
            instance: "here".into()
        }
    );
    assert!(here.mount(&v, d).is_err(), "no filesystem yet");
    here.create_filesystem(&v).unwrap();
    here.create_filesystem(&v).unwrap();
    assert!(matches!(
        only_volume(&here).state,
        VolumeState::Attached { .. }
    ));
    here.mount(&v, d).unwrap();
    here.mount(&v, d).unwrap();
    let path = here.mount_path(d);
    assert!(
        matches!(only_volume(&here).state, VolumeState::Mounted { path: ref p, .. } if *p == path)
    );
    write_file(&path, "data", b"kept");
    assert!(matches!(here.detach(&v), Err(BackendError::Refused { .. })));
    assert!(matches!(
        here.destroy(&v),
        Err(BackendError::Refused { .. })
    ));
    assert!(matches!(
        there.detach(&v),
        Err(BackendError::AttachedElsewhere { .. })
    ));
    assert!(mounted_at(&path).is_some());

    here.unmount(&v, d).unwrap();
    here.unmount(&v, d).unwrap();
    assert_eq!(mounted_at(&path), None);
    // A lost loop device (a crash, a reboot) is re-created by attaching again.
    let file = sandbox.storage().join("attached/here").join(&v);
    for device in devices_of(std::slice::from_ref(&file)) {
        assert!(Command::new("losetup")
            .args(["-d", &device])
            .status()
            .unwrap()
            .success());
    }
    wait_until(|| devices_of(std::slice::from_ref(&file)).is_empty());
    assert_eq!(only_volume(&here).state, VolumeState::AttachedNoDevice);
    here.attach(&v).unwrap();
    assert!(matches!(
        only_volume(&here).state,
        VolumeState::Attached { .. }
    ));
    here.detach(&v).unwrap();
    here.detach(&v).unwrap();
    assert_eq!(only_volume(&here).state, VolumeState::Unattached);
    assert!(devices_of(&[file]).is_empty());

    there.attach(&v).unwrap();
    there.create_filesystem(&v).unwrap();
    there.mount(&v, d).unwrap();
    assert_eq!(
        std::fs::read(there.mount_path(d).join("data")).unwrap(),
        b"kept"
    );
    there.unmount(&v, d).unwrap();
    there.detach(&v).unwrap();
    here.destroy(&v).unwrap();
    here.destroy(&v).unwrap();
    assert!(here.observe().unwrap().volumes.is_empty());
}

/// Poll a synchronous condition with a deadline.
fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "condition not reached");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The directory backend has the same life cycle and refusals, with links for mounts.
#[test]
fn directory_operations_are_idempotent_and_refuse_to_lose_data() {
    let sandbox = Sandbox::new();
    let config = |instance: &str, mounts: usize| DirectoryConfig {
        root_path: sandbox.storage(),
        compute_instance_id: Some(instance.into()),
        mount_root: sandbox.mount_root(mounts),
    };
    let here = DirectoryBackend::new(&config("here", 0), Uuid::new_v4()).unwrap();
    let there = DirectoryBackend::new(&config("there", 1), Uuid::new_v4()).unwrap();
    let d = Uuid::new_v4();
    let v = here.create_volume(d, SIZE).unwrap();
    assert_eq!(only_volume(&here).state, VolumeState::Unattached);
    assert_eq!(only_volume(&here).size, SIZE);
    here.attach(&v).unwrap();
    here.attach(&v).unwrap();
    assert!(matches!(
        there.attach(&v),
        Err(BackendError::AttachedElsewhere { .. })
    ));
    assert!(matches!(
        there.mount(&v, d),
        Err(BackendError::AttachedElsewhere { .. })
    ));
    here.mount(&v, d).unwrap();
    here.mount(&v, d).unwrap();
    assert!(matches!(
        only_volume(&here).state,
        VolumeState::Mounted { .. }
    ));
    write_file(&here.mount_path(d), "data", b"kept");
    assert!(matches!(here.detach(&v), Err(BackendError::Refused { .. })));
    assert!(matches!(
        here.destroy(&v),
        Err(BackendError::Refused { .. })
    ));
    here.unmount(&v, d).unwrap();
    here.unmount(&v, d).unwrap();
    here.detach(&v).unwrap();
    here.detach(&v).unwrap();
    there.attach(&v).unwrap();
    there.mount(&v, d).unwrap();
    assert_eq!(
        std::fs::read(there.mount_path(d).join("data")).unwrap(),
        b"kept"
    );
    there.unmount(&v, d).unwrap();
    there.detach(&v).unwrap();
    here.destroy(&v).unwrap();
    here.destroy(&v).unwrap();
    assert!(here.observe().unwrap().volumes.is_empty());
}

// ---------------------------------------------------------------------------
// End to end: directory backend

/// The directory backend creates, moves (with the data) and deletes datasets with
/// symbolic links, no root or block devices involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_backend_creates_moves_and_deletes() {
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let a = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 0, "directory", &controls));
    let b = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 1, "directory", &controls));
    let linked = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());

    let dataset = create_dataset(&single.client, a.node, None).await;
    let on_a = sandbox.mount_path(0, &dataset);
    let on_b = sandbox.mount_path(1, &dataset);
    wait_for("A's link", PATIENCE, || async {
        linked(&on_a).then_some(())
    })
    .await;
    let state = wait_state_primary(&single.client, &dataset, a.node, &on_a).await;
    assert_eq!(
        state["maximum_size"], 80_530_636_800u64,
        "the default size is recorded"
    );
    write_file(&on_a, "note", b"directory data");

    move_dataset(&single.client, &dataset, b.node).await;
    wait_for("B's link", PATIENCE, || async {
        linked(&on_b).then_some(())
    })
    .await;
    assert!(!linked(&on_a));
    assert_eq!(std::fs::read(on_b.join("note")).unwrap(), b"directory data");
    wait_state_primary(&single.client, &dataset, b.node, &on_b).await;

    delete_dataset(&single.client, &dataset).await;
    let volumes = sandbox.storage().join("volumes");
    wait_for("the directory to be destroyed", PATIENCE, || async {
        let left = std::fs::read_dir(&volumes).unwrap().count();
        (left == 0 && !linked(&on_b)).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------
// Configuration files and the binary

/// The example agent.yml files in cluster-config/ parse.
#[test]
fn example_agent_files_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-config");
    let loopback = AgentConfig::load(&dir.join("agent.yml")).unwrap();
    assert_eq!(loopback.control_services.len(), 3);
    assert_eq!(loopback.control_services[1].port, 4524);
    assert!(matches!(
        loopback.backend,
        flocker::agent::dataset::BackendConfig::Loopback(ref c) if c.allocation_unit == 1 << 20
    ));
    assert_eq!(loopback.tls.cert, dir.join("node.crt"));
    let directory = AgentConfig::load(&dir.join("agent-directory.yml")).unwrap();
    assert!(matches!(
        directory.backend,
        flocker::agent::dataset::BackendConfig::Directory(_)
    ));
}

/// The binary refuses a bad configuration with a message naming the problem.
#[test]
fn the_binary_explains_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yml");
    std::fs::write(
        &config,
        "version: 1\ncontrol-service: {hostname: x}\ndataset: {backend: zfs}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flocker-dataset-agent"))
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("zfs") && stderr.contains("agent.yml"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_flocker-dataset-agent"))
        .arg("-c")
        .arg(dir.path().join("missing.yml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.yml"));
}

// ---------------------------------------------------------------------------
// Latency

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Time from the API call to "mounted" for creates and for moves (printed; run with
/// `--nocapture` to see the numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_move_latency() {
    require_root();
    let runs = 5;
    let sandbox = Sandbox::new();
    let single = Single::start().await;
    let controls = [control_address(&single)];
    let a = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 0, "loopback", &controls));
    let b = InProcessAgent::start(&agent_dir(&single.pki, &sandbox, 1, "loopback", &controls));
    let (mut creates, mut moves) = (Vec::new(), Vec::new());
    let mut datasets = BTreeMap::new();
    for _ in 0..runs {
        let start = Instant::now();
        let dataset = create_dataset(&single.client, a.node, Some(SIZE)).await;
        wait_mounted(&sandbox.mount_path(0, &dataset)).await;
        creates.push(start.elapsed());
        let start = Instant::now();
        move_dataset(&single.client, &dataset, b.node).await;
        wait_mounted(&sandbox.mount_path(1, &dataset)).await;
        moves.push(start.elapsed());
        datasets.insert(dataset, ());
    }
    for dataset in datasets.keys() {
        delete_dataset(&single.client, dataset).await;
    }
    wait_for("all volumes destroyed", PATIENCE, || async {
        datasets
            .keys()
            .all(|d| volume_files(&sandbox.storage(), d).is_empty())
            .then_some(())
    })
    .await;
    let (create, mv) = (median(&mut creates), median(&mut moves));
    println!("LATENCY create->mounted: median {create:?} over {runs} runs {creates:?}");
    println!("LATENCY move->mounted on the new primary: median {mv:?} over {runs} runs {moves:?}");
    assert!(create < Duration::from_secs(30) && mv < Duration::from_secs(30));
}

// ---------------------------------------------------------------------------
// Planner properties against a simulated shared backend

mod planner_properties {
    use flocker::agent::dataset::backend::{Observation, ObservedVolume, VolumeState};
    use flocker::agent::dataset::planner::{plan, Action, PlanInput};
    use flocker::model::{
        ClusterState, Configuration, Container, ContainerState, Dataset, Lease, Micros, NodeState,
        RestartPolicy, Volume,
    };
    use proptest::prelude::*;
    use uuid::Uuid;

    const NOW: Micros = 1_000;
    /// Nodes 0 and 1 run planners; node 2 holds volumes but never acts.
    const NODES: [Uuid; 3] = [
        Uuid::from_u128(0xa),
        Uuid::from_u128(0xb),
        Uuid::from_u128(0xc),
    ];
    const DATASETS: [Uuid; 3] = [
        Uuid::from_u128(0xd0),
        Uuid::from_u128(0xd1),
        Uuid::from_u128(0xd2),
    ];

    fn instance(node: usize) -> String {
        format!("instance-{node}")
    }

    #[derive(Debug, Clone)]
    struct SimVolume {
        id: String,
        dataset: usize,
        holder: Option<usize>,
        device: bool,
        filesystem: bool,
        mounted: bool,
    }

    /// The configuration, the cluster state and a storage service shared by all nodes.
    #[derive(Debug, Clone)]
    struct World {
        config: Configuration,
        cluster: ClusterState,
        volumes: Vec<SimVolume>,
        created: usize,
    }

    impl World {
        fn observe(&self, node: usize) -> Observation {
            let volumes = self
                .volumes
                .iter()
                .map(|v| {
                    let state = match v.holder {
                        None => VolumeState::Unattached,
                        Some(h) if h != node => VolumeState::AttachedElsewhere {
                            instance: instance(h),
                        },
                        Some(_) if !v.device => VolumeState::AttachedNoDevice,
                        Some(_) if v.mounted => VolumeState::Mounted {
                            device: Some(format!("/dev/{}", v.id)),
                            path: format!("/m/{node}/{}", v.dataset).into(),
                        },
                        Some(_) if v.filesystem => VolumeState::Attached {
                            device: Some(format!("/dev/{}", v.id)),
                        },
                        Some(_) => VolumeState::AttachedNoFilesystem {
                            device: Some(format!("/dev/{}", v.id)),
                        },
                    };
                    ObservedVolume {
                        volume_id: v.id.clone(),
                        dataset_id: DATASETS[v.dataset],
                        size: 1,
                        state,
                    }
                })
                .collect();
            Observation { volumes }
        }

        fn plan(&self, node: usize) -> Vec<Action> {
            let observation = self.observe(node);
            plan(&PlanInput {
                node: NODES[node],
                now: NOW,
                configuration: &self.config,
                cluster: &self.cluster,
                observation: &observation,
            })
            .actions
        }

        fn volume(&mut self, id: &str) -> Result<&mut SimVolume, String> {
            self.volumes
                .iter_mut()
                .find(|v| v.id == id)
                .ok_or(format!("no volume {id}"))
        }

        /// The backend's semantics, refusals included.
        fn apply(&mut self, node: usize, action: &Action) -> Result<(), String> {
            let dataset = DATASETS
                .iter()
                .position(|d| *d == action.dataset_id())
                .unwrap();
            let held = |v: &SimVolume| v.holder == Some(node);
            match action {
                Action::CreateVolume { .. } => {
                    self.created += 1;
                    self.volumes.push(SimVolume {
                        id: format!("new{}", self.created),
                        dataset,
                        holder: None,
                        device: false,
                        filesystem: false,
                        mounted: false,
                    });
                }
                Action::RegisterVolume {
                    dataset_id,
                    volume_id,
                } => {
                    self.config
                        .blockdevice_owners
                        .entry(*dataset_id)
                        .or_insert(volume_id.clone());
                }
                Action::AttachVolume { volume_id, .. } => {
                    let v = self.volume(volume_id)?;
                    match v.holder {
                        Some(h) if h != node => return Err(format!("attach: held by {h}")),
                        _ => {
                            v.holder = Some(node);
                            v.device = true;
                        }
                    }
                }
                Action::CreateFilesystem { volume_id, .. } => {
                    let v = self.volume(volume_id)?;
                    if !held(v) || !v.device {
                        return Err("mkfs: not attached here".into());
                    }
                    v.filesystem = true;
                }
                Action::Mount { volume_id, .. } => {
                    let v = self.volume(volume_id)?;
                    if !held(v) || !v.device || !v.filesystem {
                        return Err("mount: not ready".into());
                    }
                    v.mounted = true;
                }
                Action::Unmount { volume_id, .. } => {
                    let v = self.volume(volume_id)?;
                    if held(v) {
                        v.mounted = false;
                    }
                }
                Action::DetachVolume { volume_id, .. } => {
                    let v = self.volume(volume_id)?;
                    if v.mounted && held(v) {
                        return Err("detach: mounted".into());
                    }
                    if held(v) {
                        v.holder = None;
                        v.device = false;
                    }
                }
                Action::DestroyVolume { volume_id, .. } => {
                    if self.volume(volume_id)?.holder.is_some() {
                        return Err("destroy: attached".into());
                    }
                    self.volumes.retain(|v| &v.id != volume_id);
                }
            }
            Ok(())
        }

        /// The safety rule, written independently of the planner.
        fn in_use(&self, node: usize, dataset: Uuid) -> bool {
            let leased = self.config.leases.get(&dataset).is_some_and(|l| {
                l.node_uuid == NODES[node] && l.expiration.is_none_or(|at| at >= NOW)
            });
            let uses = |v: &Option<Volume>| {
                v.as_ref()
                    .is_some_and(|v| v.dataset_id == dataset.to_string())
            };
            let containers = match self
                .cluster
                .nodes
                .get(&NODES[node])
                .and_then(|n| n.containers.as_ref())
            {
                Some(list) => list.iter().any(|c| c.running && uses(&c.container.volume)),
                None => self
                    .config
                    .containers
                    .values()
                    .any(|c| c.node_uuid == NODES[node] && uses(&c.volume)),
            };
            leased || containers
        }

        fn mounted_on(&self, node: usize, dataset: usize) -> bool {
            self.volumes
                .iter()
                .any(|v| v.dataset == dataset && v.holder == Some(node) && v.mounted)
        }
    }

    fn container(name: &str, node: usize, dataset: usize) -> Container {
        Container {
            name: name.to_owned(),
            node_uuid: NODES[node],
            image: "busybox:latest".into(),
            ports: vec![],
            links: vec![],
            environment: Default::default(),
            restart_policy: RestartPolicy::Never,
            command_line: None,
            cpu_shares: None,
            memory_limit: None,
            swappiness: 0,
            volume: Some(Volume {
                dataset_id: DATASETS[dataset].to_string(),
                mountpoint: "/data".into(),
            }),
        }
    }

    type DatasetSpec = (
        Option<(usize, bool)>,
        Option<(usize, Option<i64>)>,
        Option<usize>,
        u8,
    );
    type VolumeSpec = (usize, Option<usize>, bool, bool, bool);
    type ReportSpec = Option<Vec<(usize, bool)>>;

    fn world_strategy() -> impl Strategy<Value = World> {
        let dataset = (
            proptest::option::of((0..3usize, any::<bool>())),
            proptest::option::of((0..3usize, proptest::option::of(-5i64..5))),
            proptest::option::of(0..3usize),
            0..3u8,
        );
        let volume = (
            0..3usize,
            proptest::option::of(0..3usize),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        );
        let reports = [
            proptest::option::of(proptest::collection::vec((0..3usize, any::<bool>()), 0..3)),
            proptest::option::of(proptest::collection::vec((0..3usize, any::<bool>()), 0..3)),
        ];
        (
            proptest::collection::vec(dataset, 3),
            proptest::collection::vec(volume, 0..6),
            reports,
        )
            .prop_map(|(datasets, volumes, reports)| build_world(&datasets, &volumes, &reports))
    }

    fn build_world(
        datasets: &[DatasetSpec],
        volumes: &[VolumeSpec],
        reports: &[ReportSpec; 2],
    ) -> World {
        let volumes: Vec<SimVolume> = volumes
            .iter()
            .enumerate()
            .map(|(i, &(dataset, holder, device, filesystem, mounted))| {
                let device = device && holder.is_some();
                SimVolume {
                    id: format!("v{i}"),
                    dataset,
                    holder,
                    device,
                    filesystem: filesystem || (mounted && device),
                    mounted: mounted && device,
                }
            })
            .collect();
        let mut config = Configuration::default();
        for (i, (configured, lease, user, registry)) in datasets.iter().enumerate() {
            let id = DATASETS[i];
            if let Some((primary, deleted)) = configured {
                config.datasets.insert(
                    id.to_string(),
                    Dataset {
                        dataset_id: id.to_string(),
                        primary: NODES[*primary],
                        deleted: *deleted,
                        maximum_size: None,
                        metadata: Default::default(),
                    },
                );
            }
            if let Some((node, offset)) = lease {
                config.leases.insert(
                    id,
                    Lease {
                        dataset_id: id,
                        node_uuid: NODES[*node],
                        expiration: offset.map(|o| NOW + o),
                    },
                );
            }
            if let Some(node) = user {
                config
                    .containers
                    .insert(format!("c{i}"), container(&format!("c{i}"), *node, i));
            }
            let first = volumes
                .iter()
                .find(|v| v.dataset == i)
                .map(|v| v.id.clone());
            match (registry, first) {
                (1, Some(v)) => {
                    config.blockdevice_owners.insert(id, v);
                }
                (2, _) => {
                    config.blockdevice_owners.insert(id, "ghost".into());
                }
                _ => {}
            }
        }
        let mut cluster = ClusterState::default();
        for (node, report) in reports.iter().enumerate() {
            let containers = report.as_ref().map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(j, &(dataset, running))| ContainerState {
                        container: container(&format!("r{node}-{j}"), node, dataset),
                        running,
                    })
                    .collect()
            });
            cluster.nodes.insert(
                NODES[node],
                NodeState {
                    host: "127.0.0.1".into(),
                    datasets: None,
                    containers,
                    datasets_seen: 0,
                    containers_seen: 0,
                },
            );
        }
        World {
            config,
            cluster,
            volumes,
            created: 0,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// No plan unmounts, detaches or destroys a dataset leased to the planning node
        /// or used by a container there (known or, when unknown, configured).
        #[test]
        fn never_gives_up_a_dataset_in_use(world in world_strategy()) {
            for node in 0..2 {
                for action in world.plan(node) {
                    if action.is_destructive() {
                        prop_assert!(
                            !world.in_use(node, action.dataset_id()),
                            "node {node} plans {action:?} on a dataset in use"
                        );
                    }
                }
            }
        }

        /// Applying plans to the simulated backend reaches a fixed point (an empty plan)
        /// within a few rounds; the backend never has to refuse an action; datasets in
        /// use stay mounted throughout.
        #[test]
        fn one_node_reaches_a_fixed_point(world in world_strategy()) {
            let mut world = world;
            let held: Vec<usize> = (0..3)
                .filter(|d| world.mounted_on(0, *d) && world.in_use(0, DATASETS[*d]))
                .collect();
            let mut converged = false;
            for _ in 0..7 {
                let actions = world.plan(0);
                if actions.is_empty() {
                    converged = true;
                    break;
                }
                for action in &actions {
                    prop_assert_eq!(world.apply(0, action), Ok(()), "{:?}", action);
                }
                for d in &held {
                    prop_assert!(world.mounted_on(0, *d), "dataset {} in use was unmounted", d);
                }
            }
            prop_assert!(converged, "no fixed point: {:?}", world.plan(0));
        }

        /// Two nodes sharing the storage converge: every dataset configured on one of
        /// them ends up mounted there, unless another holder keeps it (node 2, which
        /// never acts, or the other node because it is in use there) or the registry
        /// names a volume that does not exist. Registered volumes of live datasets are
        /// never destroyed.
        #[test]
        fn two_nodes_converge(world in world_strategy()) {
            let mut world = world;
            let live_registered: Vec<String> = world.config.blockdevice_owners.iter()
                .filter(|(d, _)| world.config.datasets.get(&d.to_string()).is_some_and(|c| !c.deleted))
                .map(|(_, v)| v.clone())
                .collect();
            let mut converged = false;
            for _ in 0..16 {
                let mut idle = true;
                for node in 0..2 {
                    let actions = world.plan(node);
                    idle &= actions.is_empty();
                    for action in &actions {
                        prop_assert_eq!(world.apply(node, action), Ok(()), "node {}: {:?}", node, action);
                    }
                }
                if idle {
                    converged = true;
                    break;
                }
            }
            prop_assert!(converged, "no fixed point");
            for v in &live_registered {
                prop_assert!(v == "ghost" || world.volumes.iter().any(|x| &x.id == v), "volume {} destroyed", v);
            }
            for (i, id) in DATASETS.iter().enumerate() {
                let Some(d) = world.config.datasets.get(&id.to_string()) else { continue };
                let Some(primary) = (0..2).find(|n| NODES[*n] == d.primary) else { continue };
                let other = 1 - primary;
                let owner = world.config.blockdevice_owners.get(id).cloned();
                let volume = owner.as_ref().and_then(|o| world.volumes.iter().find(|v| &v.id == o));
                if d.deleted {
                    if let Some(v) = volume {
                        // Destroying waits for every local user to let go.
                        let blocked = v.holder == Some(2)
                            || v.holder.is_some_and(|h| h < 2 && world.in_use(h, *id))
                            || world.in_use(primary, *id);
                        prop_assert!(blocked, "deleted dataset {} still has {:?}", i, v);
                    }
                    continue;
                }
                match volume {
                    Some(v) => {
                        let blocked = v.holder == Some(2)
                            || (v.holder == Some(other) && world.in_use(other, *id));
                        prop_assert!(world.mounted_on(primary, i) || blocked, "dataset {} not mounted on {}: {:?}", i, primary, v);
                    }
                    None => prop_assert_eq!(owner.as_deref(), Some("ghost"), "dataset {} has no volume", i),
                }
            }
        }
    }

    /// A hand-written move between the two nodes, step by step.
    #[test]
    fn a_move_detaches_before_attaching() {
        let reports = [Some(vec![]), Some(vec![])];
        let mut world = build_world(
            &[
                (Some((1, false)), None, None, 1),
                (None, None, None, 0),
                (None, None, None, 0),
            ],
            &[(0, Some(0), true, true, true)],
            &reports,
        );
        let trace: Vec<(usize, &'static str)> = (0..4)
            .flat_map(|_| {
                (0..2)
                    .flat_map(|node| {
                        let actions = world.plan(node);
                        actions
                            .iter()
                            .map(|a| {
                                world.apply(node, a).unwrap();
                                (node, a.name())
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            trace,
            [(0, "unmount"), (0, "detach"), (1, "attach"), (1, "mount")]
        );
        assert!(world.mounted_on(1, 0));
    }
}
