//! The container agent's configuration: the same `agent.yml` as the dataset agent (as in
//! Flocker, both agents of a node read one file), parsed by [`AgentConfig`], plus an
//! optional top-level `container` mapping (which the dataset agent ignores):
//!
//! ```yaml
//! container:
//!   docker_host: unix:///var/run/docker.sock   # the engine's API socket
//!   publish_address: 127.0.0.1                 # host address ports are published on
//! ```
//!
//! Ports are published on the loopback address unless told otherwise: a local cluster
//! must not expose containers to the network by accident. Production nodes set
//! `publish_address: 0.0.0.0`.

use std::net::IpAddr;
use std::path::Path;

use serde_yaml::Value;

use super::docker::DEFAULT_DOCKER_HOST;
use crate::agent::dataset::{AgentConfig, ConfigError};

/// Default `publish_address`.
pub const DEFAULT_PUBLISH_ADDRESS: &str = "127.0.0.1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerAgentConfig {
    /// Control services, certificates, era and timers: shared with the dataset agent.
    pub agent: AgentConfig,
    /// `unix:///path` of the Docker engine's API.
    pub docker_host: String,
    pub publish_address: String,
}

impl ContainerAgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let agent = AgentConfig::load(path)?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let (docker_host, publish_address) = container_section(&text).map_err(invalid)?;
        Ok(ContainerAgentConfig {
            agent,
            docker_host,
            publish_address,
        })
    }
}

/// `(docker_host, publish_address)` from the `container` mapping, with defaults.
pub fn container_section(text: &str) -> Result<(String, String), String> {
    let document: Value = serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut docker_host = DEFAULT_DOCKER_HOST.to_owned();
    let mut publish_address = DEFAULT_PUBLISH_ADDRESS.to_owned();
    let section = match document.get("container") {
        None | Some(Value::Null) => return Ok((docker_host, publish_address)),
        Some(Value::Mapping(m)) => m,
        Some(_) => return Err("`container` must be a mapping".into()),
    };
    for (key, value) in section {
        let key = key.as_str().unwrap_or_default();
        let text = value
            .as_str()
            .ok_or_else(|| format!("`container.{key}` must be a string"))?;
        match key {
            "docker_host" if text.starts_with("unix:///") || text.starts_with('/') => {
                docker_host = text.to_owned();
            }
            "docker_host" => {
                return Err(format!(
                    "`container.docker_host` must be unix:///<path> (only unix sockets are supported), not {text:?}"
                ))
            }
            "publish_address" if text.parse::<IpAddr>().is_ok() => {
                publish_address = text.to_owned();
            }
            "publish_address" => {
                return Err(format!(
                    "`container.publish_address` must be an IP address, not {text:?}"
                ))
            }
            other => {
                return Err(format!(
                    "unknown key `container.{other}` (known: docker_host, publish_address)"
                ))
            }
        }
    }
    Ok((docker_host, publish_address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            container_section("version: 1\n").unwrap(),
            (DEFAULT_DOCKER_HOST.to_owned(), "127.0.0.1".to_owned())
        );
        assert_eq!(
            container_section(
                "container: {docker_host: unix:///tmp/d.sock, publish_address: 0.0.0.0}"
            )
            .unwrap(),
            ("unix:///tmp/d.sock".to_owned(), "0.0.0.0".to_owned())
        );
        for (text, expected) in [
            ("container: {docker_host: tcp://h:2375}", "unix sockets"),
            ("container: {publish_address: nowhere}", "IP address"),
            ("container: {publish: 1.2.3.4}", "unknown key"),
            ("container: 3", "mapping"),
        ] {
            let err = container_section(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
