//! `flocker-cluster`: run a whole Flocker cluster on this machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use flocker::agent::container::{docker_available, DEFAULT_DOCKER_HOST};
use flocker::cluster_config::ClusterFile;
use flocker::local_cluster::LocalCluster;

#[derive(Debug, Parser)]
#[command(
    name = "flocker-cluster",
    version,
    about = "Run a local multi-node Flocker cluster"
)]
struct Options {
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Create certificates if needed, start the control nodes (and agents), wait for a
    /// leader, write DIR/cluster.json, and run until Ctrl-C or SIGTERM.
    Up {
        /// Cluster file (see cluster-config/).
        #[arg(long, default_value = "cluster-config/local-3.toml")]
        config: PathBuf,
        /// Directory for certificates, data and cluster.json.
        #[arg(long, default_value = "flocker-local")]
        dir: PathBuf,
        /// Do not start agents.
        #[arg(long)]
        no_agents: bool,
    },
    /// Print the status of every control node of a running local cluster.
    Status {
        #[arg(long, default_value = "flocker-local")]
        dir: PathBuf,
    },
    /// Add a control node (started with `flocker-control --join`) as a learner.
    Add {
        #[arg(long, default_value = "flocker-local")]
        dir: PathBuf,
        #[arg(long)]
        id: u64,
        /// host:port of its peer listener.
        #[arg(long)]
        raft_addr: String,
        /// host:port of its API listener.
        #[arg(long)]
        api_addr: String,
    },
    /// Make exactly these control nodes the voters, e.g. `voters 1,2,4`.
    Voters {
        #[arg(long, default_value = "flocker-local")]
        dir: PathBuf,
        #[arg(value_delimiter = ',')]
        ids: Vec<u64>,
    },
    /// Remove a control node from the cluster.
    Remove {
        #[arg(long, default_value = "flocker-local")]
        dir: PathBuf,
        id: u64,
    },
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("the executable has a directory")?
        .to_owned())
}

fn backend(configured: &str) -> &'static str {
    match configured {
        "loopback" => "loopback",
        "directory" => "directory",
        // Real loop devices need root.
        _ if is_root() => "loopback",
        _ => "directory",
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

async fn up(config: PathBuf, dir: PathBuf, no_agents: bool) -> anyhow::Result<()> {
    let file = ClusterFile::load(&config)?;
    let backend = backend(&file.agents.backend);
    let mut cluster = LocalCluster::prepare(&dir, file, &bin_dir()?)?;
    cluster.start_all_controls()?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    println!(
        "control nodes {:?} are up; node {leader} leads",
        cluster.ids()
    );
    if !no_agents {
        cluster.write_agent_configs(backend)?;
        let started = cluster.start_agents("flocker-dataset-agent")?;
        if started.is_empty() {
            println!("no flocker-dataset-agent binary next to this one: running without agents");
        } else {
            println!("dataset agents ({backend} backend) for nodes {started:?}");
            if docker_available(DEFAULT_DOCKER_HOST) {
                let started = cluster.start_agents("flocker-container-agent")?;
                println!(
                    "container agents (Docker at {DEFAULT_DOCKER_HOST}) for nodes {started:?}"
                );
            } else {
                println!(
                    "no Docker engine answers on {DEFAULT_DOCKER_HOST}: running without container agents"
                );
            }
        }
    }
    let description = cluster.write_description()?;
    let certs = cluster.certs();
    println!("cluster description: {}", description.display());
    println!("try:");
    println!(
        "  curl --cacert {ca} --cert {cert} --key {key} {url}/v1/configuration/datasets",
        ca = certs.join("cluster.crt").display(),
        cert = certs.join("admin.crt").display(),
        key = certs.join("admin.key").display(),
        url = cluster.api_url(leader),
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("stopping");
    cluster.stop_all();
    cluster.release_storage();
    Ok(())
}

fn existing(dir: &std::path::Path) -> anyhow::Result<LocalCluster> {
    let file = ClusterFile::load(&dir.join("cluster.toml"))
        .context("no resolved cluster file: is this a directory made by `flocker-cluster up`?")?;
    LocalCluster::prepare(dir, file, &bin_dir()?)
}

/// Send an admin request to the first control node that answers.
async fn admin(
    dir: PathBuf,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let cluster = existing(&dir)?;
    let mut last = None;
    for id in cluster.ids() {
        let client = cluster.client(id)?;
        let body = body.as_ref().map(|b| b.to_string().into_bytes());
        match client.request(method.clone(), path, &[], body).await {
            Ok(reply) if reply.status.is_success() => {
                println!("{}", reply.body);
                return Ok(());
            }
            Ok(reply) => anyhow::bail!(
                "{}: {}",
                reply.status,
                reply.description().unwrap_or("failed")
            ),
            Err(e) => last = Some(e),
        }
    }
    anyhow::bail!("no control node answered: {last:?}")
}

async fn status(dir: PathBuf) -> anyhow::Result<()> {
    let cluster = existing(&dir)?;
    for id in cluster.ids() {
        let client = cluster.client(id)?;
        match client.get("/admin/v1/status").await {
            Ok(reply) => println!("{}", reply.body),
            Err(e) => println!("{{\"id\": {id}, \"error\": \"{e}\"}}"),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Options::parse().command {
        Action::Up {
            config,
            dir,
            no_agents,
        } => up(config, dir, no_agents).await,
        Action::Status { dir } => status(dir).await,
        Action::Add {
            dir,
            id,
            raft_addr,
            api_addr,
        } => {
            let body = serde_json::json!({"id": id, "raft_addr": raft_addr, "api_addr": api_addr});
            admin(dir, reqwest::Method::POST, "/admin/v1/members", Some(body)).await
        }
        Action::Voters { dir, ids } => {
            let body = serde_json::json!({ "voters": ids });
            admin(dir, reqwest::Method::PUT, "/admin/v1/voters", Some(body)).await
        }
        Action::Remove { dir, id } => {
            admin(
                dir,
                reqwest::Method::DELETE,
                &format!("/admin/v1/members/{id}"),
                None,
            )
            .await
        }
    }
}
