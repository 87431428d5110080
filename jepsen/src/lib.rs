//! `flocker-jepsen`: a Jepsen-style fault-injection suite for the Flocker control plane,
//! black-box through its public API.
//!
//! A run creates network namespaces, one per control node, joined by a bridge; starts
//! `flocker-control` in each; drives a workload from the host through the v1 REST API
//! while a nemesis partitions, kills, pauses and reconfigures the nodes; heals everything;
//! and checks the recorded history. See `jepsen/README.md`.
//!
//! - [`netns`]: namespaces, veth pairs, the bridge, iptables partitions, teardown.
//! - [`cluster`]: the `flocker-control` processes and the admin API.
//! - [`nemesis`]: the seeded fault schedule.
//! - [`workload`]: the clients (register, set, leases).
//! - [`history`]: the recorded events (JSON lines) and their pairing into operations.
//! - [`wgl`]: the linearizability checker (Wing-Gong-Lowe with memoization).
//! - [`checker`]: one checker per workload.
//! - [`report`]: `results.json`, plots, the printed summary.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod process;
pub mod report;
pub mod wgl;
pub mod workload;
