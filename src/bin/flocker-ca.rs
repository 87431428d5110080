//! `flocker-ca`: create a cluster's certificate authority and the
//! certificates of its control service, nodes and API users.
//!
//! Messages and file names follow the original tool (FLOCKER-SPEC §8).
//! Success messages go to stdout; failures print `Error: <reason>` on stderr
//! and exit with status 1.

// The doc comments below are `--help` text, where `<hostname>` is plain text, not HTML.
#![allow(rustdoc::invalid_html_tags)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Args, Parser, Subcommand};
use flocker::ca;

#[derive(Debug, Parser)]
#[command(
    name = "flocker-ca",
    version,
    about = "Manage the certificate authority of a Flocker cluster."
)]
struct Cli {
    /// Accepted for compatibility; ignored.
    #[arg(short = 'v', long = "verbose", global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Accepted for compatibility; ignored (messages go to stdout/stderr).
    #[arg(long = "logfile", global = true, value_name = "PATH")]
    logfile: Option<PathBuf>,
    /// Accepted for compatibility; ignored.
    #[arg(long = "journald", global = true)]
    journald: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new certificate authority (cluster.crt and cluster.key) in
    /// the current directory.
    Initialize {
        /// The name of the cluster (the CN of the authority certificate).
        name: String,
    },
    /// Create a certificate for the control service,
    /// control-<hostname>.crt and control-<hostname>.key.
    CreateControlCertificate {
        #[command(flatten)]
        paths: Paths,
        /// The hostname or IP address clients use to reach the control
        /// service (added to the certificate's subjectAltName).
        hostname: String,
        /// Additional subjectAltName (DNS name or IP address); repeatable.
        #[arg(long = "san", value_name = "NAME")]
        san: Vec<String>,
    },
    /// Create a certificate for a node agent, <node-uuid>.crt and
    /// <node-uuid>.key.
    CreateNodeCertificate {
        #[command(flatten)]
        paths: Paths,
    },
    /// Create a certificate for an API user, <username>.crt and
    /// <username>.key.
    CreateApiCertificate {
        #[command(flatten)]
        paths: Paths,
        /// The user name (the certificate CN is user-<username>).
        #[arg(value_parser = clap::value_parser!(OsString))]
        username: OsString,
    },
}

#[derive(Debug, Args)]
struct Paths {
    /// Directory holding cluster.crt and cluster.key [default: current directory]
    #[arg(short = 'i', long = "inputpath", value_name = "DIR")]
    inputpath: Option<PathBuf>,
    /// Directory the new files are written to [default: current directory]
    #[arg(short = 'o', long = "outputpath", value_name = "DIR")]
    outputpath: Option<PathBuf>,
}

impl Paths {
    fn resolve(&self) -> (PathBuf, PathBuf) {
        (
            self.inputpath.clone().unwrap_or_else(current_dir),
            self.outputpath.clone().unwrap_or_else(current_dir),
        )
    }
}

fn current_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| Path::new(".").to_owned())
}

fn run(command: Command) -> Result<String, String> {
    let err = |e: ca::CaError| e.to_string();
    match command {
        Command::Initialize { name } => {
            ca::initialize(&current_dir(), &name).map_err(err)?;
            Ok(format!(
                "Created {} and {}. Please keep {} secret, as anyone who can access it will be able to control your cluster.",
                ca::CA_KEY_FILE,
                ca::CA_CERT_FILE,
                ca::CA_KEY_FILE
            ))
        }
        Command::CreateControlCertificate {
            paths,
            hostname,
            san,
        } => {
            let (input, output) = paths.resolve();
            ca::create_control_certificate(&input, &output, &hostname, &san).map_err(err)?;
            Ok(format!(
                "Created control-{hostname}.crt and control-{hostname}.key\n\
                 Copy them to /etc/flocker on your control service machine, renamed to \
                 control-service.crt and control-service.key, and make sure to chmod 0600 both."
            ))
        }
        Command::CreateNodeCertificate { paths } => {
            let (input, output) = paths.resolve();
            let node = ca::create_node_certificate(&input, &output).map_err(err)?;
            Ok(format!(
                "Created {node}.crt. Copy it over to /etc/flocker/node.crt on your node machine and make sure to chmod 0600 it."
            ))
        }
        Command::CreateApiCertificate { paths, username } => {
            let username = username
                .into_string()
                .map_err(|_| "Invalid username: Could not be converted to UTF-8".to_owned())?;
            let (input, output) = paths.resolve();
            ca::create_api_certificate(&input, &output, &username).map_err(err)?;
            Ok(format!(
                "Created {username}.crt. You can now give it to your API enduser so they can access the control service API."
            ))
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage
            // errors print clap's message and fail.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let _ = (cli.verbose, &cli.logfile, cli.journald);
    match run(cli.command) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("Error: {reason}");
            ExitCode::from(1)
        }
    }
}
