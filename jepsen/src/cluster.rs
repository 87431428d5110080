//! The system under test: `flocker-control` processes, one per network namespace.
//!
//! A *slot* is a namespace with a fixed address (`n1`, `n2`, ...). The Raft id running in
//! a slot changes when the membership nemesis removes the node and adds it back (a removed
//! node's data is wiped and it comes back under a new id with `--join`, as Raft ids must
//! never be reused). Processes are started with `ip netns exec <ns> flocker-control ...`
//! (which execs, so the child's PID is the node's), each in its own process group, and are
//! signalled by PID only.
//!
//! [`Endpoints`] is what clients need (URLs and certificates) and never changes;
//! [`Cluster`] holds the processes and sits behind a mutex shared by the nemesis and the
//! teardown guard. Nothing here holds that mutex across an `.await`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use flocker::client::Client;
use flocker::cluster_config::{AgentsSection, ClusterFile, ControlEntry};
use flocker::tls::TlsFiles;
use serde_json::{json, Value};

use crate::netns::Layout;
use crate::process::signal;

pub const API_PORT: u16 = 4523;
pub const AGENT_PORT: u16 = 4524;
pub const PEER_PORT: u16 = 4525;
const API_USER: &str = "jepsen";

/// How every control node is started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub control_bin: PathBuf,
    /// `--leader-wait` seconds.
    pub leader_wait: f64,
    /// `--snapshot-every` entries.
    pub snapshot_every: u64,
    /// Extra environment (bug injection).
    pub env: Vec<(String, String)>,
}

/// URLs and client certificates: all a client needs.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub layout: Layout,
    pub tls: TlsFiles,
}

impl Endpoints {
    pub fn slots(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.layout.slots
    }

    pub fn name(slot: usize) -> String {
        format!("n{slot}")
    }

    pub fn api_url(&self, slot: usize) -> String {
        format!("https://{}:{API_PORT}", self.layout.node_ip(slot))
    }

    pub fn client(&self, slot: usize, timeout: Duration) -> anyhow::Result<Client> {
        Ok(Client::with_timeout(
            &self.api_url(slot),
            &self.tls,
            timeout,
        )?)
    }

    /// The slot whose address appears in `addr` (`10.x.y.z:port`).
    pub fn slot_of_addr(&self, addr: &str) -> Option<usize> {
        let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
        self.slots()
            .find(|&s| self.layout.node_ip(s).to_string() == ip)
    }

    /// `GET /admin/v1/status` of one node.
    pub async fn status(&self, slot: usize, timeout: Duration) -> Option<Value> {
        let client = self.client(slot, timeout).ok()?;
        let reply = client.get("/admin/v1/status").await.ok()?;
        reply.status.is_success().then_some(reply.body)
    }

    /// The statuses of all slots, fetched concurrently (absent for nodes that did not
    /// answer within `timeout`).
    pub async fn statuses(&self, timeout: Duration) -> Vec<(usize, Value)> {
        let mut tasks = tokio::task::JoinSet::new();
        for slot in self.slots() {
            let me = self.clone();
            tasks.spawn(async move { (slot, me.status(slot, timeout).await) });
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok((slot, Some(status))) = done {
                out.push((slot, status));
            }
        }
        out.sort_by_key(|(slot, _)| *slot);
        out
    }

    /// The leader's slot as reported by the node with the highest term that knows one.
    pub async fn leader(&self, timeout: Duration) -> Option<usize> {
        let statuses = self.statuses(timeout).await;
        let (_, best) = statuses
            .iter()
            .filter(|(_, s)| s["leader"].is_u64())
            .max_by_key(|(_, s)| s["term"].as_u64().unwrap_or(0))?;
        let leader = best["leader"].as_u64()?;
        let addr = best["nodes"][leader.to_string()]["api_addr"].as_str()?;
        self.slot_of_addr(addr)
    }
}

/// One slot's process.
#[derive(Debug)]
pub struct Node {
    pub slot: usize,
    pub raft_id: u64,
    /// Started with `--join` (added by the membership nemesis) rather than `--cluster`.
    pub joined: bool,
    /// Part of the Raft membership (false between removal and re-adding).
    pub member: bool,
    pub paused: bool,
    child: Option<Child>,
}

impl Node {
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }
}

/// The control nodes of one run.
#[derive(Debug)]
pub struct Cluster {
    pub endpoints: Endpoints,
    pub dir: PathBuf,
    options: NodeOptions,
    pub nodes: Vec<Node>,
    next_id: u64,
    /// Nodes that exited without the nemesis killing them: `"n2 (id 2): exit status: 101"`.
    pub unexpected_exits: Vec<String>,
}

pub type Shared = Arc<Mutex<Cluster>>;

impl Cluster {
    /// Certificates (the control certificate names every node address) and the cluster
    /// file, in `dir`. Starts nothing.
    pub fn prepare(dir: &Path, layout: Layout, options: NodeOptions) -> anyhow::Result<Self> {
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs)?;
        flocker::ca::initialize(&certs, "flocker-jepsen")?;
        let ips: Vec<String> = (1..=layout.slots)
            .map(|s| layout.node_ip(s).to_string())
            .collect();
        let made = flocker::ca::create_control_certificate(&certs, &certs, &ips[0], &ips[1..])?;
        std::fs::rename(&made.cert_path, certs.join("control-service.crt"))?;
        std::fs::rename(&made.key_path, certs.join("control-service.key"))?;
        flocker::ca::create_api_certificate(&certs, &certs, API_USER)?;
        let file = ClusterFile {
            control: (1..=layout.slots)
                .map(|s| ControlEntry {
                    id: s as u64,
                    host: layout.node_ip(s).to_string(),
                    api_port: API_PORT,
                    agent_port: AGENT_PORT,
                    peer_port: PEER_PORT,
                })
                .collect(),
            agents: AgentsSection {
                nodes: 0,
                backend: "directory".into(),
            },
        };
        std::fs::write(dir.join("cluster.toml"), toml::to_string(&file)?)?;
        std::fs::create_dir_all(dir.join("logs"))?;
        let nodes = (1..=layout.slots)
            .map(|slot| Node {
                slot,
                raft_id: slot as u64,
                joined: false,
                member: true,
                paused: false,
                child: None,
            })
            .collect();
        Ok(Cluster {
            endpoints: Endpoints {
                tls: TlsFiles::in_dir(&certs, API_USER),
                layout: layout.clone(),
            },
            dir: dir.to_owned(),
            options,
            next_id: layout.slots as u64 + 1,
            nodes,
            unexpected_exits: Vec::new(),
        })
    }

    pub fn node(&self, slot: usize) -> &Node {
        &self.nodes[slot - 1]
    }

    fn node_mut(&mut self, slot: usize) -> &mut Node {
        &mut self.nodes[slot - 1]
    }

    fn data_path(&self, slot: usize) -> PathBuf {
        let node = self.node(slot);
        self.dir
            .join("data")
            .join(format!("n{slot}-id{}", node.raft_id))
    }

    /// Start the node of `slot` (same id, same data) if it is not running.
    pub fn start(&mut self, slot: usize) -> anyhow::Result<()> {
        if self.is_running(slot) {
            return Ok(());
        }
        let layout = &self.endpoints.layout;
        let ns = layout.node_ns(slot);
        let ip = layout.node_ip(slot);
        let data = self.data_path(slot);
        std::fs::create_dir_all(&data)?;
        let log_path = self.dir.join("logs").join(format!("n{slot}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let node = self.node(slot);
        let endpoint = |port: u16| format!("tcp:{port}:interface={ip}");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns])
            .arg(&self.options.control_bin)
            .arg("--data-path")
            .arg(&data)
            .arg("--certificates-directory")
            .arg(self.dir.join("certs"))
            .args(["--port", &endpoint(API_PORT)])
            .args(["--agent-port", &endpoint(AGENT_PORT)])
            .args(["--peer-port", &endpoint(PEER_PORT)])
            .args(["--node-id", &node.raft_id.to_string()])
            .args(["--leader-wait", &self.options.leader_wait.to_string()])
            .args(["--snapshot-every", &self.options.snapshot_every.to_string()]);
        if node.joined {
            command.arg("--join");
        } else {
            command.arg("--cluster").arg(self.dir.join("cluster.toml"));
        }
        command
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a Ctrl-C in the terminal reaches the suite only,
            // which then stops the nodes itself.
            command.process_group(0);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.options.control_bin.display()))?;
        let node = self.node_mut(slot);
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    pub fn is_running(&mut self, slot: usize) -> bool {
        let node = self.node_mut(slot);
        let raft_id = node.raft_id;
        match node.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(status) => {
                node.child = None;
                let status = match status {
                    Ok(Some(s)) => s.to_string(),
                    Ok(None) => "gone".to_owned(),
                    Err(e) => e.to_string(),
                };
                self.unexpected_exits
                    .push(format!("n{slot} (id {raft_id}): {status}"));
                false
            }
            None => false,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self, slot: usize) -> anyhow::Result<()> {
        let node = self.node_mut(slot);
        node.paused = false;
        if let Some(mut child) = node.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = signal(pid, libc::SIGKILL);
            }
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, slot: usize, grace: Duration) -> anyhow::Result<()> {
        let node = self.node_mut(slot);
        if let Some(child) = node.child.as_mut() {
            if let Ok(pid) = i32::try_from(child.id()) {
                if node.paused {
                    let _ = signal(pid, libc::SIGCONT);
                }
                let _ = signal(pid, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill(slot)
    }

    pub fn pause(&mut self, slot: usize) -> anyhow::Result<()> {
        let pid = self.node(slot).pid().context("not running")?;
        signal(pid, libc::SIGSTOP)?;
        self.node_mut(slot).paused = true;
        Ok(())
    }

    pub fn resume(&mut self, slot: usize) -> anyhow::Result<()> {
        if let Some(pid) = self.node(slot).pid() {
            signal(pid, libc::SIGCONT)?;
        }
        self.node_mut(slot).paused = false;
        Ok(())
    }

    /// SIGKILL every node (teardown; idempotent).
    pub fn kill_all(&mut self) {
        for slot in 1..=self.nodes.len() {
            let _ = self.kill(slot);
        }
    }

    /// Forget slot's node after it was removed from the membership: stop it and wipe its
    /// data (it will come back under a new id).
    pub fn retire(&mut self, slot: usize) -> anyhow::Result<()> {
        self.stop(slot, Duration::from_secs(3))?;
        let data = self.data_path(slot);
        if data.exists() {
            std::fs::remove_dir_all(&data).with_context(|| format!("wiping {}", data.display()))?;
        }
        self.node_mut(slot).member = false;
        Ok(())
    }

    /// Give slot a new Raft id and start it empty, waiting to be added (`--join`).
    pub fn start_joining(&mut self, slot: usize) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let node = self.node_mut(slot);
        node.raft_id = id;
        node.joined = true;
        self.start(slot)?;
        Ok(id)
    }

    /// Raft ids of the slots that are members.
    pub fn member_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.member)
            .map(|n| n.raft_id)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Lock the shared cluster (a poisoned lock is still usable: the processes are what
/// matter, and teardown must run).
pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Cluster> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Retry an admin request on the other running slots until it succeeds or `timeout`.
/// `Ok(reply body)` on 2xx.
async fn admin_request(
    endpoints: &Endpoints,
    avoid: usize,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no node answered");
    loop {
        for slot in endpoints.slots().filter(|&s| s != avoid) {
            // Membership changes wait up to 30 s on the server; never past our deadline.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let budget = (left + Duration::from_secs(1))
                .clamp(Duration::from_secs(2), Duration::from_secs(35));
            let Ok(client) = endpoints.client(slot, budget) else {
                continue;
            };
            let bytes = body.as_ref().map(|b| b.to_string().into_bytes());
            match client.request(method.clone(), path, &[], bytes).await {
                Ok(reply) if reply.status.is_success() => return Ok(reply.body),
                Ok(reply) => last = format!("{} from n{slot}: {}", reply.status, reply.body),
                Err(e) => last = format!("n{slot}: {e}"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{method} {path}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether `raft_id` is in the membership, as the leader sees it (None: unknown).
async fn is_member(endpoints: &Endpoints, raft_id: u64) -> Option<bool> {
    let leader = endpoints.leader(Duration::from_secs(2)).await?;
    let status = endpoints.status(leader, Duration::from_secs(2)).await?;
    let in_list = |key: &str| {
        status[key]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|i| i.as_u64() == Some(raft_id)))
    };
    Some(in_list("voters") || in_list("learners"))
}

/// Remove slot's node from the membership (through another node), then stop it and wipe
/// its data. Errors leave the node running and a member.
pub async fn remove_member(shared: &Shared, slot: usize, timeout: Duration) -> anyhow::Result<u64> {
    let (endpoints, raft_id) = {
        let c = lock(shared);
        (c.endpoints.clone(), c.node(slot).raft_id)
    };
    let path = format!("/admin/v1/members/{raft_id}");
    let result = admin_request(
        &endpoints,
        slot,
        reqwest::Method::DELETE,
        &path,
        None,
        timeout,
    )
    .await;
    if let Err(e) = result {
        // The answer may have been lost; ask the leader.
        if is_member(&endpoints, raft_id).await != Some(false) {
            return Err(e);
        }
    }
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || lock(&shared).retire(slot)).await??;
    Ok(raft_id)
}

/// Bring slot back: start it empty under a new id, add it as a learner, then make the
/// voters every member plus it.
pub async fn add_member(shared: &Shared, slot: usize, timeout: Duration) -> anyhow::Result<u64> {
    let (endpoints, raft_id, mut voters) = {
        let mut c = lock(shared);
        let voters = c.member_ids();
        let id = if !c.node(slot).member && c.node(slot).joined && c.is_running(slot) {
            c.node(slot).raft_id
        } else {
            c.start_joining(slot)?
        };
        (c.endpoints.clone(), id, voters)
    };
    voters.retain(|v| *v != raft_id);
    let ip = endpoints.layout.node_ip(slot);
    let learner = json!({
        "id": raft_id,
        "raft_addr": format!("{ip}:{PEER_PORT}"),
        "api_addr": format!("{ip}:{API_PORT}"),
    });
    // A retry after a half-done attempt finds the learner already added.
    if is_member(&endpoints, raft_id).await != Some(true) {
        admin_request(
            &endpoints,
            slot,
            reqwest::Method::POST,
            "/admin/v1/members",
            Some(learner),
            timeout,
        )
        .await?;
    }
    voters.push(raft_id);
    admin_request(
        &endpoints,
        slot,
        reqwest::Method::PUT,
        "/admin/v1/voters",
        Some(json!({ "voters": voters })),
        timeout,
    )
    .await?;
    lock(shared).node_mut(slot).member = true;
    Ok(raft_id)
}

/// Wait until every slot runs, every running node names the same leader, and the
/// leader's voters are exactly the members. Returns the leader's slot.
pub async fn wait_healthy(shared: &Shared, timeout: Duration) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let (endpoints, mut expected) = {
            let c = lock(shared);
            (c.endpoints.clone(), c.member_ids())
        };
        expected.sort_unstable();
        let statuses = endpoints.statuses(Duration::from_secs(2)).await;
        let leaders: Vec<Option<u64>> =
            statuses.iter().map(|(_, s)| s["leader"].as_u64()).collect();
        let agreed = statuses.len() == endpoints.layout.slots
            && leaders.first().is_some_and(|l| l.is_some())
            && leaders.iter().all(|l| *l == leaders[0]);
        if agreed {
            let leader_id = leaders[0].expect("checked above");
            if let Some((slot, status)) = statuses
                .iter()
                .find(|(_, s)| s["id"].as_u64() == Some(leader_id))
            {
                let mut voters: Vec<u64> = status["voters"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                voters.sort_unstable();
                if voters == expected {
                    return Ok(*slot);
                }
                last = format!("voters {voters:?}, expected {expected:?}");
            }
        } else {
            last = format!(
                "{} of {} nodes answered, leaders {leaders:?}",
                statuses.len(),
                endpoints.layout.slots
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the cluster did not become healthy within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
