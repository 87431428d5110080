//! The container convergence agent (`flocker-container-agent`): one per node, it makes
//! the node's Docker containers match the configuration (FLOCKER-SPEC 11).
//!
//! # The loop
//!
//! It is built like the dataset agent and shares its pieces: the same `agent.yml`
//! ([`config`], read with the dataset agent's parser), the same
//! [`ControlConnection`](crate::agent::dataset::connection::ControlConnection) with its
//! failover and backoff, the same long-poll task, and the same era (so both agents of a
//! node report under one era and never discard each other's state). The convergence
//! loop ([`runner`]) iterates: *observe* the engine ([`docker`]: every container named
//! `flocker--*`, inspected), *publish* this node's containers as
//! [`ContainerState`](crate::model::ContainerState)s (the reporter sends them with
//! `POST /agent/v1/state`, kind `containers`, when they change, and heartbeats
//! otherwise), *plan* with the pure [`planner`], *execute* (removals first, then the
//! rest, each group in parallel). After creating or removing it iterates again at once,
//! while waiting every `waiting_recheck`, otherwise every `idle_recheck`; a new view
//! wakes it at once. Without a live connection it observes and reports but changes
//! nothing.
//!
//! # Containers
//!
//! A configured container `<name>` becomes the Docker container `flocker--<name>` with
//! its image (pulled only if absent), environment, command line, CPU shares, memory
//! limit, ports published on `publish_address` (default `127.0.0.1`), the environment
//! variables Docker links used to inject (`<ALIAS>_PORT_<local>_TCP=tcp://<host>:<remote>`,
//! `_ADDR`, `_PORT`, `_PROTO`, `<host>` being this node's address as the control service
//! sees it), and its dataset bind-mounted (`<mount path>:<mountpoint>:Z`). The mount
//! path is taken from this node's manifestations in the cluster state, as the dataset
//! agent reports them: a container with a volume is created only once its dataset is
//! mounted here. A move is therefore: the old node's agent removes the container and
//! reports it gone; the dataset agent there, no longer seeing the dataset in use,
//! unmounts and detaches it; the new node's dataset agent attaches and mounts it; the
//! new node's container agent sees the manifestation and starts the container.
//!
//! # Restart policies
//!
//! Honoured, by two hands (Flocker ignored them, FLOCKER-SPEC 14.1 item 12). The
//! configured policy is given to Docker (`no`, `always`, `on-failure[:max]`), so the
//! engine restarts a crashed process even while the agent is down. The agent applies the
//! same policy to what the engine will not restart: a container stopped by hand
//! (`docker stop`, `docker kill`) or by an engine restart is started again under
//! `always`, under `on-failure` when its exit code is not 0 and the retries (the
//! engine's plus the agent's, counted in memory) are below the maximum, and left stopped
//! under `never` — it is then reported with `running: false`. A container created but
//! never started is always started.
//!
//! # Ownership and shared engines
//!
//! Each container carries the label `flocker.node=<node uuid>`, and an agent manages
//! only containers carrying its own node's label: two agents may share one engine (a
//! local cluster, the tests), and a `flocker--*` container of another node is never
//! touched. Docker names are unique per engine, so on a shared engine a container moved
//! between two nodes keeps its name: the new node waits until the old node has removed
//! its container. Containers without the label (made by hand or by another tool) are
//! left alone.
//!
//! # State and the dataset agent
//!
//! The report lists this node's own containers as discovered (see
//! [`planner::discover`]): stopped ones with `running: false`. The dataset agent never
//! gives up a dataset that a container reported running here uses (and, while this
//! agent's state is unknown, any dataset a container configured here uses). While the
//! engine is unreachable the agent reports nothing (its state expires if the outage
//! lasts) and changes nothing; it reconnects on its own.
//!
//! # Known gaps
//!
//! `swappiness` is neither applied nor compared. Only TCP ports. One volume per
//! container. The agent polls the engine (every `idle_recheck`, 3 s by default) rather
//! than following its event stream, so a container killed by hand is noticed within
//! that time.

pub mod config;
pub mod docker;
pub mod planner;
pub mod runner;

pub use config::{ContainerAgentConfig, DEFAULT_PUBLISH_ADDRESS};
pub use docker::{docker_available, DockerEngine, EngineError, DEFAULT_DOCKER_HOST};
pub use runner::{run, ContainerAgent, ContainerAgentStatus};
