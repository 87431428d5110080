//! Shared test support: a real PKI made with `flocker::ca`, control nodes on loopback
//! port 0, clients with real certificates, and waiting with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flocker::client::Client;
use flocker::control::{self, ControlSettings, RunningControl};
use flocker::raft::node::RaftSettings;
use flocker::tls::TlsFiles;
use uuid::Uuid;

/// Certificates for one test cluster, all in one directory.
pub struct Pki {
    pub dir: PathBuf,
    pub cluster_id: Uuid,
    pub nodes: Vec<Uuid>,
}

impl Pki {
    pub fn create(dir: &Path, nodes: usize) -> Pki {
        let ids: Vec<Uuid> = (0..nodes).map(|_| Uuid::new_v4()).collect();
        Self::create_with_nodes(dir, &ids)
    }

    /// A PKI whose node certificates carry these node UUIDs.
    pub fn create_with_nodes(dir: &Path, ids: &[Uuid]) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let info = flocker::ca::initialize(dir, "test-cluster").unwrap();
        let control = flocker::ca::create_control_certificate(
            dir,
            dir,
            "127.0.0.1",
            &["localhost".to_owned()],
        )
        .unwrap();
        std::fs::rename(&control.cert_path, dir.join("control-service.crt")).unwrap();
        std::fs::rename(&control.key_path, dir.join("control-service.key")).unwrap();
        flocker::ca::create_api_certificate(dir, dir, "alice").unwrap();
        for id in ids {
            flocker::ca::create_node_certificate_with_id(dir, dir, *id).unwrap();
        }
        let nodes = ids.to_vec();
        Pki {
            dir: dir.to_owned(),
            cluster_id: info.cluster_id,
            nodes,
        }
    }

    pub fn user(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.dir, "alice")
    }

    pub fn node(&self, i: usize) -> TlsFiles {
        TlsFiles::in_dir(&self.dir, &self.nodes[i].to_string())
    }

    pub fn control(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.dir, "control-service")
    }
}

pub fn settings(pki: &Pki, data: &Path) -> ControlSettings {
    let mut raft = RaftSettings::new(1, data.to_owned());
    raft.snapshot_every = 500;
    ControlSettings {
        certificates_directory: pki.dir.clone(),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        agent_listen: "127.0.0.1:0".parse().unwrap(),
        peer_listen: "127.0.0.1:0".parse().unwrap(),
        peer_advertise: None,
        api_advertise: None,
        bootstrap: flocker::control::Bootstrap::Single,
        raft,
        leader_wait: Duration::from_secs(5),
        state_expiry: Duration::from_secs(120),
    }
}

/// A single control node with its PKI and data in a temporary directory.
pub struct Single {
    pub tmp: tempfile::TempDir,
    pub pki: Pki,
    pub control: RunningControl,
    pub client: Client,
}

impl Single {
    pub async fn start() -> Single {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ControlSettings)) -> Single {
        Self::start_full(&[Uuid::new_v4(), Uuid::new_v4()], tweak).await
    }

    /// A node whose PKI has node certificates for these UUIDs (given as text).
    pub async fn start_with_nodes(nodes: &[String]) -> Single {
        let ids: Vec<Uuid> = nodes.iter().map(|n| n.parse().unwrap()).collect();
        Self::start_full(&ids, |_| {}).await
    }

    async fn start_full(nodes: &[Uuid], tweak: impl FnOnce(&mut ControlSettings)) -> Single {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::create_with_nodes(&tmp.path().join("certs"), nodes);
        let mut settings = settings(&pki, &tmp.path().join("data"));
        tweak(&mut settings);
        let control = control::start(settings).await.unwrap();
        let client = Client::new(&format!("https://{}", control.api_addr), &pki.user()).unwrap();
        Single {
            tmp,
            pki,
            control,
            client,
        }
    }

    pub fn agent_client(&self, node: usize) -> Client {
        Client::new(
            &format!("https://{}", self.control.agent_addr),
            &self.pki.node(node),
        )
        .unwrap()
    }
}

/// Poll `check` until it returns `Some`, or panic after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
