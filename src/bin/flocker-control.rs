//! `flocker-control`: one control node (API on 4523, agents on 4524).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use flocker::cluster_config::ClusterFile;
use flocker::control::{self, Bootstrap, ControlSettings};
use flocker::raft::node::RaftSettings;

/// Run a Flocker control node: the v1 REST API (HTTPS, client certificates), the agent
/// port, and the Raft replica that stores the configuration.
#[derive(Debug, Parser)]
#[command(name = "flocker-control", version)]
struct Options {
    /// Directory for the Raft log, vote and state machine (sled).
    #[arg(short = 'd', long, default_value = "/var/lib/flocker")]
    data_path: PathBuf,
    /// REST API listen endpoint: `tcp:PORT`, `tcp:PORT:interface=ADDR`, `PORT` or `ADDR:PORT`.
    #[arg(short = 'p', long, default_value = "tcp:4523")]
    port: String,
    /// Agent protocol listen endpoint, same forms as --port.
    #[arg(short = 'a', long, default_value = "tcp:4524")]
    agent_port: String,
    /// Directory with cluster.crt, control-service.crt and control-service.key.
    #[arg(short = 'c', long, default_value = "/etc/flocker")]
    certificates_directory: PathBuf,
    /// Peer (Raft) listen endpoint for the other control nodes, same forms as --port.
    #[arg(long, default_value = "tcp:4525")]
    peer_port: String,
    /// This control node's Raft id (stable across restarts; never reuse one).
    #[arg(long, default_value_t = 1)]
    node_id: u64,
    /// A cluster file (see cluster-config/) listing the initial control nodes. The member
    /// with the lowest id forms the cluster on first start; the others wait for it.
    /// Without it (and without --join) the node forms a cluster of one.
    #[arg(long, conflicts_with = "join")]
    cluster: Option<PathBuf>,
    /// Join an existing cluster: never initialize; wait to be added with
    /// `flocker-cluster add` (or POST /admin/v1/members).
    #[arg(long)]
    join: bool,
    /// Host name or IP that other nodes and clients use to reach this node; defaults to
    /// the listen address.
    #[arg(long)]
    advertise_host: Option<String>,
    /// Seconds a request waits for a leader before answering 503.
    #[arg(long, default_value_t = 5.0)]
    leader_wait: f64,
    /// Seconds after which the state of a silent agent is dropped (Flocker: 120).
    #[arg(long, default_value_t = 120.0)]
    state_expiry: f64,
    /// Build a Raft snapshot (and compact the log) every this many entries.
    #[arg(long, default_value_t = 5000)]
    snapshot_every: u64,
    /// Raft heartbeat interval in milliseconds (also the replication RPC timeout).
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Raft election timeout range in milliseconds (min must exceed the heartbeat).
    #[arg(long, default_value_t = 300)]
    election_min_ms: u64,
    #[arg(long, default_value_t = 500)]
    election_max_ms: u64,
    /// More logging (repeat for more).
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Write the log to this file instead of standard error.
    #[arg(long)]
    logfile: Option<PathBuf>,
    /// Accepted for compatibility with Flocker's units; logs still go to standard error.
    #[arg(long)]
    journald: bool,
}

/// Parse a Twisted-style endpoint (`tcp:4523`, `tcp:4523:interface=127.0.0.1`) or a plain
/// `PORT` / `ADDR:PORT`.
fn endpoint(text: &str) -> anyhow::Result<SocketAddr> {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    if let Some(rest) = text.strip_prefix("tcp:") {
        let mut parts = rest.split(':');
        let port: u16 = parts
            .next()
            .unwrap_or_default()
            .parse()
            .context("port number")?;
        let mut ip = any;
        for option in parts {
            if let Some(addr) = option.strip_prefix("interface=") {
                ip = addr.parse().context("interface address")?;
            }
        }
        return Ok(SocketAddr::new(ip, port));
    }
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(any, port));
    }
    text.parse()
        .with_context(|| format!("not an endpoint: {text}"))
}

fn init_logging(options: &Options) -> anyhow::Result<()> {
    let level = match options.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},openraft=warn,sled=warn"))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &options.logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    init_logging(&options)?;
    let mut raft = RaftSettings::new(options.node_id, options.data_path.clone());
    raft.snapshot_every = options.snapshot_every.max(1);
    raft.heartbeat_ms = options.heartbeat_ms;
    raft.election_min_ms = options.election_min_ms;
    raft.election_max_ms = options.election_max_ms;
    let api_listen = endpoint(&options.port)?;
    let peer_listen = endpoint(&options.peer_port)?;
    let bootstrap = match (&options.cluster, options.join) {
        (_, true) => Bootstrap::Join,
        (Some(path), false) => {
            let file = ClusterFile::load(path)?;
            if file.entry(options.node_id).is_none() {
                anyhow::bail!("node id {} is not in {}", options.node_id, path.display());
            }
            Bootstrap::Members(file.members())
        }
        (None, false) => Bootstrap::Single,
    };
    let advertise = |addr: SocketAddr| {
        options
            .advertise_host
            .as_ref()
            .map(|host| format!("{host}:{}", addr.port()))
    };
    let settings = ControlSettings {
        certificates_directory: options.certificates_directory.clone(),
        api_listen,
        agent_listen: endpoint(&options.agent_port)?,
        peer_listen,
        peer_advertise: advertise(peer_listen),
        api_advertise: advertise(api_listen),
        bootstrap,
        raft,
        leader_wait: Duration::from_secs_f64(options.leader_wait.max(0.0)),
        state_expiry: Duration::from_secs_f64(options.state_expiry.max(1.0)),
    };
    let running = control::start(settings).await?;
    // Announce the bound ports on stdout, for supervisors that start us on port 0.
    println!(
        "flocker-control listening api={} agent={} peer={}",
        running.api_addr, running.agent_addr, running.peer_addr
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
    running.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_in_twisted_and_plain_forms() {
        assert_eq!(endpoint("tcp:4523").unwrap().port(), 4523);
        assert_eq!(
            endpoint("tcp:0:interface=127.0.0.1").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(endpoint("4524").unwrap().port(), 4524);
        assert_eq!(endpoint("[::1]:7").unwrap(), "[::1]:7".parse().unwrap());
        assert!(endpoint("tcp:x").is_err());
    }
}
