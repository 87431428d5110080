//! `flockerctl`: Flocker's command-line client, against any control node.
//!
//! Connection options follow Flocker's: `--control-service HOST --control-port 4523
//! --certs-path DIR --user NAME` (reads `DIR/cluster.crt`, `DIR/NAME.crt`, `DIR/NAME.key`),
//! or `--cluster-json FILE` as written by `flocker-cluster up` (the default when present).
//! Node and dataset ids may be abbreviated to any unique prefix.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use flocker::client::{Client, Reply};
use flocker::tls::TlsFiles;

#[derive(Debug, Parser)]
#[command(
    name = "flockerctl",
    version,
    about = "Manage Flocker datasets, leases and containers"
)]
struct Options {
    /// cluster.json of a local cluster (used when --control-service is not given).
    #[arg(long, default_value = "flocker-local/cluster.json")]
    cluster_json: PathBuf,
    /// Control service host (any control node).
    #[arg(long)]
    control_service: Option<String>,
    #[arg(long, default_value_t = 4523)]
    control_port: u16,
    /// Directory with cluster.crt and the user's certificate and key.
    #[arg(long, default_value = "/etc/flocker")]
    certs_path: PathBuf,
    /// API user name: its certificate is USER.crt / USER.key.
    #[arg(long, default_value = "user")]
    user: String,
    #[command(subcommand)]
    command: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the nodes that have reported state.
    ListNodes,
    /// List datasets with their state.
    List {
        /// Include deleted datasets.
        #[arg(long)]
        deleted: bool,
    },
    /// Create a dataset.
    Create {
        #[arg(short, long)]
        node: String,
        /// Size, e.g. 10G, 512M (bytes without suffix).
        #[arg(short, long)]
        size: Option<String>,
        /// Metadata as `key=value,key2=value2`.
        #[arg(short, long)]
        metadata: Option<String>,
        #[arg(long)]
        dataset: Option<String>,
        /// Wait until the dataset is mounted on its node.
        #[arg(long)]
        wait: bool,
    },
    /// Move a dataset to another node.
    Move {
        #[arg(short, long)]
        dataset: String,
        #[arg(short = 't', long)]
        destination: String,
        #[arg(long)]
        wait: bool,
    },
    /// Delete a dataset.
    Destroy {
        #[arg(short, long)]
        dataset: String,
        #[arg(long)]
        wait: bool,
    },
    /// List leases.
    LsLeases,
    /// List configured containers and whether they run.
    ListContainers,
    /// Run a container on a node.
    Run {
        #[arg(short, long)]
        node: String,
        name: String,
        image: String,
        /// `internal:external` port mappings.
        #[arg(short, long)]
        port: Vec<String>,
        /// `NAME=VALUE` environment variables.
        #[arg(short, long)]
        env: Vec<String>,
        /// `DATASET:/mountpoint`.
        #[arg(short, long)]
        volume: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Move a container (and its dataset) to another node.
    MoveContainer {
        name: String,
        #[arg(short = 't', long)]
        destination: String,
        #[arg(long)]
        wait: bool,
    },
    /// Remove a container.
    RmContainer { name: String },
}

fn connect(options: &Options) -> anyhow::Result<Client> {
    if let Some(host) = &options.control_service {
        let files = TlsFiles::in_dir(&options.certs_path, &options.user);
        return Ok(Client::new(
            &format!("https://{host}:{}", options.control_port),
            &files,
        )?);
    }
    let text = std::fs::read_to_string(&options.cluster_json).with_context(|| {
        format!(
            "no --control-service given and no {} to read",
            options.cluster_json.display()
        )
    })?;
    let cluster: Value = serde_json::from_str(&text)?;
    let files = TlsFiles {
        ca_cert: cluster["ca_cert"].as_str().context("ca_cert")?.into(),
        cert: cluster["client_cert"]
            .as_str()
            .context("client_cert")?
            .into(),
        key: cluster["client_key"].as_str().context("client_key")?.into(),
    };
    let url = cluster["api_urls"][0].as_str().context("api_urls")?;
    Ok(Client::new(url, &files)?)
}

/// The body of a 2xx reply, or the API's error description.
fn ok(reply: Reply) -> anyhow::Result<Value> {
    if reply.status.is_success() {
        return Ok(reply.body);
    }
    let mut text = reply.description().unwrap_or("request failed").to_owned();
    if let Some(errors) = reply.body.get("errors").and_then(Value::as_array) {
        for e in errors {
            text.push_str(&format!("\n  {}", e.as_str().unwrap_or_default()));
        }
    }
    bail!("{} {text}", reply.status.as_u16())
}

fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .with_context(|| format!("bad size {text:?}"))?;
    let factor: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        other => bail!("unknown size unit {other:?}"),
    };
    n.checked_mul(factor).context("size too large")
}

fn human(bytes: Option<u64>) -> String {
    let Some(bytes) = bytes else {
        return "-".into();
    };
    let units = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2}{}", units[unit])
}

/// Resolve an id prefix against known ids.
fn resolve(prefix: &str, known: &[String], what: &str) -> anyhow::Result<String> {
    let prefix = prefix.to_lowercase();
    let matches: Vec<&String> = known.iter().filter(|k| k.starts_with(&prefix)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] if prefix.len() == 36 => Ok(prefix),
        [] => bail!("no {what} starts with {prefix}"),
        _ => bail!("{prefix} matches several {what}s"),
    }
}

async fn node_ids(client: &Client) -> anyhow::Result<Vec<String>> {
    let nodes = ok(client.get("/v1/state/nodes").await?)?;
    Ok(nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["uuid"].as_str().map(str::to_owned))
        .collect())
}

async fn dataset_ids(client: &Client) -> anyhow::Result<Vec<String>> {
    let (list, _) = client.datasets().await?;
    Ok(list
        .iter()
        .filter_map(|d| d["dataset_id"].as_str().map(str::to_owned))
        .collect())
}

/// Poll the state until `done` holds, printing what changes.
async fn wait_state(
    client: &Client,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let mut last = String::new();
    loop {
        let state = ok(client.get(path).await?)?;
        if done(&state) {
            println!("{what} after {:.1}s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        let now = state.to_string();
        if now != last {
            eprintln!("waiting for {what}...");
            last = now;
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mounted_on(state: &Value, dataset: &str, node: &str) -> bool {
    state.as_array().into_iter().flatten().any(|d| {
        d["dataset_id"] == json!(dataset) && d["primary"] == json!(node) && d["path"].is_string()
    })
}

async fn list(client: &Client, deleted: bool) -> anyhow::Result<()> {
    let (config, _) = client.datasets().await?;
    let state = ok(client.get("/v1/state/datasets").await?)?;
    let nodes = ok(client.get("/v1/state/nodes").await?)?;
    let host = |uuid: &str| {
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["uuid"] == json!(uuid))
            .and_then(|n| n["host"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    println!(
        "{:<36}  {:>8}  {:<24}  {:<10}  SERVER",
        "DATASET", "SIZE", "METADATA", "STATUS"
    );
    for d in &config {
        let id = d["dataset_id"].as_str().unwrap_or_default();
        let is_deleted = d["deleted"].as_bool().unwrap_or(false);
        if is_deleted && !deleted {
            continue;
        }
        let primary = d["primary"].as_str().unwrap_or_default();
        let status = if is_deleted {
            "deleted"
        } else if mounted_on(&state, id, primary) {
            "attached"
        } else {
            "pending"
        };
        let metadata: Vec<String> = d["metadata"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        println!(
            "{id:<36}  {:>8}  {:<24}  {status:<10}  {} ({})",
            human(d["maximum_size"].as_u64()),
            metadata.join(","),
            &primary[..8.min(primary.len())],
            host(primary),
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let options = Options::parse();
    let client = connect(&options)?;
    match options.command {
        Action::ListNodes => {
            let nodes = ok(client.get("/v1/state/nodes").await?)?;
            println!("{:<36}  ADDRESS", "SERVER");
            for n in nodes.as_array().into_iter().flatten() {
                println!(
                    "{:<36}  {}",
                    n["uuid"].as_str().unwrap_or_default(),
                    n["host"].as_str().unwrap_or_default()
                );
            }
        }
        Action::List { deleted } => list(&client, deleted).await?,
        Action::Create {
            node,
            size,
            metadata,
            dataset,
            wait,
        } => {
            let node = resolve(&node, &node_ids(&client).await?, "node")?;
            let mut body = json!({"primary": node});
            if let Some(size) = size {
                body["maximum_size"] = json!(parse_size(&size)?);
            }
            if let Some(metadata) = metadata {
                let map: serde_json::Map<String, Value> = metadata
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (k.to_owned(), json!(v))
                    })
                    .collect();
                body["metadata"] = Value::Object(map);
            }
            if let Some(dataset) = dataset {
                body["dataset_id"] = json!(dataset);
            }
            let created = ok(client.post("/v1/configuration/datasets", &body).await?)?;
            let id = created["dataset_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            println!("created dataset {id} on node {node}");
            if wait {
                wait_state(&client, "/v1/state/datasets", "mounted", |s| {
                    mounted_on(s, &id, &node)
                })
                .await?;
            }
        }
        Action::Move {
            dataset,
            destination,
            wait,
        } => {
            let dataset = resolve(&dataset, &dataset_ids(&client).await?, "dataset")?;
            let node = resolve(&destination, &node_ids(&client).await?, "node")?;
            ok(client
                .post(
                    &format!("/v1/configuration/datasets/{dataset}"),
                    &json!({"primary": node}),
                )
                .await?)?;
            println!("moving dataset {dataset} to node {node}");
            if wait {
                wait_state(&client, "/v1/state/datasets", "mounted", |s| {
                    mounted_on(s, &dataset, &node)
                })
                .await?;
            }
        }
        Action::Destroy { dataset, wait } => {
            let dataset = resolve(&dataset, &dataset_ids(&client).await?, "dataset")?;
            ok(client
                .delete(&format!("/v1/configuration/datasets/{dataset}"))
                .await?)?;
            println!("destroying dataset {dataset}");
            if wait {
                wait_state(&client, "/v1/state/datasets", "destroyed", |s| {
                    !s.as_array()
                        .into_iter()
                        .flatten()
                        .any(|d| d["dataset_id"] == json!(dataset))
                })
                .await?;
            }
        }
        Action::LsLeases => {
            let leases = ok(client.get("/v1/configuration/leases").await?)?;
            println!("{:<36}  {:<36}  EXPIRES", "DATASET", "NODE");
            for l in leases.as_array().into_iter().flatten() {
                let expires = l["expires"]
                    .as_f64()
                    .map_or("never".to_owned(), |s| format!("{s:.1}s"));
                println!(
                    "{:<36}  {:<36}  {expires}",
                    l["dataset_id"].as_str().unwrap_or_default(),
                    l["node_uuid"].as_str().unwrap_or_default()
                );
            }
        }
        Action::ListContainers => {
            let config = ok(client.get("/v1/configuration/containers").await?)?;
            let state = ok(client.get("/v1/state/containers").await?)?;
            println!("{:<24}  {:<24}  {:<36}  RUNNING", "NAME", "IMAGE", "NODE");
            for c in config.as_array().into_iter().flatten() {
                let running = state.as_array().into_iter().flatten().any(|s| {
                    s["name"] == c["name"]
                        && s["node_uuid"] == c["node_uuid"]
                        && s["running"] == json!(true)
                });
                println!(
                    "{:<24}  {:<24}  {:<36}  {}",
                    c["name"].as_str().unwrap_or_default(),
                    c["image"].as_str().unwrap_or_default(),
                    c["node_uuid"].as_str().unwrap_or_default(),
                    if running { "yes" } else { "no" }
                );
            }
        }
        Action::Run {
            node,
            name,
            image,
            port,
            env,
            volume,
            wait,
        } => {
            let node = resolve(&node, &node_ids(&client).await?, "node")?;
            let mut body = json!({"node_uuid": node, "name": name, "image": image});
            if !port.is_empty() {
                let ports: anyhow::Result<Vec<Value>> = port
                    .iter()
                    .map(|p| {
                        let (i, e) = p.split_once(':').context("ports are internal:external")?;
                        Ok(json!({"internal": i.parse::<u16>()?, "external": e.parse::<u16>()?}))
                    })
                    .collect();
                body["ports"] = json!(ports?);
            }
            if !env.is_empty() {
                let map: serde_json::Map<String, Value> = env
                    .iter()
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_owned(), json!(v))
                    })
                    .collect();
                body["environment"] = Value::Object(map);
            }
            if let Some(volume) = volume {
                let (dataset, mountpoint) =
                    volume.split_once(':').context("volume is DATASET:/path")?;
                let dataset = resolve(dataset, &dataset_ids(&client).await?, "dataset")?;
                body["volumes"] = json!([{"dataset_id": dataset, "mountpoint": mountpoint}]);
            }
            ok(client.post("/v1/configuration/containers", &body).await?)?;
            println!("container {name} configured on node {node}");
            if wait {
                wait_state(&client, "/v1/state/containers", "running", |s| {
                    s.as_array().into_iter().flatten().any(|c| {
                        c["name"] == json!(name)
                            && c["node_uuid"] == json!(node)
                            && c["running"] == json!(true)
                    })
                })
                .await?;
            }
        }
        Action::MoveContainer {
            name,
            destination,
            wait,
        } => {
            let node = resolve(&destination, &node_ids(&client).await?, "node")?;
            ok(client
                .post(
                    &format!("/v1/configuration/containers/{name}"),
                    &json!({"node_uuid": node}),
                )
                .await?)?;
            println!("moving container {name} to node {node}");
            if wait {
                wait_state(&client, "/v1/state/containers", "running", |s| {
                    s.as_array().into_iter().flatten().any(|c| {
                        c["name"] == json!(name)
                            && c["node_uuid"] == json!(node)
                            && c["running"] == json!(true)
                    })
                })
                .await?;
            }
        }
        Action::RmContainer { name } => {
            ok(client
                .delete(&format!("/v1/configuration/containers/{name}"))
                .await?)?;
            println!("removed container {name}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_prefixes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert!(parse_size("5X").is_err());
        let known = vec!["abc1".to_owned(), "abd2".to_owned()];
        assert_eq!(resolve("abc", &known, "node").unwrap(), "abc1");
        assert!(resolve("ab", &known, "node").is_err());
        assert!(resolve("zz", &known, "node").is_err());
    }
}
