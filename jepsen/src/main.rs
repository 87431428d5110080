//! `flocker-jepsen`: run one fault-injection experiment against real `flocker-control`
//! processes in network namespaces, then check the history. Exit status 0 only when the
//! run is valid (1: not valid, 2: could not run or could not decide, 130: interrupted).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use flocker_jepsen::checker::{self, CheckOutcome, Validity};
use flocker_jepsen::cluster::{self, lock, Cluster, NodeOptions, Shared};
use flocker_jepsen::history::{self, Recorder};
use flocker_jepsen::nemesis::{self, Nemesis, Schedule};
use flocker_jepsen::netns::{self, Network};
use flocker_jepsen::process;
use flocker_jepsen::report::{self, Results};
use flocker_jepsen::wgl::Limits;
use flocker_jepsen::workload::{self, Ctx, Workload};

/// Fault-injection suite for the Flocker control plane: checks, black-box through the v1
/// API, that the configuration tag is linearizable (and that creates and leases are
/// safe) under partitions, crashes, pauses and membership changes. Needs root.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "flocker-jepsen", version)]
struct Options {
    /// Control nodes: 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
    nodes: usize,
    /// Seconds of workload under faults (the heal phase and final reads come after).
    #[arg(long, default_value_t = 60.0)]
    time_limit: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    concurrency: usize,
    /// Faults, comma-separated: partition[-leader|-halves|-ring|-bridge],
    /// kill[-random|-leader], pause[-random|-leader], membership, all, none.
    #[arg(long, default_value = "partition,kill,pause")]
    nemesis: String,
    #[arg(long, value_enum, default_value = "register")]
    workload: Workload,
    /// Seed of the fault schedule and the clients' choices (random if absent; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Output directory (history.jsonl, results.json, plots, node logs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The flocker-control binary; default: next to this executable.
    #[arg(long)]
    control_bin: Option<PathBuf>,
    /// Mean seconds between fault periods.
    #[arg(long, default_value_t = 4.0)]
    interval: f64,
    /// Mean seconds a fault period lasts.
    #[arg(long, default_value_t = 6.0)]
    hold: f64,
    /// `--leader-wait` of the nodes: seconds before a request without a leader gets 503.
    #[arg(long, default_value_t = 2.0)]
    leader_wait: f64,
    /// Client request timeout in seconds (a timed-out request is indeterminate).
    #[arg(long, default_value_t = 5.0)]
    client_timeout: f64,
    /// `--snapshot-every` of the nodes (small, so snapshots happen under faults).
    #[arg(long, default_value_t = 100)]
    snapshot_every: u64,
    /// Start the nodes with a deliberate bug, to see the checker catch it. Needs a debug
    /// build of flocker-control (`--control-bin target/debug/flocker-control`).
    #[arg(long, value_enum)]
    inject_bug: Option<Bug>,
    /// Seconds the checker may search before answering "unknown".
    #[arg(long, default_value_t = 600.0)]
    checker_time_limit: f64,
    /// Do not run anything: check the history in this directory (from an earlier run)
    /// with its workload's checker (or --workload's). Does not need root.
    #[arg(long, value_name = "DIR")]
    check: Option<PathBuf>,
}

fn parse_nodes(text: &str) -> Result<usize, String> {
    match text {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err("3 or 5".into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bug {
    /// FLOCKER_UNSAFE_STALE_READS=1: every node serves configuration reads from its local
    /// copy, without a read index.
    StaleReads,
}

const INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    tracing_init();
    let matches = <Options as clap::CommandFactory>::command().get_matches();
    let workload_given =
        matches.value_source("workload") == Some(clap::parser::ValueSource::CommandLine);
    let options = match <Options as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(options) => options,
        Err(e) => e.exit(),
    };
    if let Some(dir) = &options.check {
        return match recheck(&options, workload_given, dir) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("flocker-jepsen: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("flocker-jepsen: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(options)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flocker-jepsen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn tracing_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("flocker_jepsen=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn say(text: impl AsRef<str>) {
    eprintln!("[flocker-jepsen] {}", text.as_ref());
}

fn preflight(options: &Options) -> anyhow::Result<PathBuf> {
    if !process::is_root() {
        bail!(
            "must run as root: the suite creates network namespaces, veth pairs, a bridge \
             and iptables rules (run it with sudo, or as root in CI)"
        );
    }
    for (tool, flag, package) in [
        ("ip", "-V", "iproute2"),
        ("iptables", "--version", "iptables"),
    ] {
        let found = std::process::Command::new(tool)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!("`{tool}` is missing: apt-get install -y {package}");
        }
    }
    let control_bin = match &options.control_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the executable has no directory")?
            .join("flocker-control"),
    };
    if !control_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p flocker -p flocker-jepsen` \
             (or pass --control-bin)",
            control_bin.display()
        );
    }
    if options.concurrency == 0 || options.time_limit <= 0.0 {
        bail!("--concurrency and --time-limit must be positive");
    }
    Ok(control_bin)
}

/// What the experiment learned besides the history.
struct RunInfo {
    workload_end_ns: u64,
    recovered: Result<usize, String>,
    final_reads: usize,
}

async fn run(options: Options) -> anyhow::Result<ExitCode> {
    let control_bin = preflight(&options)?;
    let kinds = nemesis::parse(&options.nemesis)?;
    let seed = options.seed.unwrap_or_else(rand::random);
    let out = options.out.clone().unwrap_or_else(|| {
        PathBuf::from("jepsen-runs").join(format!("{}-seed{seed}", options.workload.name()))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::path::absolute(&out)?;
    say(format!(
        "{} workload, {} nodes, {} clients, {} s, nemesis {:?}, seed {seed}, output {}",
        options.workload.name(),
        options.nodes,
        options.concurrency,
        options.time_limit,
        options.nemesis,
        out.display()
    ));
    if options.inject_bug.is_some() && !control_bin.to_string_lossy().contains("/debug/") {
        say("warning: --inject-bug needs a debug build of flocker-control; this one may ignore it");
    }
    let cleaned = netns::remove_leftovers()?;
    if !cleaned.is_empty() {
        say(format!("removed leftovers of earlier runs: {cleaned:?}"));
    }
    let mut network = Network::create(options.nodes)?;
    say(format!(
        "network: namespaces {}-n1..n{}, host {}, nodes {}..",
        network.layout.switch_ns().trim_end_matches("-sw"),
        options.nodes,
        network.layout.host_ip(),
        network.layout.node_ip(1)
    ));
    let env = match options.inject_bug {
        Some(Bug::StaleReads) => vec![("FLOCKER_UNSAFE_STALE_READS".to_owned(), "1".to_owned())],
        None => Vec::new(),
    };
    let node_options = NodeOptions {
        control_bin,
        leader_wait: options.leader_wait,
        snapshot_every: options.snapshot_every,
        env,
    };
    let cluster: Shared = Arc::new(Mutex::new(Cluster::prepare(
        &out.join("cluster"),
        network.layout.clone(),
        node_options,
    )?));
    let recorder = Arc::new(Recorder::new(
        std::time::Instant::now(),
        Some(&out.join("history.jsonl")),
    )?);

    let outcome = tokio::select! {
        result = experiment(&options, &kinds, seed, &cluster, &recorder) => Some(result),
        signal = interrupted() => {
            say(format!("{signal}: stopping and tearing everything down"));
            None
        }
    };
    // Teardown, whatever happened (a panic or an early return tears down in Drop too).
    let unexpected_exits = {
        let mut c = lock(&cluster);
        c.kill_all();
        c.unexpected_exits.clone()
    };
    network.teardown();
    recorder.flush();
    say("network and nodes removed");

    let Some(result) = outcome else {
        write_interrupted(&out, seed)?;
        return Ok(ExitCode::from(INTERRUPTED));
    };
    let info = result?;
    analyse(
        &options,
        &kinds,
        seed,
        &out,
        &recorder.events(),
        info,
        unexpected_exits,
    )
}

async fn interrupted() -> &'static str {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn experiment(
    options: &Options,
    kinds: &[nemesis::FaultKind],
    seed: u64,
    cluster: &Shared,
    recorder: &Arc<Recorder>,
) -> anyhow::Result<RunInfo> {
    {
        let mut c = lock(cluster);
        for slot in 1..=options.nodes {
            c.start(slot)?;
        }
    }
    let leader = cluster::wait_healthy(cluster, Duration::from_secs(60))
        .await
        .context("the cluster did not start (see cluster/logs/)")?;
    say(format!("cluster up, leader n{leader}; workload starts"));
    let endpoints = lock(cluster).endpoints.clone();
    let ctx = Arc::new(Ctx::new(
        options.workload,
        recorder.clone(),
        endpoints,
        Duration::from_secs_f64(options.client_timeout),
        seed,
        options.concurrency,
    ));
    let mut nemesis = Nemesis::new(
        kinds.to_vec(),
        Schedule {
            interval: options.interval,
            hold: options.hold,
        },
        seed,
        cluster.clone(),
        recorder.clone(),
    );
    recorder.restart_clock();
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(options.time_limit);
    tokio::join!(workload::run(ctx.clone(), until), nemesis.run(until));
    let workload_end_ns = recorder.now();
    say("workload done; healing");
    let recovered = nemesis
        .final_heal(Duration::from_secs(90))
        .await
        .map_err(|e| format!("{e:#}"));
    match &recovered {
        Ok(leader) => say(format!("healed, leader n{leader}; final reads")),
        Err(e) => say(format!("the cluster did not recover: {e}")),
    }
    let final_reads = workload::final_reads(&ctx, Duration::from_secs(30)).await;
    Ok(RunInfo {
        workload_end_ns,
        recovered,
        final_reads,
    })
}

fn check(workload: Workload, ops: &[history::Op], limit: f64) -> CheckOutcome {
    let limits = Limits {
        max_time: Duration::from_secs_f64(limit),
        ..Limits::default()
    };
    match workload {
        Workload::Register => checker::register::check(ops, limits),
        Workload::Set => checker::set::check(ops),
        Workload::Leases => checker::leases::check(ops, limits),
    }
}

fn analyse(
    options: &Options,
    kinds: &[nemesis::FaultKind],
    seed: u64,
    out: &Path,
    events: &[history::Event],
    info: RunInfo,
    unexpected_exits: Vec<String>,
) -> anyhow::Result<ExitCode> {
    say(format!("checking {} events", events.len()));
    let ops = history::pair(events);
    let outcome = check(options.workload, &ops, options.checker_time_limit);
    let faults = history::fault_windows(events);
    let mut reasons = Vec::new();
    let mut validity = outcome.validity;
    if let Err(e) = &info.recovered {
        reasons.push(format!("the cluster did not recover after the heal: {e}"));
        validity = Validity::Invalid;
    }
    if !unexpected_exits.is_empty() {
        reasons.push(format!(
            "nodes exited without being killed (see cluster/logs/): {unexpected_exits:?}"
        ));
    }
    if outcome.validity != Validity::Valid {
        reasons.push(format!(
            "the {} checker says {}",
            options.workload.name(),
            report::verdict_name(outcome.validity)
        ));
    }
    let results = Results {
        valid: validity == Validity::Valid,
        verdict: report::verdict_name(validity),
        reasons,
        run: json!({
            "workload": options.workload,
            "nodes": options.nodes,
            "time_limit_s": options.time_limit,
            "concurrency": options.concurrency,
            "nemesis": options.nemesis,
            "nemesis_kinds": kinds.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>(),
            "seed": seed,
            "interval_s": options.interval,
            "hold_s": options.hold,
            "leader_wait_s": options.leader_wait,
            "client_timeout_s": options.client_timeout,
            "snapshot_every": options.snapshot_every,
            "inject_bug": options.inject_bug.map(|b| format!("{b:?}")),
            "workload_end_s": info.workload_end_ns as f64 / 1e9,
        }),
        figures: report::figures(&ops, info.workload_end_ns),
        faults_by_kind: report::faults_by_kind(&faults),
        faults,
        checker: outcome,
        cluster: json!({
            "recovered": info.recovered.is_ok(),
            "final_reads_answered": info.final_reads,
            "unexpected_exits": unexpected_exits,
        }),
        files: json!({
            "history": "history.jsonl",
            "latency_plot": "latency.svg",
            "throughput_plot": "throughput.svg",
            "node_logs": "cluster/logs/",
        }),
    };
    write_results(out, &results, &ops)?;
    println!("{}", report::summary(&results));
    println!("results: {}", out.join("results.json").display());
    Ok(match validity {
        Validity::Valid => ExitCode::SUCCESS,
        Validity::Invalid => ExitCode::from(1),
        Validity::Unknown => ExitCode::from(2),
    })
}

fn write_results(out: &Path, results: &Results, ops: &[history::Op]) -> anyhow::Result<()> {
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(results)? + "\n",
    )?;
    if let Err(e) = report::plot_latency(&out.join("latency.svg"), ops, &results.faults) {
        say(format!("latency plot: {e}"));
    }
    if let Err(e) = report::plot_throughput(&out.join("throughput.svg"), ops, &results.faults) {
        say(format!("throughput plot: {e}"));
    }
    Ok(())
}

fn write_interrupted(out: &Path, seed: u64) -> anyhow::Result<()> {
    let results = json!({
        "valid": false,
        "verdict": "unknown",
        "reasons": ["interrupted before the end of the run"],
        "run": {"seed": seed},
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    Ok(())
}

/// `--check DIR`: check an existing history (with the workload of DIR/results.json
/// unless `--workload` was given).
fn recheck(options: &Options, workload_given: bool, dir: &Path) -> anyhow::Result<ExitCode> {
    let events = history::load(&dir.join("history.jsonl"))?;
    let ops = history::pair(&events);
    let recorded = std::fs::read_to_string(dir.join("results.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|r| r["run"]["workload"].as_str().map(str::to_owned))
        .and_then(|w| <Workload as clap::ValueEnum>::from_str(&w, true).ok());
    let workload = match recorded {
        Some(w) if !workload_given => w,
        _ => options.workload,
    };
    let outcome = check(workload, &ops, options.checker_time_limit);
    println!(
        "{} operations; {} checker: {} in {:.2} s",
        ops.len(),
        outcome.checker,
        report::verdict_name(outcome.validity),
        outcome.elapsed.as_secs_f64()
    );
    for line in &outcome.explanation {
        println!("  {line}");
    }
    println!("{}", serde_json::to_string_pretty(&outcome.details)?);
    Ok(match outcome.validity {
        Validity::Valid => ExitCode::SUCCESS,
        Validity::Invalid => ExitCode::from(1),
        Validity::Unknown => ExitCode::from(2),
    })
}
