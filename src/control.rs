//! A running control node: consensus, the API and agent listeners, and the leader's
//! periodic duties (lease expiry, agent state expiry).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::handlers::now_micros;
use crate::api::{self, ApiContext};
use crate::model::{Command, Micros, TagFormat};
use crate::raft::network::PeerHttp;
use crate::raft::node::{Consensus, RaftSettings};
use crate::raft::{ControlNode, NodeId};
use crate::tls::{self, PeerRole, TlsFiles};

/// Everything a control node needs to start.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub certificates_directory: PathBuf,
    pub api_listen: SocketAddr,
    pub agent_listen: SocketAddr,
    pub peer_listen: SocketAddr,
    /// The address other control nodes use to reach this one's peer port; defaults to
    /// the bound peer address.
    pub peer_advertise: Option<String>,
    /// The address clients use for this node's API; defaults to the bound API address.
    pub api_advertise: Option<String>,
    /// How this node joins: see [`Bootstrap`].
    pub bootstrap: Bootstrap,
    pub raft: RaftSettings,
    /// How long a request waits for a leader before answering 503.
    pub leader_wait: Duration,
    /// Agent state not refreshed for this long is dropped.
    pub state_expiry: Duration,
}

/// How a node comes to belong to a cluster.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// A cluster of one: this node initializes itself on fresh storage.
    Single,
    /// The initial members (Raft id -> addresses). The member with the lowest id
    /// initializes the cluster on fresh storage; the others wait to hear from it.
    Members(BTreeMap<NodeId, ControlNode>),
    /// Never initialize: wait to be added with the admin interface.
    Join,
}

/// A started control node. Dropping it does not stop it; call [`RunningControl::stop`].
pub struct RunningControl {
    pub consensus: Arc<Consensus>,
    pub api_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningControl {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.consensus.shutdown().await;
    }
}

pub async fn start(settings: ControlSettings) -> anyhow::Result<RunningControl> {
    let dir = &settings.certificates_directory;
    let files = TlsFiles::in_dir(dir, "control-service");
    let cluster_id = crate::ca::load_cluster_id(&files.ca_cert)
        .with_context(|| format!("reading the cluster CA in {}", dir.display()))?;
    let api_tls = tls::server_config(&files, PeerRole::ApiUser)?;
    let agent_tls = tls::server_config(&files, PeerRole::Node)?;
    let peer_tls = tls::server_config(&files, PeerRole::ControlService)?;

    let api_listener = TcpListener::bind(settings.api_listen)
        .await
        .with_context(|| format!("binding the API port {}", settings.api_listen))?;
    let agent_listener = TcpListener::bind(settings.agent_listen)
        .await
        .with_context(|| format!("binding the agent port {}", settings.agent_listen))?;
    let peer_listener = TcpListener::bind(settings.peer_listen)
        .await
        .with_context(|| format!("binding the peer port {}", settings.peer_listen))?;
    let api_addr = api_listener.local_addr()?;
    let agent_addr = agent_listener.local_addr()?;
    let peer_addr = peer_listener.local_addr()?;

    let peers = PeerHttp::new(&files)?;
    let consensus = Consensus::open(&settings.raft, peers).await?;
    let (shutdown, stop) = watch::channel(false);
    // The peer listener comes first: other members may need us to elect a leader.
    let mut tasks = vec![tokio::spawn(crate::server::serve(
        peer_listener,
        peer_tls,
        crate::raft::peer_server::router(consensus.clone()),
        stop.clone(),
    ))];
    let me = ControlNode {
        raft_addr: settings
            .peer_advertise
            .clone()
            .unwrap_or_else(|| peer_addr.to_string()),
        api_addr: settings
            .api_advertise
            .clone()
            .unwrap_or_else(|| api_addr.to_string()),
    };
    let members = match &settings.bootstrap {
        Bootstrap::Single => Some([(settings.raft.id, me)].into()),
        Bootstrap::Members(members) => {
            let first = members.keys().next().copied();
            (first == Some(settings.raft.id)).then(|| members.clone())
        }
        Bootstrap::Join => None,
    };
    if let Some(members) = members {
        if consensus.initialize_if_fresh(members).await? {
            tracing::info!("initialized a new cluster");
        }
    }

    let ctx = Arc::new(ApiContext::new(
        consensus.clone(),
        TagFormat::new(cluster_id),
        settings.leader_wait,
    ));
    tasks.extend([
        tokio::spawn(crate::server::serve(
            api_listener,
            api_tls,
            api::router(ctx.clone()),
            stop.clone(),
        )),
        tokio::spawn(crate::server::serve(
            agent_listener,
            agent_tls,
            crate::agent::control_side::router(ctx.clone()),
            stop.clone(),
        )),
        tokio::spawn(leader_duties(
            consensus.clone(),
            settings.state_expiry,
            stop.clone(),
        )),
    ]);
    tracing::info!(%api_addr, %agent_addr, "control node {} serving", settings.raft.id);
    Ok(RunningControl {
        consensus,
        api_addr,
        agent_addr,
        peer_addr,
        shutdown,
        tasks,
    })
}

/// Once a second, on the leader only: expire leases and silent agents' state. Each sweep
/// is a command stamped with the leader's clock, so every replica removes the same things.
async fn leader_duties(
    consensus: Arc<Consensus>,
    expiry: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expiry = Micros::try_from(expiry.as_micros()).unwrap_or(Micros::MAX);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::server::stopped(&mut stop) => return,
        }
        if !consensus.is_leader() {
            continue;
        }
        let now = now_micros();
        let (leases_due, state_due) = {
            let state = consensus.state.read();
            let leases_due = state.config.leases.values().any(|l| l.expired(now));
            let state_due = state.cluster.has_stale_reports(now.saturating_sub(expiry));
            (leases_due, state_due)
        };
        let wait = Duration::from_secs(2);
        if leases_due {
            if let Err(e) = consensus.write(Command::ExpireLeases { now }, wait).await {
                tracing::warn!("lease expiry: {e}");
            }
        }
        if state_due {
            let command = Command::ExpireState {
                now,
                timeout: expiry,
            };
            if let Err(e) = consensus.write(command, wait).await {
                tracing::warn!("state expiry: {e}");
            }
        }
    }
}
