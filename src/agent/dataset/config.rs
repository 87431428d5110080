//! `agent.yml`: the dataset agent's configuration file (FLOCKER-SPEC 9.2).
//!
//! The keys are Flocker's: `version: 1`, `control-service: {hostname, port}` and
//! `dataset: {backend, ...backend keys}`. Two extensions:
//!
//! - `control-service` may be a list of `{hostname, port}` entries, one per control node;
//!   the agent talks to one at a time and fails over to the next.
//! - `era` (a UUID) replaces the boot id as the agent's era. It exists so that two agents
//!   on one host can pretend to be two machines; production files leave it out.
//!
//! The certificates `cluster.crt`, `node.crt` and `node.key` are read from the directory
//! that holds the file, as in Flocker. Unknown top-level keys are ignored (Flocker's
//! `logging` among them); unknown keys inside `control-service` or `dataset` are errors,
//! because there they are almost always typos.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};
use uuid::Uuid;

use crate::tls::TlsFiles;

/// Where the agent looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/flocker/agent.yml";
/// The control service's agent port.
pub const DEFAULT_AGENT_PORT: u16 = 4524;
/// Default `root_path` of the loopback backend.
pub const DEFAULT_LOOPBACK_ROOT: &str = "/var/lib/flocker/loopback";
/// Default `root_path` of the directory backend.
pub const DEFAULT_DIRECTORY_ROOT: &str = "/var/lib/flocker/directory";
/// Default `mount_root`: datasets appear at `<mount_root>/<dataset_id>`.
pub const DEFAULT_MOUNT_ROOT: &str = "/flocker";

/// One control node's agent endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlServiceAddress {
    pub hostname: String,
    pub port: u16,
}

impl ControlServiceAddress {
    /// `https://host:port`, with IPv6 literals bracketed.
    pub fn base_url(&self) -> String {
        if self.hostname.contains(':') {
            format!("https://[{}]:{}", self.hostname, self.port)
        } else {
            format!("https://{}:{}", self.hostname, self.port)
        }
    }
}

/// `dataset: {backend: loopback, ...}`: Flocker's loopback backend (needs root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackConfig {
    /// Holds the volumes (sparse files); agents sharing it share "block storage".
    pub root_path: PathBuf,
    /// This node's identity in the backend; by default a random id persisted under
    /// `root_path/instances/<node uuid>`, so it survives restarts.
    pub compute_instance_id: Option<String>,
    /// Volume sizes are rounded up to a multiple of this many bytes.
    pub allocation_unit: u64,
    /// Datasets are mounted at `mount_root/<dataset_id>`.
    pub mount_root: PathBuf,
}

/// `dataset: {backend: directory, ...}`: plain directories, no root needed. Sizes are
/// recorded but cannot be enforced, and a "detached" dataset's files stay writable by
/// anyone with access to `root_path` (see [`super::backend::directory`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    pub root_path: PathBuf,
    pub compute_instance_id: Option<String>,
    pub mount_root: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    Loopback(LoopbackConfig),
    Directory(DirectoryConfig),
}

impl BackendConfig {
    pub fn mount_root(&self) -> &Path {
        match self {
            BackendConfig::Loopback(c) => &c.mount_root,
            BackendConfig::Directory(c) => &c.mount_root,
        }
    }
}

/// Timers of the agent. Not part of `agent.yml`: the defaults suit production, and tests
/// or `flocker-cluster` may shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Re-check the local state this often when there is nothing to do.
    pub idle_recheck: Duration,
    /// Re-check this often while waiting for another node (to detach, say).
    pub waiting_recheck: Duration,
    /// The `wait` of the long poll.
    pub long_poll_wait: Duration,
    /// Send a heartbeat when nothing was sent for this long (must stay below
    /// [`crate::agent::protocol::HEARTBEAT_INTERVAL`]).
    pub heartbeat: Duration,
    /// Cap of the exponential backoff between attempts to reach a control node.
    pub max_reconnect_backoff: Duration,
    /// Cap of the exponential backoff after failed actions.
    pub max_error_backoff: Duration,
    /// Timeout of the short requests (reports, registrations).
    pub request_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            idle_recheck: Duration::from_secs(3),
            waiting_recheck: Duration::from_secs(1),
            long_poll_wait: Duration::from_secs(30),
            // Margin under the protocol's 10 s; each heartbeat costs a Raft write.
            heartbeat: Duration::from_secs(8),
            max_reconnect_backoff: Duration::from_secs(5),
            max_error_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// Everything the agent needs to start (see [`super::run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Tried in order; at least one.
    pub control_services: Vec<ControlServiceAddress>,
    pub backend: BackendConfig,
    /// `cluster.crt`, `node.crt`, `node.key`; the node UUID comes from `node.crt`.
    pub tls: TlsFiles,
    /// Overrides the boot id (`/proc/sys/kernel/random/boot_id`) as the era.
    pub era: Option<Uuid>,
    pub timing: Timing,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read the agent configuration {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid agent configuration {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl AgentConfig {
    /// Read and validate `path`; certificates come from its directory.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        Self::parse(&text, &dir).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Validate the text of an `agent.yml` whose certificates live in `certificates`.
    pub fn parse(text: &str, certificates: &Path) -> Result<AgentConfig, String> {
        let document: Value =
            serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        let top = document.as_mapping().ok_or(
            "the document must be a mapping with `version`, `control-service` and `dataset`",
        )?;
        check_version(top.get("version"))?;
        let control_services = control_services(
            top.get("control-service")
                .ok_or("`control-service` is required")?,
        )?;
        let backend = backend(top.get("dataset").ok_or("`dataset` is required")?)?;
        let era = match top.get("era") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(Uuid::parse_str(s).map_err(|_| format!("`era` must be a UUID, not {s:?}"))?)
            }
            Some(other) => return Err(format!("`era` must be a UUID string, not {}", show(other))),
        };
        Ok(AgentConfig {
            control_services,
            backend,
            tls: TlsFiles::in_dir(certificates, "node"),
            era,
            timing: Timing::default(),
        })
    }
}

fn show(value: &Value) -> String {
    serde_yaml::to_string(value)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| format!("{value:?}"))
}

fn check_version(version: Option<&Value>) -> Result<(), String> {
    let version = version.ok_or("`version` is required (it must be 1)")?;
    let is_one = version.as_u64() == Some(1) || version.as_f64() == Some(1.0);
    if is_one {
        Ok(())
    } else {
        Err(format!(
            "`version` must be 1, not {} (this agent reads version 1 files only)",
            show(version)
        ))
    }
}

fn control_services(value: &Value) -> Result<Vec<ControlServiceAddress>, String> {
    match value {
        Value::Mapping(m) => Ok(vec![control_service(m, "control-service")?]),
        Value::Sequence(list) if list.is_empty() => {
            Err("`control-service` lists no control node".into())
        }
        Value::Sequence(list) => list
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let place = format!("control-service[{i}]");
                let m = entry
                    .as_mapping()
                    .ok_or_else(|| format!("`{place}` must be a mapping with `hostname`"))?;
                control_service(m, &place)
            })
            .collect(),
        other => Err(format!(
            "`control-service` must be a mapping with `hostname` (and `port`) or a list of them, not {}",
            show(other)
        )),
    }
}

fn control_service(m: &Mapping, place: &str) -> Result<ControlServiceAddress, String> {
    reject_unknown(m, place, &["hostname", "port"])?;
    let hostname = match m.get("hostname") {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(other) => {
            return Err(format!(
                "`{place}.hostname` must be a string, not {}",
                show(other)
            ))
        }
        None => return Err(format!("`{place}.hostname` is required")),
    };
    if !valid_host(&hostname) {
        return Err(format!(
            "`{place}.hostname` {hostname:?} is neither a host name nor an IP address"
        ));
    }
    let port = match m.get("port") {
        None | Some(Value::Null) => DEFAULT_AGENT_PORT,
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                format!(
                    "`{place}.port` must be an integer from 1 to 65535, not {}",
                    show(v)
                )
            })?,
    };
    Ok(ControlServiceAddress { hostname, port })
}

fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn reject_unknown(m: &Mapping, place: &str, known: &[&str]) -> Result<(), String> {
    for key in m.keys() {
        let name = key.as_str().unwrap_or_default();
        if !known.contains(&name) {
            return Err(format!(
                "`{place}` has an unknown key {} (known: {})",
                show(key),
                known.join(", ")
            ));
        }
    }
    Ok(())
}

fn backend(value: &Value) -> Result<BackendConfig, String> {
    let m = value
        .as_mapping()
        .ok_or("`dataset` must be a mapping with `backend`")?;
    let name = match m.get("backend") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(format!(
                "`dataset.backend` must be a string, not {}",
                show(other)
            ))
        }
        None => return Err("`dataset.backend` is required (loopback or directory)".into()),
    };
    match name {
        "loopback" => {
            reject_unknown(
                m,
                "dataset",
                &[
                    "backend",
                    "root_path",
                    "compute_instance_id",
                    "allocation_unit",
                    "mount_root",
                ],
            )?;
            let allocation_unit = match m.get("allocation_unit") {
                None | Some(Value::Null) => 1,
                Some(v) => v.as_u64().filter(|u| *u > 0).ok_or_else(|| {
                    format!(
                        "`dataset.allocation_unit` must be a positive integer (bytes), not {}",
                        show(v)
                    )
                })?,
            };
            Ok(BackendConfig::Loopback(LoopbackConfig {
                root_path: path(m, "root_path", DEFAULT_LOOPBACK_ROOT)?,
                compute_instance_id: instance_id(m)?,
                allocation_unit,
                mount_root: path(m, "mount_root", DEFAULT_MOUNT_ROOT)?,
            }))
        }
        "directory" => {
            reject_unknown(
                m,
                "dataset",
                &["backend", "root_path", "compute_instance_id", "mount_root"],
            )?;
            Ok(BackendConfig::Directory(DirectoryConfig {
                root_path: path(m, "root_path", DEFAULT_DIRECTORY_ROOT)?,
                compute_instance_id: instance_id(m)?,
                mount_root: path(m, "mount_root", DEFAULT_MOUNT_ROOT)?,
            }))
        }
        "zfs" | "aws" | "openstack" | "gce" => Err(format!(
            "the {name:?} backend is not supported by this agent (supported: loopback, directory)"
        )),
        other => Err(format!(
            "unknown backend {other:?} (supported: loopback, directory)"
        )),
    }
}

fn path(m: &Mapping, key: &str, default: &str) -> Result<PathBuf, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(PathBuf::from(default)),
        Some(Value::String(s)) if Path::new(s).is_absolute() => Ok(PathBuf::from(s)),
        Some(Value::String(s)) => Err(format!(
            "`dataset.{key}` must be an absolute path, not {s:?}"
        )),
        Some(other) => Err(format!(
            "`dataset.{key}` must be a path, not {}",
            show(other)
        )),
    }
}

fn instance_id(m: &Mapping) -> Result<Option<String>, String> {
    match m.get("compute_instance_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if valid_instance_id(s) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "`dataset.compute_instance_id` must be a non-empty name of letters, digits, '.', '_' or '-', not {}",
            show(other)
        )),
    }
}

/// Instance ids name directories in the shared root, so they must be plain names.
pub fn valid_instance_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(text, Path::new("/etc/flocker"))
    }

    #[test]
    fn flocker_style_file_gets_the_defaults() {
        let c = parse("version: 1\ncontrol-service:\n  hostname: 10.0.0.1\ndataset:\n  backend: loopback\nlogging: {}\n")
            .unwrap();
        assert_eq!(
            c.control_services,
            vec![ControlServiceAddress {
                hostname: "10.0.0.1".into(),
                port: 4524
            }]
        );
        assert_eq!(
            c.backend,
            BackendConfig::Loopback(LoopbackConfig {
                root_path: DEFAULT_LOOPBACK_ROOT.into(),
                compute_instance_id: None,
                allocation_unit: 1,
                mount_root: DEFAULT_MOUNT_ROOT.into(),
            })
        );
        assert_eq!(c.tls, TlsFiles::in_dir(Path::new("/etc/flocker"), "node"));
        assert_eq!(c.era, None);
    }

    #[test]
    fn list_of_control_services_and_directory_backend() {
        let c = parse(
            "version: 1\ncontrol-service:\n  - {hostname: a.example, port: 1}\n  - hostname: '::1'\ndataset: {backend: directory, root_path: /srv/d, mount_root: /m}\nera: 0b6f9a52-8c4e-4f5e-9d3a-1f2e3d4c5b6a\n",
        )
        .unwrap();
        assert_eq!(c.control_services.len(), 2);
        assert_eq!(c.control_services[0].base_url(), "https://a.example:1");
        assert_eq!(c.control_services[1].base_url(), "https://[::1]:4524");
        assert!(
            matches!(c.backend, BackendConfig::Directory(ref d) if d.root_path == Path::new("/srv/d"))
        );
        assert!(c.era.is_some());
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let cases = [
            ("control-service: {hostname: a}\ndataset: {backend: loopback}", "`version` is required"),
            ("version: 2\ncontrol-service: {hostname: a}\ndataset: {backend: loopback}", "must be 1"),
            ("version: 1\ndataset: {backend: loopback}", "`control-service` is required"),
            ("version: 1\ncontrol-service: {port: 1}\ndataset: {backend: loopback}", "hostname` is required"),
            ("version: 1\ncontrol-service: {hostname: 'a b'}\ndataset: {backend: loopback}", "neither a host name"),
            ("version: 1\ncontrol-service: {hostname: a, port: 70000}\ndataset: {backend: loopback}", "1 to 65535"),
            ("version: 1\ncontrol-service: []\ndataset: {backend: loopback}", "lists no control node"),
            ("version: 1\ncontrol-service: {hostname: a}\n", "`dataset` is required"),
            ("version: 1\ncontrol-service: {hostname: a}\ndataset: {}", "`dataset.backend` is required"),
            ("version: 1\ncontrol-service: {hostname: a}\ndataset: {backend: zfs}", "not supported"),
            ("version: 1\ncontrol-service: {hostname: a}\ndataset: {backend: loopback, root_pth: /x}", "unknown key"),
            ("version: 1\ncontrol-service: {hostname: a}\ndataset: {backend: loopback, root_path: rel}", "absolute path"),
            ("version: 1\ncontrol-service: {hostname: a}\ndataset: {backend: loopback, allocation_unit: 0}", "positive integer"),
            ("version: 1\ncontrol-service: {hostname: a}\ndataset: {backend: loopback, compute_instance_id: ../x}", "compute_instance_id"),
            ("version: 1\ncontrol-service: {hostname: a}\ndataset: {backend: loopback}\nera: nope", "`era` must be a UUID"),
            ("- 1", "must be a mapping"),
            ("version: [", "not valid YAML"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.contains(expected),
                "{text:?}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn load_names_the_file() {
        let err = AgentConfig::load(Path::new("/nonexistent/agent.yml")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/agent.yml"), "{err}");
    }
}
