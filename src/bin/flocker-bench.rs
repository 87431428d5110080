//! `flocker-bench`: cluster benchmarks with real processes (see "## Benchmarks" in README.md).
//!
//! ```text
//! flocker-bench compare  --seconds 5 --clients 1,16,64 --rounds 2   # ours vs etcd, same run
//! flocker-bench scale    --datasets 20000 --band 10000             # growth to N datasets
//! flocker-bench failover --kills 10 --clients 16                   # SIGKILL the leader
//! ```
//!
//! Every subcommand starts its own 3-node cluster(s) from the release binaries next to this
//! executable (`flocker-control`; `etcd` from `$PATH`, installed with apt-get if absent), in a
//! work directory on the same disk (`--dir`, default `<exe dir>/bench-work/<sub>-<pid>`),
//! prints one JSON line per measured cell and writes `<out>/<sub>.json` and `<out>/<sub>.svg`
//! (default `--out <exe dir>/bench-results`). Every child is stopped by PID, also on error.
//!
//! Both systems are driven over HTTPS + JSON with client certificates from the same CA
//! (ours: the v1 API; etcd 3.4: its gRPC-gateway `/v3/kv/*`), each client holding its own
//! connection, clients spread round-robin over the three members.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use reqwest::{Method, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use uuid::Uuid;

use flocker::client::Client;
use flocker::cluster_config::ClusterFile;
use flocker::local_cluster::{signal_pid, LocalCluster};

#[derive(Debug, Parser)]
#[command(
    name = "flocker-bench",
    version,
    about = "Cluster benchmarks: ours vs etcd, scale, failover"
)]
struct Options {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Ours vs a 3-member etcd cluster, same load shapes, alternating runs.
    Compare(CompareOptions),
    /// Grow the configuration to N datasets (and N/10 leases); latency per band, list
    /// latency, RSS, snapshot size, restart-to-serving and catch-up times.
    Scale(ScaleOptions),
    /// SIGKILL the leader repeatedly under write load.
    Failover(FailoverOptions),
}

#[derive(Debug, Args)]
struct Common {
    /// Work directory (cluster data, certificates, logs); default `<exe dir>/bench-work/<sub>-<pid>`.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where `<sub>.json` and `<sub>.svg` are written; default `<exe dir>/bench-results`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the work directory afterwards.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Args)]
struct CompareOptions {
    #[command(flatten)]
    common: Common,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured seconds before each cell (connections, TLS handshakes).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Workloads: cond (conditional write), write, lin (linearizable read), stale.
    #[arg(long, value_delimiter = ',', default_value = "cond,write,lin,stale")]
    workloads: Vec<String>,
    /// Runs per system, alternated: ours, etcd, ours, etcd, ... (each on a fresh cluster).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: String,
}

#[derive(Debug, Args)]
struct ScaleOptions {
    #[command(flatten)]
    common: Common,
    /// Datasets to create.
    #[arg(long, default_value_t = 100_000)]
    datasets: usize,
    /// Leases to acquire (on the first datasets); default datasets / 10.
    #[arg(long)]
    leases: Option<usize>,
    /// Report per band of this many creates.
    #[arg(long, default_value_t = 10_000)]
    band: usize,
    /// The baseline: latency of the first this many creates.
    #[arg(long, default_value_t = 1_000)]
    baseline: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Writes (dataset moves) while one follower is down; default datasets / 2.
    #[arg(long)]
    catchup_writes: Option<usize>,
}

#[derive(Debug, Args)]
struct FailoverOptions {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Concurrent writing clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of steady load before each kill (the baseline throughput is its last 2 s).
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Seconds after a kill before the killed node is restarted.
    #[arg(long, default_value_t = 4.0)]
    recover: f64,
    /// "Full throughput" = a 500 ms window at this fraction of the baseline rate.
    #[arg(long, default_value_t = 0.8)]
    full_fraction: f64,
}

// ---------------------------------------------------------------------------
// Helpers: statistics, work directories, processes

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    ms(sorted[rank])
}

fn latency_json(samples: &mut [Duration], seconds: f64) -> Value {
    samples.sort();
    json!({
        "ops": samples.len(),
        "ops_per_s": (samples.len() as f64 / seconds.max(1e-9) * 10.0).round() / 10.0,
        "p50_ms": percentile(samples, 50.0),
        "p99_ms": percentile(samples, 99.0),
        "p999_ms": percentile(samples, 99.9),
    })
}

fn exe_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("executable has no directory")?
        .to_owned())
}

struct Work {
    dir: PathBuf,
    out: PathBuf,
    keep: bool,
}

impl Work {
    fn new(common: &Common, sub: &str) -> anyhow::Result<Self> {
        let base = exe_dir()?;
        let dir = common.dir.clone().unwrap_or_else(|| {
            base.join("bench-work")
                .join(format!("{sub}-{}", std::process::id()))
        });
        let out = common
            .out
            .clone()
            .unwrap_or_else(|| base.join("bench-results"));
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&out)?;
        Ok(Work {
            dir: std::path::absolute(dir)?,
            out,
            keep: common.keep,
        })
    }

    fn write_results(&self, sub: &str, results: &Value, svg: &str) -> anyhow::Result<()> {
        let json_path = self.out.join(format!("{sub}.json"));
        let svg_path = self.out.join(format!("{sub}.svg"));
        std::fs::write(&json_path, serde_json::to_string_pretty(results)?)?;
        std::fs::write(&svg_path, svg)?;
        eprintln!(
            "flocker-bench: wrote {} and {}",
            json_path.display(),
            svg_path.display()
        );
        Ok(())
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user + system) a process has used so far (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(&p.to_string())).sum()
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn log(message: impl std::fmt::Display) {
    eprintln!("flocker-bench: {message}");
}

/// One CA for both systems: `cluster.crt/.key`, `control-service.crt/.key` (serverAuth and
/// clientAuth, SANs control-service, 127.0.0.1, localhost), `admin.crt/.key` (a client).
fn make_certs(dir: &Path) -> anyhow::Result<PathBuf> {
    let certs = dir.join("certs");
    if certs.join("admin.crt").exists() {
        return Ok(certs);
    }
    std::fs::create_dir_all(&certs)?;
    flocker::ca::initialize(&certs, "flocker-bench")?;
    let made = flocker::ca::create_control_certificate(
        &certs,
        &certs,
        "127.0.0.1",
        &["localhost".to_owned()],
    )?;
    std::fs::rename(&made.cert_path, certs.join("control-service.crt"))?;
    std::fs::rename(&made.key_path, certs.join("control-service.key"))?;
    flocker::ca::create_api_certificate(&certs, &certs, "admin")?;
    Ok(certs)
}

const OURS_CLUSTER: &str = "[[control]]\nid = 1\n[[control]]\nid = 2\n[[control]]\nid = 3\n[agents]\nnodes = 0\nbackend = \"directory\"\n";

/// A fresh 3-node cluster of ours in `dir`, using the shared certificates.
async fn start_ours(dir: &Path, certs: &Path) -> anyhow::Result<LocalCluster> {
    let own = dir.join("certs");
    std::fs::create_dir_all(&own)?;
    for file in [
        "cluster.crt",
        "cluster.key",
        "control-service.crt",
        "control-service.key",
        "admin.crt",
        "admin.key",
    ] {
        std::fs::copy(certs.join(file), own.join(file))?;
    }
    let bin_dir = exe_dir()?;
    if !bin_dir.join("flocker-control").exists() {
        bail!(
            "{} not found: build with `cargo build --release --bins`",
            bin_dir.join("flocker-control").display()
        );
    }
    let mut cluster = LocalCluster::prepare(dir, ClusterFile::parse(OURS_CLUSTER)?, &bin_dir)?;
    cluster.start_all_controls()?;
    cluster.wait_for_leader(Duration::from_secs(60)).await?;
    Ok(cluster)
}

fn ours_client(cluster: &LocalCluster, id: u64, timeout: Duration) -> anyhow::Result<Client> {
    Ok(Client::with_timeout(
        &cluster.api_url(id),
        &cluster.admin_tls(),
        timeout,
    )?)
}

// ---------------------------------------------------------------------------
// etcd

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct EtcdCluster {
    children: Vec<Child>,
    client_urls: Vec<String>,
    certs: PathBuf,
}

impl EtcdCluster {
    fn ensure_installed(binary: &str) -> anyhow::Result<()> {
        let found = Command::new(binary)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Ok(());
        }
        log("etcd not found: apt-get install -y etcd-server etcd-client");
        let status = Command::new("apt-get")
            .args(["install", "-y", "etcd-server", "etcd-client"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get install etcd-server failed ({status})");
        }
        Ok(())
    }

    /// Three members on loopback with TLS (peer and client, client certificates required),
    /// default durability, data in `dir`.
    async fn start(binary: &str, dir: &Path, certs: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{}=https://127.0.0.1:{peer}", i + 1))
            .collect();
        let file = |name: &str| certs.join(name).display().to_string();
        let mut cluster = EtcdCluster {
            children: Vec::new(),
            client_urls: Vec::new(),
            certs: certs.to_owned(),
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let log_file = std::fs::File::create(dir.join(format!("{name}.log")))?;
            let client_url = format!("https://127.0.0.1:{client}");
            let peer_url = format!("https://127.0.0.1:{peer}");
            let mut command = Command::new(binary);
            command
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.join(&name))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "flocker-bench"])
                .args(["--cert-file", &file("control-service.crt")])
                .args(["--key-file", &file("control-service.key")])
                .arg("--client-cert-auth")
                .args(["--trusted-ca-file", &file("cluster.crt")])
                .args(["--peer-cert-file", &file("control-service.crt")])
                .args(["--peer-key-file", &file("control-service.key")])
                .arg("--peer-client-cert-auth")
                .args(["--peer-trusted-ca-file", &file("cluster.crt")])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file);
            {
                use std::os::unix::process::CommandExt;
                command.process_group(0);
            }
            cluster.children.push(
                command
                    .spawn()
                    .with_context(|| format!("starting {binary}"))?,
            );
            cluster.client_urls.push(client_url);
        }
        // Ready when a linearizable write and read succeed through every member.
        let deadline = Instant::now() + Duration::from_secs(60);
        for url in cluster.client_urls.clone() {
            let client = cluster.client(&url, Duration::from_secs(5))?;
            loop {
                if client.put(b"/bench/ready", b"1").await.is_ok()
                    && client.range(b"/bench/ready", false).await.is_ok()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("etcd did not become ready (logs in {})", dir.display());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(cluster)
    }

    fn client(&self, url: &str, timeout: Duration) -> anyhow::Result<EtcdClient> {
        EtcdClient::new(url, &self.certs, timeout)
    }

    fn stop(&mut self) {
        for child in &self.children {
            let _ = signal_pid(child.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = signal_pid(child.id(), libc::SIGKILL);
            }
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// etcd's gRPC-gateway over HTTPS with a client certificate (the `admin` certificate of the
/// shared CA), verifying the server's certificate for 127.0.0.1.
#[derive(Clone)]
struct EtcdClient {
    http: reqwest::Client,
    base: String,
}

impl EtcdClient {
    fn new(base: &str, certs: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(certs.join("cluster.crt"))? {
            roots.add(cert?)?;
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(certs.join("admin.crt"))?.collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(certs.join("admin.key"))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(EtcdClient {
            http,
            base: base.to_owned(),
        })
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, String> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let raw = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&raw)));
        }
        serde_json::from_slice(&raw).map_err(|e| e.to_string())
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.call(
            "/v3/kv/put",
            &json!({"key": base64(key), "value": base64(value)}),
        )
        .await
        .map(drop)
    }

    /// The key's mod_revision (0 when absent).
    async fn range(&self, key: &[u8], serializable: bool) -> Result<i64, String> {
        let reply = self
            .call(
                "/v3/kv/range",
                &json!({"key": base64(key), "serializable": serializable}),
            )
            .await?;
        Ok(reply["kvs"][0]["mod_revision"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| reply["kvs"][0]["mod_revision"].as_i64())
            .unwrap_or(0))
    }

    /// Puts all of `puts` if `key`'s mod_revision is still `revision`; false if not.
    async fn txn_if_revision(
        &self,
        key: &[u8],
        revision: i64,
        puts: &[(&[u8], &[u8])],
    ) -> Result<bool, String> {
        let success: Vec<Value> = puts
            .iter()
            .map(|(k, v)| json!({"request_put": {"key": base64(k), "value": base64(v)}}))
            .collect();
        let body = json!({
            "compare": [{
                "key": base64(key),
                "result": "EQUAL",
                "target": "MOD",
                "mod_revision": revision.to_string(),
            }],
            "success": success,
        });
        let reply = self.call("/v3/kv/txn", &body).await?;
        Ok(reply["succeeded"].as_bool().unwrap_or(false))
    }
}

// ---------------------------------------------------------------------------
// The load shapes, for both systems

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Ours: HEAD for the tag + create with X-If-Configuration-Matches. etcd: range the
    /// tag key for its mod_revision + txn (compare mod_revision, put the tag and a record).
    Cond,
    /// Ours: dataset create. etcd: put of a new key.
    Write,
    /// Ours: GET /v1/configuration/datasets. etcd: linearizable range of one key.
    Lin,
    /// The same with `?consistency=stale` / `serializable: true`.
    Stale,
}

impl Workload {
    fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name.trim() {
            "cond" => Workload::Cond,
            "write" => Workload::Write,
            "lin" => Workload::Lin,
            "stale" => Workload::Stale,
            other => bail!("unknown workload {other:?} (cond, write, lin, stale)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Cond => "conditional_write",
            Workload::Write => "unconditional_write",
            Workload::Lin => "linearizable_read",
            Workload::Stale => "stale_read",
        }
    }

    fn is_read(self) -> bool {
        matches!(self, Workload::Lin | Workload::Stale)
    }
}

#[derive(Clone)]
enum Conn {
    Ours(Client),
    Etcd(EtcdClient),
}

const TAG_KEY: &[u8] = b"/bench/tag";

fn record(primary: &str) -> Vec<u8> {
    json!({"primary": primary, "maximum_size": 67_108_864, "metadata": {}, "deleted": false, "dataset_id": Uuid::new_v4()})
        .to_string()
        .into_bytes()
}

/// One operation: Ok(true) applied, Ok(false) completed but lost the race (412 / failed
/// compare), Err on anything else.
async fn run_op(conn: &Conn, workload: Workload) -> Result<bool, String> {
    let node = Uuid::new_v4().to_string();
    let dataset = json!({"primary": node, "maximum_size": 67_108_864});
    match conn {
        Conn::Ours(client) => {
            let e = |e: flocker::client::ClientError| e.to_string();
            let reply = match workload {
                Workload::Cond => {
                    let head = client
                        .request(Method::HEAD, "/v1/configuration/datasets", &[], None)
                        .await
                        .map_err(e)?;
                    if !head.status.is_success() {
                        return Err(format!("HEAD {}", head.status));
                    }
                    let tag = head
                        .header("x-configuration-tag")
                        .unwrap_or_default()
                        .to_owned();
                    let reply = client
                        .post_if("/v1/configuration/datasets", &tag, &dataset)
                        .await
                        .map_err(e)?;
                    if reply.status == StatusCode::PRECONDITION_FAILED {
                        return Ok(false);
                    }
                    reply
                }
                Workload::Write => client
                    .post("/v1/configuration/datasets", &dataset)
                    .await
                    .map_err(e)?,
                Workload::Lin => client.get("/v1/configuration/datasets").await.map_err(e)?,
                Workload::Stale => client
                    .get("/v1/configuration/datasets?consistency=stale")
                    .await
                    .map_err(e)?,
            };
            if reply.status.is_success() {
                Ok(true)
            } else {
                Err(reply.status.to_string())
            }
        }
        Conn::Etcd(client) => match workload {
            Workload::Cond => {
                let revision = client.range(TAG_KEY, false).await?;
                let key = format!("/bench/ds/{}", Uuid::new_v4());
                let value = record(&node);
                let tag = Uuid::new_v4().simple().to_string();
                client
                    .txn_if_revision(
                        TAG_KEY,
                        revision,
                        &[(TAG_KEY, tag.as_bytes()), (key.as_bytes(), &value)],
                    )
                    .await
            }
            Workload::Write => {
                let key = format!("/bench/ds/{}", Uuid::new_v4());
                client
                    .put(key.as_bytes(), &record(&node))
                    .await
                    .map(|_| true)
            }
            Workload::Lin => client.range(TAG_KEY, false).await.map(|_| true),
            Workload::Stale => client.range(TAG_KEY, true).await.map(|_| true),
        },
    }
}

#[derive(Default)]
struct CellResult {
    latencies: Vec<Duration>,
    lost: u64,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    /// CPU seconds used in the measured window by the servers and by this process.
    server_cpu: f64,
    client_cpu: f64,
}

/// `conns.len()` clients, each looping over `workload` on its own connection; operations
/// started in the warm-up are not measured.
async fn run_cell(
    conns: Vec<Conn>,
    workload: Workload,
    warmup: f64,
    seconds: f64,
    pids: &[u32],
) -> CellResult {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            tokio::spawn(async move {
                let mut local = CellResult::default();
                while Instant::now() < end {
                    let began = Instant::now();
                    let result = run_op(&conn, workload).await;
                    if began < measure_from {
                        continue;
                    }
                    match result {
                        Ok(applied) => {
                            local.latencies.push(began.elapsed());
                            local.lost += u64::from(!applied);
                        }
                        Err(error) => {
                            local.errors += 1;
                            local.first_error.get_or_insert(error);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                local
            })
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let (server0, client0) = (cpu_of(pids), cpu_seconds("self"));
    tokio::time::sleep_until(end.into()).await;
    let (server1, client1) = (cpu_of(pids), cpu_seconds("self"));
    let mut all = CellResult {
        seconds,
        server_cpu: server1 - server0,
        client_cpu: client1 - client0,
        ..CellResult::default()
    };
    for task in tasks {
        if let Ok(local) = task.await {
            all.latencies.extend(local.latencies);
            all.lost += local.lost;
            all.errors += local.errors;
            if all.first_error.is_none() {
                all.first_error = local.first_error;
            }
        }
    }
    all
}

// ---------------------------------------------------------------------------
// compare

#[derive(Default)]
struct Merged {
    latencies: Vec<Duration>,
    lost: u64,
    errors: u64,
    seconds: f64,
    per_run_ops_s: Vec<f64>,
    first_error: Option<String>,
    server_cpu: f64,
    client_cpu: f64,
}

impl Merged {
    fn add(&mut self, cell: CellResult) {
        self.per_run_ops_s
            .push((cell.latencies.len() as f64 / cell.seconds * 10.0).round() / 10.0);
        self.latencies.extend(cell.latencies);
        self.lost += cell.lost;
        self.errors += cell.errors;
        self.seconds += cell.seconds;
        self.server_cpu += cell.server_cpu;
        self.client_cpu += cell.client_cpu;
        if self.first_error.is_none() {
            self.first_error = cell.first_error;
        }
    }

    fn summary(&mut self, workload: Workload) -> Value {
        let ops = self.latencies.len();
        let mut value = latency_json(&mut self.latencies, self.seconds);
        value["errors"] = json!(self.errors);
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        // Cores busy: the three servers together, and this load generator.
        value["server_cores"] = json!(round2(self.server_cpu / self.seconds));
        value["client_cores"] = json!(round2(self.client_cpu / self.seconds));
        value["server_cpu_us_per_op"] = json!((self.server_cpu * 1e6 / ops.max(1) as f64).round());
        value["per_run_ops_per_s"] = json!(self.per_run_ops_s);
        if !workload.is_read() {
            value["lost_races"] = json!(self.lost);
            value["applied_per_s"] = json!(round2((ops as u64 - self.lost) as f64 / self.seconds));
        }
        if let Some(error) = &self.first_error {
            value["first_error"] = json!(error);
        }
        value
    }
}

async fn compare(options: CompareOptions) -> anyhow::Result<()> {
    let work = Work::new(&options.common, "compare")?;
    EtcdCluster::ensure_installed(&options.etcd)?;
    let certs = make_certs(&work.dir)?;
    let workloads: Vec<Workload> = options
        .workloads
        .iter()
        .map(|w| Workload::parse(w))
        .collect::<anyhow::Result<_>>()?;
    // Reads first, on a one-record configuration, then the writes that grow it.
    let mut order: Vec<Workload> = workloads.iter().copied().filter(|w| w.is_read()).collect();
    order.extend(workloads.iter().copied().filter(|w| !w.is_read()));
    let mut results: BTreeMap<(usize, usize, bool), Merged> = BTreeMap::new();
    let timeout = Duration::from_secs(10);
    for round in 0..options.rounds.max(1) {
        for etcd in [false, true] {
            let system = if etcd { "etcd" } else { "ours" };
            let run_dir = work.dir.join(format!("{system}-{round}"));
            log(format!("round {round}: starting {system}"));
            // Each run gets a fresh cluster; `_ours`/`_etcd` stop it (by PID) when dropped.
            let mut _ours = None;
            let mut _etcd = None;
            let pids: Vec<u32>;
            let urls_conns: Box<dyn Fn(usize) -> anyhow::Result<Conn>> = if etcd {
                let cluster = EtcdCluster::start(&options.etcd, &run_dir, &certs).await?;
                let c = cluster.client(&cluster.client_urls[0], timeout)?;
                c.put(TAG_KEY, b"seed").await.map_err(anyhow::Error::msg)?;
                let urls = cluster.client_urls.clone();
                let certs = certs.clone();
                pids = cluster.children.iter().map(Child::id).collect();
                _etcd = Some(cluster);
                Box::new(move |i| {
                    Ok(Conn::Etcd(EtcdClient::new(
                        &urls[i % urls.len()],
                        &certs,
                        timeout,
                    )?))
                })
            } else {
                let cluster = start_ours(&run_dir, &certs).await?;
                let reply = ours_client(&cluster, 1, timeout)?
                    .post(
                        "/v1/configuration/datasets",
                        &json!({"primary": Uuid::new_v4()}),
                    )
                    .await?;
                if !reply.status.is_success() {
                    bail!("seeding ours: {}", reply.status);
                }
                let urls: Vec<String> = cluster
                    .ids()
                    .iter()
                    .map(|id| cluster.api_url(*id))
                    .collect();
                let tls = cluster.admin_tls();
                pids = cluster
                    .ids()
                    .iter()
                    .filter_map(|id| cluster.pid(*id))
                    .collect();
                _ours = Some(cluster);
                Box::new(move |i| {
                    Ok(Conn::Ours(Client::with_timeout(
                        &urls[i % urls.len()],
                        &tls,
                        timeout,
                    )?))
                })
            };
            for (wi, workload) in order.iter().enumerate() {
                for (ci, clients) in options.clients.iter().enumerate() {
                    let conns = (0..*clients)
                        .map(&urls_conns)
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let cell =
                        run_cell(conns, *workload, options.warmup, options.seconds, &pids).await;
                    log(format!(
                        "round {round} {system} {} x{clients}: {:.0} ops/s, {} errors",
                        workload.name(),
                        cell.latencies.len() as f64 / cell.seconds,
                        cell.errors
                    ));
                    results.entry((wi, ci, etcd)).or_default().add(cell);
                }
            }
            drop(_ours.take());
            drop(_etcd.take());
        }
    }
    let mut lines = Vec::new();
    for (wi, workload) in order.iter().enumerate() {
        for (ci, clients) in options.clients.iter().enumerate() {
            let ours = results
                .get_mut(&(wi, ci, false))
                .map(|m| m.summary(*workload))
                .unwrap_or(Value::Null);
            let etcd = results
                .get_mut(&(wi, ci, true))
                .map(|m| m.summary(*workload))
                .unwrap_or(Value::Null);
            let ratio = |field: &str| {
                let (a, b) = (ours[field].as_f64()?, etcd[field].as_f64()?);
                (b > 0.0).then(|| (a / b * 100.0).round() / 100.0)
            };
            let line = json!({
                "bench": "compare",
                "workload": workload.name(),
                "clients": clients,
                "seconds_per_run": options.seconds,
                "runs_per_system": options.rounds.max(1),
                "ours": ours,
                "etcd": etcd,
                "ratio_ops_per_s": ratio("ops_per_s"),
                "ratio_applied_per_s": ratio("applied_per_s"),
                "ratio_p99": ratio("p99_ms"),
            });
            println!("{line}");
            lines.push(line);
        }
    }
    let svg = compare_chart(&lines, &order, &options.clients);
    work.write_results(
        "compare",
        &json!({"cells": lines, "etcd_version": etcd_version(&options.etcd)}),
        &svg,
    )?;
    Ok(())
}

fn etcd_version(binary: &str) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .next()
        .map(str::to_owned)
}

fn compare_chart(lines: &[Value], order: &[Workload], clients: &[usize]) -> String {
    let mut panels = Vec::new();
    for workload in order {
        for (field, label) in [("ops_per_s", "ops/s"), ("p99_ms", "p99 ms")] {
            let groups: Vec<(String, Vec<f64>)> = clients
                .iter()
                .map(|c| {
                    let line = lines
                        .iter()
                        .find(|l| l["workload"] == workload.name() && l["clients"] == *c);
                    let get =
                        |system: &str| line.and_then(|l| l[system][field].as_f64()).unwrap_or(0.0);
                    (format!("{c} clients"), vec![get("ours"), get("etcd")])
                })
                .collect();
            panels.push(Panel {
                title: format!("{} — {label}", workload.name()),
                series: vec!["ours".into(), "etcd".into()],
                groups,
            });
        }
    }
    svg_panels(
        "flocker-bench compare: ours vs etcd (3 nodes, TLS, loopback)",
        &panels,
        2,
    )
}

// ---------------------------------------------------------------------------
// SVG (hand-written: grouped bar charts)

struct Panel {
    title: String,
    series: Vec<String>,
    groups: Vec<(String, Vec<f64>)>,
}

const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn svg_panels(title: &str, panels: &[Panel], columns: usize) -> String {
    let (pw, ph) = (460.0, 240.0);
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns);
    let width = pw * columns as f64 + 20.0;
    let height = ph * rows as f64 + 50.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        xml_escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let x0 = 10.0 + pw * (i % columns) as f64;
        let y0 = 40.0 + ph * (i / columns) as f64;
        let (left, top, plot_w, plot_h) = (x0 + 50.0, y0 + 40.0, pw - 80.0, ph - 80.0);
        s += &format!(
            "<text x=\"{x0}\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">{}</text>\n",
            y0 + 14.0,
            xml_escape(&panel.title)
        );
        for (k, name) in panel.series.iter().enumerate() {
            let lx = x0 + 50.0 + 90.0 * k as f64;
            s += &format!(
                "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
                y0 + 20.0,
                COLORS[k % COLORS.len()],
                lx + 14.0,
                y0 + 29.0,
                xml_escape(name)
            );
        }
        let max = panel
            .groups
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0_f64, f64::max)
            .max(1e-9);
        s += &format!(
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n",
            top + plot_h,
            left + plot_w,
            top + plot_h,
            top + plot_h,
            left - 4.0,
            top + 4.0,
            fmt_value(max),
            left - 4.0,
            top + plot_h + 4.0
        );
        let groups = panel.groups.len().max(1) as f64;
        let group_w = plot_w / groups;
        for (g, (label, values)) in panel.groups.iter().enumerate() {
            let gx = left + group_w * g as f64;
            let bar_w = (group_w * 0.8) / values.len().max(1) as f64;
            for (k, v) in values.iter().enumerate() {
                let h = plot_h * (v / max);
                let bx = gx + group_w * 0.1 + bar_w * k as f64;
                s += &format!(
                    "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{}</text>\n",
                    top + plot_h - h,
                    bar_w * 0.95,
                    COLORS[k % COLORS.len()],
                    bx + bar_w / 2.0,
                    top + plot_h - h - 2.0,
                    fmt_value(*v)
                );
            }
            s += &format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                gx + group_w / 2.0,
                top + plot_h + 16.0,
                xml_escape(label)
            );
        }
    }
    s += "</svg>\n";
    s
}

// ---------------------------------------------------------------------------
// scale

struct Timed {
    index: usize,
    start: Duration,
    end: Duration,
    ok: bool,
}

/// `clients` clients (round-robin over `urls`) run `make(i)` for i in `from..to`.
async fn drive<F, Fut>(
    clients: Vec<Client>,
    from: usize,
    to: usize,
    epoch: Instant,
    make: F,
) -> (Vec<Timed>, Vec<Value>, Option<String>)
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, String>> + Send,
{
    let next = Arc::new(AtomicU64::new(from as u64));
    let make = Arc::new(make);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let next = next.clone();
            let make = make.clone();
            tokio::spawn(async move {
                let mut timed = Vec::new();
                let mut bodies = Vec::new();
                let mut first_error = None;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if index >= to {
                        break;
                    }
                    let start = epoch.elapsed();
                    let result = make(client.clone(), index).await;
                    let end = epoch.elapsed();
                    let ok = result.is_ok();
                    match result {
                        Ok(body) => bodies.push(body),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                    timed.push(Timed {
                        index,
                        start,
                        end,
                        ok,
                    });
                }
                (timed, bodies, first_error)
            })
        })
        .collect();
    let mut all = (Vec::new(), Vec::new(), None);
    for task in tasks {
        if let Ok((timed, bodies, error)) = task.await {
            all.0.extend(timed);
            all.1.extend(bodies);
            if all.2.is_none() {
                all.2 = error;
            }
        }
    }
    all.0.sort_by_key(|t| t.index);
    all
}

fn band_json(timed: &[Timed]) -> Value {
    let mut lat: Vec<Duration> = timed
        .iter()
        .filter(|t| t.ok)
        .map(|t| t.end - t.start)
        .collect();
    let begin = timed.iter().map(|t| t.start).min().unwrap_or_default();
    let end = timed.iter().map(|t| t.end).max().unwrap_or_default();
    let mut value = latency_json(&mut lat, (end - begin).as_secs_f64());
    value["errors"] = json!(timed.iter().filter(|t| !t.ok).count());
    value
}

async fn expect_ok(
    reply: Result<flocker::client::Reply, flocker::client::ClientError>,
) -> Result<Value, String> {
    let reply = reply.map_err(|e| e.to_string())?;
    if reply.status.is_success() {
        Ok(reply.body)
    } else {
        Err(format!(
            "{}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.raw)
        ))
    }
}

fn clients_for(cluster: &LocalCluster, ids: &[u64], count: usize) -> anyhow::Result<Vec<Client>> {
    (0..count)
        .map(|i| ours_client(cluster, ids[i % ids.len()], Duration::from_secs(30)))
        .collect()
}

/// Linearizable full-list GETs on node `id`: (median, max) ms and the count seen.
/// Linearizable full-list GETs on node `id`: median and max ms to the last byte of the body
/// (the client's JSON decoding is timed apart), and the count seen.
async fn list_latency(cluster: &LocalCluster, id: u64, samples: usize) -> anyhow::Result<Value> {
    let config = (*flocker::tls::client_config(&cluster.admin_tls())?).clone();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!("{}/v1/configuration/datasets", cluster.api_url(id));
    let mut lat = Vec::new();
    let mut decode = Vec::new();
    let mut count = 0;
    let mut bytes = 0;
    for _ in 0..samples {
        let began = Instant::now();
        let response = http.get(&url).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        lat.push(began.elapsed());
        if !status.is_success() {
            bail!("list: {status}");
        }
        let began = Instant::now();
        let list: Value = serde_json::from_slice(&body)?;
        decode.push(began.elapsed());
        count = list.as_array().map_or(0, Vec::len);
        bytes = body.len();
    }
    lat.sort();
    decode.sort();
    Ok(json!({
        "median_ms": percentile(&lat, 50.0),
        "max_ms": percentile(&lat, 100.0),
        "client_decode_median_ms": percentile(&decode, 50.0),
        "datasets": count,
        "body_bytes": bytes,
    }))
}

fn rss_json(cluster: &LocalCluster) -> Value {
    let map: serde_json::Map<String, Value> = cluster
        .ids()
        .iter()
        .map(|id| {
            (
                id.to_string(),
                json!(cluster.pid(*id).and_then(rss_kib).map(|k| k / 1024)),
            )
        })
        .collect();
    Value::Object(map)
}

async fn status_of(cluster: &LocalCluster, id: u64) -> Option<Value> {
    let client = ours_client(cluster, id, Duration::from_secs(2)).ok()?;
    let reply = client.get("/admin/v1/status").await.ok()?;
    reply.status.is_success().then_some(reply.body)
}

async fn scale(options: ScaleOptions) -> anyhow::Result<()> {
    let work = Work::new(&options.common, "scale")?;
    let certs = make_certs(&work.dir)?;
    let mut cluster = start_ours(&work.dir.join("ours"), &certs).await?;
    let ids = cluster.ids();
    let total = options.datasets;
    let band = options.band.max(1);
    let epoch = Instant::now();
    let mut all_timed: Vec<Timed> = Vec::new();
    let mut datasets: Vec<(String, String)> = Vec::new();
    let mut bands = Vec::new();
    let mut lines = Vec::new();
    let mut from = 0;
    while from < total {
        let to = (from + band).min(total);
        let clients = clients_for(&cluster, &ids, options.clients)?;
        let (timed, bodies, error) = drive(clients, from, to, epoch, |client, _| async move {
            let body = json!({"primary": Uuid::new_v4(), "maximum_size": 67_108_864});
            expect_ok(client.post("/v1/configuration/datasets", &body).await).await
        })
        .await;
        for body in bodies {
            if let (Some(id), Some(primary)) =
                (body["dataset_id"].as_str(), body["primary"].as_str())
            {
                datasets.push((id.to_owned(), primary.to_owned()));
            }
        }
        let line = json!({
            "bench": "scale",
            "band": format!("{from}..{to}"),
            "create": band_json(&timed),
            "first_error": error,
            "list_after": list_latency(&cluster, ids[0], 5).await?,
            "rss_mib": rss_json(&cluster),
        });
        println!("{line}");
        bands.push(line.clone());
        lines.push(line);
        all_timed.extend(timed);
        from = to;
    }
    // The "1k case": creates while the configuration holds baseline..2*baseline datasets
    // (after the first connections are warm), against the last `baseline` creates.
    let base_n = options.baseline.min(all_timed.len() / 2);
    let first = band_json(&all_timed[base_n..2 * base_n]);
    let last = band_json(&all_timed[all_timed.len() - base_n..]);
    let growth = json!({
        "bench": "scale",
        "what": "create latency: the 1k case (creates baseline..2*baseline) vs the last creates",
        "first": first,
        "last": last,
        "baseline_creates": base_n,
        "p50_ratio_last_to_first": ratio_of(&last["p50_ms"], &first["p50_ms"]),
        "p99_ratio_last_to_first": ratio_of(&last["p99_ms"], &first["p99_ms"]),
    });
    println!("{growth}");
    lines.push(growth.clone());

    // Leases on the first datasets.
    let lease_count = options.leases.unwrap_or(total / 10).min(datasets.len());
    let lease_targets = Arc::new(datasets[..lease_count].to_vec());
    let clients = clients_for(&cluster, &ids, options.clients)?;
    let targets = lease_targets.clone();
    let (timed, _, error) = drive(clients, 0, lease_count, epoch, move |client, i| {
        let (dataset, node) = targets[i].clone();
        async move {
            let body = json!({"dataset_id": dataset, "node_uuid": node, "expires": null});
            expect_ok(client.post("/v1/configuration/leases", &body).await).await
        }
    })
    .await;
    let lease_line = json!({
        "bench": "scale",
        "what": "lease acquire",
        "leases": lease_count,
        "acquire": band_json(&timed),
        "first_error": error,
    });
    println!("{lease_line}");
    lines.push(lease_line);

    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let status = status_of(&cluster, leader).await;
    let sizes: BTreeMap<String, u64> = ids
        .iter()
        .map(|id| (id.to_string(), dir_bytes(&cluster.data_path(*id)) / 1024))
        .collect();
    let mut list_lines = serde_json::Map::new();
    for id in &ids {
        list_lines.insert(id.to_string(), list_latency(&cluster, *id, 5).await?);
    }
    let leases_list = {
        let client = ours_client(&cluster, ids[0], Duration::from_secs(30))?;
        let began = Instant::now();
        let reply = client.get("/v1/configuration/leases").await?;
        json!({"ms": ms(began.elapsed()), "leases": reply.body.as_array().map_or(0, Vec::len)})
    };
    let state_line = json!({
        "bench": "scale",
        "what": "at full size",
        "datasets": datasets.len(),
        "list_by_node": list_lines,
        "lease_list": leases_list,
        "rss_mib": rss_json(&cluster),
        "data_dir_kib": sizes,
        "leader_snapshot_index": status.as_ref().map(|s| s["snapshot_index"].clone()),
        "leader_last_log_index": status.as_ref().map(|s| s["last_log_index"].clone()),
    });
    println!("{state_line}");
    lines.push(state_line);

    // Restart of the whole cluster: SIGTERM all, start all, time to a full linearizable list.
    cluster.stop_all();
    let began = Instant::now();
    cluster.start_all_controls()?;
    let mut serving = serde_json::Map::new();
    let expected = datasets.len();
    let deadline = Instant::now() + Duration::from_secs(300);
    for id in &ids {
        let client = ours_client(&cluster, *id, Duration::from_secs(5))?;
        loop {
            if let Ok(reply) = client.get("/v1/configuration/datasets").await {
                if reply.status.is_success()
                    && reply.body.as_array().map_or(0, Vec::len) >= expected
                {
                    serving.insert(id.to_string(), json!(ms(began.elapsed())));
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("node {id} did not serve the full list within 300 s of a restart");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let restart_line = json!({
        "bench": "scale",
        "what": "restart of all 3 nodes to serving the full list (linearizable)",
        "ms_by_node": serving,
        "rss_mib_after_restart": rss_json(&cluster),
    });
    println!("{restart_line}");
    lines.push(restart_line);

    // Catch-up: a follower is down during N moves.
    let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let down = *ids
        .iter()
        .find(|id| **id != leader)
        .context("no follower")?;
    cluster.kill(down)?;
    let alive: Vec<u64> = ids.iter().copied().filter(|id| *id != down).collect();
    let writes = options.catchup_writes.unwrap_or(total / 2);
    let clients = clients_for(&cluster, &alive, options.clients)?;
    let targets = Arc::new(datasets.clone());
    let (timed, _, error) = drive(clients, 0, writes, Instant::now(), move |client, i| {
        let (dataset, _) = targets[i % targets.len()].clone();
        async move {
            let body = json!({"primary": Uuid::new_v4()});
            expect_ok(
                client
                    .post(&format!("/v1/configuration/datasets/{dataset}"), &body)
                    .await,
            )
            .await
        }
    })
    .await;
    let target_index = status_of(&cluster, leader)
        .await
        .and_then(|s| s["last_log_index"].as_u64())
        .context("leader status")?;
    let began = Instant::now();
    cluster.start_control(down)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (caught_up, follower_status) = loop {
        if let Some(status) = status_of(&cluster, down).await {
            if status["applied_index"].as_u64().unwrap_or(0) >= target_index {
                break (began.elapsed(), status);
            }
        }
        if Instant::now() > deadline {
            bail!("node {down} did not catch up within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let catchup_line = json!({
        "bench": "scale",
        "what": "catch-up of a follower that was down during the writes",
        "node": down,
        "writes_while_down": band_json(&timed),
        "first_error": error,
        "leader_last_log_index": target_index,
        "catch_up_ms": ms(caught_up),
        "follower_snapshot_index": follower_status["snapshot_index"],
    });
    println!("{catchup_line}");
    lines.push(catchup_line);

    // Snapshot sizes: read the stored snapshot of each (stopped) node.
    cluster.stop_all();
    let mut snapshots = serde_json::Map::new();
    for id in &ids {
        let path = cluster.data_path(*id).join("raft.sled");
        let size = flocker::storage::open_db(&path)
            .ok()
            .and_then(|db| flocker::storage::SnapshotStore::new(&db).ok()?.load().ok())
            .flatten()
            .map(|(_, data)| data.len());
        snapshots.insert(id.to_string(), json!(size));
    }
    let snapshot_line = json!({
        "bench": "scale",
        "what": "stored snapshot size (bytes) and data dir (KiB) per node, at the end",
        "snapshot_bytes": snapshots,
        "data_dir_kib": ids.iter().map(|id| (id.to_string(), json!(dir_bytes(&cluster.data_path(*id)) / 1024))).collect::<serde_json::Map<_, _>>(),
    });
    println!("{snapshot_line}");
    lines.push(snapshot_line);
    drop(cluster);

    let panels = vec![
        Panel {
            title: "create latency per band (ms)".into(),
            series: vec!["p50".into(), "p99".into()],
            groups: bands
                .iter()
                .map(|b| {
                    (
                        b["band"].as_str().unwrap_or("").to_owned(),
                        vec![
                            b["create"]["p50_ms"].as_f64().unwrap_or(0.0),
                            b["create"]["p99_ms"].as_f64().unwrap_or(0.0),
                        ],
                    )
                })
                .collect(),
        },
        Panel {
            title: "creates/s per band".into(),
            series: vec!["ops/s".into()],
            groups: bands
                .iter()
                .map(|b| {
                    (
                        b["band"].as_str().unwrap_or("").to_owned(),
                        vec![b["create"]["ops_per_s"].as_f64().unwrap_or(0.0)],
                    )
                })
                .collect(),
        },
        Panel {
            title: "full list GET after band (ms, median of 5)".into(),
            series: vec!["median".into(), "max".into()],
            groups: bands
                .iter()
                .map(|b| {
                    (
                        b["band"].as_str().unwrap_or("").to_owned(),
                        vec![
                            b["list_after"]["median_ms"].as_f64().unwrap_or(0.0),
                            b["list_after"]["max_ms"].as_f64().unwrap_or(0.0),
                        ],
                    )
                })
                .collect(),
        },
        Panel {
            title: "RSS per node after band (MiB)".into(),
            series: ids.iter().map(|id| format!("node {id}")).collect(),
            groups: bands
                .iter()
                .map(|b| {
                    (
                        b["band"].as_str().unwrap_or("").to_owned(),
                        ids.iter()
                            .map(|id| b["rss_mib"][id.to_string()].as_f64().unwrap_or(0.0))
                            .collect(),
                    )
                })
                .collect(),
        },
    ];
    let svg = svg_panels(
        &format!("flocker-bench scale: {total} datasets, 3 nodes"),
        &panels,
        2,
    );
    work.write_results("scale", &json!({"lines": lines}), &svg)?;
    Ok(())
}

fn ratio_of(a: &Value, b: &Value) -> Option<f64> {
    let (a, b) = (a.as_f64()?, b.as_f64()?);
    (b > 0.0).then(|| (a / b * 100.0).round() / 100.0)
}

// ---------------------------------------------------------------------------
// failover

struct Kill {
    leader: u64,
    at: Duration,
    baseline_per_s: f64,
    restarted_at: Duration,
    /// When a survivor first reported a new leader.
    new_leader_at: Option<Duration>,
}

async fn failover(options: FailoverOptions) -> anyhow::Result<()> {
    let work = Work::new(&options.common, "failover")?;
    let certs = make_certs(&work.dir)?;
    let mut cluster = start_ours(&work.dir.join("ours"), &certs).await?;
    let ids = cluster.ids();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Each client knows every node; on an error it moves on to the next node.
    let mut tasks = Vec::new();
    for i in 0..options.clients.max(1) {
        let nodes: Vec<Client> = ids
            .iter()
            .map(|id| ours_client(&cluster, *id, Duration::from_secs(10)))
            .collect::<anyhow::Result<_>>()?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut at = i % nodes.len();
            let mut timed = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = epoch.elapsed();
                let body = json!({"primary": Uuid::new_v4(), "maximum_size": 67_108_864});
                let ok = expect_ok(nodes[at].post("/v1/configuration/datasets", &body).await)
                    .await
                    .is_ok();
                timed.push(Timed {
                    index: at,
                    start,
                    end: epoch.elapsed(),
                    ok,
                });
                if !ok {
                    at = (at + 1) % nodes.len();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            timed
        }));
    }
    let result = async {
        let mut kills = Vec::new();
        tokio::time::sleep(Duration::from_secs_f64(options.settle)).await;
        for k in 0..options.kills {
            let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
            let at = epoch.elapsed();
            cluster.kill(leader)?;
            log(format!("kill {}: SIGKILL leader {leader}", k + 1));
            let recover_end = Instant::now() + Duration::from_secs_f64(options.recover);
            let mut new_leader_at = None;
            'poll: while Instant::now() < recover_end {
                for id in ids.iter().filter(|id| **id != leader) {
                    let seen = status_of(&cluster, *id)
                        .await
                        .and_then(|s| s["leader"].as_u64());
                    if seen.is_some_and(|l| l != leader) {
                        new_leader_at = Some(epoch.elapsed());
                        break 'poll;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep_until(recover_end.into()).await;
            let restarted_at = epoch.elapsed();
            cluster.start_control(leader)?;
            cluster.wait_for_leader(Duration::from_secs(60)).await?;
            tokio::time::sleep(Duration::from_secs_f64(options.settle)).await;
            kills.push(Kill {
                leader,
                at,
                baseline_per_s: 0.0,
                restarted_at,
                new_leader_at,
            });
        }
        anyhow::Ok(kills)
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut timed: Vec<Timed> = Vec::new();
    for task in tasks {
        if let Ok(t) = task.await {
            timed.extend(t);
        }
    }
    drop(cluster);
    let mut kills = result?;
    let mut ok_ends: Vec<Duration> = timed.iter().filter(|t| t.ok).map(|t| t.end).collect();
    ok_ends.sort();
    let count_in = |from: Duration, to: Duration| {
        let a = ok_ends.partition_point(|t| *t < from);
        let b = ok_ends.partition_point(|t| *t < to);
        b - a
    };
    let window = Duration::from_millis(500);
    let mut lines = Vec::new();
    let mut first_writes = Vec::new();
    let mut elections: Vec<Duration> = kills
        .iter()
        .filter_map(|k| Some(k.new_leader_at? - k.at))
        .collect();
    elections.sort();
    let mut full = Vec::new();
    for (k, kill) in kills.iter_mut().enumerate() {
        let before = kill.at.saturating_sub(Duration::from_secs(2));
        kill.baseline_per_s = count_in(before, kill.at) as f64 / (kill.at - before).as_secs_f64();
        let first = timed
            .iter()
            .filter(|t| t.ok && t.start >= kill.at)
            .map(|t| t.end)
            .min()
            .map(|t| t - kill.at);
        let need = kill.baseline_per_s * options.full_fraction * window.as_secs_f64();
        let mut t = kill.at;
        let mut recovered = None;
        while t + window <= kill.restarted_at {
            if count_in(t, t + window) as f64 >= need
                && first.is_some_and(|f| kill.at + f <= t + window)
            {
                recovered = Some(t + window - kill.at);
                break;
            }
            t += Duration::from_millis(50);
        }
        let errors = timed
            .iter()
            .filter(|e| !e.ok && e.start >= kill.at && e.start < kill.restarted_at)
            .count();
        let line = json!({
            "bench": "failover",
            "kill": k + 1,
            "leader": kill.leader,
            "baseline_writes_per_s": (kill.baseline_per_s * 10.0).round() / 10.0,
            "kill_to_new_leader_ms": kill.new_leader_at.map(|t| ms(t - kill.at)),
            "kill_to_first_write_ms": first.map(ms),
            "kill_to_full_throughput_ms": recovered.map(ms),
            "failed_requests": errors,
        });
        println!("{line}");
        if let Some(f) = first {
            first_writes.push(f);
        }
        full.push(recovered.unwrap_or(kill.restarted_at - kill.at));
        lines.push(line);
    }
    first_writes.sort();
    full.sort();
    let summary = json!({
        "bench": "failover",
        "kills": kills.len(),
        "clients": options.clients,
        "kill_to_new_leader_ms": {"median": percentile(&elections, 50.0), "worst": elections.last().map(|d| ms(*d))},
        "kill_to_first_write_ms": {"median": percentile(&first_writes, 50.0), "worst": first_writes.last().map(|d| ms(*d))},
        "kill_to_full_throughput_ms": {"median": percentile(&full, 50.0), "worst": full.last().map(|d| ms(*d)), "full_fraction": options.full_fraction},
        "note": "full throughput = first 500 ms window at full_fraction of the 2 s before the kill; capped at the restart (--recover)",
    });
    println!("{summary}");
    lines.push(summary);
    let panel = Panel {
        title: "per kill (ms)".into(),
        series: vec!["kill → first write".into(), "kill → full throughput".into()],
        groups: lines
            .iter()
            .filter(|l| l.get("kill").is_some())
            .map(|l| {
                (
                    format!("#{}", l["kill"]),
                    vec![
                        l["kill_to_first_write_ms"].as_f64().unwrap_or(0.0),
                        l["kill_to_full_throughput_ms"].as_f64().unwrap_or(0.0),
                    ],
                )
            })
            .collect(),
    };
    let svg = svg_panels(
        &format!(
            "flocker-bench failover: SIGKILL of the leader, {} clients",
            options.clients
        ),
        &[panel],
        1,
    );
    work.write_results("failover", &json!({"lines": lines}), &svg)?;
    Ok(())
}

// ---------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let run = async move {
            match options.command {
                Sub::Compare(o) => compare(o).await,
                Sub::Scale(o) => scale(o).await,
                Sub::Failover(o) => failover(o).await,
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // On Ctrl-C or SIGTERM the benchmark future is dropped, and with it every cluster
        // it started (their Drop stops each child by PID).
        tokio::select! {
            result = run => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}
