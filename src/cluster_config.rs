//! Cluster files (`cluster-config/*.toml`): the control nodes of a cluster and the agents
//! a local cluster runs.
//!
//! `flocker-control --cluster FILE --node-id N` reads the initial members from it (the
//! member with the lowest id forms the cluster, once). `flocker-cluster up --config FILE`
//! starts the whole cluster it describes on this machine; ports given as 0 are chosen
//! when the cluster starts, and the resolved file is written next to `cluster.json`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::raft::{ControlNode, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The control nodes, each with a distinct Raft id.
    pub control: Vec<ControlEntry>,
    #[serde(default)]
    pub agents: AgentsSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlEntry {
    pub id: NodeId,
    #[serde(default = "loopback")]
    pub host: String,
    #[serde(default)]
    pub api_port: u16,
    #[serde(default)]
    pub agent_port: u16,
    #[serde(default)]
    pub peer_port: u16,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsSection {
    /// How many agent nodes a local cluster runs (each gets a node certificate).
    #[serde(default = "two")]
    pub nodes: usize,
    /// `loopback`, `directory`, or `auto` (loopback when root, else directory).
    #[serde(default = "auto")]
    pub backend: String,
}

fn two() -> usize {
    2
}

fn auto() -> String {
    "auto".into()
}

impl Default for AgentsSection {
    fn default() -> Self {
        AgentsSection {
            nodes: two(),
            backend: auto(),
        }
    }
}

impl ClusterFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the cluster file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the cluster file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: ClusterFile = toml::from_str(text)?;
        file.check()?;
        Ok(file)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.control.is_empty() {
            bail!("at least one [[control]] node is needed");
        }
        let mut ids = std::collections::BTreeSet::new();
        for entry in &self.control {
            if entry.id == 0 {
                bail!("control node ids start at 1");
            }
            if !ids.insert(entry.id) {
                bail!("control node id {} appears twice", entry.id);
            }
        }
        if !matches!(
            self.agents.backend.as_str(),
            "auto" | "loopback" | "directory"
        ) {
            bail!(
                "agents.backend must be auto, loopback or directory, not {:?}",
                self.agents.backend
            );
        }
        Ok(())
    }

    /// The Raft membership this file describes (ports must be resolved).
    pub fn members(&self) -> BTreeMap<NodeId, ControlNode> {
        self.control
            .iter()
            .map(|c| {
                let node = ControlNode {
                    raft_addr: format!("{}:{}", c.host, c.peer_port),
                    api_addr: format!("{}:{}", c.host, c.api_port),
                };
                (c.id, node)
            })
            .collect()
    }

    pub fn entry(&self, id: NodeId) -> Option<&ControlEntry> {
        self.control.iter().find(|c| c.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_cluster_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster-config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let file = ClusterFile::load(&path).unwrap();
                assert_eq!(file.members().len(), file.control.len());
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected the 3- and 5-node examples");
        let three = ClusterFile::load(&dir.join("local-3.toml")).unwrap();
        assert_eq!(three.control.len(), 3);
        let five = ClusterFile::load(&dir.join("local-5.toml")).unwrap();
        assert_eq!(five.control.len(), 5);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(ClusterFile::parse("").is_err());
        let twice = "[[control]]\nid = 1\n[[control]]\nid = 1\n";
        assert!(ClusterFile::parse(twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let unknown = "[[control]]\nid = 1\ncolour = \"red\"\n";
        assert!(ClusterFile::parse(unknown).is_err());
        let backend = "[[control]]\nid = 1\n[agents]\nbackend = \"zfs\"\n";
        assert!(ClusterFile::parse(backend).is_err());
    }
}
