//! `flocker-load`: drive a running cluster with concurrent clients and print throughput
//! and latency percentiles as one JSON line.
//!
//! ```text
//! flocker-load --cluster-json flocker-local/cluster.json --clients 16 --seconds 10
//! flocker-load ... --mix conditional=25,create=25,move=10,read=40
//! flocker-load ... --kill-leader-after 5     # also measure write unavailability
//! ```
//!
//! Clients are spread round-robin over every control node's API. Operations:
//! `conditional` = read the tag (HEAD) then create a dataset with
//! `X-If-Configuration-Matches` (a 412 counts as a completed write that lost the race);
//! `create` = unconditional dataset create; `move` = move one of this client's datasets;
//! `read` = a linearizable `GET /v1/configuration/datasets`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use uuid::Uuid;

use flocker::client::Client;
use flocker::tls::TlsFiles;

#[derive(Debug, Parser)]
#[command(name = "flocker-load", version)]
struct Options {
    /// cluster.json written by `flocker-cluster up`.
    #[arg(long, default_value = "flocker-local/cluster.json")]
    cluster_json: PathBuf,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Operation weights.
    #[arg(long, default_value = "conditional=25,create=25,move=10,read=40")]
    mix: String,
    /// SIGKILL the leader after this many seconds and report the time to the first
    /// successful write after it (local clusters only: uses the PIDs in cluster.json).
    #[arg(long)]
    kill_leader_after: Option<f64>,
    /// Read with `?consistency=stale` instead of linearizably.
    #[arg(long)]
    stale_reads: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Conditional,
    Create,
    Move,
    Read,
}

fn parse_mix(text: &str) -> anyhow::Result<Vec<(Op, u32)>> {
    text.split(',')
        .map(|part| {
            let (name, weight) = part
                .split_once('=')
                .context("mix entries are name=weight")?;
            let op = match name.trim() {
                "conditional" => Op::Conditional,
                "create" => Op::Create,
                "move" => Op::Move,
                "read" => Op::Read,
                other => anyhow::bail!("unknown operation {other}"),
            };
            Ok((op, weight.trim().parse()?))
        })
        .collect()
}

#[derive(Default)]
struct Samples {
    writes: Vec<Duration>,
    reads: Vec<Duration>,
    conflicts: u64,
    errors: u64,
    /// (sent, finished, success) of every write, as times since the start, for the
    /// failover measurement.
    write_times: Vec<(Duration, Duration, bool)>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank].as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>, seconds: f64) -> Value {
    samples.sort();
    json!({
        "count": samples.len(),
        "per_second": (samples.len() as f64 / seconds).round(),
        "p50_ms": percentile(&samples, 50.0),
        "p99_ms": percentile(&samples, 99.0),
        "p999_ms": percentile(&samples, 99.9),
    })
}

struct Pick {
    state: u64,
}

impl Pick {
    fn next(&mut self, bound: u32) -> u32 {
        // xorshift: cheap, seeded per client, good enough to pick operations.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % u64::from(bound.max(1))) as u32
    }
}

async fn one(client: &Client, op: Op, mine: &mut Vec<String>, stale: bool) -> Result<bool, String> {
    let node = Uuid::new_v4().to_string();
    let ok = |status: StatusCode| status.is_success();
    let op = if op == Op::Move && mine.is_empty() {
        Op::Create
    } else {
        op
    };
    match op {
        Op::Conditional => {
            let head = client
                .request(Method::HEAD, "/v1/configuration/datasets", &[], None)
                .await
                .map_err(|e| e.to_string())?;
            let tag = head
                .header("x-configuration-tag")
                .unwrap_or_default()
                .to_owned();
            let reply = client
                .post_if(
                    "/v1/configuration/datasets",
                    &tag,
                    &json!({"primary": node}),
                )
                .await
                .map_err(|e| e.to_string())?;
            if reply.status == StatusCode::PRECONDITION_FAILED {
                return Ok(false);
            }
            if let Some(id) = reply.body["dataset_id"].as_str() {
                mine.push(id.to_owned());
            }
            ok(reply.status)
                .then_some(true)
                .ok_or(reply.status.to_string())
        }
        Op::Create => {
            let reply = client
                .post("/v1/configuration/datasets", &json!({"primary": node}))
                .await
                .map_err(|e| e.to_string())?;
            if let Some(id) = reply.body["dataset_id"].as_str() {
                mine.push(id.to_owned());
            }
            ok(reply.status)
                .then_some(true)
                .ok_or(reply.status.to_string())
        }
        Op::Move => {
            let id = &mine[mine.len() / 2];
            let reply = client
                .post(
                    &format!("/v1/configuration/datasets/{id}"),
                    &json!({"primary": node}),
                )
                .await
                .map_err(|e| e.to_string())?;
            ok(reply.status)
                .then_some(true)
                .ok_or(reply.status.to_string())
        }
        Op::Read => {
            let path = if stale {
                "/v1/configuration/datasets?consistency=stale"
            } else {
                "/v1/configuration/datasets"
            };
            let reply = client.get(path).await.map_err(|e| e.to_string())?;
            ok(reply.status)
                .then_some(true)
                .ok_or(reply.status.to_string())
        }
    }
}

fn leader_pid(cluster: &Value, leader: u64) -> Option<u32> {
    cluster["control_nodes"]
        .as_array()?
        .iter()
        .find(|c| c["id"].as_u64() == Some(leader))?["pid"]
        .as_u64()
        .map(|p| p as u32)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let cluster: Value = serde_json::from_str(
        &std::fs::read_to_string(&options.cluster_json)
            .with_context(|| format!("reading {}", options.cluster_json.display()))?,
    )?;
    let files = TlsFiles {
        ca_cert: cluster["ca_cert"].as_str().context("ca_cert")?.into(),
        cert: cluster["client_cert"]
            .as_str()
            .context("client_cert")?
            .into(),
        key: cluster["client_key"].as_str().context("client_key")?.into(),
    };
    let urls: Vec<String> = cluster["api_urls"]
        .as_array()
        .context("api_urls")?
        .iter()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    let mix = parse_mix(&options.mix)?;
    let total_weight: u32 = mix.iter().map(|(_, w)| w).sum();
    let duration = Duration::from_secs_f64(options.seconds);
    let samples = Arc::new(Mutex::new(Samples::default()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..options.clients.max(1) {
        let client = Client::with_timeout(&urls[i % urls.len()], &files, Duration::from_secs(10))?;
        let samples = samples.clone();
        let mix = mix.clone();
        let stale = options.stale_reads;
        tasks.push(tokio::spawn(async move {
            let mut pick = Pick {
                state: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
            };
            let mut mine = Vec::new();
            let mut local = Samples::default();
            while start.elapsed() < duration {
                let mut roll = pick.next(total_weight);
                let op = mix
                    .iter()
                    .find(|(_, w)| {
                        let hit = roll < *w;
                        roll = roll.saturating_sub(*w);
                        hit
                    })
                    .map_or(Op::Read, |(op, _)| *op);
                let began = Instant::now();
                let sent = start.elapsed();
                let result = one(&client, op, &mut mine, stale).await;
                let took = began.elapsed();
                let is_write = op != Op::Read;
                match result {
                    Ok(applied) => {
                        if is_write {
                            local.writes.push(took);
                            local.write_times.push((sent, start.elapsed(), true));
                            if !applied {
                                local.conflicts += 1;
                            }
                        } else {
                            local.reads.push(took);
                        }
                    }
                    Err(_) => {
                        local.errors += 1;
                        if is_write {
                            local.write_times.push((sent, start.elapsed(), false));
                        }
                    }
                }
            }
            let mut all = samples.lock().await;
            all.writes.extend(local.writes);
            all.reads.extend(local.reads);
            all.conflicts += local.conflicts;
            all.errors += local.errors;
            all.write_times.extend(local.write_times);
        }));
    }
    let mut killed_at = None;
    if let Some(after) = options.kill_leader_after {
        tokio::time::sleep(Duration::from_secs_f64(after)).await;
        let client = Client::new(&urls[0], &files)?;
        let status = client.get("/admin/v1/status").await?;
        let leader = status.body["leader"].as_u64().context("no leader")?;
        let pid = leader_pid(&cluster, leader).context("leader PID not in cluster.json")?;
        flocker::local_cluster::signal_pid(pid, libc::SIGKILL)?;
        killed_at = Some((start.elapsed(), leader));
    }
    for task in tasks {
        task.await?;
    }
    let samples = std::mem::take(&mut *samples.lock().await);
    let seconds = options.seconds;
    let failover = killed_at.map(|(at, leader)| {
        // Among writes sent after the kill, the first to succeed.
        let first_ok = samples
            .write_times
            .iter()
            .filter(|(sent, _, ok)| *ok && *sent > at)
            .map(|(_, done, _)| *done)
            .min();
        json!({
            "killed_leader": leader,
            "kill_to_first_write_ms": first_ok.map(|t| (t - at).as_secs_f64() * 1000.0),
        })
    });
    let line = json!({
        "clients": options.clients,
        "seconds": seconds,
        "mix": options.mix,
        "control_nodes": urls.len(),
        "writes": summary(samples.writes, seconds),
        "reads": summary(samples.reads, seconds),
        "conflicts_412": samples.conflicts,
        "errors": samples.errors,
        "failover": failover,
    });
    println!("{line}");
    Ok(())
}
