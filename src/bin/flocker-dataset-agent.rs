//! `flocker-dataset-agent`: the dataset convergence agent of one node (see
//! `flocker::agent::dataset`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use uuid::Uuid;

use flocker::agent::dataset::{self, config::DEFAULT_CONFIG_PATH, AgentConfig};

/// Make this node's storage match the cluster configuration: create, attach, format,
/// mount, move and delete datasets, and report them to the control service.
#[derive(Debug, Parser)]
#[command(name = "flocker-dataset-agent", version)]
struct Options {
    /// The agent configuration; cluster.crt, node.crt and node.key are read from its
    /// directory.
    #[arg(short = 'c', long = "agent-config", default_value = DEFAULT_CONFIG_PATH)]
    agent_config: PathBuf,
    /// Use this era instead of the boot id (lets several agents on one host pretend to
    /// be different machines).
    #[arg(long, env = "FLOCKER_AGENT_ERA")]
    era: Option<Uuid>,
    /// More logging (repeat for more).
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let options = Options::parse();
    flocker::agent::cli::init_logging(options.verbose);
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, without a backtrace: these are operator errors.
            eprintln!("flocker-dataset-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: Options) -> anyhow::Result<()> {
    let mut config = AgentConfig::load(&options.agent_config)?;
    if options.era.is_some() {
        config.era = options.era;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(dataset::run(config, flocker::agent::cli::shutdown_signal()))?;
    Ok(())
}
