//! The dataset convergence agent (`flocker-dataset-agent`): one per node, it makes the
//! node's storage match the configuration.
//!
//! # The loop
//!
//! Three tasks share one [`ControlConnection`](connection::ControlConnection), which
//! talks to one control node at a time and fails over to the next on errors:
//!
//! 1. The **poller** long-polls `GET /agent/v1/cluster?after=<generation>` and publishes
//!    each newer [`ClusterView`](crate::agent::protocol::ClusterView) (configuration,
//!    cluster state, this node's UUID as the certificate names it, the control node's
//!    clock). A change is therefore pushed to the agent as soon as it is applied.
//! 2. The **convergence loop** ([`runner`]) iterates: *observe* the backend (blocking,
//!    on a worker thread), *publish* what it sees as this node's
//!    [`DatasetAgentState`](crate::model::DatasetAgentState), *plan* with the pure
//!    [`planner`], *execute* the actions ([`executor`]) one after another. After work it
//!    iterates again at once; when idle it sleeps `idle_recheck` (3 s), or
//!    `waiting_recheck` (1 s) while waiting for another node; after a failure it backs
//!    off exponentially (up to 10 s). A new view wakes it immediately. Without a live
//!    connection it observes and reports but does nothing: a stale view could hide a
//!    lease.
//! 3. The **reporter** sends `POST /agent/v1/state` when the observed state changes
//!    (or when a view shows the cluster lost it: state expiry, era change) and a
//!    heartbeat (`state: null`) when nothing was sent for 8 s.
//!
//! # The planner's rules
//!
//! See [`planner`]: per dataset, desired state (primary here: mounted; primary here and
//! deleted: destroyed; otherwise: detached but kept) × discovered state (through the
//! ownership registry) → one action of the transition table of FLOCKER-SPEC 10.4. A
//! dataset leased to this node, or used by a container here (or possibly used, when the
//! container agent's state is unknown), is never unmounted, detached or destroyed.
//! New volumes are registered with `POST /agent/v1/blockdevice-owner` before they are
//! attached; a `409` makes the volume a duplicate that is never used. A move needs no
//! coordination: the old primary detaches, the new one waits until the volume is free.
//!
//! # Backends
//!
//! [`backend::loopback`] (Flocker's: sparse files, loop devices, ext4, real mounts at
//! `<mount_root>/<dataset_id>`; root only) and [`backend::directory`] (directories and
//! symbolic links; no root; sizes and exclusive access not enforced). Agents that share
//! a backend's `root_path` share its volumes, so datasets move between agents on one
//! machine with their data, like nodes sharing a block storage service.
//!
//! # Failure handling
//!
//! Every action is idempotent and every backend operation refuses what could lose data
//! (detaching a mounted device, destroying an attached volume, formatting a device with
//! a filesystem). A failed command is logged, the true state is reported, and the
//! action is retried with backoff. A crash at any point is recovered by the next start:
//! the compute instance id is persisted, so the agent recognises its volumes, and the
//! loop resumes from what it observes.
//!
//! # Failpoints
//!
//! The environment variable `FLOCKER_DATASET_AGENT_FAILPOINTS` (comma-separated names)
//! makes the agent stop for good when it reaches a named point: `after-<action>` for
//! the backend actions `create`, `attach`, `mkfs`, `mount`, `unmount`, `detach` and
//! `destroy` (right after the action succeeded, before its effect is reported),
//! `loopback-attach-moved` (volume file moved, loop device not yet set up),
//! `loopback-detach-released` (loop device released, file not yet moved back). Tests use
//! them to kill the agent in exactly those states. Unset, they cost one lookup.

pub mod backend;
pub mod config;
pub mod connection;
pub mod executor;
pub mod planner;
pub mod runner;

use std::sync::OnceLock;
use std::time::Duration;

pub use config::{
    AgentConfig, BackendConfig, ConfigError, ControlServiceAddress, DirectoryConfig,
    LoopbackConfig, Timing,
};
pub use runner::{run, AgentError, AgentStatus, DatasetAgent};

/// Names the failpoints to arm (see the module documentation).
pub const FAILPOINTS_ENV: &str = "FLOCKER_DATASET_AGENT_FAILPOINTS";

/// Stop this thread for good if `name` is armed (see the module documentation).
pub(crate) fn failpoint(name: &str) {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var(FAILPOINTS_ENV)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    });
    if armed.iter().any(|a| a == name) {
        tracing::warn!("failpoint {name} reached: this agent stops here");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
