//! A whole cluster on one machine, as child processes: what `flocker-cluster up` runs,
//! and what the process-level tests, the load generator and the benchmarks drive.
//!
//! Layout of the cluster directory:
//!
//! ```text
//! DIR/certs/        cluster.crt/.key, control-service.crt/.key, admin.crt/.key
//! DIR/cluster.toml  the cluster file with every port resolved
//! DIR/control-N/    data path of control node N (sled), and its log
//! DIR/nodes/UUID/   one agent node: agent.yml, cluster.crt, node.crt, node.key
//! DIR/cluster.json  API URLs, certificate paths, control node ids, PIDs and data paths
//! ```
//!
//! Certificates are created only if absent, so `up` on an existing directory restarts the
//! same cluster with its data. Ports given as 0 are chosen by binding port 0 and releasing
//! it just before the children bind them (a small race that a busy machine could lose:
//! then `up` fails with "address in use" and can be re-run). Each child runs in its own
//! process group and is stopped by PID, never by name.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client::Client;
use crate::cluster_config::ClusterFile;
use crate::raft::NodeId;
use crate::tls::TlsFiles;

/// The API user certificate a local cluster creates (`certs/admin.crt`).
pub const ADMIN_USER: &str = "admin";

pub struct LocalCluster {
    pub dir: PathBuf,
    pub file: ClusterFile,
    /// Where `flocker-control` (and the agents) are.
    bin_dir: PathBuf,
    controls: BTreeMap<NodeId, Child>,
    /// Agent processes by (node, program).
    agents: BTreeMap<(Uuid, String), Child>,
    pub agent_nodes: Vec<Uuid>,
    /// Extra arguments for every control node (e.g. `--snapshot-every 100`).
    pub control_args: Vec<String>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalCluster {
    /// Create certificates (if absent) and resolve ports; starts nothing.
    pub fn prepare(dir: &Path, mut file: ClusterFile, bin_dir: &Path) -> anyhow::Result<Self> {
        let dir = std::path::absolute(dir)?;
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs)?;
        let resolved = dir.join("cluster.toml");
        if resolved.exists() {
            // A restart: keep the ports (and so the Raft addresses) the members know.
            file = ClusterFile::load(&resolved)?;
        } else {
            for entry in &mut file.control {
                for port in [
                    &mut entry.api_port,
                    &mut entry.agent_port,
                    &mut entry.peer_port,
                ] {
                    if *port == 0 {
                        *port = free_port()?;
                    }
                }
            }
        }
        if !certs.join("cluster.crt").exists() {
            crate::ca::initialize(&certs, "flocker-local")?;
        }
        if !certs.join("control-service.crt").exists() {
            let mut hosts: Vec<String> = file.control.iter().map(|c| c.host.clone()).collect();
            hosts.extend(["127.0.0.1".to_owned(), "localhost".to_owned()]);
            hosts.sort();
            hosts.dedup();
            let made =
                crate::ca::create_control_certificate(&certs, &certs, &hosts[0], &hosts[1..])?;
            std::fs::rename(&made.cert_path, certs.join("control-service.crt"))?;
            std::fs::rename(&made.key_path, certs.join("control-service.key"))?;
        }
        if !certs.join(format!("{ADMIN_USER}.crt")).exists() {
            crate::ca::create_api_certificate(&certs, &certs, ADMIN_USER)?;
        }
        let agent_nodes = Self::agent_nodes(&dir, &certs, file.agents.nodes)?;
        std::fs::write(&resolved, toml::to_string(&file)?)?;
        Ok(LocalCluster {
            dir,
            file,
            bin_dir: bin_dir.to_owned(),
            controls: BTreeMap::new(),
            agents: BTreeMap::new(),
            agent_nodes,
            control_args: Vec::new(),
        })
    }

    /// One directory per agent node with its certificate, created once.
    fn agent_nodes(dir: &Path, certs: &Path, count: usize) -> anyhow::Result<Vec<Uuid>> {
        let nodes_dir = dir.join("nodes");
        std::fs::create_dir_all(&nodes_dir)?;
        let mut nodes: Vec<Uuid> = std::fs::read_dir(&nodes_dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        nodes.sort();
        while nodes.len() < count {
            let uuid = Uuid::new_v4();
            let node_dir = nodes_dir.join(uuid.to_string());
            std::fs::create_dir_all(&node_dir)?;
            crate::ca::create_node_certificate_with_id(certs, &node_dir, uuid)?;
            std::fs::rename(
                node_dir.join(format!("{uuid}.crt")),
                node_dir.join("node.crt"),
            )?;
            std::fs::rename(
                node_dir.join(format!("{uuid}.key")),
                node_dir.join("node.key"),
            )?;
            std::fs::copy(certs.join("cluster.crt"), node_dir.join("cluster.crt"))?;
            nodes.push(uuid);
        }
        nodes.truncate(count);
        Ok(nodes)
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    pub fn admin_tls(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.certs(), ADMIN_USER)
    }

    pub fn node_dir(&self, node: Uuid) -> PathBuf {
        self.dir.join("nodes").join(node.to_string())
    }

    pub fn data_path(&self, id: NodeId) -> PathBuf {
        self.dir.join(format!("control-{id}"))
    }

    pub fn api_url(&self, id: NodeId) -> String {
        let entry = self.file.entry(id).expect("a member of the cluster file");
        format!("https://{}:{}", entry.host, entry.api_port)
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.file.control.iter().map(|c| c.id).collect()
    }

    pub fn client(&self, id: NodeId) -> anyhow::Result<Client> {
        Ok(Client::with_timeout(
            &self.api_url(id),
            &self.admin_tls(),
            Duration::from_secs(10),
        )?)
    }

    /// Start (or restart) control node `id` on its resolved ports and data path.
    pub fn start_control(&mut self, id: NodeId) -> anyhow::Result<()> {
        let entry = self.file.entry(id).context("no such control node")?.clone();
        let data = self.data_path(id);
        std::fs::create_dir_all(&data)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("control.log"))?;
        let endpoint = |port: u16| format!("tcp:{port}:interface={}", entry.host);
        let mut command = Command::new(self.bin_dir.join("flocker-control"));
        command
            .arg("--data-path")
            .arg(&data)
            .arg("--certificates-directory")
            .arg(self.certs())
            .args(["--port", &endpoint(entry.api_port)])
            .args(["--agent-port", &endpoint(entry.agent_port)])
            .args(["--peer-port", &endpoint(entry.peer_port)])
            .args(["--node-id", &id.to_string()])
            .arg("--cluster")
            .arg(self.dir.join("cluster.toml"))
            .args(&self.control_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        process_group(&mut command);
        let child = command.spawn().with_context(|| {
            format!(
                "starting {}",
                self.bin_dir.join("flocker-control").display()
            )
        })?;
        self.controls.insert(id, child);
        Ok(())
    }

    pub fn start_all_controls(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            self.start_control(id)?;
        }
        Ok(())
    }

    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.controls.get(&id).map(Child::id)
    }

    /// Send `signal` to control node `id` (by PID).
    pub fn signal(&self, id: NodeId, signal: i32) -> anyhow::Result<()> {
        let pid = self.pid(id).context("not running")?;
        signal_pid(pid, signal)
    }

    /// SIGKILL control node `id` and reap it.
    pub fn kill(&mut self, id: NodeId) -> anyhow::Result<()> {
        if let Some(mut child) = self.controls.remove(&id) {
            signal_pid(child.id(), libc::SIGKILL)?;
            child.wait()?;
        }
        Ok(())
    }

    /// The leader as seen by the running members, once they agree.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for id in self.controls.keys() {
                let Ok(client) = self.client(*id) else {
                    continue;
                };
                if let Ok(reply) = client.get("/admin/v1/status").await {
                    seen.push(reply.body["leader"].as_u64());
                }
            }
            if let Some(Some(leader)) = seen.first() {
                if seen.len() == self.controls.len() && seen.iter().all(|s| *s == Some(*leader)) {
                    return Ok(*leader);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no leader agreed on within {timeout:?} (seen {seen:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Write each agent node's `agent.yml` (both agents of a node read the same file, so
    /// they share its era and never discard each other's reports).
    pub fn write_agent_configs(&self, backend: &str) -> anyhow::Result<()> {
        for node in &self.agent_nodes {
            std::fs::write(
                self.node_dir(*node).join("agent.yml"),
                self.agent_yml(*node, backend),
            )?;
        }
        Ok(())
    }

    /// Start `program` (an agent binary next to `flocker-control`) once per agent node,
    /// with the node's `agent.yml`. Returns the nodes it started for (none when the
    /// binary is absent).
    pub fn start_agents(&mut self, program: &str) -> anyhow::Result<Vec<Uuid>> {
        let binary = self.bin_dir.join(program);
        if !binary.exists() {
            return Ok(Vec::new());
        }
        let mut started = Vec::new();
        for node in self.agent_nodes.clone() {
            let node_dir = self.node_dir(node);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(node_dir.join(format!("{program}.log")))?;
            let mut command = Command::new(&binary);
            command
                .arg("-c")
                .arg(node_dir.join("agent.yml"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            process_group(&mut command);
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            self.agents.insert((node, program.to_owned()), child);
            started.push(node);
        }
        Ok(started)
    }

    fn agent_yml(&self, node: Uuid, backend: &str) -> String {
        let controls: Vec<String> = self
            .file
            .control
            .iter()
            .map(|c| format!("  - hostname: \"{}\"\n    port: {}\n", c.host, c.agent_port))
            .collect();
        let root = self.dir.join("storage");
        let mount_root = self.dir.join("mounts").join(node.to_string());
        // Agents on one host share the kernel's boot id, so each simulated node needs its
        // own era or `/v1/state/nodes/by_era` could not tell them apart. The first node
        // keeps the real boot id, so tools on this host that look their node up by era
        // (Flocker's Docker plugin, `flocker-node-era`) find it.
        let era = if self.agent_nodes.first() == Some(&node) {
            String::new()
        } else {
            format!("era: \"{}\"\n", Uuid::new_v4())
        };
        format!(
            "version: 1\n{era}control-service:\n{}dataset:\n  backend: {backend}\n  root_path: \"{}\"\n  mount_root: \"{}\"\n",
            controls.concat(),
            root.display(),
            mount_root.display()
        )
    }

    /// `cluster.json`: everything a client or a test needs to use the cluster.
    pub fn describe(&self) -> Value {
        let certs = self.certs();
        let controls: Vec<Value> = self
            .file
            .control
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "api_url": self.api_url(c.id),
                    "agent_address": format!("{}:{}", c.host, c.agent_port),
                    "peer_address": format!("{}:{}", c.host, c.peer_port),
                    "pid": self.pid(c.id),
                    "data_path": self.data_path(c.id),
                })
            })
            .collect();
        let agents: Vec<Value> = self
            .agent_nodes
            .iter()
            .map(|n| {
                let pid = |program: &str| self.agents.get(&(*n, program.to_owned())).map(Child::id);
                json!({
                    "uuid": n,
                    "directory": self.node_dir(*n),
                    "dataset_agent_pid": pid("flocker-dataset-agent"),
                    "container_agent_pid": pid("flocker-container-agent"),
                })
            })
            .collect();
        json!({
            "api_urls": self.ids().iter().map(|id| self.api_url(*id)).collect::<Vec<_>>(),
            "ca_cert": certs.join("cluster.crt"),
            "client_cert": certs.join(format!("{ADMIN_USER}.crt")),
            "client_key": certs.join(format!("{ADMIN_USER}.key")),
            "control_nodes": controls,
            "agent_nodes": agents,
        })
    }

    pub fn write_description(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("cluster.json");
        std::fs::write(&path, serde_json::to_string_pretty(&self.describe())?)?;
        Ok(path)
    }

    /// SIGTERM every child, wait a little, then SIGKILL what is left.
    pub fn stop_all(&mut self) {
        let mut children: Vec<Child> = std::mem::take(&mut self.agents).into_values().collect();
        children.extend(std::mem::take(&mut self.controls).into_values());
        for child in &children {
            let _ = signal_pid(child.id(), libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for child in &mut children {
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl LocalCluster {
    /// Unmount the datasets this cluster's agents mounted (under `DIR/mounts`) and detach
    /// the loop devices backed by its storage (under `DIR/storage`). The data stays in
    /// the backing files; the next `up` attaches and mounts them again. Call after the
    /// agents have stopped.
    pub fn release_storage(&self) {
        let mounts = self.dir.join("mounts");
        let storage = self.dir.join("storage");
        let mounted: Vec<String> = std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
            .filter(|point| Path::new(point).starts_with(&mounts))
            .collect();
        for point in mounted.iter().rev() {
            let _ = Command::new("umount").arg(point).status();
        }
        let listing = Command::new("losetup")
            .args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"])
            .output();
        if let Ok(listing) = listing {
            for line in String::from_utf8_lossy(&listing.stdout).lines() {
                let mut fields = line.split_whitespace();
                if let (Some(device), Some(file)) = (fields.next(), fields.next()) {
                    if Path::new(file).starts_with(&storage) {
                        let _ = Command::new("losetup").args(["-d", device]).status();
                    }
                }
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn process_group(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
}

pub fn signal_pid(pid: u32, signal: i32) -> anyhow::Result<()> {
    let pid = i32::try_from(pid)?;
    let rc = unsafe_kill(pid, signal);
    if rc != 0 {
        bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, signal: i32) -> i32 {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) }
}
