//! `flocker-container-agent`: the container convergence agent of one node (see
//! `flocker::agent::container`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use uuid::Uuid;

use flocker::agent::container::{self, ContainerAgentConfig};
use flocker::agent::dataset::config::DEFAULT_CONFIG_PATH;

/// Make this node's Docker containers match the cluster configuration (create, recreate,
/// restart, move and remove `flocker--<name>` containers) and report them to the control
/// service. Reads the node's agent.yml (shared with the dataset agent; optional
/// `container: {docker_host, publish_address}`).
#[derive(Debug, Parser)]
#[command(name = "flocker-container-agent", version)]
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
            eprintln!("flocker-container-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: Options) -> anyhow::Result<()> {
    let mut config = ContainerAgentConfig::load(&options.agent_config)?;
    if options.era.is_some() {
        config.agent.era = options.era;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(container::run(
        config,
        flocker::agent::cli::shutdown_signal(),
    ))?;
    Ok(())
}
